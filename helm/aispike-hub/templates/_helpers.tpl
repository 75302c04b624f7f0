{{/* Names, labels and small shared pieces. */}}

{{- define "aispike.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "aispike.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains (include "aispike.name" .) .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "aispike.name" .) | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object; call with (dict "root" $ "component" "hub"). */}}
{{- define "aispike.labels" -}}
app.kubernetes.io/name: {{ include "aispike.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "aispike.selectorLabels" -}}
app.kubernetes.io/name: {{ include "aispike.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* image reference; call with (dict "root" $ "image" .Values.hub.image) */}}
{{- define "aispike.image" -}}
{{- printf "%s:%s" .image.name (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{- define "aispike.singleuserNamespace" -}}
{{- default .Release.Namespace .Values.singleuser.namespace -}}
{{- end -}}

{{- define "aispike.draPlugin" -}}
{{- $v := toString .Values.aispike.agent.draPlugin -}}
{{- if eq $v "auto" -}}{{ eq .Values.singleuser.backend "aispike" }}{{- else -}}{{ eq $v "true" }}{{- end -}}
{{- end -}}

{{/* A generated secret value kept across upgrades: (dict "root" $ "key" "proxyToken" "given" "...")
     Generated once per render and remembered (in .Values._aispikeGenerated, which only lives for
     this render), so every template that renders the Secret again (the checksum/secret
     annotations) sees the same value: otherwise a fresh install's checksums would hash other
     random values than the Secret holds, and the first `helm upgrade` would roll the proxy, whose
     routes live in memory. */}}
{{- define "aispike.secretValue" -}}
{{- if .given -}}
{{- .given -}}
{{- else -}}
{{- if not (hasKey .root.Values "_aispikeGenerated") -}}
{{- $_ := set .root.Values "_aispikeGenerated" dict -}}
{{- end -}}
{{- $cache := .root.Values._aispikeGenerated -}}
{{- if not (hasKey $cache .key) -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace (printf "%s-secret" (include "aispike.fullname" .root)) -}}
{{- if and $existing (hasKey $existing.data .key) -}}
{{- $_ := set $cache .key (index $existing.data .key | b64dec) -}}
{{- else -}}
{{- $_ := set $cache .key (randAlphaNum 64) -}}
{{- end -}}
{{- end -}}
{{- index $cache .key -}}
{{- end -}}
{{- end -}}

{{/* GPU model name -> the aispike.io/gpu-model label value (aispike_hub.kube.slices.label_value). */}}
{{- define "aispike.labelValue" -}}
{{- regexReplaceAll "[^A-Za-z0-9_.-]+" . "-" | trunc 63 | trimAll "-_." -}}
{{- end -}}

{{/* This hub's id (aispike_hub.kube.identity): aispike.hubId, else <namespace>.<release>, as a
     label value (lowercase, at most 63). Written on every claim and pod of this hub. */}}
{{- define "aispike.hubId" -}}
{{- default (printf "%s.%s" .Release.Namespace .Release.Name) .Values.aispike.hubId | lower | trunc 63 | trimAll ".-" -}}
{{- end -}}

{{- define "aispike.podSecurity" -}}
runAsNonRoot: true
runAsUser: 1000
runAsGroup: 1000
fsGroup: 1000
seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{- define "aispike.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities: {drop: [ALL]}
{{- end -}}

{{/* The Secret with cookieSecret, proxyToken and serviceToken: hub.existingSecret or the chart's. */}}
{{- define "aispike.secretName" -}}
{{- .Values.hub.existingSecret | default (printf "%s-secret" (include "aispike.fullname" .)) -}}
{{- end -}}

{{/* A list of EnvVar objects from Z2JH's extraEnv forms: {NAME: value}, {NAME: {valueFrom: ...}}
     (or any EnvVar fields), or already a list. */}}
{{- define "aispike.envList" -}}
{{- $out := list -}}
{{- if kindIs "slice" . -}}
{{- $out = . -}}
{{- else -}}
{{- range $k, $v := . -}}
{{- if kindIs "map" $v -}}
{{- $out = append $out (merge (dict "name" $k) $v) -}}
{{- else -}}
{{- $out = append $out (dict "name" $k "value" (toString $v)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* The images users pick from: singleuser.images, or Zero to JupyterHub's singleuser.image alone
     when it is set (it replaces the list, as it is the one image of a Z2JH hub). JSON list. */}}
{{- define "aispike.images" -}}
{{- $su := .Values.singleuser -}}
{{- if $su.image.name -}}
{{- $ref := printf "%s:%s" $su.image.name ($su.image.tag | default "latest") -}}
{{- list (dict "name" "default" "image" $ref "description" $ref "gpu" false "gpuModels" list) | toJson -}}
{{- else -}}
{{- $su.images | toJson -}}
{{- end -}}
{{- end -}}
