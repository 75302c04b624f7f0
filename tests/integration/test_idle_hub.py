"""The idle monitor through a real hub, the real control plane and recorded GPU metrics.

One hub for the module: KubeSpawner starts notebook pods on kwok nodes (run as real
``jupyterhub-singleuser`` processes by the pod runner); the AISpike service runs as a
hub-managed service with the idle monitor's least scopes; a recorded agent serves the H200's
recorded NVML reading for two nodes, one of which is down.  Five users, one server each:

| user | GPU (recorded) | policy | expected |
|---|---|---|---|
| idle | holds 4.4 GiB, 0 % | stop | warned, stopped after the grace period |
| busy | 91 % | stop | kept (busy), however long nobody uses it |
| dry | holds 4.4 GiB, 0 % | dry-run | reported idle, nothing changed, no notice |
| missing | on the node whose agent is down | stop | unknown: nothing stopped |
| warn | holds 4.4 GiB, 0 % | warn | warned; stopped by idle-culler 2.0 + AISpike arbiter hook |
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import yaml

from .conftest import REPO, RunningHub, _free_port, new_username, wait_until
from .podrunner import PodRunner
from .recorded_agent import RecordedAgent

TIMEOUT, GRACE = 2, 3
NODE = {"name": "idle-gpu", "cpu": "64", "memory": "512Gi",
        "gpus": [{"model": "NVIDIA H200", "memory": "141Gi", "count": 1}]}


class Stack:
    def __init__(self, hub: RunningHub, service_url: str, users: dict[str, str],
                 agent: RecordedAgent) -> None:
        self.hub = hub
        self.service_url = service_url
        self.users = users
        self.agent = agent

    def service(self, path: str, token: str | None = None) -> requests.Response:
        return requests.get(f"{self.service_url}api/{path}", timeout=30,
                            headers={"Authorization": f"token {token or self.hub.token}"})

    def row(self, role: str) -> dict[str, Any] | None:
        r = self.service(f"idle/servers/{self.users[role]}/")
        return r.json() if r.status_code == 200 else None

    def ready(self, role: str) -> bool:
        model = self.hub.api("GET", f"/users/{self.users[role]}").json()
        return bool((model.get("servers") or {}).get("", {}).get("ready"))

    def audit(self, role: str) -> list[dict[str, Any]]:
        r = requests.get(f"{self.service_url}api/audit", params={"limit": 500}, timeout=30,
                         headers={"Authorization": f"token {self.hub.token}"})
        return [e for e in r.json()["entries"] if e["target"] == f"{self.users[role]}/"]

    def notices(self, role: str) -> list[dict[str, Any]]:
        user = self.users[role]
        token = self.hub.api("POST", f"/users/{user}/tokens", json={"note": "t"}).json()["token"]
        return list(self.service("notices", token=token).json()["notices"])


@pytest.fixture(scope="module")
def stack(hub_factory: Callable[..., RunningHub], hub_namespace: str, pod_runner: PodRunner,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    users = {role: new_username() for role in ("idle", "busy", "dry", "missing", "warn")}
    agent = RecordedAgent().start()
    agent.nodes = {
        "node-a": [(users[r], "", "busy" if r == "busy" else "idle")
                   for r in ("idle", "busy", "dry", "warn")],
        "node-b": [(users["missing"], "", "idle")],
    }
    agent.down = {"node-b"}
    workdir = tmp_path_factory.mktemp("aispike-idle")
    (workdir / "nodes.yaml").write_text(yaml.safe_dump({"nodes": [NODE]}))
    (workdir / "aispike_service_config.py").write_text(f"""
c.AISpikeService.nodes_file = {str(workdir / "nodes.yaml")!r}
c.IdleMonitor.poll_interval = 0.5
c.IdleMonitor.timeout = {TIMEOUT}
c.IdleMonitor.gpu_window = 2
c.IdleMonitor.grace = {GRACE}
c.IdleMonitor.mode = "stop"
c.IdleMonitor.agent_urls = [{agent.url("node-a")!r}, {agent.url("node-b")!r}]
c.IdleMonitor.policy = {{"users": {{{users["dry"]!r}: {{"mode": "dry-run"}},
                                   {users["warn"]!r}: {{"mode": "warn"}}}}}}
""")
    port = _free_port()
    token = secrets.token_hex(16)
    service_url = f"http://127.0.0.1:{port}/services/aispike/"
    command = [sys.executable, "-m", "aispike_hub.cli", "service",
               f"--db-url=sqlite:///{workdir}/aispike.sqlite",
               f"--config={workdir / 'aispike_service_config.py'}"]
    hub = hub_factory(
        "idle",
        f"""
        c.JupyterHub.spawner_class = "kubespawner.KubeSpawner"
        c.KubeSpawner.namespace = {hub_namespace!r}
        c.KubeSpawner.image = "quay.io/jupyter/base-notebook:2026-01-05"
        c.KubeSpawner.cmd = ["jupyterhub-singleuser"]
        c.KubeSpawner.start_timeout = 150
        c.JupyterHub.custom_scopes = {{
            "custom:aispike:admin": {{"description": "AISpike admin"}},
            "custom:aispike:admit": {{"description": "ask AISpike to admit spawns"}},
            "custom:aispike:idle": {{"description": "read the AISpike idle report"}},
        }}
        c.JupyterHub.services.append({{
            "name": "aispike", "url": "http://127.0.0.1:{port}", "api_token": {token!r},
            "command": {command!r} + ["--IdleMonitor.proxy_url=" + c.JupyterHub.bind_url],
            "environment": {{"PYTHONPATH": {str(REPO)!r}}}, "oauth_no_confirm": True,
        }})
        c.JupyterHub.load_roles += [
            # The idle monitor's least scopes (docs/idle.md).
            {{"name": "aispike", "services": ["aispike"],
              "scopes": ["list:users", "read:users:activity", "read:users:groups",
                         "read:servers", "servers", "access:servers"]}},
            {{"name": "aispike-admins", "services": ["tests"],
              "scopes": ["custom:aispike:admin", "custom:aispike:idle",
                         "access:services!service=aispike"]}},
            {{"name": "user", "scopes": ["self", "access:services!service=aispike"]}},
        ]
        """,
    )
    stack = Stack(hub, service_url, users, agent)
    wait_until(lambda: _answers(service_url), 60, "the AISpike service to answer")
    try:
        for user in users.values():
            assert hub.api("POST", f"/users/{user}").status_code == 201
            r = hub.api("POST", f"/users/{user}/server", timeout=120)
            assert r.status_code in (201, 202), r.text
        yield stack
    finally:
        for user in users.values():
            hub.api("DELETE", f"/users/{user}/server", timeout=120)
        agent.stop()


def _answers(url: str) -> bool:
    try:
        return requests.get(f"{url}api/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _tail(stack: Stack) -> str:
    return stack.hub.log_text()[-5000:]


def test_idle_is_warned_then_stopped_after_grace_busy_dry_run_and_missing_are_kept(
        stack: Stack) -> None:
    try:
        wait_until(lambda: all(stack.ready(r) for r in ("busy", "dry", "missing")), 150,
                   "servers ready")
        wait_until(lambda: "idle.stop" in {e["action"] for e in stack.audit("idle")}, 90,
                   "the idle server stopped by the monitor")
        wait_until(lambda: not stack.ready("idle"), 30, "the hub to show it stopped")
    except AssertionError:
        raise AssertionError(f"hub log:\n{_tail(stack)}") from None

    # Warned first, stopped no sooner than the grace period after.
    audit = {e["action"]: e for e in stack.audit("idle")}
    assert {"idle.warn", "idle.stop"} <= set(audit), audit
    gap = (_at(audit["idle.stop"]["at"]) - _at(audit["idle.warn"]["at"]))
    assert gap >= GRACE - 0.1, gap
    assert audit["idle.stop"]["detail"]["verdict"] == "idle"
    assert audit["idle.stop"]["detail"]["gpu_memory_mib"] == 4458
    kinds = [n["kind"] for n in stack.notices("idle")]
    assert "idle-warning" in kinds and "idle-stopped" in kinds, kinds

    # Busy for longer than timeout + grace: kept.
    busy = stack.row("busy")
    assert busy and busy["verdict"] == "busy" and busy["computing"], busy
    assert not busy["reclaimable"]
    assert any("peak utilisation 91%" in e for e in busy["evidence"]), busy
    assert stack.ready("busy") and not stack.audit("busy")

    # Dry-run: reported idle, would be stopped, nothing changed, nobody told.
    wait_until(lambda: (r := stack.row("dry")) and r["action"] == "stop" and r, 30,
               "dry-run server past its (virtual) grace")
    dry = stack.row("dry")
    assert dry and dry["verdict"] == "idle" and dry["mode"] == "dry-run"
    assert not dry["stop_due"]
    assert stack.ready("dry") and stack.notices("dry") == []
    assert {e["action"] for e in stack.audit("dry")} == {"idle.dry-run"}

    # The agent of its node is down: unknown, kept, no warning.
    missing = stack.row("missing")
    assert missing and missing["verdict"] == "unknown", missing
    assert any("agent restarting" in e or "503" in e for e in missing["evidence"]), missing
    assert stack.ready("missing") and not stack.audit("missing")

    report = stack.service("idle/report").json()
    sources = {s["url"].split("/")[-2]: s for s in report["sources"]}
    assert sources["node-a"]["ok"] and not sources["node-b"]["ok"]
    assert report["totals"]["by_verdict"]["busy"] == 1
    # "missing" is unknown (checked above); on a loaded machine a poll can come late and leave a
    # gap in another server's samples, which also reads unknown (never acted on) for a while
    assert report["totals"]["by_verdict"]["unknown"] >= 1


def test_the_culler_stops_only_what_the_arbiter_hook_allows(stack: Stack) -> None:
    """jupyterhub-idle-culler 2.0 with inactive_limit 0 (its own rule: cull everything)."""
    from jupyterhub_idle_culler import cull_idle

    from aispike_hub.service.arbiter import AISpikeArbiter

    wait_until(lambda: (r := stack.row("warn")) and r["stop_due"], 60,
               "the warn-mode server due for stopping")
    assert stack.ready("warn"), "the monitor itself must not stop a warn-mode server"
    assert "idle-warning" in [n["kind"] for n in stack.notices("warn")]
    arbiter = AISpikeArbiter(stack.service_url, stack.hub.token)
    asyncio.run(cull_idle(url=f"{stack.hub.url}hub/api", api_token=stack.hub.token,
                          inactive_limit=0, logger=logging.getLogger("culler"),
                          cull_arbiter=arbiter))
    wait_until(lambda: not stack.ready("warn"), 60, "the culler to stop the warn-mode server")
    for role in ("busy", "dry", "missing"):
        assert stack.ready(role), f"the culler stopped {role}"

    # The service being away keeps everything: the hook never stops on missing data.
    away = AISpikeArbiter(f"http://127.0.0.1:{_free_port()}/services/aispike/", "x", 2)
    assert not asyncio.run(away(server={"full_name": f"{stack.users['busy']}/"}))


def _at(stamp: str) -> float:
    from aispike_hub.service.idle import parse_time

    value = parse_time(stamp)
    assert value is not None
    return value


def test_report_needs_a_scope(stack: Stack) -> None:
    user = stack.users["busy"]
    token = stack.hub.api("POST", f"/users/{user}/tokens", json={"note": "t"}).json()["token"]
    assert stack.service("idle/report", token=token).status_code == 403
    own = stack.service(f"idle/servers/{user}/", token=token)
    assert own.status_code == 200 and own.json()["verdict"] == "busy"
    other = stack.service(f"idle/servers/{stack.users['dry']}/", token=token)
    assert other.status_code == 403
