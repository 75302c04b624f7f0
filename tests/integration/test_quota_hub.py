"""Quotas, the queue and preemption through a real hub, the real AISpike service and kwok pods.

One hub for the module: KubeSpawner (via ``quota_spawner.QuotaKubeSpawner``, which asks the
service for admission), the AISpike service as a hub-managed service (its own process, sqlite
store, OAuth with custom scopes), and one kwok node with one 80 GiB GPU that the service's
inventory describes.  Each test sets the policy for its own users through the service's API.
"""

from __future__ import annotations

import concurrent.futures
import secrets
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from .conftest import REPO, GpuNodes, RunningHub, TestCluster, _free_port, new_username, wait_until
from .podrunner import PodRunner

HERE = Path(__file__).parent
NODE = {"name": "quota-gpu", "cpu": "64", "memory": "512Gi",
        "gpus": [{"model": "NVIDIA A100-SXM4-80GB", "memory": "80Gi", "count": 1}]}


class Stack:
    def __init__(self, hub: RunningHub, service_url: str, token: str, node: str) -> None:
        self.hub = hub
        self.service_url = service_url
        self.token = token
        self.node = node

    def service(self, method: str, path: str, token: str | None = None, **kw: Any
                ) -> requests.Response:
        return requests.request(
            method, f"{self.service_url}api/{path}", timeout=30,
            headers={"Authorization": f"token {token or self.hub.token}"}, **kw)

    def set_user(self, user: str, entry: dict[str, Any]) -> None:
        r = self.service("PUT", f"policy/users/{user}", json=entry)
        assert r.status_code == 200, r.text

    def start(self, user: str, server: str, gib: int) -> requests.Response:
        return self.hub.api("POST", f"/users/{user}/servers/{server}", json={"gpu_gib": gib},
                            timeout=120)

    def ready(self, user: str) -> set[str]:
        model = self.hub.api("GET", f"/users/{user}").json()
        return {name for name, s in (model.get("servers") or {}).items() if s.get("ready")}

    def stop(self, user: str, server: str) -> None:
        r = self.hub.api("DELETE", f"/users/{user}/servers/{server}", timeout=120)
        assert r.status_code in (202, 204), r.text

    def user_token(self, user: str) -> str:
        r = self.hub.api("POST", f"/users/{user}/tokens", json={"note": "test"})
        assert r.status_code == 201, r.text
        return str(r.json()["token"])


@pytest.fixture(scope="module")
def stack(cluster: TestCluster, hub_factory: Callable[..., RunningHub], hub_namespace: str,
          pod_runner: PodRunner, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    nodes = GpuNodes(cluster, f"q{secrets.token_hex(3)}")
    (node,) = nodes({"nodes": [NODE]})
    workdir = tmp_path_factory.mktemp("aispike-service")
    spec = workdir / "nodes.yaml"
    spec.write_text(yaml.safe_dump({"nodes": [{**NODE, "name": node.name}]}))
    port = _free_port()
    token = secrets.token_hex(16)
    service_url = f"http://127.0.0.1:{port}/services/aispike/"
    command = [sys.executable, "-m", "aispike_hub.cli", "service",
               f"--db-url=sqlite:///{workdir}/aispike.sqlite", f"--nodes-file={spec}",
               "--AISpikeService.preemption_grace=2", "--AISpikeService.tick_interval=0.5",
               "--AISpikeService.queue_timeout=120"]
    hub = hub_factory(
        "quota",
        f"""
        import sys
        sys.path.insert(0, {str(HERE)!r})
        c.JupyterHub.spawner_class = "quota_spawner.QuotaKubeSpawner"
        c.KubeSpawner.namespace = {hub_namespace!r}
        c.KubeSpawner.image = "quay.io/jupyter/base-notebook:2026-01-05"
        c.KubeSpawner.cmd = ["jupyterhub-singleuser"]
        c.KubeSpawner.start_timeout = 150
        c.KubeSpawner.http_timeout = 60
        c.JupyterHub.allow_named_servers = True
        c.JupyterHub.named_server_limit_per_user = 0
        c.JupyterHub.custom_scopes = {{
            "custom:aispike:admin": {{"description": "edit AISpike quotas, read its audit log"}},
            "custom:aispike:admit": {{"description": "ask AISpike to admit spawns"}},
        }}
        c.JupyterHub.services.append({{
            "name": "aispike", "url": "http://127.0.0.1:{port}", "api_token": {token!r},
            "command": {command!r}, "environment": {{"PYTHONPATH": {str(REPO)!r}}},
            "oauth_no_confirm": True,
        }})
        c.JupyterHub.load_roles += [
            {{"name": "aispike", "services": ["aispike"],
              "scopes": ["admin:servers", "read:users", "read:groups",
                         "custom:aispike:admit"]}},
            {{"name": "aispike-admins", "services": ["tests"],
              "scopes": ["custom:aispike:admin", "access:services!service=aispike"]}},
            {{"name": "user", "scopes": ["self", "access:services!service=aispike"]}},
        ]
        c.AdmissionClient.url = {service_url!r}
        c.AdmissionClient.api_token = {token!r}
        c.AdmissionClient.poll_interval = 0.5
        """,
    )
    wait_until(lambda: _answers(service_url), 60, "the AISpike service to answer")
    try:
        yield Stack(hub, service_url, token, node.name)
    finally:
        nodes.delete_all()


def _answers(url: str) -> bool:
    try:
        return requests.get(f"{url}api/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _log_tail(stack: Stack) -> str:
    return stack.hub.log_text()[-6000:]


def test_twenty_concurrent_starts_end_exactly_at_the_quota(stack: Stack) -> None:
    user = new_username()
    stack.set_user(user, {"quota": {"servers": 4, "gpu_memory": "32Gi"}})
    assert stack.hub.api("POST", f"/users/{user}").status_code == 201
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda i: stack.start(user, f"s{i}", 8), range(20)))
    assert all(a.status_code in (201, 202, 400, 403, 500) for a in answers), \
        [a.text for a in answers]
    try:
        wait_until(lambda: len(stack.ready(user)) == 4, 150, "4 servers ready")
    except AssertionError:
        raise AssertionError(f"hub log:\n{_log_tail(stack)}") from None
    queue = stack.service("GET", "queue").json()
    mine = [t for t in queue["admitted"] if t["user"] == user]
    assert len(mine) == 4 and sum(t["charge"]["gpu_memory_mib"] for t in mine) == 32 * 1024
    audit = stack.service("GET", "audit", params={"action": "admission.refuse",
                                                  "limit": 100}).json()["entries"]
    refused = [e for e in audit if e["target"].startswith(f"{user}/")]
    assert len(refused) == 16
    assert any("you use 4 of 4 servers" in r for e in refused for r in e["detail"]["reasons"])
    for name in stack.ready(user):
        stack.stop(user, name)
    wait_until(lambda: not [t for t in stack.service("GET", "queue").json()["admitted"]
                            if t["user"] == user], 60, "reservations released")


def test_high_tier_preempts_low_tier_and_the_low_tier_user_sees_why(stack: Stack) -> None:
    low, high = new_username(), new_username()
    stack.set_user(low, {"tier": "low"})
    stack.set_user(high, {"tier": "high"})
    for u in (low, high):
        assert stack.hub.api("POST", f"/users/{u}").status_code == 201
    assert stack.start(low, "train", 60).status_code in (201, 202)
    wait_until(lambda: stack.ready(low) == {"train"}, 120, "low-tier server ready")

    assert stack.start(high, "urgent", 40).status_code in (201, 202)
    try:
        wait_until(lambda: stack.ready(high) == {"urgent"}, 120, "high-tier server ready")
    except AssertionError:
        raise AssertionError(f"hub log:\n{_log_tail(stack)}") from None
    wait_until(lambda: not stack.ready(low), 60, "low-tier server stopped")
    notices = stack.service("GET", "notices", token=stack.user_token(low)).json()["notices"]
    kinds = [n["kind"] for n in notices]
    assert "preemption-warning" in kinds and "preempted" in kinds, notices
    preempted = next(n for n in notices if n["kind"] == "preempted")
    assert f"tier 'high' server of {high}" in preempted["message"]
    audit = stack.service("GET", "audit", params={"action": "preemption.stop"}).json()
    assert any(e["target"] == f"{low}/train" for e in audit["entries"])
    stack.stop(high, "urgent")


def test_a_queued_spawn_starts_when_another_server_stops(stack: Stack) -> None:
    first, second = new_username(), new_username()
    for u in (first, second):
        assert stack.hub.api("POST", f"/users/{u}").status_code == 201
    assert stack.start(first, "big", 60).status_code in (201, 202)
    wait_until(lambda: stack.ready(first) == {"big"}, 120, "first server ready")

    assert stack.start(second, "next", 40).status_code in (201, 202)
    ticket = wait_until(
        lambda: (t := stack.service("GET", f"admissions/{second}/next").json())["state"]
        == "queued" and t, 30, "second request queued")
    assert ticket["position"] == 1 and "no room" in ticket["reasons"][0]
    # The user sees the same through the hub's spawn progress.
    events = stack.hub.get(f"hub/api/users/{second}/servers/next/progress", stream=True,
                           timeout=10)
    first_lines = [line for _, line in zip(range(6), events.iter_lines(), strict=False) if line]
    events.close()
    assert any(b"Waiting in the queue: position 1 of 1" in line for line in first_lines), \
        first_lines
    assert not stack.ready(second)

    stack.stop(first, "big")
    try:
        wait_until(lambda: stack.ready(second) == {"next"}, 120, "queued server started")
    except AssertionError:
        raise AssertionError(f"hub log:\n{_log_tail(stack)}") from None
    stack.stop(second, "next")


def test_policy_api_refuses_hostile_input_and_non_admins(stack: Stack) -> None:
    user = new_username()
    assert stack.hub.api("POST", f"/users/{user}").status_code == 201
    bad = stack.service("PUT", f"policy/users/{user}", json={"quota": {"gpu_memory": "-1Gi"}})
    assert bad.status_code == 400 and bad.json()["field"] == f"users.{user}.quota.gpu_memory"
    bad = stack.service("PUT", f"policy/users/{user}", json={"tier": "platinum"})
    assert bad.status_code == 400 and bad.json()["field"] == f"users.{user}.tier"
    bad = stack.service("PUT", "policy", data=b"{not json")
    assert bad.status_code == 400
    token = stack.user_token(user)
    assert stack.service("PUT", f"policy/users/{user}", token=token,
                         json={"quota": {"gpus": 99}}).status_code == 403
    assert stack.service("GET", "audit", token=token).status_code == 403
    assert stack.service("POST", "admissions", token=token, json={}).status_code == 403
    # A user may preview a fit for themselves.
    fit = stack.service("POST", "fit", token=token, json={"request": {"gpu_memory_mib": 8192}})
    assert fit.status_code == 200 and fit.json()["verdict"] == "admit", fit.text
    assert stack.service("GET", "policy", token="not-a-token").status_code in (
        401, 403)
