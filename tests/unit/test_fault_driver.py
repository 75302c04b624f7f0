"""The fault-injection driver's own checks can fail (issue 26, item 5): its seeded plan is
reproducible, and its over-commit and leak checks name what they find."""

from __future__ import annotations

from typing import Any

from tests.integration import faults


def test_a_seed_fixes_the_plan_and_every_fault_is_scheduled_once() -> None:
    a, b = faults.plan(7, 30), faults.plan(7, 30)
    assert a == b
    assert a != faults.plan(8, 30)
    assert sorted(name for _, name in a.faults) == sorted(faults.FAULTS)
    assert {fate for _, fate, _ in a.spawns} == {"keep", "cancel", "stop"}


class FakeCustom:
    def __init__(self, claims: list[dict[str, Any]], slices: list[dict[str, Any]]) -> None:
        self.claims, self.slices = claims, slices

    def list_namespaced_custom_object(self, *args: Any) -> dict[str, Any]:
        return {"items": self.claims}

    def list_cluster_custom_object(self, *args: Any) -> dict[str, Any]:
        return {"items": self.slices}


class FakeCluster:
    def __init__(self, custom: FakeCustom) -> None:
        self.custom = custom


def claim(server: str, device: str, memory: str) -> dict[str, Any]:
    return {"metadata": {"name": f"{server}-gpu",
                         "labels": {"app.kubernetes.io/managed-by": "aispike-hub",
                                    "aispike.io/server": server.strip("/")},
                         "annotations": {"aispike.io/hub-server": server}},
            "status": {"allocation": {"devices": {"results": [
                {"pool": "n1", "device": device, "consumedCapacity": {"memory": memory}}]}}}}


SLICES = [{"spec": {"pool": {"name": "n1"}, "devices": [
    {"name": "gpu-0", "capacity": {"memory": {"value": "40Gi"}}},
    {"name": "gpu-1", "capacity": {"memory": {"value": "40Gi"}}}]}}]


def stack(claims: list[dict[str, Any]]) -> faults.Stack:
    return faults.Stack(None, FakeCluster(FakeCustom(claims, SLICES)), "ns", lambda: None)


def test_a_gpu_exactly_full_is_not_over_committed_and_one_byte_more_is() -> None:
    full = [claim("a/", "gpu-0", "32Gi"), claim("b/", "gpu-0", "8Gi")]
    assert stack(full).overcommit(full) == []
    over = [*full, claim("c/", "gpu-0", "1")]
    assert stack(over).overcommit(over) == [f"n1/gpu-0: {40 * 2**30 + 1} > {40 * 2**30} bytes"]


def test_claims_name_the_hub_server_they_belong_to() -> None:
    keys, _ = stack([claim("alice/", "gpu-1", "8Gi")]).claims()
    assert keys == {"alice/"}
