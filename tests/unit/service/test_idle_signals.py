"""Agent usage documents and kernel answers -> per-server signals: sums per server, samples with
gaps and missing sources, the server's own activity over the hub's, a user's latest interaction
(aispike_hub/service/idle/signals.py; pure, no hub)."""

from __future__ import annotations

from typing import Any

from aispike_hub.idle.policy import GpuSignals, KernelSignals
from aispike_hub.service.idle import (
    SampleBook,
    kernel_signals,
    parse_time,
    server_signals,
    usage_by_server,
    with_user_activity,
)

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


def test_kernels_answer_counts_busy_kernels_and_the_latest_activity() -> None:
    kernels = [{"execution_state": "busy", "last_activity": "1970-01-01T00:01:00Z"},
               {"execution_state": "idle", "last_activity": "1970-01-01T00:02:00Z"},
               {"execution_state": "idle"}]
    sig, own = kernel_signals(kernels, {"last_activity": "1970-01-01T00:03:00Z"})
    assert sig == KernelSignals(3, 1, 120.0) and own == 180.0
    assert kernel_signals([], None) == (KernelSignals(0, 0, None), None)


def test_server_signals_prefer_the_servers_own_activity_and_name_what_is_missing() -> None:
    model = {"started": "1970-01-01T00:00:00Z", "last_activity": "1970-01-01T00:10:00Z"}
    gpu = (GpuSignals((), 81920), ("agent b (HTTP 503)",))
    sig = server_signals("ada", "", model, (KernelSignals(1, 0, 60.0), 300.0), gpu)
    assert (sig.started, sig.hub_last_activity, sig.kernels) == (0.0, 300.0,
                                                                  KernelSignals(1, 0, 60.0))
    assert sig.gpu == gpu[0] and sig.missing == ("agent b (HTTP 503)",)
    sig = server_signals("ada", "", model, "kernels of the server (HTTP 502)", None)
    assert sig.hub_last_activity == 600.0 and sig.kernels is None and sig.gpu is None
    assert sig.missing == ("kernels of the server (HTTP 502)",)
    assert server_signals("ada", "", model, None, None).missing == ()


def test_a_users_last_interaction_is_the_latest_over_their_servers() -> None:
    model = {"started": "1970-01-01T00:00:00Z"}
    signals = {
        ("ada", "a"): server_signals("ada", "a", {**model, "last_activity":
                                                  "1970-01-01T00:01:00Z"}, None, None),
        ("ada", "b"): server_signals("ada", "b", {**model, "last_activity":
                                                  "1970-01-01T00:05:00Z"}, None, None),
        ("bob", ""): server_signals("bob", "", {}, None, None),  # nothing known
    }
    out = with_user_activity(signals, now=1000.0)
    assert out[("ada", "a")].user_last_activity == out[("ada", "b")].user_last_activity == 300.0
    assert out[("bob", "")].user_last_activity is None
