"""The quota summary the lab extension shows (GET api/quota)."""

from __future__ import annotations

from service_fixtures import GIB, a100_nodes

from aispike_hub.admission.controller import AdmissionController
from aispike_hub.admission.inventory import StaticInventory
from aispike_hub.model import SliceRequest
from aispike_hub.quota import User, policy_from_dict
from aispike_hub.service.store import Store


def test_quota_summary_counts_only_the_users_admitted_servers() -> None:
    policy = policy_from_dict({"defaults": {"quota": {"gpu_memory": "16Gi"}},
                               "users": {"boss": {"tier": "high"}}})
    svc = AdmissionController(Store("sqlite://"), StaticInventory(a100_nodes(1, 1, 80)), policy)
    svc.admit(User("ann"), "a", SliceRequest(gpu_memory_mib=8 * GIB), "hub")
    svc.admit(User("ann"), "b", SliceRequest(gpu_memory_mib=4 * GIB), "hub")
    svc.admit(User("bob"), "", SliceRequest(gpu_memory_mib=8 * GIB), "hub")
    mine = svc.quota_summary(User("ann"))
    assert mine["usage"]["gpu_memory_mib"] == 12 * GIB
    assert mine["limits"]["gpu_memory_mib"] == 16 * GIB
    assert sorted(s["server"] for s in mine["servers"]) == ["a", "b"]
    assert svc.quota_summary(User("boss"))["tier"] == "high"
    assert svc.quota_summary(User("boss"))["usage"]["gpu_memory_mib"] == 0
