"""The AISpike events as Prometheus metrics (aispike_hub.metrics): admissions by verdict and
reason class, queue waits, preemptions, idle warnings and stops, placement decision time; and
the service's /metrics text: Prometheus' naming conventions, dcgm-exporter's GPU labels.

The counters live in prometheus_client's default registry (shared by every test of the process),
so each test reads the change it causes."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from aispike_hub import metrics
from aispike_hub.admission.controller import AdmissionController
from aispike_hub.admission.inventory import StaticInventory
from aispike_hub.idle.policy import IdleRule, ServerSignals, assess, decide
from aispike_hub.model import GIB_IN_MIB, Gpu, Node, SliceRequest
from aispike_hub.quota import User, policy_from_dict
from aispike_hub.service.idle import IdleMonitor
from aispike_hub.service.idle.monitor import ServerEntry
from aispike_hub.service.prometheus import exposition, gpu_memory_families, metric_names
from aispike_hub.service.store import Store

GIB = GIB_IN_MIB
A100 = "NVIDIA A100-SXM4-80GB"


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def change(name: str, **labels: str) -> Callable[[], float]:
    """A function that says how much ``name{labels}`` grew since this call."""
    before = value(name, **labels)
    return lambda: value(name, **labels) - before


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 12, 1, 12, 0, 0)

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def controller(tmp_path: Path, clock: Clock) -> AdmissionController:
    store = Store(f"sqlite:///{tmp_path}/s.sqlite")
    nodes = [Node("a-0", 64_000, 512 * GIB, (Gpu(0, A100, 80 * GIB, uuid="GPU-a0"),))]
    policy = policy_from_dict({"defaults": {"quota": {"gpu_memory": "80Gi"}}})
    return AdmissionController(store, StaticInventory(nodes), policy, queue_timeout=60,
                               clock=clock)


def test_admissions_are_counted_by_verdict_and_reason_class(
        controller: AdmissionController, clock: Clock) -> None:
    admitted = change("aispike_admissions_total", verdict="admitted", reason="fits")
    queued = change("aispike_admissions_total", verdict="queued", reason="cluster")
    refused = change("aispike_admissions_total", verdict="refused", reason="quota")
    placed = change("aispike_placement_decision_seconds_count", caller="admission",
                    outcome="placed")
    unplaced = change("aispike_placement_decision_seconds_count", caller="admission",
                      outcome="unplaced")
    waited = change("aispike_queue_wait_seconds_count", outcome="admitted")
    waited_long = change("aispike_queue_wait_seconds_sum", outcome="admitted")

    assert controller.admit(User("ann"), "", SliceRequest(gpu_memory_mib=60 * GIB),
                            "t").state == "admitted"
    assert controller.admit(User("bob"), "", SliceRequest(gpu_memory_mib=40 * GIB),
                            "t").state == "queued"
    assert controller.admit(User("cid"), "", SliceRequest(gpu_memory_mib=90 * GIB),
                            "t").state == "refused"
    assert (admitted(), queued(), refused()) == (1, 1, 1)
    assert placed() >= 1 and unplaced() >= 1  # bob's request did not fit

    # Bob waits 45 s, then ann stops: he leaves the queue admitted after 45 s.
    clock.now += dt.timedelta(seconds=45)
    controller.release("ann", "", "t")
    assert controller.status("bob", "").state == "admitted"
    assert waited() == 2  # ann at once (0 s), bob after 45 s
    assert waited_long() == pytest.approx(45.0)


def test_a_request_that_waits_out_the_queue_is_observed_as_expired(
        controller: AdmissionController, clock: Clock) -> None:
    expired = change("aispike_queue_wait_seconds_count", outcome="expired")
    expired_sum = change("aispike_queue_wait_seconds_sum", outcome="expired")
    controller.admit(User("ann"), "", SliceRequest(gpu_memory_mib=60 * GIB), "t")
    controller.admit(User("bob"), "", SliceRequest(gpu_memory_mib=40 * GIB), "t")
    clock.now += dt.timedelta(seconds=61)
    controller.process()
    assert controller.status("bob", "").state == "expired"
    assert expired() == 1 and expired_sum() == pytest.approx(61.0)


def test_a_stopped_preemption_victim_is_counted(controller: AdmissionController) -> None:
    stopped = change("aispike_preemptions_total")
    controller.admit(User("ann"), "", SliceRequest(gpu_memory_mib=60 * GIB), "t")
    controller.preempted("ann", "", "a higher tier needed the room", "t")
    assert stopped() == 1


def test_idle_warnings_and_stops_are_counted(tmp_path: Path) -> None:
    monitor = IdleMonitor(Store(f"sqlite:///{tmp_path}/s.sqlite"), "http://127.0.0.1:1/hub/api",
                          "t")

    async def stopped(user: str, server: str) -> bool:
        return True

    monitor.stop_server = stopped  # type: ignore[method-assign]
    rule = IdleRule(mode="stop", timeout=60, grace=30)
    signals = ServerSignals("ann", "", started=0.0, hub_last_activity=0.0)
    assessment = assess(signals, rule, 1000.0)
    warned = change("aispike_idle_warnings_total", reason="idle")
    stops = change("aispike_idle_stops_total", reason="idle")

    def act(warned_at: float | None, now: float) -> None:
        decision = decide(assessment, rule, warned_at, now)
        asyncio.run(monitor.act(ServerEntry("ann", "", (), rule, assessment, decision,
                                            warned_at), now))

    act(None, 1000.0)
    assert (warned(), stops()) == (1, 0)
    act(1000.0, 1031.0)
    assert (warned(), stops()) == (1, 1)


def test_service_metrics_follow_prometheus_conventions_and_label_gpus_like_dcgm(
        controller: AdmissionController) -> None:
    from aispike_hub.placement.fragmentation import Workload
    from aispike_hub.service.gpumap import ClusterMap, Holding

    controller.admit(User("ann"), "", SliceRequest(gpu_memory_mib=60 * GIB), "t")
    node = next(iter(controller.inventory.nodes()))
    cluster = ClusterMap([node], [Holding("a-0", 0, 60 * GIB, "ann", "")], {},
                         Workload.from_requests([SliceRequest(gpu_memory_mib=8 * GIB)]))
    families = {name: samples for name, _text, samples in gpu_memory_families(cluster)}
    assert families["aispike_cluster_gpu_memory_capacity_bytes"] == [({}, 80 * GIB * 2**20)]
    assert families["aispike_gpu_memory_allocated_bytes"] == [
        ({"Hostname": "a-0", "gpu": "0", "UUID": "GPU-a0", "modelName": A100},
         60 * GIB * 2**20)]

    text = exposition({"allocation": 0.75, "queued": 1.0}, cluster)[0].decode()
    types = {line.split()[2]: line.split()[3] for line in text.splitlines()
             if line.startswith("# TYPE ")}
    assert 'aispike_gpu_memory_allocated_bytes{Hostname="a-0",UUID="GPU-a0",gpu="0",' \
           f'modelName="{A100}"}}' in text
    for name, kind in types.items():
        assert not name.endswith("_percent"), name
        if kind != "counter":
            assert not name.endswith("_total"), name
    # Every event metric is served, with the name and type the catalogue (and the dashboard)
    # uses.
    names = metric_names()
    for name, (kind, _help, _labels) in metrics.CATALOGUE.items():
        assert (types.get(name) or types.get(name.removesuffix("_total"))) == kind, name
        assert name in names or f"{name}_count" in names
    assert 'aispike_admissions_total{reason="fits",verdict="admitted"}' in text
