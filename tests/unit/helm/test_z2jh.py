"""A Zero to JupyterHub admin's path: their config.yaml renders unchanged and means what it meant.

Rendered with the pinned helm of the test stack (no cluster): the values land on the traitlets
KubeSpawner and JupyterHub read (storage, resources, environment, roles, services), culling is on
by default, the admin panel's scopes are granted to hub admins, notebooks cannot reach the cloud
metadata address, and what the chart cannot honour fails with a sentence naming the key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from traitlets.config import PyFileConfigLoader

from .chart import CHART, REPO, helm, one, render, template_args

Z2JH_CONFIG = REPO / "tests" / "fixtures" / "charts" / "z2jh" / "config.yaml"
HUB_CM = "rel-aispike-hub-hub"


def computed(docs: list[dict[str, Any]]) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(one(docs, "ConfigMap", HUB_CM)["data"]["values.json"])
    return doc


def service_config(docs: list[dict[str, Any]]) -> dict[str, Any]:
    cm = one(docs, "ConfigMap", "rel-aispike-hub-service")
    doc: dict[str, Any] = json.loads(cm["data"]["aispike_service_config.json"])
    return doc


def load_hub_config(docs: list[dict[str, Any]], tmp_path: Path,
                    monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("AISPIKE_SERVICE_TOKEN", "s3cret")
    cm = one(docs, "ConfigMap", HUB_CM)
    for key, text in cm["data"].items():
        (tmp_path / key).write_text(text)
    return PyFileConfigLoader("jupyterhub_config.py", path=str(tmp_path)).load_config()


def refused(*sets: str) -> str:
    """helm template's error text for values the chart must refuse."""
    proc = helm(*template_args(sets=sets), check=False)
    assert proc.returncode != 0, f"rendered although it should refuse: {sets}"
    return proc.stderr


# --- the schema documents itself ------------------------------------------------------------


def test_every_key_of_the_schema_has_a_description() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    missing: list[str] = []

    def walk(node: dict[str, Any], path: str) -> None:
        for key, sub in (node.get("properties") or {}).items():
            where = f"{path}.{key}" if path else key
            if not sub.get("description"):
                missing.append(where)
            walk(sub, where)

    walk(schema, "")
    assert not missing, f"keys without a description: {missing}"


# --- a Z2JH config.yaml, unchanged ------------------------------------------------------------


def test_a_z2jh_config_renders_unchanged_and_keeps_its_meaning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = render([Z2JH_CONFIG])
    spawner = computed(docs)["computed"]["AISpikeSpawner"]
    # singleuser.image replaces the image list; resources, placement, environment carry over.
    assert [i["image"] for i in spawner["images"]] == [
        "quay.io/jupyter/datascience-notebook:2026-01-05"]
    assert (spawner["cpu_limit"], spawner["cpu_guarantee"]) == (4, 0.5)
    assert (spawner["mem_limit"], spawner["mem_guarantee"]) == ("8G", "1G")
    assert spawner["node_selector"] == {"node-pool": "notebooks"}
    # ... and the hub's placer and the service's admission place on those nodes only
    assert computed(docs)["computed"]["Inventory"] == {"node_selector": {"node-pool": "notebooks"}}
    assert service_config(docs)["Inventory"] == {"node_selector": {"node-pool": "notebooks"}}
    assert spawner["tolerations"][0]["key"] == "dedicated"
    assert spawner["environment"] == {"EDITOR": "vim"}
    assert spawner["cmd"] == ["start-singleuser.sh", "--SingleUserNotebookApp.default_url=/lab"]
    # Storage: one PVC per user (and server), from the admin's StorageClass, mounted as home.
    assert spawner["storage_pvc_ensure"] is True
    assert spawner["storage_capacity"] == "20Gi"
    assert spawner["storage_class"] == "fast-ssd"
    assert spawner["pvc_name_template"] == "claim-{user_server}"
    assert spawner["volumes"] == [{"name": "volume-{user_server}",
                                   "persistentVolumeClaim": {"claimName": "claim-{user_server}"}}]
    assert spawner["volume_mounts"] == [{"name": "volume-{user_server}",
                                         "mountPath": "/home/jovyan"}]
    # The hub: env with valueFrom, extra volumes, limits, named servers.
    hub = one(docs, "Deployment", "rel-aispike-hub-hub")["spec"]["template"]["spec"]
    env = {e["name"]: e for e in hub["containers"][0]["env"]}
    assert env["OAUTH_SECRET"]["valueFrom"]["secretKeyRef"]["name"] == "my-oauth-secret"
    assert env["JUPYTERHUB_CRYPT_KEY"]["value"].startswith("0123")
    assert {"name": "hub-templates", "configMap": {"name": "hub-templates"}} in hub["volumes"]
    assert any(m["name"] == "hub-templates" for m in hub["containers"][0]["volumeMounts"])
    jh = computed(docs)["computed"]["JupyterHub"]
    assert (jh["concurrent_spawn_limit"], jh["active_server_limit"]) == (20, 100)
    assert jh["allow_named_servers"] is True
    # Culling as configured, by the idle monitor.
    idle = service_config(docs)["IdleMonitor"]
    assert (idle["mode"], idle["timeout"], idle["poll_interval"], idle["max_age"]) == (
        "stop", 7200, 300, 86400)
    # The Ingress, with cert-manager's annotation and TLS.
    ingress = one(docs, "Ingress", "rel-aispike-hub")
    assert ingress["metadata"]["annotations"] == {"cert-manager.io/cluster-issuer": "letsencrypt"}
    rule = ingress["spec"]["rules"][0]
    assert rule["host"] == "hub.example.org"
    assert rule["http"]["paths"][0]["backend"]["service"]["name"] == "rel-aispike-hub-proxy-public"
    assert ingress["spec"]["tls"][0]["secretName"] == "hub-example-org-tls"
    proxy = one(docs, "Deployment", "rel-aispike-hub-proxy")
    assert "--no-include-prefix" in proxy["spec"]["template"]["spec"]["containers"][0]["command"]
    # Roles and services of the config are the hub's, beside the chart's own.
    config = load_hub_config(docs, tmp_path, monkeypatch)
    roles = {r["name"]: r for r in config.JupyterHub.load_roles}
    assert roles["teaching-assistants"]["groups"] == ["tas"]
    assert "adminuser1" in roles["aispike-admins"]["users"]
    services = {s["name"]: s for s in config.JupyterHub.services}
    assert services["my-service"] == {"name": "my-service", "url": "http://my-service:8000",
                                      "api_token": "a-token-for-my-service"}


# --- what a default install gives -------------------------------------------------------------


def test_default_install_culls_keeps_homes_and_opens_the_panel_to_admins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = render()
    # Culling on, as Z2JH admins expect: warn, then stop after the grace.
    idle = service_config(docs)["IdleMonitor"]
    assert (idle["mode"], idle["timeout"], idle["grace"]) == ("stop", 3600, 900)
    # Homes survive stop, cull and preemption: a dynamic 10 GiB PVC per user.
    spawner = computed(docs)["computed"]["AISpikeSpawner"]
    assert (spawner["storage_pvc_ensure"], spawner["storage_capacity"]) == (True, "10Gi")
    # The hub's single-user server, whatever the image's own CMD (Z2JH's singleuser.cmd); null
    # leaves it to the image.
    assert spawner["cmd"] == "jupyterhub-singleuser"
    unset = computed(render(sets=["singleuser.cmd=null"]))["computed"]["AISpikeSpawner"]
    assert "cmd" not in unset
    # The start timeout covers the queue; the unschedulable abort waits for an autoscaler.
    assert spawner["start_timeout"] > service_config(docs)["AISpikeService"]["queue_timeout"]
    assert spawner["unschedulable_timeout"] >= 300
    # Every custom scope the code uses is defined; the panel's OAuth token may carry them.
    jh = computed(docs)["computed"]["JupyterHub"]
    assert set(jh["custom_scopes"]) == {"custom:aispike:admin", "custom:aispike:admit",
                                        "custom:aispike:idle", "custom:aispike:notify"}
    config = load_hub_config(docs, tmp_path, monkeypatch)
    (aispike,) = [s for s in config.JupyterHub.services if s["name"] == "aispike"]
    assert set(aispike["oauth_client_allowed_scopes"]) == {
        "custom:aispike:admin", "custom:aispike:idle"}
    roles = {r["name"]: r for r in config.JupyterHub.load_roles}
    assert roles["aispike-admins"]["groups"] == ["aispike-admins"]
    assert "custom:aispike:admin" in roles["aispike-admins"]["scopes"]
    # Scraping needs JupyterHub's read:metrics, not the quota-editing scope.
    assert roles["aispike-metrics"]["scopes"] == ["read:metrics"]


def test_an_admins_own_user_role_keeps_notebooks_access_to_the_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = render(sets=["hub.loadRoles.user.scopes={self}",
                        "hub.config.Authenticator.admin_users={root}"])
    config = load_hub_config(docs, tmp_path, monkeypatch)
    roles = {r["name"]: r for r in config.JupyterHub.load_roles}
    assert roles["user"]["scopes"] == ["self", "access:services!service=aispike"]
    assert roles["aispike-admins"]["users"] == ["root"]


def test_notebook_egress_blocks_the_cloud_metadata_address_by_default() -> None:
    policy = one(render(), "NetworkPolicy", "rel-aispike-hub-singleuser")
    assert "Egress" in policy["spec"]["policyTypes"]
    blocks = [b["ipBlock"] for rule in policy["spec"]["egress"] for b in rule.get("to", [])
              if "ipBlock" in b]
    internet = [b for b in blocks if b["cidr"] == "0.0.0.0/0"]
    assert internet and "169.254.0.0/16" in internet[0]["except"]
    assert {"cidr": "169.254.169.254/32"} not in blocks
    allow = "singleuser.networkPolicy.egressAllowRules.cloudMetadataServer=true"
    opened = one(render(sets=[allow]), "NetworkPolicy", "rel-aispike-hub-singleuser")
    assert {"ipBlock": {"cidr": "169.254.169.254/32"}} in [
        b for rule in opened["spec"]["egress"] for b in rule.get("to", [])]


def test_tls_at_the_proxy_and_a_gateway_route() -> None:
    docs = render(sets=["proxy.https.enabled=true", "proxy.https.secret.name=hub-tls",
                        "httpRoute.enabled=true", "httpRoute.parentRefs[0].name=gw"])
    proxy = one(docs, "Deployment", "rel-aispike-hub-proxy")["spec"]["template"]["spec"]
    command = proxy["containers"][0]["command"]
    assert "--ssl-cert=/etc/chp/tls/tls.crt" in command and "--redirect-to=443" in command
    assert proxy["volumes"] == [{"name": "tls", "secret": {"secretName": "hub-tls"}}]
    public = one(docs, "Service", "rel-aispike-hub-proxy-public")
    assert {p["name"] for p in public["spec"]["ports"]} == {"http", "https"}
    route = one(docs, "HTTPRoute", "rel-aispike-hub")
    assert route["spec"]["parentRefs"] == [{"name": "gw"}]


def test_an_existing_secret_replaces_the_charts() -> None:
    docs = render(sets=["hub.existingSecret=mine"])
    assert not [d for d in docs if d["kind"] == "Secret"]
    hub = one(docs, "Deployment", "rel-aispike-hub-hub")
    refs = {e["valueFrom"]["secretKeyRef"]["name"]
            for e in hub["spec"]["template"]["spec"]["containers"][0]["env"]
            if "secretKeyRef" in e.get("valueFrom", {})}
    assert refs == {"mine"}


# --- what cannot be honoured says so ----------------------------------------------------------


@pytest.mark.parametrize(
    ("sets", "says"),
    [
        (["singleuser.startTimeout=300"], "singleuser.startTimeout (300 s) must be longer than "
                                          "aispike.service.queueTimeout (600 s)"),
        (["singleuser.profileList[0].display_name=GPU"], "singleuser.profileList is not supported"),
        (["scheduling.userPlaceholder.enabled=true"], "scheduling.userPlaceholder.enabled"),
        (["singleuser.cloudMetadata.blockWithIptables=true"],
         "singleuser.cloudMetadata.blockWithIptables"),
        (["proxy.https.enabled=true", "proxy.https.type=letsencrypt"], "proxy.https.type"),
        (["proxy.https.enabled=true"], "proxy.https.secret.name"),
        (["singleuser.storage.type=static"], "singleuser.storage.static.pvcName"),
    ],
)
def test_what_the_chart_cannot_honour_fails_naming_the_key(sets: list[str], says: str) -> None:
    assert says in refused(*sets)


def test_older_clusters_install_without_dra_and_the_dra_backend_says_why() -> None:
    args = ["template", "rel", str(CHART), "--namespace", "hubns", "--kube-version", "1.30.0"]
    ok = helm(*args, "--set", "singleuser.backend=nvidia", check=False)
    assert ok.returncode == 0, ok.stderr
    no = helm(*args, check=False)
    assert no.returncode != 0
    assert "singleuser.backend aispike needs Kubernetes 1.34 or later" in no.stderr


def test_helm_template_works_without_naming_a_kube_version() -> None:
    proc = helm("template", "rel", str(CHART), check=False)
    assert proc.returncode == 0, proc.stderr


def test_agents_are_found_by_their_headless_service_and_reached_by_the_service_only() -> None:
    docs = render()
    agents = one(docs, "Service", "rel-aispike-hub-agent")
    assert agents["spec"]["clusterIP"] == "None"
    idle = service_config(docs)["IdleMonitor"]
    assert idle["agent_service"] == "rel-aispike-hub-agent.hubns.svc:9402"
    policy = one(docs, "NetworkPolicy", "rel-aispike-hub-agent")
    peers = policy["spec"]["ingress"][0]["from"]
    assert peers[0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "service"
    assert all(p.get("podSelector", {}).get("matchLabels", {}).get("component")
               != "singleuser-server" for p in peers)


def test_a_bad_quota_policy_fails_the_install_naming_the_field() -> None:
    says = refused("aispike.service.policy.defaults.quota.gpu_memory=lots")
    assert "gpu_memory" in says and "/aispike/service/policy/defaults/quota" in says, says
