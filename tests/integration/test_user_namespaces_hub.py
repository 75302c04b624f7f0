"""A real hub whose AISpike service reads the cluster from Kubernetes, with user namespaces.

- The service runs with ``--AISpikeService.inventory=kubernetes`` (no node file): it learns the
  nodes and GPUs from our ResourceSlices, and counts each server's real pinned claim and pod.
- ``KubeSpawner.enable_user_namespaces``: each user's servers run in their own namespace, where
  the spawner keeps a ResourceQuota equal to the user's ceiling; the API server then refuses a
  claim beyond it even when it is created around the hub (second line of defence).
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from kubernetes.client.rest import ApiException

from aispike_hub.kube.api import KubeJson
from aispike_hub.kube.claims import HUB_SERVER_ANNOTATION, claim_name
from aispike_hub.kube.namespace_quota import CLAIMS_QUOTA, DEVICES_QUOTA, QUOTA_NAME

from . import dra_burst
from .conftest import (
    REPO,
    GpuNodes,
    RunningHub,
    TestCluster,
    _free_port,
    create_namespace,
    new_username,
    wait_until,
)
from .podrunner import PodRunner

PRIORITY_CLASS = f"uns-normal-{secrets.token_hex(3)}"
POLICY = {"defaults": {"quota": {"servers": 2, "gpus": 2, "gpu_memory": "40Gi", "cpu": 4,
                                 "memory": "16Gi"}},
          "tiers": [{"name": "normal", "priority": 100, "priority_class": PRIORITY_CLASS}],
          "default_tier": "normal"}


class Stack:
    def __init__(self, cluster: TestCluster, hub: RunningHub, service_url: str,
                 hub_namespace: str, model: str, node: str) -> None:
        self.cluster, self.hub, self.service_url = cluster, hub, service_url
        self.hub_namespace, self.model, self.node = hub_namespace, model, node

    def service(self, method: str, path: str, **kw: Any) -> requests.Response:
        return requests.request(method, f"{self.service_url}api/{path}", timeout=30,
                                headers={"Authorization": f"token {self.hub.token}"}, **kw)

    def user(self) -> tuple[str, str]:
        """A new hub user and their namespace (made here so the pod runner runs its pods)."""
        name = new_username()
        assert self.hub.api("POST", f"/users/{name}").status_code == 201
        return name, create_namespace(self.cluster, f"{self.hub_namespace}-{name}")

    def server(self, user: str, server: str) -> dict[str, Any]:
        model = self.hub.api("GET", f"/users/{user}").json()
        return dict((model.get("servers") or {}).get(server) or {})


@pytest.fixture(scope="module")
def stack(cluster: TestCluster, hub_factory: Callable[..., RunningHub], hub_namespace: str,
          pod_runner: PodRunner) -> Iterator[Stack]:
    model = f"TEST-uns-{secrets.token_hex(3)}"
    nodes = GpuNodes(cluster, f"u{secrets.token_hex(3)}")
    (node,) = nodes({"nodes": [{"name": "uns", "cpu": "32", "memory": "128Gi",
                                "gpus": [{"model": model, "memory": "80Gi", "count": 2}]}]})
    cluster.scheduling.create_priority_class({"metadata": {"name": PRIORITY_CLASS},
                                              "value": 100, "description": "tests"})
    port = _free_port()
    token = secrets.token_hex(16)
    service_url = f"http://127.0.0.1:{port}/services/aispike/"
    command = [sys.executable, "-m", "aispike_hub.cli", "service",
               "--db-url=sqlite:///aispike-uns.sqlite", "--AISpikeService.inventory=kubernetes",
               f"--AISpikeService.policy={json.dumps(POLICY)}",
               "--AISpikeService.tick_interval=0.5",
               *(f"--Inventory.node_selector={k}={v}" for k, v in nodes.selector.items())]
    selector = dict(nodes.selector)
    hub = hub_factory(
        "aispike-user-namespaces",
        f"""
        c.JupyterHub.spawner_class = "aispike"
        c.AISpikeSpawner.namespace = {hub_namespace!r}
        c.AISpikeSpawner.enable_user_namespaces = True
        c.AISpikeSpawner.user_namespace_template = {hub_namespace + "-{username}"!r}
        c.AISpikeSpawner.node_selector = {selector!r}
        c.Inventory.node_selector = {selector!r}
        c.AISpikeSpawner.image = "quay.io/jupyter/base-notebook:2026-01-05"
        c.AISpikeSpawner.cmd = ["jupyterhub-singleuser"]
        c.AISpikeSpawner.start_timeout = 120
        c.AISpikeSpawner.http_timeout = 60
        c.JupyterHub.allow_named_servers = True
        c.JupyterHub.custom_scopes = {{
            "custom:aispike:admin": {{"description": "edit AISpike quotas"}},
            "custom:aispike:admit": {{"description": "ask AISpike to admit spawns"}},
        }}
        c.JupyterHub.services.append({{
            "name": "aispike", "url": "http://127.0.0.1:{port}", "api_token": {token!r},
            "command": {command!r},
            "environment": {{"PYTHONPATH": {str(REPO)!r},
                             "KUBECONFIG": {os.environ.get("KUBECONFIG", "")!r}}},
            "oauth_no_confirm": True,
        }})
        c.JupyterHub.load_roles += [
            {{"name": "aispike", "services": ["aispike"],
              "scopes": ["admin:servers", "list:users", "read:users", "read:groups",
                         "custom:aispike:admit"]}},
            {{"name": "aispike-admins", "services": ["tests"],
              "scopes": ["custom:aispike:admin", "access:services!service=aispike"]}},
        ]
        c.AdmissionClient.url = {service_url!r}
        c.AdmissionClient.api_token = {token!r}
        c.AdmissionClient.poll_interval = 0.5
        """,
    )

    def answers() -> bool:
        try:
            return requests.get(f"{service_url}api/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    wait_until(answers, 90, "the AISpike service (Kubernetes inventory) to answer")
    try:
        yield Stack(cluster, hub, service_url, hub_namespace, model, node.name)
    finally:
        nodes.delete_all()
        cluster.scheduling.delete_priority_class(PRIORITY_CLASS)


def test_servers_in_user_namespaces_are_bounded_by_a_resource_quota_too(stack: Stack) -> None:
    user, namespace = stack.user()
    options = {"gpu_gib": 8, "cpu": 1, "memory_gib": 2}
    r = stack.hub.api("POST", f"/users/{user}/servers/a", json=options, timeout=120)
    assert r.status_code in (201, 202), r.text
    try:
        wait_until(lambda: stack.server(user, "a").get("ready"), 120, "server a ready")
    except AssertionError:
        raise AssertionError(f"hub log:\n{stack.hub.log_text()[-6000:]}") from None

    # The pod and its pinned claim are in the user's namespace, named for the hub server.
    pod_name = f"jupyter-{user}--a"
    pod = stack.cluster.core.read_namespaced_pod(pod_name, namespace)
    assert pod.metadata.annotations[HUB_SERVER_ANNOTATION] == f"{user}/a"
    api = KubeJson(stack.cluster.api)
    claim = api.get("resourceclaims", claim_name(pod_name), namespace)
    assert claim["metadata"]["annotations"][HUB_SERVER_ANNOTATION] == f"{user}/a"
    assert claim["status"]["allocation"]["devices"]["results"][0]["consumedCapacity"] == {
        "memory": "8Gi"}

    # The namespace's ResourceQuota is the user's ceiling, and the API server counts usage.
    quota = stack.cluster.core.read_namespaced_resource_quota(QUOTA_NAME, namespace)
    assert quota.spec.hard == {
        "requests.cpu": "4", "limits.cpu": "4", "requests.memory": "16Gi",
        "limits.memory": "16Gi", "pods": "2", CLAIMS_QUOTA: "2", DEVICES_QUOTA: "2"}
    wait_until(lambda: (q := stack.cluster.core.read_namespaced_resource_quota(
        QUOTA_NAME, namespace)).status.used and q.status.used.get(DEVICES_QUOTA) == "1"
        and q.status.used.get("pods") == "1", 30, "the quota to count the server")

    # The service reads the server's slice from Kubernetes: two whole GPUs no longer fit there.
    def fits_two_whole_gpus() -> bool:
        fit = stack.service("POST", "fit", json={"user": user, "request": {
            "gpu_count": 2, "allowed_models": [stack.model]}})
        assert fit.status_code == 200, fit.text
        return bool(fit.json()["fits_now"])
    assert not fits_two_whole_gpus()

    # Second line of defence: a claim for 2 more devices, made around the hub, is refused.
    extra = dra_burst.competitor_claim("around-the-hub", 8)
    extra["spec"]["devices"]["requests"][0]["exactly"]["count"] = 2
    with pytest.raises(ApiException) as refused:
        api.create("resourceclaims", extra, namespace)
    assert refused.value.status == 403 and "exceeded quota" in refused.value.body

    # Stopping frees everything: the pod, the claim, the quota's usage.
    r = stack.hub.api("DELETE", f"/users/{user}/servers/a", timeout=120)
    assert r.status_code in (202, 204), r.text
    wait_until(lambda: not stack.server(user, "a"), 90, "server a stopped")

    def claim_gone() -> bool:
        try:
            api.get("resourceclaims", claim_name(pod_name), namespace)
        except ApiException as e:
            return e.status == 404
        return False
    wait_until(claim_gone, 60, "the claim deleted with its server")
    wait_until(fits_two_whole_gpus, 30, "the service to see both GPUs free again")
