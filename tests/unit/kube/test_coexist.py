"""GPUs held outside AISpike: parsing pods and foreign claims, and what the inventory counts.

Device-plugin pods (``nvidia.com/gpu``, MIG, HAMi), and claims of NVIDIA's DRA driver on the same
GPUs, count as taken; the inventory is driven with plain event dicts, as the watch delivers them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from aispike_hub.kube import claims, inventory
from aispike_hub.kube.coexist import (
    ForeignResult,
    OutsideRules,
    PodGpus,
    foreign_claim_results,
    parse_foreign_slice,
    parse_hami_allocation,
    pod_gpus,
)
from aispike_hub.kube.slices import resource_slice
from aispike_hub.model import Gpu, SliceRequest
from aispike_hub.placement.engine import PlacementEngine

GIB = 1024
GPUS = tuple(Gpu(i, "A100", 80 * GIB, uuid=f"GPU-a{i}") for i in range(4))


def gpu_pod(name: str, *, node: str = "n0", limits: dict[str, str] | None = None,
            requests: dict[str, str] | None = None, phase: str = "Running",
            annotations: dict[str, str] | None = None, init: bool = False) -> dict[str, Any]:
    container = {"name": "c", "resources": {"limits": limits or {}, "requests": requests or {}}}
    spec: dict[str, Any] = {"nodeName": node, "containers": [] if init else [container]}
    if init:
        spec["initContainers"] = [container]
    return {"metadata": {"name": name, "namespace": "other", "uid": f"uid-{name}",
                         "annotations": annotations or {}},
            "spec": spec, "status": {"phase": phase}}


def nvidia_slice(node: str = "n0", uuids: tuple[str, ...] = ("GPU-a0", "GPU-a1")
                 ) -> dict[str, Any]:
    """A slice as NVIDIA's DRA driver publishes it (whole GPUs, a MIG device)."""
    devices: list[dict[str, Any]] = [
        {"name": f"gpu-{i}", "attributes": {"type": {"string": "gpu"}, "uuid": {"string": u},
                                            "productName": {"string": "NVIDIA A100"}},
         "capacity": {"memory": {"value": "80Gi"}}}
        for i, u in enumerate(uuids)]
    devices.append({"name": "gpu-3-mig-1g10gb-0", "attributes": {
        "type": {"string": "mig"}, "parentUUID": {"string": "GPU-a3"},
        "profile": {"string": "1g.10gb"}}, "capacity": {"memory": {"value": "10Gi"}}})
    devices.append({"name": "gpu-9", "attributes": {"uuid": {"string": "GPU-unknown"}}})
    return {"metadata": {"name": f"{node}-gpu.nvidia.com"},
            "spec": {"driver": "gpu.nvidia.com", "nodeName": node,
                     "pool": {"name": node, "generation": 1}, "devices": devices}}


def foreign_claim(name: str, *devices: str, driver: str = "gpu.nvidia.com") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "other", "uid": f"uid-{name}",
                         "resourceVersion": "1"},
            "status": {"allocation": {"devices": {"results": [
                {"driver": driver, "pool": "n0", "device": d, "request": "gpu"}
                for d in devices]}}}}


def node_obj(name: str = "n0") -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {},
            "status": {"allocatable": {"cpu": "64", "memory": "256Gi", "nvidia.com/gpu": "4"},
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def cluster() -> inventory.Inventory:
    inv = inventory.Inventory(api_client=None)
    inv._apply("nodes", "ADDED", node_obj())
    inv._apply("resourceslices", "ADDED", resource_slice("n0", GPUS))
    return inv


def anon(inv: inventory.Inventory) -> int:
    state = inv.state()
    assert state is not None
    return int(state.anon_gpus[0])


# -- parsing ------------------------------------------------------------------------------------
def test_device_plugin_resources_count_as_whole_gpus() -> None:
    assert pod_gpus(gpu_pod("a", limits={"nvidia.com/gpu": "2"})) == PodGpus(2)
    assert pod_gpus(gpu_pod("b", requests={"nvidia.com/gpu": "1"})) == PodGpus(1)
    # Each MIG instance: one GPU whose identity is unknown (never under-counted).
    assert pod_gpus(gpu_pod("c", limits={"nvidia.com/mig-1g.10gb": "2",
                                         "nvidia.com/mig-3g.40gb": "1"})) == PodGpus(3)
    # A memory share alone (HAMi, gpushare) sits on one GPU.
    assert pod_gpus(gpu_pod("d", limits={"nvidia.com/gpumem": "4000"})) == PodGpus(1)
    assert pod_gpus(gpu_pod("e", limits={"aliyun.com/gpu-mem": "8"})) == PodGpus(1)
    # Init containers: the larger of their max and the containers' sum, as the scheduler counts.
    assert pod_gpus(gpu_pod("f", limits={"nvidia.com/gpu": "3"}, init=True)) == PodGpus(3)
    assert pod_gpus(gpu_pod("g", limits={"cpu": "2"})) == PodGpus()
    assert not pod_gpus(gpu_pod("h", limits={"nvidia.com/gpu": "junk"}))
    assert pod_gpus(gpu_pod("i", limits={"nvidia.com/gpu": "10" * 50})).anonymous == 1024
    renamed = OutsideRules(gpu_resources=("example.com/vgpu",))
    assert pod_gpus(gpu_pod("j", limits={"example.com/vgpu": "1"}), renamed) == PodGpus(1)


def test_hami_pods_with_their_allocation_annotation_count_exactly() -> None:
    value = "GPU-a0,NVIDIA,4000,30:GPU-a1,NVIDIA,2000,0:;GPU-a0,NVIDIA,1000,0:;"
    assert parse_hami_allocation(value) == (("GPU-a0", 5000), ("GPU-a1", 2000))
    assert parse_hami_allocation("GPU-a0,NVIDIA,many,0:;") == ()
    assert parse_hami_allocation(None) == ()
    pod = gpu_pod("h", limits={"nvidia.com/gpu": "1", "nvidia.com/gpumem": "4000",
                               "nvidia.com/gpucores": "30"},
                  annotations={"hami.io/vgpu-devices-allocated": "GPU-a2,NVIDIA,4000,30:;"})
    assert pod_gpus(pod) == PodGpus(0, (("GPU-a2", 4000),))
    # Not annotated yet (HAMi's scheduler has not bound it): one anonymous GPU.
    pod["metadata"]["annotations"] = {}
    assert pod_gpus(pod) == PodGpus(1)


def test_nvidia_dra_slices_and_claims_are_read_for_their_gpu_uuids() -> None:
    parsed = parse_foreign_slice(nvidia_slice())
    assert parsed is not None and parsed.node == "n0" and parsed.driver == "gpu.nvidia.com"
    assert parsed.devices["gpu-1"].uuid == "GPU-a1"
    assert parsed.devices["gpu-1"].memory_mib == 80 * GIB
    assert parsed.devices["gpu-1"].model == "NVIDIA A100"  # productName
    assert parsed.devices["gpu-3-mig-1g10gb-0"].uuid == "GPU-a3"  # a MIG device's parent
    assert parse_foreign_slice(resource_slice("n0", GPUS)) is None  # ours
    net = nvidia_slice()
    net["spec"]["driver"] = "dra.net"
    assert parse_foreign_slice(net) is None  # not a GPU driver
    assert foreign_claim_results(foreign_claim("c", "gpu-0", "gpu-1")) == (
        ForeignResult("gpu.nvidia.com", "n0", "gpu-0"),
        ForeignResult("gpu.nvidia.com", "n0", "gpu-1"))
    assert foreign_claim_results(foreign_claim("c", "eth0", driver="dra.net")) == ()


# -- the inventory ------------------------------------------------------------------------------
def test_nvidia_gpu_pods_are_counted_and_placement_keeps_their_gpus_idle() -> None:
    inv = cluster()
    inv._apply("pods", "ADDED", gpu_pod("dp-1", limits={"nvidia.com/gpu": "2"}))
    inv._apply("pods", "ADDED", gpu_pod("dp-2", limits={"nvidia.com/gpu": "1"}))
    inv._apply("pods", "ADDED", gpu_pod("pending", node="", limits={"nvidia.com/gpu": "1"}))
    inv._apply("pods", "ADDED", gpu_pod("done", phase="Succeeded",
                                        limits={"nvidia.com/gpu": "1"}))
    assert anon(inv) == 3
    state = inv.state()
    assert state is not None
    engine = PlacementEngine("bestfit")
    assert not engine.place(state, SliceRequest(gpu_count=2)).placed
    one = engine.place(state, SliceRequest(gpu_count=1)).assignment
    assert one is not None
    # The pod leaves: its GPUs are free again.
    inv._apply("pods", "DELETED", gpu_pod("dp-1"))
    assert anon(inv) == 1
    state = inv.state()
    assert state is not None and engine.place(state, SliceRequest(gpu_count=2)).placed
    # A pod that finishes stops counting.
    inv._apply("pods", "MODIFIED", gpu_pod("dp-2", phase="Failed",
                                           limits={"nvidia.com/gpu": "1"}))
    assert anon(inv) == 0


def test_hami_pod_takes_its_memory_on_the_named_gpu() -> None:
    inv = cluster()
    inv._apply("pods", "ADDED", gpu_pod(
        "hami", limits={"nvidia.com/gpu": "1", "nvidia.com/gpumem": "4000"},
        annotations={"hami.io/vgpu-devices-allocated": "GPU-a2,NVIDIA,4000,30:;"}))
    state = inv.state()
    assert state is not None and anon(inv) == 0
    assert int(state.gpu_cap[0, 2] - state.gpu_free[0, 2]) == 4000


def test_nvidia_dra_claims_take_the_gpus_they_name_and_unknown_ones_anonymously() -> None:
    inv = cluster()
    inv._apply("resourceslices", "ADDED", nvidia_slice())
    inv._apply("resourceclaims", "ADDED", foreign_claim("whole", "gpu-1"))
    inv._apply("resourceclaims", "ADDED", foreign_claim("mig", "gpu-3-mig-1g10gb-0"))
    inv._apply("resourceclaims", "ADDED", foreign_claim("elsewhere", "gpu-9"))
    state = inv.state()
    assert state is not None
    assert int(state.gpu_free[0, 1]) == 0 and int(state.gpu_free[0, 3]) == 0
    assert int(state.gpu_free[0, 0]) == 80 * GIB and anon(inv) == 1
    assert state.total_gpus() == 4  # NVIDIA's slice adds no GPUs of its own
    inv._apply("resourceclaims", "DELETED", foreign_claim("whole"))
    inv._apply("resourceclaims", "DELETED", foreign_claim("elsewhere"))
    state = inv.state()
    assert state is not None and int(state.gpu_free[0, 1]) == 80 * GIB and anon(inv) == 0
    # Its slice going away (the driver uninstalled) leaves our devices as they were.
    inv._apply("resourceslices", "DELETED", nvidia_slice())
    state = inv.state()
    assert state is not None and state.total_gpus() == 4


def test_a_device_plugin_pod_arriving_after_our_pin_makes_the_pin_stale(
        caplog: pytest.LogCaptureFixture) -> None:
    inv = cluster()
    req = SliceRequest(gpu_memory_mib=8 * GIB)
    for i in range(2):  # two pins of ours on GPUs 0 and 1: two idle GPUs left
        body = claims.pinned_claim(f"s{i}", claims.Placement(
            "n0", (claims.PinnedGpu(f"GPU-a{i}", i, 8 * GIB),), False), req)
        body["metadata"].update(namespace="ns", uid=f"u{i}", resourceVersion="1",
                                creationTimestamp=f"2026-01-01T00:00:0{i}Z")
        inv._apply("resourceclaims", "ADDED", body)
    assert inv.stale_reason("ns", "s0-gpu") == inv.stale_reason("ns", "s1-gpu") == ""
    with caplog.at_level(logging.WARNING):
        inv._apply("pods", "ADDED", gpu_pod("dp", limits={"nvidia.com/gpu": "3"}))
    # Three GPUs held, two idle: the newest pin gives way; the older one stays counted.
    assert "outside AISpike" in inv.stale_reason("ns", "s1-gpu")
    assert inv.stale_reason("ns", "s0-gpu") == ""
    # A new pin that would start an idle GPU is stale at once.
    body = claims.pinned_claim("s2", claims.Placement(
        "n0", (claims.PinnedGpu("GPU-a3", 3, 8 * GIB),), False), req)
    body["metadata"].update(namespace="ns", uid="u2", resourceVersion="1")
    inv._apply("resourceclaims", "ADDED", body)
    assert "outside AISpike" in inv.stale_reason("ns", "s2-gpu")


def test_our_servers_device_plugin_gpus_are_counted_as_theirs() -> None:
    """On a device-plugin backend our own pods ask for nvidia.com/gpu too: the service counts
    them per hub server, not as another workload's."""
    inv = cluster()
    mine = gpu_pod("jupyter-alice", limits={"nvidia.com/gpu": "1"},
                   annotations={claims.HUB_SERVER_ANNOTATION: "alice/"})
    inv._apply("pods", "ADDED", mine)
    inv._apply("pods", "ADDED", gpu_pod("dp", limits={"nvidia.com/gpu": "1"}))
    ours, other = inv.usage_by_server()
    assert sum(a.anonymous_gpus for a in ours["alice/"]) == 1
    assert sum(a.anonymous_gpus for a in other) == 1


# -- device-plugin backends: the spawner's node view --------------------------------------------
class ListOnlyApi:
    """Lists fixed objects per kind; each watch waits briefly and ends (no events)."""

    def __init__(self, objects: dict[str, list[dict[str, Any]]]) -> None:
        self.objects = objects

    def list(self, kind: str, *, query: Any = None) -> tuple[list[dict[str, Any]], str]:
        return self.objects.get(kind, []), "1"

    def watch(self, kind: str, resource_version: str, *, timeout_seconds: int = 240,
              query: Any = None) -> list[tuple[str, dict[str, Any]]]:
        time.sleep(0.05)
        return []


def test_device_plugin_backends_see_only_the_gpus_other_workloads_leave() -> None:
    from aispike_hub.spawner.nodes import NodeWatcher

    labelled = node_obj()
    labelled["metadata"]["labels"] = {"nvidia.com/gpu.product": "A100",
                                      "nvidia.com/gpu.memory": "81920"}
    mine = gpu_pod("jupyter-alice", limits={"nvidia.com/gpu": "1"},
                   annotations={claims.HUB_SERVER_ANNOTATION: "alice/"})
    api = ListOnlyApi({"nodes": [labelled], "pods": [
        gpu_pod("dp", limits={"nvidia.com/gpu": "2"}),
        gpu_pod("mig", limits={"nvidia.com/mig-1g.10gb": "1"}),
        gpu_pod("pending", node="", limits={"nvidia.com/gpu": "1"}),
        mine]})

    async def main() -> None:
        watcher = NodeWatcher(api, watch_timeout=1).start()
        await asyncio.wait_for(asyncio.shield(watcher.first_load), 5)
        (n0,) = watcher.nodes()
        assert len(n0.gpus) == 1  # 4 - 2 (device plugin) - 1 (MIG); our own pod not subtracted
        watcher._pod_event("DELETED", gpu_pod("dp"))
        (n0,) = watcher.nodes()
        assert len(n0.gpus) == 3
        await watcher.stop()

    asyncio.run(main())


def test_the_model_label_is_ours_else_gpu_feature_discoverys() -> None:
    from aispike_hub.spawner.nodes import model_label_for, model_value, node_from_object

    gfd = node_obj("g")
    gfd["metadata"]["labels"] = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB",
                                 "nvidia.com/gpu.memory": "81920"}
    ours = node_obj("o")
    ours["metadata"]["labels"] = {"aispike.io/gpu-model": "NVIDIA-H100",
                                  "nvidia.com/gpu.product": "NVIDIA-H100"}
    cpu = {"metadata": {"name": "c", "labels": {"aispike.io/gpu-model": "x"}},
           "status": {"allocatable": {"cpu": "8"}}}
    assert model_label_for([gfd]) == "nvidia.com/gpu.product"
    assert model_label_for([gfd, cpu]) == "nvidia.com/gpu.product"  # a CPU node does not count
    assert model_label_for([gfd, ours]) == "aispike.io/gpu-model"
    assert model_label_for([]) == "aispike.io/gpu-model"
    assert model_value("NVIDIA A100-SXM4-80GB") == "NVIDIA-A100-SXM4-80GB"
    node = node_from_object(gfd)
    assert node is not None and node.gpus[0].model == "NVIDIA-A100-SXM4-80GB"
