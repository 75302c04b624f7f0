"""The store on sqlite and on a real PostgreSQL: policy, audit and reservations survive restarts."""

from __future__ import annotations

from service_fixtures import GIB, a100_nodes

from aispike_hub.admission.controller import AdmissionController
from aispike_hub.admission.inventory import StaticInventory
from aispike_hub.model import SliceRequest
from aispike_hub.quota import PolicyError, User, policy_to_dict
from aispike_hub.service.store import Store

CONFIG = {"defaults": {"quota": {"gpu_memory": "16Gi", "servers": 2}}}


def start(url: str, config: dict[str, object] | None = None) -> AdmissionController:
    store = Store(url)
    policy = AdmissionController.load_policy(store, config or CONFIG)
    return AdmissionController(store, StaticInventory(a100_nodes()), policy)


def test_restart_keeps_policy_audit_and_reservations(db_url: str) -> None:
    svc = start(db_url)
    assert svc.policy.defaults.quota.gpu_memory_mib == 16 * GIB
    doc = policy_to_dict(svc.policy)
    doc["users"] = {"alice": {"quota": {"gpu_memory": "32Gi"}, "tier": "high"}}
    assert svc.set_policy(doc, "admin-ann", "users.alice") == 2
    ticket = svc.admit(User("alice"), "train", SliceRequest(gpu_memory_mib=24 * GIB), "hub")
    assert ticket.state == "admitted", ticket
    svc.store.close()

    # The config changed meanwhile: the store, edited at run time, wins.
    again = start(db_url, {"defaults": {"quota": {"gpu_memory": "1Gi"}}})
    assert again.policy.users["alice"].quota.gpu_memory_mib == 32 * GIB
    assert again.policy.defaults.quota.gpu_memory_mib == 16 * GIB
    assert again.status("alice", "train").state == "admitted"
    log = again.store.audit_log()
    actions = [(e.actor, e.action) for e in log]
    assert ("admin-ann", "policy.update") in actions
    assert ("config", "policy.seed") in actions
    assert ("hub", "admission.admitted") in actions
    update = next(e for e in log if e.action == "policy.update")
    assert update.target == "users.alice"
    assert update.detail["after"]["users"]["alice"]["tier"] == "high"
    # Quota already used is still counted after the restart.
    refused = again.admit(User("alice"), "eda", SliceRequest(gpu_memory_mib=16 * GIB), "hub")
    assert refused.state == "refused"
    assert "you use 24 of 32 GiB GPU memory in server 'train'" in refused.reasons[0]
    again.store.close()


def test_bad_policy_is_refused_and_not_stored(db_url: str) -> None:
    svc = start(db_url)
    doc = policy_to_dict(svc.policy)
    doc["users"] = {"bob": {"tier": "platinum"}}
    try:
        svc.set_policy(doc, "admin", "users.bob")
    except PolicyError as e:
        assert e.field == "users.bob.tier"
    else:
        raise AssertionError("a policy with an unknown tier was accepted")
    stored = svc.store.policy_doc()
    assert stored is not None and stored[1] == 1 and "bob" not in stored[0]["users"]
    assert not [e for e in svc.store.audit_log() if e.action == "policy.update"]
    svc.store.close()


def test_notices_persist_and_can_be_dismissed(db_url: str) -> None:
    svc = start(db_url)
    with svc.store.session() as s:
        svc.store.notify(s, "alice", "train", "preempted", "stopped for a high-tier server")
    svc.store.close()
    again = start(db_url)
    (notice,) = again.store.notices("alice")
    assert notice["kind"] == "preempted" and "high-tier" in notice["message"]
    again.store.dismiss_notices("alice", notice["id"])
    assert again.store.notices("alice") == []
    again.store.close()
