"""The idle monitor through a real hub and recorded GPU metrics, once per spawner kind.

One hub per spawner kind (``stack`` is parametrized with ``hubstack.SPAWNER_KINDS``):

- ``kube``: KubeSpawner starts notebook pods on kwok nodes of the test control plane (run as
  real ``jupyterhub-singleuser`` processes by the pod runner);
- ``local``: ``LocalGPUSpawner`` (simulated "1x NVIDIA H200 141GB", in-process admission) starts
  them as local processes; no cluster.

The AISpike service runs as a hub-managed service with the idle monitor's least scopes; a
recorded agent serves the H200's recorded NVML reading (the agent's own code over
tests/fixtures/nvml/h200-1gpu.json) for two nodes, one of which is down.  The same table of
users, one server each, runs against both kinds:

| user | GPU (recorded) | node | policy | expected |
|---|---|---|---|---|
| idle | holds 4.4 GiB, 0 % | node-a | stop | warned, stopped after the grace period |
| busy | 91 % | node-a | stop | kept (busy), however long nobody uses it |
| dry | holds 4.4 GiB, 0 % | node-a | dry-run | reported idle, nothing changed, no notice |
| missing | holds 4.4 GiB, 0 % | node-b (agent down) | stop | unknown: nothing stopped |
| warn | holds 4.4 GiB, 0 % | node-a | warn | warned; stopped by idle-culler 2.0 + arbiter |
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from .conftest import RunningHub, _free_port, new_username, wait_until
from .hubstack import SPAWNER_KINDS, ServiceHub, hub_of_kind
from .recorded_agent import RecordedAgent

TIMEOUT, GRACE = 2, 3
MACHINE = {"name": "idle-gpu", "cpu": "64", "memory": "512Gi",
           "gpus": [{"model": "NVIDIA H200", "memory": "141Gi", "count": 1}]}


@dataclass(frozen=True)
class Case:
    role: str
    gpu: str  # what the recorded agent reports: "busy" (91 %) or "idle" (memory, 0 %)
    node: str  # node-b's agent is down
    mode: str  # the user's idle policy mode
    expected: str


CASES = (
    Case("idle", "idle", "node-a", "stop", "stopped"),
    Case("busy", "busy", "node-a", "stop", "kept-busy"),
    Case("dry", "idle", "node-a", "dry-run", "reported"),
    Case("missing", "idle", "node-b", "stop", "unknown"),
    Case("warn", "idle", "node-a", "warn", "culled"),
)
KEPT = [c.role for c in CASES if c.expected in ("kept-busy", "reported", "unknown")]


class Stack(ServiceHub):
    def __init__(self, hub: RunningHub, service_url: str, users: dict[str, str]) -> None:
        super().__init__(hub, service_url)
        self.users = users

    def row(self, role: str) -> dict[str, Any] | None:
        r = self.service("GET", f"idle/servers/{self.users[role]}/")
        return r.json() if r.status_code == 200 else None

    def up(self, role: str) -> bool:
        return self.running(self.users[role])

    def audit_of(self, role: str) -> list[dict[str, Any]]:
        return self.audit(f"{self.users[role]}/")

    def notices_of(self, role: str) -> list[dict[str, Any]]:
        return self.notices(self.users[role])


@pytest.fixture(scope="module", params=SPAWNER_KINDS)
def stack(request: pytest.FixtureRequest, hub_factory: Callable[..., RunningHub],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    kind = request.param
    users = {c.role: new_username() for c in CASES}
    workdir = tmp_path_factory.mktemp(f"aispike-idle-{kind}")
    agent = RecordedAgent().start()
    agent.nodes = {"node-a": [], "node-b": []}
    for case in CASES:
        agent.nodes[case.node].append((users[case.role], "", case.gpu))
    agent.down = {"node-b"}
    modes = {users[c.role]: {"mode": c.mode} for c in CASES if c.mode != "stop"}
    (workdir / "aispike_service_config.py").write_text(f"""
c.IdleMonitor.poll_interval = 0.5
c.IdleMonitor.timeout = {TIMEOUT}
c.IdleMonitor.gpu_window = 2
c.IdleMonitor.grace = {GRACE}
c.IdleMonitor.mode = "stop"
c.IdleMonitor.agent_urls = [{agent.url("node-a")!r}, {agent.url("node-b")!r}]
c.IdleMonitor.policy = {{"users": {modes!r}}}
""")
    try:
        with hub_of_kind(
                kind, request, hub_factory, MACHINE, name="idle", workdir=workdir,
                admission=False, service_args=[f"--config={workdir / 'aispike_service_config.py'}"],
                # The idle monitor's least scopes (docs/idle.md).
                service_scopes=["list:users", "read:users:activity", "read:users:groups",
                                "read:servers", "servers", "access:servers"],
                admin_scopes=["custom:aispike:admin", "custom:aispike:idle"],
                # the monitor polls the servers' kernels through the proxy
                hub_config="c.JupyterHub.services[-1]['command'].append("
                           "'--IdleMonitor.proxy_url=' + c.JupyterHub.bind_url)\n") as base:
            stack = Stack(base.hub, base.service_url, users)
            for user in users.values():
                assert stack.hub.api("POST", f"/users/{user}").status_code == 201
            with concurrent.futures.ThreadPoolExecutor(len(users)) as pool:
                for r in pool.map(stack.start, users.values()):
                    assert r.status_code in (201, 202), r.text
            yield stack
    finally:
        agent.stop()


def test_idle_is_warned_then_stopped_after_grace_busy_dry_run_and_missing_are_kept(
        stack: Stack) -> None:
    try:
        wait_until(lambda: all(stack.up(c.role) for c in CASES if c.expected != "stopped"),
                   150, "servers ready")
        wait_until(lambda: "idle.stop" in {e["action"] for e in stack.audit_of("idle")}, 90,
                   "the idle server stopped by the monitor")
        wait_until(lambda: not stack.up("idle"), 30, "the hub to show it stopped")
    except AssertionError:
        raise AssertionError(f"hub log:\n{stack.log_tail(5000)}") from None
    for case in CASES:
        CHECKS[case.expected](stack, case)

    report = stack.service("GET", "idle/report").json()
    sources = {s["url"].split("/")[-2]: s for s in report["sources"]}
    assert sources["node-a"]["ok"] and not sources["node-b"]["ok"]
    assert report["totals"]["by_verdict"]["busy"] == 1
    # "missing" is unknown (checked above); on a loaded machine a poll can come late and leave a
    # gap in another server's samples, which also reads unknown (never acted on) for a while
    assert report["totals"]["by_verdict"]["unknown"] >= 1


def _stopped(stack: Stack, case: Case) -> None:
    """Warned first, stopped no sooner than the grace period after."""
    audit = {e["action"]: e for e in stack.audit_of(case.role)}
    assert {"idle.warn", "idle.stop"} <= set(audit), audit
    gap = (_at(audit["idle.stop"]["at"]) - _at(audit["idle.warn"]["at"]))
    assert gap >= GRACE - 0.1, gap
    assert audit["idle.stop"]["detail"]["verdict"] == "idle"
    assert audit["idle.stop"]["detail"]["gpu_memory_mib"] == 4458
    kinds = [n["kind"] for n in stack.notices_of(case.role)]
    assert "idle-warning" in kinds and "idle-stopped" in kinds, kinds


def _kept_busy(stack: Stack, case: Case) -> None:
    """Busy for longer than timeout + grace: kept."""
    busy = stack.row(case.role)
    assert busy and busy["verdict"] == "busy" and busy["computing"], busy
    assert not busy["reclaimable"]
    assert any("peak utilisation 91%" in e for e in busy["evidence"]), busy
    assert stack.up(case.role) and not stack.audit_of(case.role)


def _reported(stack: Stack, case: Case) -> None:
    """Dry-run: reported idle, would be stopped, nothing changed, nobody told."""
    wait_until(lambda: (r := stack.row(case.role)) and r["action"] == "stop" and r, 30,
               "dry-run server past its (virtual) grace")
    dry = stack.row(case.role)
    assert dry and dry["verdict"] == "idle" and dry["mode"] == "dry-run"
    assert not dry["stop_due"]
    assert stack.up(case.role) and stack.notices_of(case.role) == []
    assert {e["action"] for e in stack.audit_of(case.role)} == {"idle.dry-run"}


def _unknown(stack: Stack, case: Case) -> None:
    """The agent of its node is down: unknown, kept, no warning."""
    missing = stack.row(case.role)
    assert missing and missing["verdict"] == "unknown", missing
    assert any("agent restarting" in e or "503" in e for e in missing["evidence"]), missing
    assert stack.up(case.role) and not stack.audit_of(case.role)


def _culled_later(stack: Stack, case: Case) -> None:
    """Warn mode: the monitor itself does not stop it (the culler test below does)."""
    assert stack.up(case.role)


CHECKS = {"stopped": _stopped, "kept-busy": _kept_busy, "reported": _reported,
          "unknown": _unknown, "culled": _culled_later}


def test_the_culler_stops_only_what_the_arbiter_hook_allows(stack: Stack) -> None:
    """jupyterhub-idle-culler 2.0 with inactive_limit 0 (its own rule: cull everything)."""
    from jupyterhub_idle_culler import cull_idle

    from aispike_hub.service.arbiter import AISpikeArbiter

    (warn,) = [c.role for c in CASES if c.expected == "culled"]
    wait_until(lambda: (r := stack.row(warn)) and r["stop_due"], 60,
               "the warn-mode server due for stopping")
    assert stack.up(warn), "the monitor itself must not stop a warn-mode server"
    assert "idle-warning" in [n["kind"] for n in stack.notices_of(warn)]
    arbiter = AISpikeArbiter(stack.service_url, stack.hub.token)
    asyncio.run(cull_idle(url=f"{stack.hub.url}hub/api", api_token=stack.hub.token,
                          inactive_limit=0, logger=logging.getLogger("culler"),
                          cull_arbiter=arbiter))
    wait_until(lambda: not stack.up(warn), 60, "the culler to stop the warn-mode server")
    for role in KEPT:
        assert stack.up(role), f"the culler stopped {role}"

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
    token = stack.user_token(user)
    assert stack.service("GET", "idle/report", token=token).status_code == 403
    own = stack.service("GET", f"idle/servers/{user}/", token=token)
    assert own.status_code == 200 and own.json()["verdict"] == "busy"
    other = stack.service("GET", f"idle/servers/{stack.users['dry']}/", token=token)
    assert other.status_code == 403
