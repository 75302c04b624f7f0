"""The admission controller's admit, queue and ticket rules, exactly (issue 26 item 7).

What the rest of the mutation run of :mod:`aispike_hub.admission.controller` found: the
functions ``admit`` and ``_process`` reach (the cluster state, the GPU size a whole-GPU or
share request is charged, the ticket, the queue order, the user's ceiling), pinned directly on
an in-memory store and a fixed inventory rather than through the service.  Expected values are
worked out by hand from the fixtures' sizes.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

import pytest
from prometheus_client import REGISTRY
from unit.admission.test_controller import Clock, controller, gib
from unit.admission.test_place import H100, ClusterInventory
from unit.admission.test_place import POLICY as PLACE_POLICY
from unit.admission.test_place import node as place_node
from unit.service.service_fixtures import GIB, a100_nodes

from aispike_hub.admission.controller import AdmissionController
from aispike_hub.admission.inventory import StaticInventory
from aispike_hub.admission.replace import claimed_request
from aispike_hub.admission.wire import assignment_from_dict
from aispike_hub.model import Assignment, Gpu, Node, SliceRequest
from aispike_hub.quota import User, policy_from_dict
from aispike_hub.service.store import PolicyDocRow, Store

A80, A40 = "NVIDIA A100-SXM4-80GB", "NVIDIA A100-SXM4-40GB"
UNLIMITED = dict.fromkeys(("gpu_memory_mib", "gpus", "cpu_milli", "memory_mib", "servers"))
NOTHING = {"gpu_memory_mib": 0, "gpus": 0, "cpu_milli": 0, "memory_mib": 0, "servers": 0}
WHOLE = SliceRequest(gpu_share_milli=1000)


def charge(mib: int) -> dict[str, int]:
    return {"gpu_memory_mib": mib, "gpus": 1, "cpu_milli": 0, "memory_mib": 0, "servers": 1}


def mixed(**kw: object) -> AdmissionController:
    """One node with an 80 GiB GPU (index 0) and a 40 GiB GPU (index 1)."""
    node = Node("mixed", 64_000, 512 * GIB,
                (Gpu(0, A80, 80 * GIB, uuid="g0"), Gpu(1, A40, 40 * GIB, uuid="g1")))
    return AdmissionController(Store("sqlite://"), StaticInventory([node]),
                               policy_from_dict({}), clock=Clock(), **kw)  # type: ignore[arg-type]


def only(model: str, **kw: int) -> SliceRequest:
    return SliceRequest(allowed_models=frozenset({model}), **kw)


# -- the preview ---------------------------------------------------------------------------------
def test_the_preview_leaves_the_users_queued_request_out() -> None:
    """Only admitted servers count: bob's queued 20 GiB is neither his usage nor his charge."""
    svc = controller(Clock())
    svc.admit(User("ann"), "a", gib(70), "hub")
    assert svc.admit(User("bob"), "q", gib(20), "hub").state == "queued"
    assert svc.fit(User("bob"), gib(5)) == {
        "verdict": "admit", "reasons": [], "fits_now": True, "candidates": 1,
        "placement_reasons": [], "tier": "normal", "borrowed": False,
        "charge": charge(5 * GIB), "usage": NOTHING, "limits": UNLIMITED}


def test_the_preview_places_the_request_as_the_device_holds_it() -> None:
    """1.5 GiB free: 1025 MiB fits as asked, but the device rounds it up to 2 GiB."""
    plain = controller(Clock())
    plain.admit(User("ann"), "a", SliceRequest(gpu_memory_mib=78 * GIB + 512), "hub")
    assert plain.fit(User("bob"), SliceRequest(gpu_memory_mib=1025))["fits_now"] is True
    rounded = AdmissionController(plain.store, plain.inventory, plain.policy,
                                  clock=Clock(), rounding=claimed_request)
    why = "no NVIDIA A100-SXM4-80GB has 2 GiB free (largest free: 1.5 GiB)"
    assert rounded.fit(User("bob"), SliceRequest(gpu_memory_mib=1025)) == {
        "verdict": "queue", "reasons": ["the cluster has no room for it now", why],
        "fits_now": False, "candidates": 0, "placement_reasons": [why], "tier": "normal",
        "borrowed": False, "charge": charge(1025), "usage": NOTHING, "limits": UNLIMITED}


def test_a_whole_gpu_preview_is_charged_the_gpu_it_lands_on() -> None:
    """ann holds part of the 80 GiB GPU: a whole GPU can only be the 40 GiB one."""
    svc = mixed()
    svc.admit(User("ann"), "a", only(A80, gpu_memory_mib=10 * GIB), "hub")
    assert svc.fit(User("bob"), WHOLE) == {
        "verdict": "admit", "reasons": [], "fits_now": True, "candidates": 1,
        "placement_reasons": [], "tier": "normal", "borrowed": False,
        "charge": charge(40 * GIB), "usage": NOTHING, "limits": UNLIMITED}


# -- the GPU size a request is charged -------------------------------------------------------------
def test_a_whole_gpu_is_charged_the_memory_of_the_gpu_it_was_placed_on() -> None:
    svc = mixed()
    svc.admit(User("ann"), "a", only(A80, gpu_memory_mib=10 * GIB), "hub")
    ticket = svc.admit(User("bob"), "w", WHOLE, "hub")
    assert (ticket.state, ticket.assignment, ticket.charge) == (
        "admitted", {"node": "mixed", "gpu_indices": [1], "gpu_memory_mib": [40 * GIB],
                     "cpu_milli": 0, "memory_mib": 0, "owner": "bob/w"}, charge(40 * GIB))


def test_half_a_gpu_is_charged_half_of_the_gpu_it_was_placed_on() -> None:
    svc = mixed()
    svc.admit(User("ann"), "a", only(A40, gpu_share_milli=1000), "hub")
    ticket = svc.admit(User("bob"), "h", SliceRequest(gpu_share_milli=500), "hub")
    assert (ticket.assignment or {})["gpu_indices"] == [0]
    assert ticket.charge == charge(40 * GIB)


def test_a_waiting_whole_gpu_is_charged_the_largest_gpu_of_its_models() -> None:
    """Not placed: the largest GPU it may land on, among the models it allows (40 GiB here,
    though the cluster's largest is 80 GiB)."""
    svc = mixed()
    svc.admit(User("ann"), "a", only(A40, gpu_memory_mib=GIB), "hub")
    ticket = svc.admit(User("bob"), "w", only(A40, gpu_share_milli=1000), "hub")
    assert (ticket.state, ticket.charge) == ("queued", charge(40 * GIB))
    anywhere = svc.admit(User("cid"), "w", SliceRequest(gpu_count=2), "hub")
    assert anywhere.state == "queued"
    assert anywhere.charge == {**charge(2 * 80 * GIB), "gpus": 2}


# -- the policy as stored ------------------------------------------------------------------------
def stored_policy(store: Store) -> tuple[dict[str, object], int, str]:
    with store.session() as s:
        row = s.get(PolicyDocRow, 1)
        assert row is not None
        return dict(row.doc), row.version, row.updated_by


def test_the_stored_policy_says_who_stored_it() -> None:
    store = Store("sqlite://")
    AdmissionController.load_policy(store, {"users": {"a": {"tier": "high"}}})
    doc, version, by = stored_policy(store)
    assert (doc["users"], version, by) == ({"a": {"tier": "high"}}, 1, "config")


def test_a_policy_change_is_stored_and_read_back_by_the_next_start() -> None:
    svc = controller(Clock())
    AdmissionController.load_policy(svc.store, {"users": {}})
    svc.set_policy({"users": {"bob": {"tier": "high"}}}, "admin")
    doc, version, by = stored_policy(svc.store)
    assert (doc["users"], version, by) == ({"bob": {"tier": "high"}}, 2, "admin")
    again = AdmissionController.load_policy(svc.store, {"users": {}})
    assert again == svc.policy and again.users["bob"].tier == "high"


# -- place: the whole answer when placed ---------------------------------------------------------
def test_a_placed_answer_is_whole() -> None:
    svc = controller(Clock())
    svc.admit(User("bob"), "b", gib(10), "hub")
    assert svc.place("bob", "b", "hub") == {
        "user": "bob", "server": "b", "state": "admitted", "placed": True,
        "assignment": {"node": "node-0", "gpu_indices": [0], "gpu_memory_mib": [10 * GIB],
                       "cpu_milli": 0, "memory_mib": 0, "owner": "bob/b"},
        "request": {"gpu_count": 1, "gpu_memory_mib": 10 * GIB, "gpu_share_milli": 0,
                    "cpu_milli": 0, "memory_mib": 0, "allowed_models": [], "image": "",
                    "datasets": []},
        "reasons": []}


# -- due preemptions: one per requester, whoever asks ---------------------------------------------
def three_gpus(clock: Clock) -> AdmissionController:
    policy = {"users": {"boss": {"tier": "high"}, "chief": {"tier": "high"},
                        "intern": {"tier": "low"}}}
    return AdmissionController(Store("sqlite://"), StaticInventory(a100_nodes(1, 3, 80)),
                               policy_from_dict(policy), clock=clock, preemption_grace=30)


def test_every_requesters_victims_are_due_two_of_one_user_and_two_of_one_server_name() -> None:
    """boss asks for two servers, chief for one named like boss's: three victims, each due."""
    clock = Clock()
    svc = three_gpus(clock)
    for name in ("a", "b", "c"):
        svc.admit(User("intern"), name, gib(60), "hub")
        clock.now += dt.timedelta(seconds=100)
    assert svc.admit(User("boss"), "x", gib(40), "hub").preempting == ["intern/c"]
    assert svc.admit(User("boss"), "y", gib(40), "hub").preempting == ["intern/b"]
    assert svc.admit(User("chief"), "x", gib(40), "hub").preempting == ["intern/a"]
    clock.now += dt.timedelta(seconds=30)

    def told(server: str, requester: str) -> str:
        return (f"Your server '{server}' was stopped to make room for a tier 'high' server "
                f"of {requester}: it ran in the lower tier 'low', and the cluster was full.")

    assert svc.due_preemptions() == [("intern", "a", told("a", "chief")),
                                     ("intern", "b", told("b", "boss")),
                                     ("intern", "c", told("c", "boss"))]


# -- the servers the quota core and preemption see -------------------------------------------------
def one_node(policy: dict[str, object], clock: Clock, gpus: int = 1) -> AdmissionController:
    return AdmissionController(Store("sqlite://"), StaticInventory(a100_nodes(1, gpus, 80)),
                               policy_from_dict(policy), clock=clock)


def test_a_group_quota_counts_the_admitted_servers_of_its_members() -> None:
    svc = one_node({"groups": {"lab": {"quota": {"gpu_memory": "40Gi"}}}}, Clock())
    assert svc.admit(User("ann", frozenset({"lab"})), "a", gib(30), "hub").state == "admitted"
    ticket = svc.admit(User("bob", frozenset({"lab"})), "b", gib(20), "hub")
    assert (ticket.state, ticket.reasons) == (
        "queued", ["group 'lab' uses 30 of 40 GiB GPU memory; waiting for a member's server to "
                   "stop"])


def test_two_victims_are_named_newest_first() -> None:
    svc = controller(Clock())
    svc.admit(User("intern"), "a", gib(30), "hub")
    svc.admit(User("intern"), "", gib(30), "hub")
    ticket = svc.admit(User("boss"), "big", gib(80), "hub")
    assert ticket.preempting == ["intern/", "intern/a"]
    assert ticket.reasons[-1] == ("stopping 2 lower-priority server(s) to make room "
                                  "(intern's 'default', intern's 'a'); grace 30 s")


def test_the_victim_loses_the_least_work_even_when_its_name_sorts_last() -> None:
    clock = Clock()
    svc = AdmissionController(Store("sqlite://"), StaticInventory(a100_nodes(1, 2, 80)),
                              policy_from_dict({"users": {"boss": {"tier": "high"},
                                                          "intern": {"tier": "low"}}}),
                              clock=clock)
    svc.admit(User("intern"), "a", gib(60), "hub")
    clock.now += dt.timedelta(seconds=100)
    svc.admit(User("intern"), "b", gib(60), "hub")
    clock.now += dt.timedelta(seconds=100)
    assert svc.admit(User("boss"), "x", gib(40), "hub").preempting == ["intern/b"]


def test_a_borrowed_server_goes_first_though_another_loses_less_work() -> None:
    clock = Clock()
    svc = one_node({"users": {"boss": {"tier": "high"}, "ann": {"tier": "low"},
                              "intern": {"tier": "low", "quota": {"gpu_memory": "20Gi"},
                                         "borrowing": {"gpu_memory": "60Gi"}}}}, clock, gpus=2)
    assert svc.admit(User("intern"), "old", gib(60), "hub").borrowed is True
    clock.now += dt.timedelta(seconds=100)
    assert svc.admit(User("ann"), "new", gib(60), "hub").borrowed is False
    clock.now += dt.timedelta(seconds=100)
    assert svc.admit(User("boss"), "x", gib(40), "hub").preempting == ["intern/old"]


BORROWERS = {"ann": {"quota": {"gpu_memory": "20Gi"}, "borrowing": {"gpu_memory": "200Gi"}},
             "bob": {"quota": {"gpu_memory": "40Gi"}, "borrowing": {"gpu_memory": "200Gi"}}}


def test_only_a_request_within_its_quota_stops_a_borrowed_server_of_its_tier() -> None:
    borrowing = one_node({"users": BORROWERS}, Clock())
    assert borrowing.admit(User("ann"), "a", gib(60), "hub").borrowed is True
    ticket = borrowing.admit(User("bob"), "b", gib(60), "hub")
    assert (ticket.state, ticket.borrowed, ticket.preempting) == ("queued", True, [])
    within = one_node({"users": BORROWERS}, Clock())
    within.admit(User("ann"), "a", gib(60), "hub")
    ticket = within.admit(User("bob"), "b", gib(40), "hub")
    assert (ticket.state, ticket.borrowed, ticket.preempting) == ("queued", False, ["ann/a"])


def test_two_requests_planned_in_one_pass_take_different_victims() -> None:
    """bob's x and y wait borrowing (they may not stop ann's borrowed servers); his z stops,
    so both are within his quota in the same pass: each takes one of ann's servers."""
    clock = Clock()
    svc = one_node({"users": {**BORROWERS, "hi": {"tier": "high"}}}, clock, gpus=3)
    for user, server, size in (("ann", "a", 60), ("ann", "b", 60), ("hi", "h", 50),
                               ("bob", "z", 20)):
        assert svc.admit(User(user), server, gib(size), "hub").state == "admitted"
        clock.now += dt.timedelta(seconds=100)
    for server in ("x", "y"):
        assert svc.admit(User("bob"), server, gib(40), "hub").preempting == []
    svc.release("bob", "z", "hub")
    assert [(t.server, t.borrowed, t.preempting) for t in svc.queue()] == [
        ("x", False, ["ann/b"]), ("y", False, ["ann/a"])]


def test_a_preemption_plan_is_audited_as_the_service() -> None:
    svc = controller(Clock())
    svc.admit(User("intern"), "train", gib(60), "hub")
    svc.admit(User("boss"), "urgent", gib(40), "hub")
    plans = [e for e in svc.store.audit_log() if e.action == "preemption.plan"]
    assert [(e.actor, e.target) for e in plans] == [("aispike", "intern/train")]


def test_a_share_request_of_a_user_allowed_no_model_is_refused_whole() -> None:
    svc = one_node({"users": {"cid": {"allowed_models": []}}}, Clock())
    ticket = svc.admit(User("cid"), "s", SliceRequest(gpu_share_milli=500), "hub")
    assert ticket.as_dict() == {
        "user": "cid", "server": "s", "state": "refused",
        "reasons": ["you may not use GPUs (your user entry); start a server without a GPU or "
                    "ask an admin"],
        "position": 0, "queue_length": 0, "tier": "normal", "priority_class": "",
        "borrowed": False, "assignment": None, "charge": {}, "preempting": [], "ceiling": {}}


def test_a_workload_on_a_node_gone_from_the_inventory_is_logged_and_ignored(
        caplog: pytest.LogCaptureFixture) -> None:
    gone = Assignment("gone", (0,), (80 * GIB,), owner="pod")
    svc = AdmissionController(Store("sqlite://"),
                              StaticInventory(a100_nodes(1, 1, 80), held=(gone,)),
                              policy_from_dict({}), clock=Clock())
    with caplog.at_level(logging.WARNING, logger="aispike.admission"):
        assert svc.admit(User("bob"), "b", gib(80), "hub").state == "admitted"
    # once per look at the cluster (the admission, then the queue's pass)
    assert {r.getMessage() for r in caplog.records} == {
        f"ignoring stale assignment {gone}: unknown node 'gone'"}


# -- admit: what the quota check sees --------------------------------------------------------------
def test_a_queued_request_does_not_count_against_the_quota_of_the_next() -> None:
    svc = one_node({"users": {"bob": {"quota": {"gpu_memory": "40Gi"}}}}, Clock())
    svc.admit(User("ann"), "a", gib(70), "hub")
    assert svc.admit(User("bob"), "q", gib(30), "hub").state == "queued"
    assert svc.admit(User("bob"), "r", gib(20), "hub").state == "queued"


def test_the_users_default_server_counts_against_the_quota_of_another() -> None:
    svc = one_node({"users": {"bob": {"quota": {"gpu_memory": "40Gi"}}}}, Clock())
    svc.admit(User("bob"), "", gib(30), "hub")
    refused = svc.admit(User("bob"), "x", gib(20), "hub")
    assert refused.as_dict() == {
        "user": "bob", "server": "x", "state": "refused", "reasons": refused.reasons,
        "position": 0, "queue_length": 0, "tier": "normal", "priority_class": "",
        "borrowed": False, "assignment": None, "charge": {}, "preempting": [], "ceiling": {}}
    assert svc.store.audit_log()[0].action == "admission.refuse"


def quota(mib: int, **entry: object) -> dict[str, object]:
    return {"users": {"bob": {"quota": {"gpu_memory": mib}, **entry}}}


def test_a_whole_gpu_within_the_quota_on_the_gpu_it_lands_on_is_admitted() -> None:
    """50 GiB of quota: the 40 GiB GPU (the 80 GiB one is in use) is within it."""
    svc = mixed()
    svc.set_policy(quota(50 * GIB), "admin")
    svc.admit(User("ann"), "a", only(A80, gpu_memory_mib=10 * GIB), "hub")
    ticket = svc.admit(User("bob"), "w", WHOLE, "hub")
    assert (ticket.state, ticket.charge) == ("admitted", charge(40 * GIB))


def test_a_whole_gpu_over_the_quota_is_refused_at_once() -> None:
    svc = mixed()
    svc.set_policy(quota(30 * GIB), "admin")
    svc.admit(User("ann"), "a", only(A80, gpu_memory_mib=10 * GIB), "hub")
    ticket = svc.admit(User("bob"), "w", WHOLE, "hub")
    assert ticket.as_dict() == {
        "user": "bob", "server": "w", "state": "refused", "reasons": ticket.reasons,
        "position": 0, "queue_length": 0, "tier": "normal", "priority_class": "",
        "borrowed": False, "assignment": None, "charge": {}, "preempting": [], "ceiling": {}}
    assert "40 GiB" in ticket.reasons[0]


def test_a_whole_gpu_is_placed_among_the_users_models_only() -> None:
    """Both GPUs are free; bob may use only the 40 GiB model, within his 50 GiB quota."""
    svc = mixed()
    svc.set_policy(quota(50 * GIB, allowed_models=[A40]), "admin")
    ticket = svc.admit(User("bob"), "w", WHOLE, "hub")
    assert (ticket.state, (ticket.assignment or {})["gpu_indices"], ticket.charge) == (
        "admitted", [1], charge(40 * GIB))


def test_a_queued_share_whose_models_were_taken_away_is_refused_charging_no_gpu_memory() -> None:
    svc = one_node({}, Clock())
    svc.admit(User("ann"), "a", gib(80), "hub")
    assert svc.admit(User("cid"), "s", SliceRequest(gpu_share_milli=500), "hub").charge == \
        charge(40 * GIB)
    svc.set_policy({"users": {"cid": {"allowed_models": []}}}, "admin")
    ticket = svc.status("cid", "s")
    assert (ticket.state, ticket.charge) == ("refused", charge(0))


def test_giving_up_is_audited_as_the_service() -> None:
    clock = Clock()
    svc = controller(clock)
    svc.admit(User("ann"), "a", gib(80), "hub")
    svc.admit(User("bob"), "b", gib(10), "hub")
    clock.now += dt.timedelta(seconds=600)
    svc.process()
    (entry,) = [e for e in svc.store.audit_log() if e.action == "admission.expired"]
    assert (entry.actor, entry.target) == ("aispike", "bob/b")


# -- the ticket ------------------------------------------------------------------------------------
def test_the_ceiling_on_a_ticket_is_that_of_the_users_groups() -> None:
    svc = one_node({"groups": {"lab": {"member": {"quota": {"gpu_memory": "20Gi"},
                                                  "borrowing": {"gpu_memory": "10Gi"}}}}},
                   Clock())
    ticket = svc.admit(User("bob", frozenset({"lab"})), "b", gib(10), "hub")
    assert ticket.ceiling == {**UNLIMITED, "gpu_memory_mib": 30 * GIB}


def test_an_admitted_ticket_whose_tier_left_the_policy_has_no_priority_class() -> None:
    gold = {"tiers": [{"name": "gold", "priority": 300}, {"name": "normal", "priority": 100}],
            "users": {"bob": {"tier": "gold"}}}
    svc = one_node(gold, Clock())
    assert svc.admit(User("bob"), "b", gib(10), "hub").priority_class == "aispike-gold"
    svc.set_policy({}, "admin")
    ticket = svc.status("bob", "b")
    assert (ticket.state, ticket.tier, ticket.priority_class) == ("admitted", "gold", "")


def test_a_request_waiting_its_turn_in_strict_fifo_keeps_what_admission_found() -> None:
    """Behind cid (who waits for room), bob's request is not looked at again: its ticket
    carries what admission found (borrowing 10 of his 20 GiB, his tier and charge), and as its
    reason that it waits its turn, not "admitted on borrowed capacity" (what admission found
    when it came, though it fits: 20 GiB of the 20 left)."""
    policy = {"users": {"bob": {"quota": {"gpu_memory": "10Gi"},
                                "borrowing": {"gpu_memory": "60Gi"}}}}
    svc = AdmissionController(Store("sqlite://"), StaticInventory(a100_nodes(1, 1, 80)),
                              policy_from_dict(policy), clock=Clock(), strict_fifo=True)
    svc.admit(User("ann"), "a", gib(60), "hub")
    assert svc.admit(User("cid"), "c", gib(40), "hub").state == "queued"
    ticket = svc.admit(User("bob"), "b", gib(20), "hub")
    assert (ticket.state, ticket.position, ticket.tier, ticket.borrowed, ticket.charge) == (
        "queued", 2, "normal", True, charge(20 * GIB))
    assert ticket.reasons == ["waits its turn: 1 earlier request is queued ahead (this hub's "
                              "queue is first in, first out)"]
    dan = svc.admit(User("dan"), "d", gib(1), "hub")
    assert (dan.position, dan.reasons) == (3, [
        "waits its turn: 2 earlier requests are queued ahead (this hub's queue is first in, "
        "first out)"])


def counted(verdict: str, reason: str) -> Callable[[], float]:
    name, labels = "aispike_admissions_total", {"verdict": verdict, "reason": reason}
    before = REGISTRY.get_sample_value(name, labels) or 0.0
    return lambda: (REGISTRY.get_sample_value(name, labels) or 0.0) - before


def test_admissions_are_counted_as_borrowed_and_as_waiting_for_the_group() -> None:
    svc = one_node({"users": {"bob": {"quota": {"gpu_memory": "10Gi"},
                                      "borrowing": {"gpu_memory": "60Gi"}}},
                    "groups": {"lab": {"quota": {"gpu_memory": "40Gi"}}}}, Clock())
    borrowed, group = counted("admitted", "borrowed"), counted("queued", "group")
    assert svc.admit(User("bob"), "b", gib(20), "hub").borrowed is True
    svc.admit(User("ann", frozenset({"lab"})), "a", gib(30), "hub")
    assert svc.admit(User("cid", frozenset({"lab"})), "c", gib(20), "hub").state == "queued"
    assert (borrowed(), group()) == (1, 1)


# -- the cluster as admission sees it --------------------------------------------------------------
def claims(*nodes: Node, **kw: object) -> tuple[AdmissionController, ClusterInventory]:
    inventory = ClusterInventory(list(nodes))
    svc = AdmissionController(Store("sqlite://"), inventory,  # type: ignore[arg-type]
                              policy_from_dict(PLACE_POLICY), clock=Clock(), **kw)
    return svc, inventory


def test_a_re_placement_leaves_out_only_its_own_claim() -> None:
    """bob's own claim is listed first; ann's, after it, holds 60 GiB: 30 no longer fit."""
    svc, inventory = claims(place_node("a-0", A80))
    svc.admit(User("bob"), "b", gib(30), "hub")
    inventory.held["bob/b"] = [Assignment("a-0", (0,), (30 * GIB,))]
    inventory.held["ann/a"] = [Assignment("a-0", (0,), (60 * GIB,))]
    assert svc.place("bob", "b", "hub")["placed"] is False


def test_an_admitted_server_whose_claim_exists_is_counted_once() -> None:
    svc, inventory = claims(place_node("a-0", A80))
    ann = svc.admit(User("ann"), "a", gib(30), "hub")
    inventory.held["ann/a"] = [assignment_from_dict(ann.assignment or {})]
    assert svc.admit(User("bob"), "b", gib(50), "hub").state == "admitted"


def test_the_queue_places_a_request_among_the_users_models_only() -> None:
    """ann may use only the A100; it is full, the H100 is free: she waits."""
    svc, _ = claims(place_node("a-0", A80), place_node("h-0", H100))
    svc.admit(User("cid"), "c", only(A80, gpu_memory_mib=80 * GIB), "hub")
    assert svc.admit(User("ann"), "a", gib(10), "hub").state == "queued"
    svc.process()
    assert svc.status("ann", "a").state == "queued"


def test_a_whole_gpu_of_a_model_the_cluster_lacks_is_charged_no_gpu_memory() -> None:
    svc = one_node({}, Clock())
    ticket = svc.admit(User("bob"), "w", only(H100, gpu_share_milli=1000), "hub")
    assert (ticket.state, ticket.charge) == ("queued", charge(0))


def test_the_queue_counts_the_users_default_server_against_the_quota_of_another() -> None:
    svc = one_node({"users": {"bob": {"quota": {"gpu_memory": "25Gi"}}}}, Clock())
    svc.admit(User("ann"), "a", gib(70), "hub")
    assert svc.admit(User("bob"), "x", gib(20), "hub").state == "queued"
    assert svc.admit(User("bob"), "", gib(10), "hub").state == "admitted"
    svc.release("ann", "a", "hub")
    assert svc.status("bob", "x").state == "refused"


# -- the queue's pass goes on after a request leaves it -------------------------------------------
def test_the_pass_goes_on_after_a_refusal() -> None:
    """bob and cid wait for their group; the new policy refuses bob (his own quota) and lets
    cid in, in the same pass."""
    lab = frozenset({"lab"})
    svc = one_node({"groups": {"lab": {"quota": {"gpu_memory": "20Gi"}}}}, Clock())
    svc.admit(User("ann", lab), "a", gib(10), "hub")
    assert svc.admit(User("bob", lab), "b", gib(20), "hub").state == "queued"
    assert svc.admit(User("cid", lab), "c", gib(15), "hub").state == "queued"
    svc.set_policy({"groups": {"lab": {"quota": {"gpu_memory": "40Gi"}}},
                    "users": {"bob": {"quota": {"gpu_memory": "10Gi"}}}}, "admin")
    assert (svc.status("bob", "b").state, svc.status("cid", "c").state) == (
        "refused", "admitted")


def test_the_pass_goes_on_after_a_request_gives_up() -> None:
    clock = Clock()
    svc = controller(clock)
    svc.admit(User("ann"), "a1", gib(40), "hub")
    svc.admit(User("ann"), "a2", gib(30), "hub")
    assert svc.admit(User("bob"), "b", gib(50), "hub").state == "queued"
    clock.now += dt.timedelta(seconds=100)
    assert svc.admit(User("cid"), "c", gib(20), "hub").state == "queued"
    clock.now += dt.timedelta(seconds=500)
    svc.release("ann", "a2", "hub")  # 40 GiB free: bob's 50 never fit in time, cid's 20 do
    assert (svc.status("bob", "b").state, svc.status("cid", "c").state) == (
        "expired", "admitted")


def test_a_request_refused_by_the_queue_for_two_reasons_is_told_both() -> None:
    svc = controller(Clock())
    svc.admit(User("ann"), "a", gib(70), "hub")
    svc.admit(User("bob"), "b", gib(20), "hub")
    svc.set_policy({"users": {"bob": {"quota": {"gpu_memory": "10Gi", "gpus": 0}}}}, "admin")
    assert svc.status("bob", "b").reasons == [
        "20 GiB is more than your quota of 10 GiB GPU memory (your user entry); ask for less "
        "or ask an admin; 1 GPU is more than your quota of 0 GPUs (your user entry); ask for "
        "less or ask an admin"]


def test_a_request_admitted_in_a_pass_frees_its_victim_for_the_next() -> None:
    """x planned to stop intern's b, so y found no victim; hi stops, x fits where hi was and
    is admitted: in the same pass y may take b."""
    policy = {"users": {"boss": {"tier": "high"}, "hi": {"tier": "high"},
                        "intern": {"tier": "low"}}}
    svc = one_node(policy, Clock(), gpus=2)
    svc.admit(User("hi"), "h", gib(60), "hub")
    svc.admit(User("intern"), "b", gib(60), "hub")
    assert svc.admit(User("boss"), "x", gib(40), "hub").preempting == ["intern/b"]
    assert svc.admit(User("boss"), "y", gib(50), "hub").preempting == []
    svc.release("hi", "h", "hub")
    assert svc.status("boss", "x").state == "admitted"
    assert svc.status("boss", "y").preempting == ["intern/b"]
