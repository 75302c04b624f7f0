"""What the agent publishes for each recorded machine, and that it writes only on change."""

from __future__ import annotations

import json

import pytest
from agent_fixtures import ALL_FIXTURES, recorded

from aispike_hub.agent.datasets import CachedDataset
from aispike_hub.agent.nvml import read_machine
from aispike_hub.agent.slices import (
    HASH_ANNOTATION,
    desired_state,
    plan_node_patch,
    plan_slice,
    publishable_gpus,
    rfc3339,
)
from aispike_hub.kube.slices import DATASETS_ANNOTATION, DRIVER, GPU_MODEL_LABEL
from aispike_hub.model import Gpu

DATASETS = [CachedDataset("imagenet", 150_000_000_000, 1_800_000_000.0),
            CachedDataset("cifar10", 170_000_000, 1_700_000_000.0)]


def desired_for(name: str, datasets: list[CachedDataset] | None = DATASETS):  # type: ignore[no-untyped-def]
    return desired_state("node-a", read_machine(recorded(name)).core_gpus, datasets)


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_slice_per_contract(name: str) -> None:
    reading = read_machine(recorded(name))
    desired = desired_state("node-a", reading.core_gpus, DATASETS)
    if not reading.gpus:
        assert desired.resource_slice is None
        assert desired.labels == {GPU_MODEL_LABEL: None}
        return
    manifest = desired.resource_slice
    assert manifest is not None
    assert manifest["apiVersion"] == "resource.k8s.io/v1"
    spec = manifest["spec"]
    assert spec["driver"] == DRIVER and spec["nodeName"] == "node-a"
    assert spec["pool"]["resourceSliceCount"] == 1
    assert [d["name"] for d in spec["devices"]] == [f"gpu-{r.gpu.index}" for r in reading.gpus]
    for device, r in zip(spec["devices"], reading.gpus, strict=True):
        assert device["allowMultipleAllocations"] is True
        attrs = device["attributes"]
        assert set(attrs) == {"uuid", "model", "index", "nvlinkDomain", "pcieSwitch",
                              "numaNode", "mig"}
        assert attrs["uuid"] == {"string": r.gpu.uuid}
        assert attrs["index"] == {"int": r.gpu.index}
        assert attrs["nvlinkDomain"] == {"string": r.gpu.nvlink_domain}
        assert attrs["mig"] == {"string": r.gpu.mig_profile}
        memory = device["capacity"]["memory"]
        assert memory["requestPolicy"]["validRange"]["step"] == "1Gi"
        assert memory["value"] == f"{r.gpu.memory_mib}Mi" or memory["value"].endswith("Gi")


def test_h100_node_metadata() -> None:
    desired = desired_for("h100-sxm-8gpu.json")
    assert desired.labels == {GPU_MODEL_LABEL: "NVIDIA-H100-80GB-HBM3"}
    entries = json.loads(str(desired.annotations[DATASETS_ANNOTATION]))
    assert entries == [
        {"name": "cifar10", "bytes": 170_000_000, "lastUse": "2023-11-14T22:13:20Z"},
        {"name": "imagenet", "bytes": 150_000_000_000, "lastUse": "2027-01-15T08:00:00Z"},
    ]
    assert desired_for("h100-sxm-8gpu.json", None).annotations == {}


def test_mig_node_publishes_instances() -> None:
    desired = desired_for("a100-mig.json")
    assert desired.resource_slice is not None
    devices = desired.resource_slice["spec"]["devices"]
    assert [(d["name"], d["attributes"]["mig"]["string"]) for d in devices] == [
        ("gpu-1", ""), ("gpu-2", "3g.20gb"), ("gpu-3", "2g.10gb"), ("gpu-4", "1g.5gb")]
    assert devices[3]["capacity"]["memory"]["requestPolicy"]["validRange"]["max"] == "4Gi"


def test_unpublishable_gpus_are_skipped_not_fatal() -> None:
    gpus = [Gpu(0, "Tesla T4", 15360, uuid="GPU-a"), Gpu(1, "Tesla T4", 15360),
            Gpu(2, "tiny", 1024, uuid="GPU-c")]
    good, problems = publishable_gpus(gpus)
    assert [g.index for g in good] == [0] and len(problems) == 2


def test_content_hash_is_stable_and_sensitive() -> None:
    a = desired_for("t4-2gpu.json")
    assert a.slice_hash == desired_for("t4-2gpu.json").slice_hash
    assert a.slice_hash != desired_for("a100-pcie-4gpu.json").slice_hash
    # live use and processes are not part of the slice: a busy GPU does not republish
    busy = read_machine(recorded("h200-1gpu.json")).core_gpus
    idle = read_machine(recorded("h200-idle.json")).core_gpus
    assert desired_state("n", busy, None).slice_hash == desired_state("n", idle, None).slice_hash


def test_plan_slice_create_then_nothing_then_replace_then_delete() -> None:
    desired = desired_for("t4-2gpu.json")
    create = plan_slice(desired, None, node_uid="uid-1")
    assert create is not None and create.action == "create" and create.body is not None
    meta = create.body["metadata"]
    assert meta["annotations"][HASH_ANNOTATION] == desired.slice_hash
    assert meta["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Node", "name": "node-a", "uid": "uid-1"}]
    assert create.body["spec"]["pool"]["generation"] == 1

    live = json.loads(json.dumps(create.body))
    live["metadata"]["resourceVersion"] = "41"
    assert plan_slice(desired, live) is None  # unchanged: no write

    changed = desired_for("a100-pcie-4gpu.json")
    replace = plan_slice(changed, live)
    assert replace is not None and replace.action == "replace" and replace.body is not None
    assert replace.body["spec"]["pool"]["generation"] == 2
    assert replace.body["metadata"]["resourceVersion"] == "41"

    gone = desired_for("no-driver.json")
    delete = plan_slice(gone, live)
    assert delete is not None and delete.action == "delete"
    assert plan_slice(gone, None) is None


def test_plan_node_patch_only_what_differs() -> None:
    desired = desired_for("t4-2gpu.json")
    node = {"metadata": {"name": "node-a", "labels": {"kubernetes.io/os": "linux"}}}
    patch = plan_node_patch(desired, node)
    assert patch == {"metadata": {
        "labels": {GPU_MODEL_LABEL: "Tesla-T4"},
        "annotations": {DATASETS_ANNOTATION: desired.annotations[DATASETS_ANNOTATION]},
    }}
    node["metadata"]["labels"][GPU_MODEL_LABEL] = "Tesla-T4"
    node["metadata"]["annotations"] = {DATASETS_ANNOTATION: desired.annotations[
        DATASETS_ANNOTATION]}
    assert plan_node_patch(desired, node) is None
    # the GPUs went away: the label is removed, an absent label is left absent
    gone = desired_for("no-driver.json", None)
    assert plan_node_patch(gone, node) == {"metadata": {"labels": {GPU_MODEL_LABEL: None}}}
    assert plan_node_patch(gone, {"metadata": {}}) is None


def test_rfc3339() -> None:
    assert rfc3339(0) == "1970-01-01T00:00:00Z"
