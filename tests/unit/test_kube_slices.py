"""The pure manifest builders of aispike_hub.kube.slices and the node spec of nodespec."""

from __future__ import annotations

import pytest

from aispike_hub.kube import nodespec, slices
from aispike_hub.model import Gpu, Node

A100 = Gpu(
    index=0,
    model="NVIDIA A100-SXM4-80GB",
    memory_mib=81920,
    uuid="GPU-a",
    nvlink_domain="nvl0",
    pcie_switch="sw0",
    numa_node=0,
)
H100 = Gpu(index=1, model="NVIDIA H100 80GB HBM3", memory_mib=81559, uuid="GPU-h")


def test_gpu_device_follows_the_contract() -> None:
    device = slices.gpu_device(A100)
    assert device["name"] == "gpu-0"
    assert device["allowMultipleAllocations"] is True
    assert device["attributes"] == {
        "uuid": {"string": "GPU-a"},
        "model": {"string": "NVIDIA A100-SXM4-80GB"},
        "index": {"int": 0},
        "nvlinkDomain": {"string": "nvl0"},
        "pcieSwitch": {"string": "sw0"},
        "numaNode": {"int": 0},
        "mig": {"string": ""},
    }
    assert device["capacity"]["memory"] == {
        "value": "80Gi",
        "requestPolicy": {
            "default": "80Gi",
            "validRange": {"min": "1Gi", "max": "80Gi", "step": "1Gi"},
        },
    }


def test_memory_that_is_not_whole_gib_offers_its_whole_gib_only() -> None:
    memory = slices.gpu_device(H100)["capacity"]["memory"]
    assert memory["value"] == "81559Mi"
    assert memory["requestPolicy"]["default"] == "79Gi"
    assert memory["requestPolicy"]["validRange"]["max"] == "79Gi"


@pytest.mark.parametrize(
    "gpu",
    [
        Gpu(index=0, model="X", memory_mib=81920),
        Gpu(index=0, model="X", memory_mib=1024, uuid="GPU-x"),
    ],
)
def test_unpublishable_gpus_are_refused_with_a_reason(gpu: Gpu) -> None:
    with pytest.raises(ValueError, match=r"uuid|at least 2 GiB"):
        slices.gpu_device(gpu)


def test_resource_slice_is_one_complete_pool_per_node() -> None:
    manifest = slices.resource_slice("n1", [H100, A100], generation=3)
    assert manifest["metadata"]["name"] == "n1-gpu.aispike.io"
    spec = manifest["spec"]
    assert spec["driver"] == "gpu.aispike.io"
    assert spec["nodeName"] == "n1"
    assert spec["pool"] == {"name": "n1", "generation": 3, "resourceSliceCount": 1}
    assert [d["name"] for d in spec["devices"]] == ["gpu-0", "gpu-1"]


def test_uuid_selector_quotes_the_uuid() -> None:
    assert (
        slices.uuid_selector('GPU-"x') == 'device.attributes["gpu.aispike.io"].uuid == "GPU-\\"x"'
    )


def test_simulated_node_carries_capacity_labels_images_and_datasets() -> None:
    node = Node(
        name="n1",
        cpu_milli=1500,
        memory_mib=4096,
        gpus=(A100,),
        labels={"zone": "a"},
        images={"img:1": 10},
        datasets={"b": 2, "a": 1},
    )
    manifest = slices.simulated_node(node, nvidia_gpu=True)
    assert manifest["status"]["allocatable"]["cpu"] == "1500m"
    assert manifest["status"]["allocatable"]["memory"] == "4Gi"
    assert manifest["status"]["allocatable"]["nvidia.com/gpu"] == "1"
    assert manifest["status"]["images"] == [{"names": ["img:1"], "sizeBytes": 10}]
    assert manifest["metadata"]["labels"]["aispike.io/gpu-model"] == "NVIDIA-A100-SXM4-80GB"
    assert manifest["metadata"]["labels"]["zone"] == "a"
    annotation = manifest["metadata"]["annotations"]["aispike.io/datasets"]
    assert annotation == '[{"name":"a","bytes":1},{"name":"b","bytes":2}]'
    assert slices.parse_datasets_annotation(annotation) == {"a": 1, "b": 2}
    assert {"type": "InternalIP", "address": "127.0.0.1"} in manifest["status"]["addresses"]
    assert "nvidia.com/gpu" not in slices.simulated_node(node)["status"]["allocatable"]


def test_gpu_model_label_of_a_mixed_node() -> None:
    assert slices.gpu_model_label([A100, H100]) == "mixed"
    assert slices.gpu_model_label([]) == ""


def test_nodes_from_spec_expands_copies_and_gpu_groups() -> None:
    sims = nodespec.nodes_from_spec(
        {
            "nodes": [
                {
                    "name": "a-{i}",
                    "count": 2,
                    "cpu": "8",
                    "memory": "32Gi",
                    "nvidiaGpu": True,
                    "gpus": [
                        {"model": "A", "memory": "40Gi", "count": 2, "nvlinkDomain": "d0"},
                        {"model": "A", "memory": "40Gi", "numaNode": 1},
                    ],
                }
            ]
        }
    )
    assert [s.node.name for s in sims] == ["a-0", "a-1"]
    node = sims[0].node
    assert (node.cpu_milli, node.memory_mib) == (8000, 32768)
    assert [g.index for g in node.gpus] == [0, 1, 2]
    assert [g.nvlink_domain for g in node.gpus] == ["d0", "d0", ""]
    assert node.gpus[2].numa_node == 1
    assert sims[0].nvidia_gpu
    # Stable and unique UUIDs: the same spec pins the same devices every time.
    assert node.gpus[0].uuid == nodespec.synthesized_uuid("a-0", 0)
    assert len({g.uuid for s in sims for g in s.node.gpus}) == 6


@pytest.mark.parametrize(
    ("text", "mib"),
    [("80Gi", 81920), ("81559Mi", 81559), ("1Ti", 2**20), ("1073741824", 1024), ("2G", 1907)],
)
def test_quantity_mib(text: str, mib: int) -> None:
    assert nodespec.quantity_mib(text) == mib


def test_spec_errors_say_what_to_fix() -> None:
    with pytest.raises(ValueError, match="put '\\{i\\}' in its name"):
        nodespec.nodes_from_spec({"nodes": [{"name": "a", "count": 2}]})
    with pytest.raises(ValueError, match="unique"):
        nodespec.nodes_from_spec({"nodes": [{"name": "a"}, {"name": "a"}]})
