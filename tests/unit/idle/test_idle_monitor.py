"""The idle monitor's own logic without a hub: agent documents -> samples, gaps, missing sources,
an unreachable hub, the policy from traits, and the culler hook's refusals.  The monitor against a
real hub is tests/integration/test_idle_hub.py."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest

from aispike_hub.idle.policy import IdlePolicyError
from aispike_hub.service.arbiter import AISpikeArbiter
from aispike_hub.service.idle import IdleMonitor, SampleBook, parse_time, usage_by_server
from aispike_hub.service.store import Store

A, B = "http://a:9400/usage", "http://b:9400/usage"


def doc(node: str, *notebooks: tuple[str, str, int, int, float]) -> dict[str, Any]:
    """An agent usage document: notebooks are (user, server, gpu, MiB, utilisation)."""
    return {"node": node, "time": 0, "nvml": {"available": True},
            "gpus": [{"index": 0, "memory_total_mib": 81920},
                     {"index": 1, "memory_total_mib": 81920}],
            "notebooks": [{"user": u, "server": s, "gpu_index": g, "memory_used_mib": m,
                           "utilization_percent": p} for u, s, g, m, p in notebooks]}


def test_usage_is_summed_per_server_over_gpus_and_unknown_owners_are_left_out() -> None:
    use = usage_by_server(doc("n1", ("ada", "", 0, 1000, 10.0), ("ada", "", 1, 3000, 70.0),
                              ("bob", "train", 0, 500, 0.0), ("", "", 0, 99, 99.0)))
    assert set(use) == {("ada", ""), ("bob", "train")}
    ada = use[("ada", "")]
    assert (ada.memory_used_mib, ada.utilization_percent, ada.memory_total_mib) == \
        (4000, 70.0, 2 * 81920)
    assert use[("bob", "train")].node == "n1"


def test_samples_gap_and_missing_sources() -> None:
    book = SampleBook(history=600)
    ada, bob, cid = ("ada", ""), ("bob", ""), ("cid", "")
    servers = [ada, bob, cid]
    a_doc = doc("a", ("ada", "", 0, 2048, 0.0))
    b_doc = doc("b", ("bob", "", 0, 1024, 50.0))
    # Everyone answers: ada and bob sampled, cid (no GPU process anywhere) holds nothing.
    out = book.record(0, {A: a_doc, B: b_doc}, {}, servers)
    assert out[ada][0].samples[-1].memory_used_mib == 2048 and out[ada][1] == ()
    assert out[cid][0].samples[-1].memory_used_mib == 0 and out[cid][1] == ()
    out = book.record(60, {A: a_doc, B: b_doc}, {}, servers)
    assert len(out[ada][0].samples) == 2 and out[ada][0].covered_seconds(60) == 60
    # B is down: bob's samples restart (gap) and he is missing; ada is unaffected; cid, never
    # seen, might be on B: missing too.
    out = book.record(120, {A: a_doc}, {B: "agent b (HTTP 503)"}, servers)
    assert out[bob] == (out[bob][0], ("agent b (HTTP 503)",)) and not out[bob][0].samples
    assert len(out[ada][0].samples) == 3 and out[ada][1] == ()
    assert out[cid][1] == ("agent b (HTTP 503)",) and not out[cid][0].samples
    # B back: coverage starts again from this poll.
    out = book.record(180, {A: a_doc, B: b_doc}, {}, servers)
    assert out[bob][0].covered_seconds(180) == 0 and out[bob][1] == ()
    # History is bounded; stopped servers are forgotten.
    out = book.record(900, {A: a_doc, B: b_doc}, {}, [ada])
    assert all(s.time >= 300 for s in out[ada][0].samples)
    assert set(book.samples) == {ada}


def test_parse_time() -> None:
    assert parse_time("1970-01-01T00:01:00Z") == 60.0
    assert parse_time("1970-01-01T00:01:00.500000+00:00") == 60.5
    assert parse_time(None) is None


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
