"""A GPU node shared with pods of NVIDIA's device plugin, on the real control plane.

The kwok node offers its four GPUs twice, as the cluster of an admin who runs the device plugin
next to AISpike would: as ``nvidia.com/gpu: 4`` allocatable and as our ResourceSlice.  Pods asking
for ``nvidia.com/gpu`` are bound by kube-scheduler, which does not see our slices; the device
plugin would pick their GPUs and tell nobody which.  Placement must count them as taken (three
anonymous GPUs: one GPU stays ours) and never double-book the node.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from aispike_hub.kube.claims import claim_name
from aispike_hub.kube.inventory import Inventory
from aispike_hub.kube.placer import PlacementRefused, Placer
from aispike_hub.model import GIB_IN_MIB, SliceRequest

from . import dra_burst
from .conftest import GpuNodes, TestCluster, wait_until

GIB = GIB_IN_MIB


@pytest.fixture
def placer(cluster: TestCluster) -> Iterator[Placer]:
    inventory = Inventory(cluster.api).start()
    yield Placer(inventory, unschedulable_seconds=5)
    inventory.stop()


def device_plugin_pod(name: str, gpus: int, selector: dict[str, str]) -> dict[str, Any]:
    """A pod of another workload asking for whole GPUs through the device plugin."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeSelector": dict(selector), "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "cuda", "image": "registry.invalid/cuda:1",
                                     "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}]}}


def held(placer: Placer, node: str) -> int:
    with placer.inventory.lock:
        state = placer.inventory.state()
        if state is None or node not in state.node_index:
            return -1
        return int(state.anon_gpus[state.node_index[node]])


def test_placement_leaves_the_gpus_of_nvidia_gpu_pods_alone(
    cluster: TestCluster, namespace: str, gpu_nodes: GpuNodes, placer: Placer
) -> None:
    m = f"TEST-shared-{secrets.token_hex(3)}"
    (node,) = gpu_nodes({"nodes": [{"name": "shared", "cpu": "32", "memory": "256Gi",
                                    "nvidiaGpu": True,
                                    "gpus": [{"model": m, "memory": "80Gi", "count": 4}]}]})
    for i, gpus in enumerate((2, 1)):
        cluster.core.create_namespaced_pod(
            namespace, device_plugin_pod(f"cuda-{i}", gpus, gpu_nodes.selector))

    def bound() -> bool:
        pods = cluster.core.list_namespaced_pod(namespace).items
        return len(pods) == 2 and all(p.spec.node_name == node.name for p in pods)

    wait_until(bound, 60, "kube-scheduler to bind the device-plugin pods")
    wait_until(lambda: held(placer, node.name) == 3, 30, "the inventory to count 3 GPUs held")

    # Three GPUs are held by the device plugin's pods: two whole GPUs are not ours to give.
    two = SliceRequest(gpu_count=2, allowed_models=frozenset({m}), cpu_milli=500,
                       memory_mib=GIB)
    with pytest.raises(PlacementRefused) as refused:
        placer.start_server(namespace, "two", two, dra_burst.pod_manifest(
            two, gpu_nodes.selector), timeout=60)
    assert any("held by workloads outside AISpike" in r for r in refused.value.reasons), (
        refused.value.reasons)

    # Slices go to the one GPU left, all of them: never a second GPU.
    devices = set()
    for i in range(3):
        req = SliceRequest(gpu_memory_mib=24 * GIB, allowed_models=frozenset({m}),
                           cpu_milli=500, memory_mib=GIB)
        placer.start_server(namespace, f"nb-{i}", req,
                            dra_burst.pod_manifest(req, gpu_nodes.selector), timeout=90)
        claim = placer.api.get("resourceclaims", claim_name(f"nb-{i}"), namespace)
        (result,) = claim["status"]["allocation"]["devices"]["results"]
        devices.add(result["device"])
    assert len(devices) == 1, devices
    # The fourth slice would need a second GPU: refused while the device plugin holds three.
    req = SliceRequest(gpu_memory_mib=24 * GIB, allowed_models=frozenset({m}))
    with pytest.raises(PlacementRefused):
        placer.pin(namespace, "nb-3", req)

    # One device-plugin pod leaves: its GPUs are ours to give again.
    cluster.core.delete_namespaced_pod("cuda-0", namespace, grace_period_seconds=0)
    wait_until(lambda: held(placer, node.name) == 1, 30, "the inventory to count 1 GPU held")
    placer.start_server(namespace, "nb-3", req,
                        dra_burst.pod_manifest(req, gpu_nodes.selector), timeout=90)
    claim = placer.api.get("resourceclaims", claim_name("nb-3"), namespace)
    (result,) = claim["status"]["allocation"]["devices"]["results"]
    assert result["device"] not in devices
