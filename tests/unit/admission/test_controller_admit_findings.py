"""The admission controller's admit, queue and ticket rules, exactly (issue 26 item 7).

What the rest of the mutation run of :mod:`aispike_hub.admission.controller` found: the
functions ``admit`` and ``_process`` reach (the cluster state, the GPU size a whole-GPU or
share request is charged, the ticket, the queue order, the user's ceiling), pinned directly on
an in-memory store and a fixed inventory rather than through the service.  Expected values are
worked out by hand from the fixtures' sizes.
"""

from __future__ import annotations

import datetime as dt

from unit.admission.test_controller import Clock, controller, gib
from unit.service.service_fixtures import GIB, a100_nodes

from aispike_hub.admission.controller import AdmissionController
from aispike_hub.admission.inventory import StaticInventory
from aispike_hub.admission.replace import claimed_request
from aispike_hub.model import Gpu, Node, SliceRequest
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
