"""A chosen GPU model keeps the pod on nodes of that model however the cluster names it (issue 21).

Our agent labels ``aispike.io/gpu-model``; NVIDIA's GPU feature discovery labels
``nvidia.com/gpu.product``; a node with neither is known by its DRA devices' attributes.  The
model affinity has one term per way in use (each later label only where the earlier ones are
absent, the precedence a node's model is read with), ANDed into the admin's own required terms.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from aispike_hub.backends import and_terms, backend_for, model_affinity_terms
from aispike_hub.contract import GFD_MODEL_LABEL, GPU_MODEL_LABEL, GPU_MODEL_LABELS
from aispike_hub.model import GIB_IN_MIB, Gpu, Node, SliceRequest
from aispike_hub.spawner.nodes import model_labels_in_use, node_from_object
from tests.unit.spawner.conftest import A100, Fakes, FakeWatcher

IN = "In"
ABSENT = {"key": GPU_MODEL_LABEL, "operator": "DoesNotExist"}


def _node(name: str, labels: dict[str, str], gpus: int = 2) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels},
            "status": {"allocatable": {"cpu": "32", "memory": "256Gi",
                                       "nvidia.com/gpu": str(gpus)},
                       "conditions": [{"type": "Ready", "status": "True"}]}}


OURS = _node("ours", {GPU_MODEL_LABEL: A100})
GFD = _node("gfd", {GFD_MODEL_LABEL: A100, "nvidia.com/gpu.memory": "81920"})
BOTH = _node("both", {GPU_MODEL_LABEL: "mixed", GFD_MODEL_LABEL: A100})
CPU = _node("cpu", {GFD_MODEL_LABEL: A100}, gpus=0)


@pytest.mark.parametrize(("nodes", "expected"), [
    ([GFD], (GFD_MODEL_LABEL,)),
    ([OURS], (GPU_MODEL_LABEL,)),
    ([OURS, GFD], GPU_MODEL_LABELS),
    ([BOTH], (GPU_MODEL_LABEL,)),          # our label wins where a node has both
    ([CPU], GPU_MODEL_LABELS),             # no GPU node names a model: keep every way open
    ([], GPU_MODEL_LABELS),
])
def test_labels_in_use_follow_the_nodes(nodes: list[dict[str, Any]],
                                        expected: tuple[str, ...]) -> None:
    assert model_labels_in_use(nodes) == expected


def test_a_node_reads_its_model_with_the_same_precedence() -> None:
    gfd = node_from_object(GFD)
    assert gfd is not None and {g.model for g in gfd.gpus} == {A100}
    both = node_from_object({**BOTH, "metadata": {"name": "both", "labels": {
        **BOTH["metadata"]["labels"], "nvidia.com/gpu.memory": "81920"}}})
    assert both is not None and {g.model for g in both.gpus} == {"mixed"}


def test_terms_one_per_label_later_ones_where_earlier_are_absent() -> None:
    assert model_affinity_terms(["NVIDIA A100-SXM4-80GB"], (GFD_MODEL_LABEL,)) == [
        {"matchExpressions": [{"key": GFD_MODEL_LABEL, "operator": IN, "values": [A100]}]}]
    assert model_affinity_terms([A100]) == [
        {"matchExpressions": [{"key": GPU_MODEL_LABEL, "operator": IN, "values": [A100]}]},
        {"matchExpressions": [ABSENT, {"key": GFD_MODEL_LABEL, "operator": IN,
                                       "values": [A100]}]}]
    assert model_affinity_terms([]) == []


def test_dra_only_nodes_by_name_one_term_each() -> None:
    terms = model_affinity_terms([A100], (GPU_MODEL_LABEL,),
                                 {"d2": "NVIDIA A100-SXM4-80GB", "d1": A100, "h": "NVIDIA-H100"})
    assert terms[1:] == [
        {"matchExpressions": [ABSENT],
         "matchFields": [{"key": "metadata.name", "operator": IN, "values": [name]}]}
        for name in ("d1", "d2")]


def test_admin_terms_are_anded_not_ored() -> None:
    admin = [{"matchExpressions": [{"key": "zone", "operator": IN, "values": ["a"]}]},
             {"matchExpressions": [{"key": "zone", "operator": IN, "values": ["b"]}]}]
    model = model_affinity_terms([A100])
    merged = and_terms(admin, model)
    assert len(merged) == 4
    for term in merged:
        keys = [e["key"] for e in term["matchExpressions"]]
        assert keys[0] == "zone" and keys[-1] in GPU_MODEL_LABELS
    assert and_terms([], model) == model
    assert and_terms(admin, []) == admin


def test_native_backend_and_cpu_only_get_no_model_terms() -> None:
    request = SliceRequest(gpu_count=1, gpu_memory_mib=8 * GIB_IN_MIB, allowed_models=(A100,))
    assert backend_for("aispike").model_affinity_terms(request) == []
    assert backend_for("nvidia").model_affinity_terms(
        SliceRequest(gpu_count=0, allowed_models=(A100,))) == []
    assert backend_for("hami").model_affinity_terms(request, (GFD_MODEL_LABEL,)) == [
        {"matchExpressions": [{"key": GFD_MODEL_LABEL, "operator": IN, "values": [A100]}]}]


GFD_NODE = Node("gfd", 32_000, 256 * GIB_IN_MIB,
                tuple(Gpu(i, A100, 80 * GIB_IN_MIB) for i in range(2)), {GFD_MODEL_LABEL: A100})
OUR_NODE = Node("ours", 32_000, 256 * GIB_IN_MIB,
                tuple(Gpu(i, A100, 80 * GIB_IN_MIB) for i in range(2)), {GPU_MODEL_LABEL: A100})


def _required(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return list(pod["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"])


@pytest.mark.parametrize(("nodes", "keys"), [
    ([GFD_NODE], [[GFD_MODEL_LABEL]]),
    ([OUR_NODE], [[GPU_MODEL_LABEL]]),
    ([OUR_NODE, GFD_NODE], [[GPU_MODEL_LABEL], [GPU_MODEL_LABEL, GFD_MODEL_LABEL]]),
])
def test_the_pod_uses_the_labels_the_nodes_carry(
        no_cluster: Fakes, nodes: list[Node], keys: list[list[str]]) -> None:
    watcher = FakeWatcher(nodes)
    no_cluster.watcher._nodes = watcher._nodes
    config = no_cluster.config({"node_affinity_required": [
        {"matchExpressions": [{"key": "zone", "operator": IN, "values": ["a"]}]}]},
        {"backend": "nvidia"})
    pod, _ = asyncio.run(no_cluster.aispike_pod(config, {"gpu_gib": 8, "gpu_model": A100}))
    terms = _required(pod)
    assert [[e["key"] for e in t["matchExpressions"]][1:] for t in terms] == keys
    for term in terms:
        assert term["matchExpressions"][0]["key"] == "zone"
        assert term["matchExpressions"][-1]["values"] == [A100]
