"""Placement over NVIDIA's DRA driver on the real control plane (kube-apiserver, kube-scheduler,
kwok nodes): the nodes' GPUs are ResourceSlices of ``gpu.nvidia.com`` written here exactly as
NVIDIA's k8s-dra-driver-gpu publishes them, with its DeviceClass.  Our parser reads them back
from the API, the placement core chooses, the claim pins the chosen uuids, and kube-scheduler
must allocate exactly those devices (one GPU, then two under one PCIe root)."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from aispike_hub.backends.nvidia_dra import NvidiaDraBackend
from aispike_hub.contract import NVIDIA_DEVICE_CLASS, NVIDIA_DRIVER
from aispike_hub.kube.api import KubeJson
from aispike_hub.kube.nvidia_slices import (
    nvidia_device_class,
    nvidia_gpus_by_node,
    nvidia_resource_slice,
)
from aispike_hub.model import Gpu, Node, SliceRequest
from aispike_hub.placement.engine import PlacementEngine
from aispike_hub.placement.state import ClusterState

from . import dra_burst
from .conftest import GpuNodes, TestCluster, wait_until


@pytest.fixture
def api(cluster: TestCluster) -> Iterator[KubeJson]:
    api = KubeJson(cluster.api)
    created = False
    try:
        api.create("deviceclasses", nvidia_device_class())
        created = True
    except ApiException as e:
        if e.status != 409:  # already there (as on a cluster that runs NVIDIA's driver)
            raise
    yield api
    if created:
        with contextlib.suppress(ApiException):
            api.delete("deviceclasses", NVIDIA_DEVICE_CLASS)


def allocated(api: KubeJson, namespace: str, claim: str) -> list[dict[str, Any]]:
    def done() -> Any:
        status = api.get("resourceclaims", claim, namespace).get("status") or {}
        return (status.get("allocation") or {}).get("devices", {}).get("results")

    return list(wait_until(done, 90, f"kube-scheduler to allocate {claim}"))


def test_placement_pins_nvidia_gpus_and_the_scheduler_allocates_exactly_them(
    cluster: TestCluster, namespace: str, gpu_nodes: GpuNodes, api: KubeJson
) -> None:
    model = f"NVIDIA H100 80GB HBM3 {secrets.token_hex(3)}"
    (plain,) = gpu_nodes({"nodes": [{"name": "nv", "cpu": "32", "memory": "256Gi"}]})
    gpus = [Gpu(index=i, model=model, memory_mib=81559, uuid=f"GPU-{secrets.token_hex(8)}",
                pcie_switch=f"pci0000:{i // 2:02x}") for i in range(4)]
    published = nvidia_resource_slice(plain.name, gpus)
    api.create("resourceslices", published)
    try:
        # Read back from the API as the hub would, and only NVIDIA's slices of this node.
        slices = [s for s in api.list("resourceslices")[0]
                  if (s.get("spec") or {}).get("nodeName") == plain.name]
        by_node, problems = nvidia_gpus_by_node(slices)
        assert problems == [] and [g.gpu for g in by_node[plain.name]] == gpus
        device_of = {g.gpu.uuid: g.device for g in by_node[plain.name]}
        node = Node(name=plain.name, cpu_milli=32_000, memory_mib=256 * 1024,
                    gpus=tuple(g.gpu for g in by_node[plain.name]))
        state = ClusterState([node])
        engine = PlacementEngine()
        backend = NvidiaDraBackend()
        chosen: dict[str, list[Gpu]] = {}
        for server, count in (("one", 1), ("two", 2)):
            request = SliceRequest(gpu_count=count, allowed_models=frozenset({model}),
                                   cpu_milli=500, memory_mib=1024)
            assert backend.pod_resources(request).limits == {}
            decision = engine.place(state, request, owner=server)
            assert decision.assignment is not None, decision.reasons
            state.commit(decision.assignment)
            chosen[server] = [gpus[i] for i in decision.assignment.gpu_indices]
            api.create("resourceclaims", backend.pinned_claim(f"{server}-gpu", chosen[server]),
                       namespace)
            pod = dra_burst.pod_manifest(request, gpu_nodes.selector)
            pod["metadata"]["name"] = server
            pod["spec"]["resourceClaims"] = [{"name": "gpu", "resourceClaimName":
                                              f"{server}-gpu"}]
            pod["spec"]["containers"][0]["resources"]["claims"] = [{"name": "gpu"}]
            api.create("pods", pod, namespace)
            results = allocated(api, namespace, f"{server}-gpu")
            assert sorted((r["driver"], r["pool"], r["device"]) for r in results) == sorted(
                (NVIDIA_DRIVER, plain.name, device_of[g.uuid]) for g in chosen[server])
            bound = wait_until(lambda s=server: api.get("pods", s, namespace)["spec"].get(
                "nodeName"), 60, f"pod {server} bound")
            assert bound == plain.name
        # The pair shares one PCIe root, the one the single GPU left whole.
        assert len({g.pcie_switch for g in chosen["two"]}) == 1
        assert chosen["one"][0].pcie_switch != chosen["two"][0].pcie_switch
        assert not {g.uuid for g in chosen["one"]} & {g.uuid for g in chosen["two"]}
        # A memory slice is refused with what the driver offers, before anything is created.
        with pytest.raises(ValueError, match="whole GPUs and MIG devices only"):
            backend.pod_resources(SliceRequest(gpu_memory_mib=20 * 1024,
                                               allowed_models=frozenset({model})))
    finally:
        for pod_name in ("one", "two"):
            with contextlib.suppress(ApiException):
                api.delete("pods", pod_name, namespace, grace_seconds=0)
        with contextlib.suppress(ApiException):
            api.delete("resourceslices", published["metadata"]["name"])
