"""The idle monitor's own logic without a hub: an unreachable hub, the policy from traits, and the
culler hook's refusals.  Agent and kernel answers -> signals: test_idle_signals.py; the monitor
through the hub client against a stand-in hub: test_hubclient.py; against a real hub:
tests/integration/test_idle_hub.py."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from aispike_hub.idle.policy import IdlePolicyError
from aispike_hub.service.arbiter import AISpikeArbiter
from aispike_hub.service.idle import IdleMonitor
from aispike_hub.service.store import Store


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_hub_means_no_action_and_a_stale_report(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/s.sqlite")
    monitor = IdleMonitor(store, f"http://127.0.0.1:{_closed_port()}/hub/api", "token",
                          mode="stop", request_timeout=2)
    asyncio.run(monitor.poll())
    report = monitor.report()
    assert report["stale"] and not report["hub"]["ok"] and report["hub"]["error"]
    assert report["servers"] == [] and store.audit_log() == []
    store.close()


def test_traits_are_the_policy_defaults_and_bad_policy_names_the_field(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/s.sqlite")
    monitor = IdleMonitor(store, "http://hub/api", "t", timeout="30m", grace=60, mode="warn",
                          policy={"groups": {"course": {"timeout": "10m"}}})
    rule = monitor.idle_policy.rule_for("ada", ["course"])
    assert (rule.timeout, rule.grace, rule.mode) == (600, 60, "warn")
    assert monitor.idle_policy.rule_for("bob").timeout == 1800
    with pytest.raises(IdlePolicyError) as e:
        IdleMonitor(store, "http://hub/api", "t", policy={"users": {"ada": {"mode": "kill"}}})
    assert e.value.field == "users.ada.mode"
    with pytest.raises(IdlePolicyError):
        IdleMonitor(store, "http://hub/api", "t", timeout="forever")
    store.close()


def test_arbiter_is_a_valid_culler_hook_and_keeps_servers_without_an_answer() -> None:
    from jupyterhub_idle_culler import IdleCuller

    arbiter = AISpikeArbiter(f"http://127.0.0.1:{_closed_port()}/services/aispike/", "t", 2)
    culler = IdleCuller()
    culler.cull_arbiter_hook = arbiter
    assert culler.cull_arbiter_hook is arbiter
    assert asyncio.run(arbiter(server={"full_name": "ada/"})) is False
    assert asyncio.run(arbiter(server={})) is False


def test_agents_are_found_by_the_name_of_their_headless_service(tmp_path: Path) -> None:
    """Every address the agents' Service name resolves to is read (here: localhost, resolved
    for real), besides agent_urls; a setting that does not resolve leaves agent_urls only."""
    store = Store("sqlite://")
    monitor = IdleMonitor(store, "http://hub/api", "t", agent_service="localhost:9400",
                          agent_urls=["http://gpu-1:9400/usage"])
    urls = asyncio.run(monitor.agent_targets())
    assert urls[0] == "http://gpu-1:9400/usage"
    assert "http://127.0.0.1:9400/usage" in urls
    assert set(urls) <= set(monitor.sources)
    lost = IdleMonitor(store, "http://hub/api", "t", agent_service="localhost:no-port")
    assert asyncio.run(lost.agent_targets()) == []
