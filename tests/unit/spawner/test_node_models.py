"""The spawner's node view knows each GPU node's model from what the cluster has (issue 21).

Precedence: our agent's label ``aispike.io/gpu-model``, else GPU feature discovery's
``nvidia.com/gpu.product``, else what the node's DRA devices name in ResourceSlices (our driver's
``model``, NVIDIA's ``productName``).  A pod that chooses a model is kept on a DRA-only node by
the node's name; a cluster without the DRA API (404) or a hub without RBAC for slices (403) just
has no slices: the form still renders, logged once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from aispike_hub.contract import DRIVER, GFD_MODEL_LABEL, GPU_MODEL_LABEL, NVIDIA_DRIVER
from aispike_hub.kube.coexist import parse_foreign_slice
from aispike_hub.kube.dra_models import MIXED, DraModel, node_models
from aispike_hub.model import GIB_IN_MIB, Gpu, Node
from aispike_hub.spawner.nodes import NodeWatcher, dra_only_nodes, node_from_object
from tests.unit.spawner.conftest import A100, Fakes, FakeWatcher

H100 = "NVIDIA-H100-80GB-HBM3"


def node(name: str, labels: Mapping[str, str] | None = None, gpus: int = 2) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": dict(labels or {})},
            "status": {"allocatable": {"cpu": "32", "memory": "256Gi",
                                       "nvidia.com/gpu": str(gpus)},
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def device(name: str, attributes: dict[str, Any], memory: str = "80Gi") -> dict[str, Any]:
    return {"name": name, "attributes": attributes,
            "capacity": {"memory": {"value": memory}}}


def rslice(node_name: str, driver: str, *devices: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": f"{node_name}-{driver}"},
            "spec": {"driver": driver, "nodeName": node_name,
                     "pool": {"name": node_name, "generation": 1},
                     "devices": list(devices)}}


OURS = rslice("n", DRIVER, device("gpu-0", {"model": {"string": A100}}))
NVIDIA = rslice("n", NVIDIA_DRIVER,
                device("gpu-0", {"type": {"string": "gpu"},
                                 "productName": {"string": "NVIDIA H100 80GB HBM3"}}))
NVIDIA_QUALIFIED = rslice("n", NVIDIA_DRIVER, device(
    "gpu-0", {f"{NVIDIA_DRIVER}/productName": {"string": "NVIDIA H100 80GB HBM3"}}))
NVIDIA_MIG = rslice("n", NVIDIA_DRIVER,
                    device("gpu-0", {"type": {"string": "gpu"},
                                     "productName": {"string": H100}}),
                    device("gpu-0-mig-1g", {"type": {"string": "mig"},
                                            "productName": {"string": H100}}, "10Gi"))
TWO_MODELS = rslice("n", NVIDIA_DRIVER,
                    device("gpu-0", {"productName": {"string": H100}}),
                    device("gpu-1", {"productName": {"string": A100}}))
OTHER_DRIVER = rslice("n", "fpga.example.com", device("f0", {"model": {"string": "X"}}))
NO_MODEL = rslice("n", NVIDIA_DRIVER, device("gpu-0", {"uuid": {"string": "GPU-1"}}))


@pytest.mark.parametrize(("labels", "slices", "model", "memory_mib"), [
    # labels first, ours before GPU feature discovery's; a label beats the DRA devices
    ({GPU_MODEL_LABEL: A100}, [], A100, 80 * GIB_IN_MIB),           # memory from the table
    ({GFD_MODEL_LABEL: A100, "nvidia.com/gpu.memory": "81920"}, [], A100, 81920),
    ({GPU_MODEL_LABEL: A100, GFD_MODEL_LABEL: H100}, [], A100, 80 * GIB_IN_MIB),
    ({GFD_MODEL_LABEL: A100, "nvidia.com/gpu.memory": "81920"}, [NVIDIA], A100, 81920),
    # no label: the DRA devices name the model (label form), memory from their capacity
    ({}, [OURS], A100, 80 * GIB_IN_MIB),
    ({}, [NVIDIA], H100, 80 * GIB_IN_MIB),
    ({}, [NVIDIA_QUALIFIED], H100, 80 * GIB_IN_MIB),
    ({}, [NVIDIA_MIG], H100, 80 * GIB_IN_MIB),          # a MIG part does not shrink the GPU
    # nothing names one model of a known size: no GPUs to offer
    ({}, [TWO_MODELS], "", 0),
    ({}, [OTHER_DRIVER], "", 0),
    ({}, [NO_MODEL], "", 0),
    ({}, [], "", 0),
])
def test_model_precedence(labels: dict[str, str], slices: list[dict[str, Any]],
                          model: str, memory_mib: int) -> None:
    got = node_from_object(node("n", labels), {A100: 80}, dra=node_models(slices).get("n"))
    assert got is not None
    assert {(g.model, g.memory_mib) for g in got.gpus} == ({(model, memory_mib)} if model
                                                           else set())


def test_several_models_on_one_node_are_mixed() -> None:
    assert node_models([TWO_MODELS]) == {"n": DraModel(MIXED)}
    assert node_models([OTHER_DRIVER, NO_MODEL]) == {}


def test_coexistence_reads_the_same_attribute() -> None:
    """The inventory's view of NVIDIA's devices names the model by the same rule."""
    parsed = parse_foreign_slice(NVIDIA_QUALIFIED)
    assert parsed is not None and parsed.devices["gpu-0"].model == "NVIDIA H100 80GB HBM3"


@pytest.mark.parametrize(("objects", "dra", "expected"), [
    ([node("d")], {"d": DraModel(A100)}, {"d": A100}),
    ([node("d", {GFD_MODEL_LABEL: H100})], {"d": DraModel(A100)}, {}),   # a label names it
    ([node("d", gpus=0)], {"d": DraModel(A100)}, {}),                    # no device-plugin GPUs
    ([node("d")], {"d": DraModel(MIXED)}, {}),                           # no one model
    ([node("d")], {}, {}),
])
def test_dra_only_nodes(objects: list[dict[str, Any]], dra: dict[str, DraModel],
                        expected: dict[str, str]) -> None:
    assert dra_only_nodes(objects, dra) == expected


def test_a_dra_only_model_keeps_the_pod_on_those_nodes_by_name(no_cluster: Fakes) -> None:
    labelled = Node("gfd", 32_000, 256 * GIB_IN_MIB,
                    tuple(Gpu(i, A100, 80 * GIB_IN_MIB) for i in range(2)),
                    {GFD_MODEL_LABEL: A100})
    bare = Node("bare", 32_000, 256 * GIB_IN_MIB,
                tuple(Gpu(i, A100, 80 * GIB_IN_MIB) for i in range(2)))
    watcher = FakeWatcher([labelled, bare], dra={"bare": A100})
    no_cluster.watcher._nodes = watcher._nodes
    no_cluster.watcher.dra = watcher.dra
    config = no_cluster.config({}, {"backend": "nvidia"})
    pod, _ = asyncio.run(no_cluster.aispike_pod(config, {"gpu_gib": 8, "gpu_model": A100}))
    terms = pod["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert {"key": GFD_MODEL_LABEL, "operator": "In", "values": [A100]} in \
        terms[0]["matchExpressions"]
    assert terms[-1]["matchFields"] == [{"key": "metadata.name", "operator": "In",
                                         "values": ["bare"]}]
    assert {"key": GFD_MODEL_LABEL, "operator": "DoesNotExist"} in terms[-1]["matchExpressions"]


class KindApi:
    """Answers each kind's list from a table (a list of objects, or an exception to raise);
    each watch waits out its timeout with no events (or until the test stops the watcher)."""

    def __init__(self, lists: dict[str, Any], stop: threading.Event) -> None:
        self.lists = lists
        self.stop = stop
        self.asked: list[str] = []

    def list(self, kind: str, *, query: Mapping[str, Any] | None = None
             ) -> tuple[list[dict[str, Any]], str]:
        self.asked.append(kind)
        result = self.lists[kind]
        if isinstance(result, Exception):
            raise result
        return list(result), "1"

    def watch(self, kind: str, resource_version: str, *, timeout_seconds: int = 240,
              query: Mapping[str, Any] | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        self.stop.wait(timeout_seconds)
        return iter(())


async def _watched(slices: Any) -> tuple[NodeWatcher, KindApi]:
    api = KindApi({"nodes": [node("n")], "pods": [], "resourceslices": slices},
                  threading.Event())
    watcher = NodeWatcher(api)
    api.stop = watcher._stop  # each watch waits until the test stops the watcher
    watcher.start()
    await asyncio.wait_for(asyncio.shield(watcher.first_load), 10)
    return watcher, api


def test_the_watcher_names_unlabelled_nodes_from_their_slices() -> None:
    async def go() -> None:
        watcher, _ = await _watched([NVIDIA])
        try:
            [got] = watcher.nodes()
            assert {g.model for g in got.gpus} == {H100}
            assert watcher.dra_only_nodes() == {"n": H100}
        finally:
            await watcher.stop()

    asyncio.run(go())


@pytest.mark.parametrize("status", [404, 403])
def test_no_dra_api_or_no_rbac_is_no_slices_logged_once(
        status: int, caplog: pytest.LogCaptureFixture) -> None:
    async def go() -> None:
        watcher, api = await _watched(ApiException(status=status, reason="nope"))
        try:
            [got] = watcher.nodes({A100: 80})  # no model known: no GPUs, but a node
            assert got.gpus == () and watcher.dra_only_nodes() == {}
            assert watcher.slices_unavailable.startswith(str(status))
            # asked again at a resync: still one warning
            watcher._slices_unavailable(f"{status} again")
        finally:
            await watcher.stop()
        assert "resourceslices" in api.asked

    with caplog.at_level(logging.WARNING, logger="aispike_hub.spawner.nodes"):
        asyncio.run(go())
    warnings = [r for r in caplog.records if "no ResourceSlices" in r.getMessage()]
    assert len(warnings) == 1 and str(status) in warnings[0].getMessage()


def test_another_slice_failure_does_not_hold_up_the_first_load() -> None:
    async def go() -> None:
        watcher, _ = await _watched(ConnectionError("api server down"))
        try:
            assert [n.name for n in watcher.nodes()] == ["n"]
            assert watcher.slices_unavailable == ""
        finally:
            await watcher.stop()

    asyncio.run(go())
