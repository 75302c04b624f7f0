"""Pure builders of pinned claims and pod fields, and the inventory's parsers and usage rules.

API objects are plain dicts here (the shapes the API server returns); the real API is exercised
in tests/integration/test_dra_placement.py.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from aispike_hub.kube import claims, inventory
from aispike_hub.kube.slices import resource_slice
from aispike_hub.model import Gpu, SliceRequest

GIB = 1024
GPUS = (
    Gpu(0, "A100", 80 * GIB, uuid="GPU-a0", nvlink_domain="nvl0", numa_node=0),
    Gpu(1, "A100", 80 * GIB, uuid="GPU-a1", nvlink_domain="nvl0", numa_node=0),
)


def slice_obj(node: str = "n0", gpus: tuple[Gpu, ...] = GPUS) -> dict[str, Any]:
    obj = resource_slice(node, gpus)
    obj["metadata"]["resourceVersion"] = "1"
    return obj


def placement(node: str = "n0", mib: int = 8 * GIB, whole: bool = False) -> claims.Placement:
    return claims.Placement(node, (claims.PinnedGpu("GPU-a1", 1, mib, "nvl0"),), whole, 500, GIB)


def test_slice_claim_pins_uuid_and_requests_memory() -> None:
    req = SliceRequest(gpu_memory_mib=8 * GIB, cpu_milli=500, memory_mib=GIB)
    body = claims.pinned_claim("jupyter-alice", placement(), req)
    assert body["apiVersion"] == "resource.k8s.io/v1"
    assert body["metadata"]["name"] == "jupyter-alice-gpu"
    (request,) = body["spec"]["devices"]["requests"]
    exactly = request["exactly"]
    assert exactly["deviceClassName"] == "gpu.aispike.io"
    assert exactly["allocationMode"] == "ExactCount" and exactly["count"] == 1
    assert exactly["selectors"] == [
        {"cel": {"expression": 'device.attributes["gpu.aispike.io"].uuid == "GPU-a1"'}}
    ]
    assert exactly["capacity"] == {"requests": {"memory": "8Gi"}}
    assert "constraints" not in body["spec"]["devices"]
    assert claims.placement_from_claim(body) == placement()
    annotations = body["metadata"]["annotations"]
    assert claims.request_from_json(annotations[claims.REQUEST_ANNOTATION]) == req


def test_multi_gpu_claim_counts_devices_and_matches_nvlink_domain() -> None:
    p = claims.Placement("n0", tuple(claims.PinnedGpu(g.uuid, g.index, g.memory_mib, "nvl0")
                                     for g in GPUS), True)
    body = claims.pinned_claim("s", p, SliceRequest(gpu_count=2))
    exactly = body["spec"]["devices"]["requests"][0]["exactly"]
    assert exactly["count"] == 2 and "capacity" not in exactly
    assert exactly["selectors"][0]["cel"]["expression"] == (
        'device.attributes["gpu.aispike.io"].uuid in ["GPU-a0", "GPU-a1"]'
    )
    assert body["spec"]["devices"]["constraints"] == [
        {"requests": ["gpu"], "matchAttribute": "gpu.aispike.io/nvlinkDomain"}
    ]


def test_pod_gets_claim_affinity_and_keeps_its_own_terms() -> None:
    pod = {
        "metadata": {"name": "x"},
        "spec": {
            "containers": [{"name": "side"}, {"name": "notebook"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "zone", "operator": "In", "values": ["a"]}]}]}}},
        },
    }
    out = claims.apply_pin_to_pod(pod, "jupyter-bob", placement(), container="notebook")
    assert out["spec"]["resourceClaims"] == [
        {"name": "gpu", "resourceClaimName": "jupyter-bob-gpu"}
    ]
    assert out["spec"]["containers"][1]["resources"]["claims"] == [{"name": "gpu"}]
    assert "resources" not in out["spec"]["containers"][0]
    (term,) = out["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert term["matchExpressions"][0]["key"] == "zone"
    assert term["matchFields"] == [{"key": "metadata.name", "operator": "In", "values": ["n0"]}]
    assert claims.pinned_node_of_pod(out) == "n0"
    assert "resourceClaims" not in pod["spec"]  # the input is not changed


def test_long_server_names_stay_valid() -> None:
    name = "jupyter-" + "x" * 300
    assert len(claims.claim_name(name)) <= 253
    assert len(claims.server_label_value(name)) <= 63
    assert claims.claim_name(name) != claims.claim_name(name + "y")


def test_slice_parser_keeps_good_devices_and_reports_bad_ones() -> None:
    obj = slice_obj()
    obj["spec"]["devices"][1]["attributes"].pop("uuid")
    info, problems = inventory.parse_slice(obj)
    assert info is not None and [g.uuid for g in info.gpus] == ["GPU-a0"]
    assert info.gpus[0] == GPUS[0]
    assert len(problems) == 1 and "uuid" in problems[0]
    foreign = slice_obj()
    foreign["spec"]["driver"] = "gpu.nvidia.com"
    assert inventory.parse_slice(foreign)[0] is None
    broken = slice_obj()
    broken["spec"]["devices"] = "nonsense"
    assert inventory.parse_slice(broken)[0] is None


def allocated_claim(consumed: str | None, driver: str = "gpu.aispike.io") -> dict[str, Any]:
    result: dict[str, Any] = {"request": "gpu", "driver": driver, "pool": "n0", "device": "gpu-0"}
    if consumed:
        result["consumedCapacity"] = {"memory": consumed}
    return {
        "metadata": {"name": "c", "namespace": "ns", "uid": "u1", "resourceVersion": "5"},
        "spec": {},
        "status": {"allocation": {"devices": {"results": [result]}}},
    }


def devices() -> inventory.DeviceIndex:
    return inventory.DeviceIndex(
        {("n0", "gpu-0"): ("n0", 0, 80 * GIB), ("n0", "gpu-1"): ("n0", 1, 80 * GIB)},
        {"GPU-a0": ("n0", 0, 80 * GIB), "GPU-a1": ("n0", 1, 80 * GIB)},
    )


def test_any_allocation_on_our_devices_counts_and_other_drivers_do_not() -> None:
    usage = inventory.claim_usage(inventory.parse_claim(allocated_claim("12Gi")), devices(), False)
    assert usage.hard
    assert [(a.node, a.gpu_indices, a.gpu_memory_mib) for a in usage.assignments] == [
        ("n0", (0,), (12 * GIB,))
    ]
    whole = inventory.claim_usage(inventory.parse_claim(allocated_claim(None)), devices(), False)
    assert whole.assignments[0].gpu_memory_mib == (80 * GIB,)
    other = inventory.parse_claim(allocated_claim("12Gi", driver="gpu.nvidia.com"))
    assert other.foreign_results == 1
    assert inventory.claim_usage(other, devices(), False).assignments == ()


def test_pinned_claim_counts_until_allocated_and_cpu_moves_to_the_bound_pod() -> None:
    body = claims.pinned_claim("s", placement(), SliceRequest(gpu_memory_mib=8 * GIB))
    body["metadata"].update(namespace="ns", uid="u", resourceVersion="1")
    info = inventory.parse_claim(body)
    soft = inventory.claim_usage(info, devices(), bound_pod=False)
    assert not soft.hard
    (a,) = soft.assignments
    assert (a.gpu_indices, a.gpu_memory_mib, a.cpu_milli) == ((1,), (8 * GIB,), 500)
    (b,) = inventory.claim_usage(info, devices(), bound_pod=True).assignments
    assert b.cpu_milli == 0 and b.gpu_memory_mib == (8 * GIB,)
    gone = inventory.DeviceIndex({}, {})
    vanished = inventory.claim_usage(info, gone, False)
    assert vanished.assignments == () and "no longer published" in vanished.problems[0]


def test_damaged_pin_annotation_is_reported_not_raised() -> None:
    body = claims.pinned_claim("s", placement(), SliceRequest(gpu_memory_mib=8 * GIB))
    body["metadata"]["annotations"][claims.PLACEMENT_ANNOTATION] = "{not json"
    info = inventory.parse_claim(body)
    assert info.ours and info.placement is None and "placement" in info.problem


def test_pod_requests_follow_the_schedulers_rule() -> None:
    pod = inventory.parse_pod({
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": {
            "nodeName": "n0",
            "containers": [{"resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}},
                           {"resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}],
            "initContainers": [{"resources": {"requests": {"cpu": "4", "memory": "1Gi"}}}],
            "resourceClaims": [{"name": "gpu", "resourceClaimName": "p-gpu"}],
        },
        "status": {"phase": "Running"},
    })
    assert (pod.cpu_milli, pod.memory_mib, pod.claim_names) == (4000, 2 * GIB, ("p-gpu",))
    assert pod.counts and pod.running


@pytest.mark.parametrize("change", ["cordon", "notready", "taint"])
def test_nodes_that_take_no_pods_say_why(change: str) -> None:
    node: dict[str, Any] = {
        "metadata": {"name": "n0", "annotations": {"aispike.io/datasets": "garbage"}},
        "spec": {},
        "status": {"allocatable": {"cpu": "8", "memory": "32Gi"},
                   "conditions": [{"type": "Ready", "status": "True"}]},
    }
    ok = inventory.parse_node(node)
    assert ok.unschedulable == "" and ok.cpu_milli == 8000 and ok.datasets == ()
    if change == "cordon":
        node["spec"]["unschedulable"] = True
    elif change == "notready":
        node["status"]["conditions"][0]["status"] = "False"
    else:
        node["spec"]["taints"] = [{"key": "gpu", "effect": "NoSchedule"}]
        assert inventory.parse_node(node, ["gpu"]).unschedulable == ""
    assert inventory.parse_node(node).unschedulable


def test_inventory_events_without_a_cluster(caplog: pytest.LogCaptureFixture) -> None:
    """The event handlers keep a consistent state from plain event dicts (no API involved)."""
    inv = inventory.Inventory(api_client=None)
    node = {"metadata": {"name": "n0"}, "spec": {},
            "status": {"allocatable": {"cpu": "8", "memory": "32Gi"},
                       "conditions": [{"type": "Ready", "status": "True"}]}}
    inv._apply("nodes", "ADDED", node)
    inv._apply("resourceslices", "ADDED", slice_obj())
    dup = slice_obj("ghost")  # same uuids published for a node that also claims them
    dup["metadata"]["name"] = "ghost-slice"
    with caplog.at_level(logging.WARNING):
        inv._apply("resourceslices", "ADDED", dup)
        state = inv.state()
    assert state is not None and state.total_gpus() == 0  # ambiguous uuids: not placed on
    assert "published more than once" in caplog.text
    inv._apply("resourceslices", "DELETED", dup)
    state = inv.state()
    assert state is not None and state.total_gpus() == 2
    inv._apply("resourceclaims", "ADDED", allocated_claim("70Gi"))
    body = claims.pinned_claim("s", claims.Placement(
        "n0", (claims.PinnedGpu("GPU-a0", 0, 20 * GIB),), False), SliceRequest(
        gpu_memory_mib=20 * GIB))
    body["metadata"].update(namespace="ns", uid="u2", resourceVersion="1")
    inv._apply("resourceclaims", "ADDED", body)
    assert "room" in inv.stale_reason("ns", "s-gpu") or "free memory" in inv.stale_reason(
        "ns", "s-gpu")
    state = inv.state()
    assert state is not None and int(state.gpu_free[0, 0]) == 10 * GIB


def test_the_hub_server_of_claims_and_pods_is_read_and_junk_is_ignored() -> None:
    req = SliceRequest(gpu_memory_mib=8 * GIB, cpu_milli=500, memory_mib=GIB)
    body = claims.pinned_claim("jupyter-alice", placement(), req, hub_server="alice/train")
    assert inventory.parse_claim(body).hub_server == "alice/train"
    assert inventory.parse_claim(claims.pinned_claim("x", placement(), req)).hub_server == ""
    pod = {"metadata": {"name": "p", "namespace": "ns", "annotations": {
        claims.HUB_SERVER_ANNOTATION: "bob/"}}, "spec": {"containers": []}}
    assert inventory.parse_pod(pod).hub_server == "bob/"
    for junk in ("no-slash", 7, "a/" + "x" * 2000):
        pod["metadata"]["annotations"][claims.HUB_SERVER_ANNOTATION] = junk
        assert inventory.parse_pod(pod).hub_server == ""


def test_node_facts_change_in_place_and_only_placement_changes_rebuild() -> None:
    """Image pulls, labels and CPU/RAM changes update the state in place (no rebuild of the
    whole cluster inside the next decision); readiness changes and new GPUs rebuild it."""
    inv = inventory.Inventory(api_client=None)

    def node(name: str = "n0", cpu: str = "8", ready: str = "True",
             images: tuple[str, ...] = ()) -> dict[str, Any]:
        return {"metadata": {"name": name, "labels": {"pool": "a"}}, "spec": {},
                "status": {"allocatable": {"cpu": cpu, "memory": "32Gi"},
                           "images": [{"names": [i], "sizeBytes": 1000} for i in images],
                           "conditions": [{"type": "Ready", "status": ready}]}}

    inv._apply("nodes", "ADDED", node())
    inv._apply("nodes", "ADDED", node("down", ready="False"))
    inv._apply("resourceslices", "ADDED", slice_obj())
    inv._apply("resourceclaims", "ADDED", allocated_claim("70Gi"))
    state = inv.state()
    assert state is not None and int(state.gpu_free[0, 0]) == 10 * GIB
    inv._apply("nodes", "MODIFIED", node(images=("quay.io/x:1",)))
    inv._apply("nodes", "MODIFIED", node(cpu="6", images=("quay.io/x:1",)))
    inv._apply("nodes", "MODIFIED", node("down", cpu="4", ready="False"))
    assert inv.state() is state  # the same state object: nothing rebuilt
    assert state.nodes[0].images == {"quay.io/x:1": 1000}
    assert int(state.cpu_free[0]) == 6000 and int(state.gpu_free[0, 0]) == 10 * GIB
    inv._apply("nodes", "MODIFIED", node("down"))  # ready now: a node to place on
    rebuilt = inv.state()
    assert rebuilt is not state and rebuilt is not None and "down" in rebuilt.node_index
    assert int(rebuilt.gpu_free[rebuilt.node_index["n0"], 0]) == 10 * GIB
