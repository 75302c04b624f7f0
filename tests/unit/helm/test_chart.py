"""The aispike-hub Helm chart, rendered by the pinned helm: lint and template with every CI values
file, the values schema, least-privilege RBAC, GPU-only placement of the agent and the pre-pullers,
and the hub's and service's config as the processes will load it."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from traitlets.config.loader import JSONFileConfigLoader, PyFileConfigLoader

from aispike_hub.kube.slices import device_class
from aispike_hub.quota import policy_from_dict

from .chart import CHART, CI_VALUES, KUBE_VERSION, by_kind, helm, one, render, template_args

VALUES_IDS = [p.name.removesuffix("-values.yaml") for p in CI_VALUES]


def values_file(name: str) -> Path:
    return CHART / "ci" / f"{name}-values.yaml"


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Every CI values file (and the chart's defaults) rendered once."""
    out = {"defaults": render()}
    for name in VALUES_IDS:
        out[name] = render([values_file(name)])
    return out


def test_ci_values_files_cover_the_required_setups() -> None:
    assert {"minimal", "hami", "mig", "usernamespaces"} <= set(VALUES_IDS)


@pytest.mark.parametrize("name", ["defaults", *VALUES_IDS])
def test_helm_lint(name: str) -> None:
    args = ["lint", str(CHART), "--strict", "--kube-version", KUBE_VERSION]
    if name != "defaults":
        args += ["--values", str(values_file(name))]
    out = helm(*args).stdout
    assert "1 chart(s) linted, 0 chart(s) failed" in out


def test_every_values_file_renders_the_components(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    for name, docs in rendered.items():
        deployments = {d["metadata"]["name"] for d in by_kind(docs, "Deployment")}
        assert deployments == {"rel-aispike-hub-hub", "rel-aispike-hub-proxy",
                               "rel-aispike-hub-service"}, name
        daemonsets = {d["metadata"]["name"] for d in by_kind(docs, "DaemonSet")}
        assert "rel-aispike-hub-agent" in daemonsets, name
        assert any(d.startswith("rel-aispike-hub-prepull-") for d in daemonsets), name
        for d in docs:  # every object carries the release's labels
            assert d["metadata"]["labels"]["app.kubernetes.io/instance"] == "rel", (name, d)


# --- values schema ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "where"),
    [
        ("hub.cookiesecret=abc", "/hub"),                       # typo'd key
        ("singleuser.imagess[0].name=x", "/singleuser"),        # typo'd key
        ("hubb.image.tag=1", "additional properties 'hubb'"),   # typo'd top-level key
        ("aispike.agent.enforce=block", "/aispike/agent/enforce"),
        ("singleuser.backend=hamii", "/singleuser/backend"),
        ("aispike.service.policy.tiers[0].name=a b", "/aispike/service/policy/tiers/0"),
        ("hub.db.type=mysql", "/hub/db/type"),
    ],
)
def test_schema_rejects_typos_and_bad_values(setting: str, where: str) -> None:
    proc = helm(*template_args(sets=[setting]), check=False)
    assert proc.returncode != 0, f"{setting} was accepted"
    assert "don't meet the specifications of the schema" in proc.stderr
    assert where in proc.stderr, proc.stderr


# --- RBAC: least privilege ----------------------------------------------------------------------

ALLOWED: dict[str, dict[tuple[str, str], set[str]]] = {
    # component -> (apiGroup, resource) -> verbs it may have (cluster-wide or in a namespace)
    "hub": {
        ("", "nodes"): {"get", "list", "watch"},
        ("", "pods"): {"get", "list", "watch", "create", "delete", "patch"},
        ("", "persistentvolumeclaims"): {"get", "list", "watch", "create", "delete", "patch"},
        ("", "events"): {"get", "list", "watch"},
        ("", "namespaces"): {"get", "create"},
        ("", "resourcequotas"): {"get", "create", "update"},
        ("resource.k8s.io", "resourceclaims"): {"get", "list", "watch", "create", "delete",
                                                "patch"},
        ("resource.k8s.io", "resourceslices"): {"get", "list", "watch"},
        ("resource.k8s.io", "deviceclasses"): {"get", "list", "watch"},
        ("scheduling.k8s.io", "priorityclasses"): {"get"},
    },
    "service": {
        ("", "nodes"): {"get", "list", "watch"},
        # reconciliation deletes pods of servers a hub without its database forgot
        ("", "pods"): {"get", "list", "watch", "delete"},
        ("", "namespaces"): {"get", "list", "watch"},
        # reconciliation deletes orphaned claims of ours (docs/operations.md)
        ("resource.k8s.io", "resourceclaims"): {"get", "list", "watch", "delete", "patch"},
        ("resource.k8s.io", "resourceslices"): {"get", "list", "watch"},
    },
    "agent": {
        ("resource.k8s.io", "resourceslices"): {"get", "list", "watch", "create", "update",
                                                "delete"},
        ("resource.k8s.io", "resourceclaims"): {"get"},
        ("", "nodes"): {"get", "patch"},
        ("", "pods"): {"list"},
    },
}
CLUSTER_WIDE_WRITES = {
    # writes that may be cluster-wide (ClusterRole): the agent's own node objects; the hub's only
    # with per-user namespaces, where KubeSpawner creates namespaces and spawns into each
    "agent": {("resource.k8s.io", "resourceslices"), ("", "nodes")},
    "hub": set(),
}
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}


def grants(docs: list[dict[str, Any]]) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """ServiceAccount name -> [(Role or ClusterRole kind, rule)] through the rendered bindings."""
    roles = {(d["kind"], d["metadata"]["name"]): d for d in docs
             if d["kind"] in ("Role", "ClusterRole")}
    out: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for b in docs:
        if b["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        role = roles[(b["roleRef"]["kind"], b["roleRef"]["name"])]
        for subject in b["subjects"]:
            assert subject["kind"] == "ServiceAccount", b
            for rule in role["rules"]:
                out.setdefault(subject["name"], []).append((b["kind"], rule))
    return out


@pytest.mark.parametrize("name", ["defaults", *VALUES_IDS])
def test_rbac_gives_each_component_no_more_than_it_needs(
    rendered: dict[str, list[dict[str, Any]]], name: str
) -> None:
    docs = rendered[name]
    user_namespaces = name == "usernamespaces"
    by_sa = grants(docs)
    assert set(by_sa) <= {f"rel-aispike-hub-{c}" for c in ALLOWED}, by_sa.keys()
    for sa, rules in by_sa.items():
        component = sa.removeprefix("rel-aispike-hub-")
        for binding, rule in rules:
            assert "resourceNames" not in rule or rule["resourceNames"], rule
            assert "nonResourceURLs" not in rule, (sa, rule)
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    verbs = set(rule["verbs"])
                    assert "*" not in verbs | {group, resource}, (sa, rule)
                    assert resource != "secrets", f"{sa} may read secrets: {rule}"
                    assert not verbs & {"escalate", "bind", "impersonate"}, (sa, rule)
                    allowed = ALLOWED[component].get((group, resource))
                    assert allowed is not None, f"{sa}: {group}/{resource} is not needed"
                    assert verbs <= allowed, f"{sa}: {group}/{resource} {verbs - allowed}"
                    if binding == "ClusterRoleBinding" and verbs & WRITE_VERBS:
                        ok = CLUSTER_WIDE_WRITES.get(component, set())
                        hub_userns = component in ("hub", "service") and user_namespaces
                        assert (group, resource) in ok or hub_userns, (
                            f"{sa}: cluster-wide {verbs & WRITE_VERBS} on {group}/{resource}")
    hub_writes_cluster_wide = any(
        b == "ClusterRoleBinding" and set(r["verbs"]) & WRITE_VERBS
        for b, r in by_sa["rel-aispike-hub-hub"])
    assert hub_writes_cluster_wide == user_namespaces
    # Pods that never talk to Kubernetes get no token at all.
    for d in [*by_kind(docs, "Deployment"), *by_kind(docs, "DaemonSet")]:
        spec = d["spec"]["template"]["spec"]
        if "serviceAccountName" not in spec:
            assert spec["automountServiceAccountToken"] is False, d["metadata"]["name"]


# --- GPU nodes only -----------------------------------------------------------------------------


def test_agent_runs_on_gpu_nodes_with_the_kubelet_plugin_dirs(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    agent = one(rendered["defaults"], "DaemonSet", "rel-aispike-hub-agent")
    spec = agent["spec"]["template"]["spec"]
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert {"key": "aispike.io/gpu-model", "operator": "Exists"} in [
        e for t in terms["nodeSelectorTerms"] for e in t["matchExpressions"]]
    assert spec["hostPID"] is True
    paths = {v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
    assert paths == {"/var/lib/kubelet/plugins_registry", "/var/lib/kubelet/plugins",
                     "/var/run/cdi", "/var/lib/aispike-hub/dra", "/var/cache/aispike/datasets"}
    command = spec["containers"][0]["command"]
    assert {"--publish", "--dra-plugin", "--dataset-cache-dir=/var/cache/aispike/datasets"} <= set(
        command)
    assert agent["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == "9402"
    # MIG backend without the DRA plugin: no kubelet plugin mounts, the dataset cache stays.
    mig = one(rendered["mig"], "DaemonSet", "rel-aispike-hub-agent")["spec"]["template"]["spec"]
    assert {v["hostPath"]["path"] for v in mig["volumes"] if "hostPath" in v} == {
        "/var/cache/aispike/datasets"}
    assert "--dra-plugin" not in mig["containers"][0]["command"]
    hami = one(rendered["hami"], "DaemonSet", "rel-aispike-hub-agent")["spec"]["template"]["spec"]
    assert "--enforce=warn" in hami["containers"][0]["command"]
    assert "KILL" in hami["containers"][0]["securityContext"]["capabilities"]["add"]


def prepull_affinity(ds: dict[str, Any]) -> list[dict[str, Any]] | None:
    spec = ds["spec"]["template"]["spec"]
    if "affinity" not in spec:
        return None
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    return [e for t in terms["nodeSelectorTerms"] for e in t["matchExpressions"]]


def test_prepuller_puts_each_image_only_where_it_can_run(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["hami"]
    pytorch = one(docs, "DaemonSet", "rel-aispike-hub-prepull-pytorch")
    assert pytorch["spec"]["template"]["spec"]["initContainers"][0]["image"] == (
        "quay.io/jupyter/pytorch-notebook:cuda12-2026-01-05")
    assert prepull_affinity(pytorch) == [{"key": "aispike.io/gpu-model", "operator": "In",
                                          "values": ["NVIDIA-A100-SXM4-80GB",
                                                     "NVIDIA-H100-80GB-HBM3"]}]
    assert prepull_affinity(one(docs, "DaemonSet", "rel-aispike-hub-prepull-minimal")) is None
    any_gpu = one(rendered["defaults"], "DaemonSet", "rel-aispike-hub-prepull-pytorch")
    assert prepull_affinity(any_gpu) == [{"key": "aispike.io/gpu-model", "operator": "Exists"}]


# --- cluster-wide objects -----------------------------------------------------------------------


def test_device_class_and_priority_classes_from_tiers(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    dc = one(rendered["defaults"], "DeviceClass", "gpu.aispike.io")
    assert dc["spec"] == device_class()["spec"]
    assert not list(by_kind(rendered["hami"], "DeviceClass"))
    pcs = {d["metadata"]["name"]: d for d in by_kind(rendered["usernamespaces"], "PriorityClass")}
    policy = policy_from_dict(yaml_policy("usernamespaces"))
    assert set(pcs) == {t.kube_priority_class for t in policy.tiers} == {
        "aispike-batch", "aispike-interactive", "aispike-deadline-tier"}
    for tier in policy.tiers:
        pc = pcs[tier.kube_priority_class]
        assert pc["value"] == tier.priority
        assert pc.get("preemptionPolicy", "PreemptLowerPriority") == (
            "PreemptLowerPriority" if tier.preempts else "Never")


def yaml_policy(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load(values_file(name).read_text())["aispike"]["service"]["policy"])


# --- the config files as the processes load them ------------------------------------------------


def config_dir(docs: list[dict[str, Any]], name: str, tmp_path: Path) -> Path:
    cm = one(docs, "ConfigMap", name)
    tmp_path.mkdir(parents=True, exist_ok=True)
    for key, text in cm["data"].items():
        (tmp_path / key).write_text(text)
    return tmp_path


def test_hub_config_loads_and_wires_spawner_service_and_proxy(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aispike_hub.admission.client import AdmissionClient
    from aispike_hub.spawner.kube import AISpikeSpawner

    monkeypatch.setenv("AISPIKE_SERVICE_TOKEN", "s3cret")
    for name, docs in rendered.items():
        d = config_dir(docs, "rel-aispike-hub-hub", tmp_path / name)
        if name == "minimal":
            (d / "extra-zz.py").write_text("c.JupyterHub.admin_access = True\n")
        config = PyFileConfigLoader("jupyterhub_config.py", path=str(d)).load_config()
        hub = config.JupyterHub
        assert hub.spawner_class == "aispike"
        assert hub.hub_connect_url == "http://rel-aispike-hub-hub:8081"
        assert config.ConfigurableHTTPProxy.api_url == "http://rel-aispike-hub-proxy-api:8001"
        assert config.ConfigurableHTTPProxy.should_start is False
        assert hub.services == [{
            "name": "aispike", "url": "http://rel-aispike-hub-service:10101",
            "api_token": "s3cret", "oauth_no_confirm": True,
            "oauth_client_allowed_scopes": ["custom:aispike:admin", "custom:aispike:idle"]}]
        assert {r["name"] for r in hub.load_roles} == {
            "aispike", "aispike-admins", "aispike-metrics", "user"}
        # The service's idle monitor lists users and their servers' activity, stops servers and
        # asks their kernels (aispike_hub/service/idle/); admission needs admin:servers.
        (service_role,) = [r for r in hub.load_roles if r["name"] == "aispike"]
        assert set(service_role["scopes"]) == {
            "admin:servers", "list:users", "read:users", "read:users:activity",
            "read:users:groups", "read:groups", "read:servers", "servers", "access:servers",
            "custom:aispike:admit"}
        # A restarted proxy pod (routes in memory) gets its routes back within a minute.
        assert hub.last_activity_interval == 60
        # Notebook servers find the service by name, with a token that may call it.
        spawner = config.AISpikeSpawner
        assert spawner.environment["AISPIKE_SERVICE_URL"] == (
            "http://rel-aispike-hub-service.hubns.svc:10101/services/aispike/")
        assert "access:services!service=aispike" in spawner.server_token_scopes
        assert config.AdmissionClient.url == (
            "http://rel-aispike-hub-service:10101/services/aispike/")
        traits = set(AISpikeSpawner.class_trait_names(config=True))
        assert set(config.AISpikeSpawner) <= traits, set(config.AISpikeSpawner) - traits
        assert set(config.AdmissionClient) <= set(AdmissionClient.class_trait_names(config=True))
        if name == "minimal":
            assert hub.admin_access is True
            assert [i["name"] for i in config.AISpikeSpawner.images] == ["minimal"]
    assert rendered_spawner(rendered, "hami").backend == "hami"
    mig = rendered_spawner(rendered, "mig")
    assert (mig.backend, mig.mig_profiles[0]) == ("mig", "1g.10gb")
    userns = rendered_spawner(rendered, "usernamespaces")
    assert userns.enable_user_namespaces is True
    assert userns.user_namespace_template == "aispike-{username}"


def rendered_spawner(rendered: dict[str, list[dict[str, Any]]], name: str) -> SimpleNamespace:
    cm = one(rendered[name], "ConfigMap", "rel-aispike-hub-hub")
    return SimpleNamespace(**json.loads(cm["data"]["values.json"])["computed"]["AISpikeSpawner"])


def test_service_config_is_a_valid_policy_and_traits(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    from aispike_hub.service.app import AISpikeService

    traits = set(AISpikeService.class_trait_names(config=True))
    for name, docs in rendered.items():
        d = config_dir(docs, "rel-aispike-hub-service", tmp_path / name)
        config = JSONFileConfigLoader("aispike_service_config.json", path=str(d)).load_config()
        assert set(config.AISpikeService) <= traits
        policy_from_dict(config.AISpikeService.policy)  # raises with the field named
    deployment = one(rendered["defaults"], "Deployment", "rel-aispike-hub-service")
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["JUPYTERHUB_API_URL"]["value"] == "http://rel-aispike-hub-hub:8081/hub/api"
    assert env["JUPYTERHUB_API_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "serviceToken"


def test_secret_checksums_hash_the_secret_this_render_holds() -> None:
    """Generated tokens are made once per render: the hub's, proxy's and service's
    checksum/secret hash the very Secret rendered beside them.  (Were each include to draw new
    random values, a fresh install's checksums would not match the stored Secret, and the first
    `helm upgrade`, which finds the Secret, would roll the proxy and lose its routes.)"""
    out = helm(*template_args()).stdout
    (secret_text,) = [part.split("\n", 1)[1] for part in out.split("---\n# Source: ")
                      if part.startswith("aispike-hub/templates/secret.yaml\n")]
    digest = hashlib.sha256(secret_text.encode()).hexdigest()
    docs = [d for d in yaml.safe_load_all(out) if d]
    for name in ("hub", "proxy", "service"):
        deployment = one(docs, "Deployment", f"rel-aispike-hub-{name}")
        assert deployment["spec"]["template"]["metadata"]["annotations"]["checksum/secret"] == (
            digest), name
    secret = one(docs, "Secret", "rel-aispike-hub-secret")
    assert {len(base64.b64decode(v)) for v in secret["data"].values()} == {64}
