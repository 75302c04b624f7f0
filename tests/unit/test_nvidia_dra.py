"""NVIDIA's DRA driver: its slices parsed into our node model, pinned claims, the backend."""

from __future__ import annotations

import pytest

from aispike_hub.backends import BackendError
from aispike_hub.backends.nvidia_dra import NvidiaDraBackend
from aispike_hub.kube.nvidia_slices import (
    nvidia_device_class,
    nvidia_gpus_by_node,
    nvidia_resource_slice,
    parse_nvidia_slice,
    pinned_claim,
    uuid_selector,
)
from aispike_hub.model import GIB_IN_MIB, Gpu, SliceRequest

H100 = "NVIDIA H100 80GB HBM3"


def gpus() -> list[Gpu]:
    return [Gpu(index=i, model=H100, memory_mib=81559, uuid=f"GPU-{i}",
                pcie_switch=f"pci{i // 2}") for i in range(4)]


def test_a_published_slice_parses_back_into_the_same_gpus() -> None:
    node, parsed, problems = parse_nvidia_slice(nvidia_resource_slice("n1", gpus()))
    assert (node, problems) == ("n1", [])
    assert [p.gpu for p in parsed] == gpus()
    assert parsed[0].device == "gpu-0" and parsed[0].compute_capability == "9.0.0"
    assert parsed[0].pci_bus_id == "0000:10:00.0" and parsed[0].architecture == "Hopper"


def test_mig_devices_and_incomplete_gpus_are_left_out_and_named() -> None:
    s = nvidia_resource_slice("n1", gpus()[:2])
    s["spec"]["devices"].append({"name": "gpu-0-mig-1g10gb-0", "attributes": {
        "type": {"string": "mig"}, "uuid": {"string": "MIG-x"}}})
    del s["spec"]["devices"][1]["attributes"]["uuid"]
    other = {"spec": {"driver": "gpu.aispike.io", "nodeName": "n2", "devices": []}}
    by_node, problems = nvidia_gpus_by_node([s, other])
    assert [g.gpu.uuid for g in by_node["n1"]] == ["GPU-0"] and "n2" not in by_node
    assert any("mig device" in p for p in problems)
    assert any("gpu-1" in p and "uuid" in p for p in problems)


def test_another_drivers_slice_is_not_parsed_as_nvidias() -> None:
    with pytest.raises(ValueError, match=r"gpu\.nvidia\.com"):
        parse_nvidia_slice({"spec": {"driver": "gpu.aispike.io"}})


def test_a_pinned_claim_names_the_uuids_and_the_shared_pcie_root() -> None:
    one = pinned_claim("c", gpus()[:1])
    req = one["spec"]["devices"]["requests"][0]["exactly"]
    assert req["deviceClassName"] == "gpu.nvidia.com" and req["count"] == 1
    assert req["selectors"][0]["cel"]["expression"] == \
        'device.attributes["gpu.nvidia.com"].uuid == "GPU-0"'
    assert "constraints" not in one["spec"]["devices"]
    two = pinned_claim("c", gpus()[2:4])
    assert two["spec"]["devices"]["constraints"] == [
        {"requests": ["gpu"], "matchAttribute": "resource.kubernetes.io/pcieRoot"}]
    assert uuid_selector(["GPU-2", "GPU-3"]).endswith('in ["GPU-2", "GPU-3"]')
    apart = pinned_claim("c", [gpus()[0], gpus()[2]])
    assert "constraints" not in apart["spec"]["devices"]
    with pytest.raises(ValueError):
        pinned_claim("c", [])
    with pytest.raises(ValueError):
        pinned_claim("c", [gpus()[0], gpus()[0]])


def test_the_device_class_selects_whole_gpus_of_the_driver() -> None:
    expr = nvidia_device_class()["spec"]["selectors"][0]["cel"]["expression"]
    assert 'device.driver == "gpu.nvidia.com"' in expr and '.type == "gpu"' in expr


def test_the_backend_refuses_memory_slices_with_what_the_driver_offers() -> None:
    backend = NvidiaDraBackend()
    with pytest.raises(BackendError, match=r"whole GPUs and MIG devices only.*MPS"):
        backend.pod_resources(SliceRequest(gpu_memory_mib=20 * GIB_IN_MIB))
    assert backend.pod_resources(SliceRequest(gpu_count=2)).limits == {}
    assert backend.pod_resources(SliceRequest(gpu_count=0)).limits == {}
    claim = backend.pinned_claim("x", gpus()[:2], labels={"a": "b"})
    assert claim["metadata"] == {"name": "x", "labels": {"a": "b"}}
    assert backend.compute_share_env(25) == {} and backend.compute_share_limits(25) == {}


def test_the_placement_core_keeps_a_pair_under_one_pcie_root_of_parsed_gpus() -> None:
    from aispike_hub.model import Node
    from aispike_hub.placement.engine import PlacementEngine
    from aispike_hub.placement.state import ClusterState

    by_node, _ = nvidia_gpus_by_node([nvidia_resource_slice("n1", gpus())])
    state = ClusterState([Node("n1", 32_000, 256 * 1024, tuple(g.gpu for g in by_node["n1"]))])
    engine = PlacementEngine()
    one = engine.place(state, SliceRequest(gpu_count=1)).assignment
    assert one is not None
    state.commit(one)
    two = engine.place(state, SliceRequest(gpu_count=2)).assignment
    assert two is not None
    roots = {gpus()[i].pcie_switch for i in two.gpu_indices}
    assert len(roots) == 1 and gpus()[one.gpu_indices[0]].pcie_switch not in roots
