"""The admission controller's answers, exactly (issue 26 item 7: what mutation testing found).

Each test pins a value a caller reads: a whole ticket, the form's preview, the quota summary,
the preemption warning and plan, the audit of a policy change, and the boundaries: exactly
filling a GPU, exactly at a quota, the queue deadline and the preemption grace exactly reached,
ties in the queue order, a re-used ticket checked against a new request.
"""

from __future__ import annotations

import datetime as dt

import pytest
from unit.admission.test_controller import POLICY, Clock, _audit, controller, gib
from unit.admission.test_place import A100, H100
from unit.admission.test_place import controller as place_controller
from unit.admission.test_place import gib as place_gib
from unit.admission.test_place import node as place_node
from unit.service.service_fixtures import GIB, a100_nodes

from aispike_hub.admission.controller import AdmissionController, _diff, _seconds_between
from aispike_hub.admission.inventory import StaticInventory
from aispike_hub.quota import User, policy_from_dict, policy_to_dict
from aispike_hub.service.store import Store

UNLIMITED = dict.fromkeys(("gpu_memory_mib", "gpus", "cpu_milli", "memory_mib", "servers"))


def charge(mib: int) -> dict[str, int]:
    return {"gpu_memory_mib": mib, "gpus": 1, "cpu_milli": 0, "memory_mib": 0, "servers": 1}


def request_doc(mib: int) -> dict[str, object]:
    return {"gpu_count": 1, "gpu_memory_mib": mib, "gpu_share_milli": 0, "cpu_milli": 0,
            "memory_mib": 0, "allowed_models": [], "image": "", "datasets": []}


def assignment(owner: str, mib: int) -> dict[str, object]:
    return {"node": "node-0", "gpu_indices": [0], "gpu_memory_mib": [mib], "cpu_milli": 0,
            "memory_mib": 0, "owner": owner}


def test_an_admitted_ticket_exactly_filling_the_gpu_is_whole() -> None:
    svc = controller(Clock())
    ticket = svc.admit(User("intern"), "train", gib(80), "hub")
    assert ticket.as_dict() == {
        "user": "intern", "server": "train", "state": "admitted", "reasons": [],
        "position": 0, "queue_length": 0, "tier": "low", "priority_class": "aispike-low",
        "borrowed": False, "assignment": assignment("intern/train", 80 * GIB),
        "charge": charge(80 * GIB), "preempting": [], "ceiling": UNLIMITED}
    assert svc.admitted() == [ticket]
    assert svc.status("intern", "train") == ticket
    (audit,) = _audit(svc)
    assert audit == {"action": "admission.admitted", "target": "intern/train",
                     "detail": {"reasons": [], "tier": "low", "borrowed": False,
                                "request": request_doc(80 * GIB),
                                "assignment": assignment("intern/train", 80 * GIB)}}


def test_a_preempting_ticket_its_warning_and_its_plan_exactly() -> None:
    clock = Clock()
    svc = controller(clock, preemption_grace=30)
    svc.admit(User("intern"), "train", gib(60), "hub")
    ticket = svc.admit(User("boss"), "urgent", gib(40), "hub")
    assert ticket.as_dict() == {
        "user": "boss", "server": "urgent", "state": "queued",
        "reasons": ["the cluster has no room for it now",
                    "no NVIDIA A100-SXM4-80GB has 40 GiB free (largest free: 20 GiB)",
                    "stopping 1 lower-priority server(s) to make room (intern's 'train'); "
                    "grace 30 s"],
        "position": 1, "queue_length": 1, "tier": "high", "priority_class": "aispike-high",
        "borrowed": False, "assignment": None, "charge": charge(40 * GIB),
        "preempting": ["intern/train"], "ceiling": UNLIMITED}
    ((notice),) = svc.store.notices("intern")
    assert (notice["server"], notice["kind"], notice["message"]) == (
        "train", "preemption-warning",
        "Your server 'train' will be stopped in 30 s: a tier 'high' server needs its room "
        "and the cluster is full. Save your work.")
    plan = [e for e in _audit(svc) if e["action"] == "preemption.plan"]
    assert plan == [{"action": "preemption.plan", "target": "intern/train",
                     "detail": {"for": "boss/urgent", "tier": "high", "victim_tier": "low",
                                "borrowed": False}}]
    # Planned once: processing again neither warns twice nor plans a second victim.
    svc.process()
    assert len(svc.store.notices("intern")) == 1
    # The grace exactly over: due (the deadline is inclusive); one microsecond before: not.
    clock.now += dt.timedelta(seconds=30, microseconds=-1)
    assert svc.due_preemptions() == []
    clock.now += dt.timedelta(microseconds=1)
    assert [(u, s) for u, s, _ in svc.due_preemptions()] == [("intern", "train")]


def test_a_default_server_is_named_default_in_the_warning() -> None:
    svc = controller(Clock(), preemption_grace=2.5)
    svc.admit(User("intern"), "", gib(60), "hub")
    ticket = svc.admit(User("boss"), "", gib(40), "hub")
    assert ticket.reasons[-1] == ("stopping 1 lower-priority server(s) to make room "
                                  "(intern's 'default'); grace 2.5 s")
    assert svc.store.notices("intern")[0]["message"].startswith(
        "Your server 'default' will be stopped in 2.5 s: ")


def test_the_queue_deadline_exactly_reached_gives_up() -> None:
    clock = Clock()
    svc = controller(clock, queue_timeout=60)
    svc.admit(User("ann"), "a", gib(60), "hub")
    svc.admit(User("bob"), "b", gib(40), "hub")
    clock.now += dt.timedelta(seconds=60, microseconds=-1)
    svc.process()
    assert svc.status("bob", "b").state == "queued"
    clock.now += dt.timedelta(microseconds=1)
    svc.process()
    gone = svc.status("bob", "b")
    assert gone.as_dict()["state"] == "expired"
    assert gone.reasons == ["gave up after 60 s in the queue: the cluster has no room for it "
                            "now; no NVIDIA A100-SXM4-80GB has 40 GiB free (largest free: "
                            "20 GiB)"]
    assert gone.position == 0 and gone.preempting == []
    (notice,) = svc.store.notices("bob")
    assert (notice["kind"], notice["message"]) == ("expired", gone.reasons[0])
    assert _audit(svc)[0] == {"action": "admission.expired", "target": "bob/b",
                              "detail": {"reason": gone.reasons[0]}}


def test_queue_ties_keep_arrival_order_and_an_admitted_start_gets_a_new_seq() -> None:
    clock = Clock()
    svc = controller(clock)
    svc.admit(User("ann"), "a", gib(80), "hub")
    for name in ("b", "c", "d"):
        svc.admit(User(name), name, gib(40), "hub")
    assert [(t.user, t.position, t.queue_length) for t in svc.queue()] == [
        ("b", 1, 3), ("c", 2, 3), ("d", 3, 3)]
    svc.release("ann", "a", "hub")
    assert [t.user for t in svc.admitted()] == ["b", "c"]
    assert [(t.user, t.position) for t in svc.queue()] == [("d", 1)]


def test_strict_fifo_stops_at_the_first_request_that_waits() -> None:
    svc = controller(Clock(), strict_fifo=True)
    svc.admit(User("ann"), "a", gib(60), "hub")
    assert svc.admit(User("bob"), "b", gib(40), "hub").state == "queued"
    # 20 GiB would fit, but it waits behind bob.
    assert svc.admit(User("cid"), "c", gib(20), "hub").state == "queued"
    lax = controller(Clock())
    lax.admit(User("ann"), "a", gib(60), "hub")
    lax.admit(User("bob"), "b", gib(40), "hub")
    assert lax.admit(User("cid"), "c", gib(20), "hub").state == "admitted"


def test_a_quota_exactly_reached_is_admitted_one_mib_more_is_refused() -> None:
    svc = controller(Clock())
    svc.set_policy({"users": {"bob": {"quota": {"gpu_memory": "40Gi"}}}}, "admin")
    assert svc.admit(User("bob"), "a", gib(20), "hub").state == "admitted"
    assert svc.admit(User("bob"), "b", gib(20), "hub").state == "admitted"
    refused = svc.admit(User("bob"), "c", gib(1), "hub")
    assert refused.state == "refused" and refused.tier == "normal"
    assert refused.position == 0 and refused.assignment is None
    refusal = _audit(svc)[0]
    assert refusal["action"] == "admission.refuse" and refusal["target"] == "bob/c"
    assert refusal["detail"] == {"reasons": refused.reasons, "request": request_doc(GIB)}
    summary = svc.quota_summary(User("bob"))
    assert summary == {
        "user": "bob", "tier": "normal",
        "usage": {"gpu_memory_mib": 40 * GIB, "gpus": 2, "cpu_milli": 0, "memory_mib": 0,
                  "servers": 2},
        "limits": {**UNLIMITED, "gpu_memory_mib": 40 * GIB},
        "borrowing": dict.fromkeys(UNLIMITED, 0), "max_slice_mib": None,
        "servers": [{"server": "a", "charge": charge(20 * GIB)},
                    {"server": "b", "charge": charge(20 * GIB)}]}
    assert svc.status("bob", "a").ceiling == {**UNLIMITED, "gpu_memory_mib": 40 * GIB}


def test_the_fit_preview_exactly() -> None:
    svc = controller(Clock())
    svc.admit(User("bob"), "a", gib(60), "hub")
    assert svc.fit(User("bob"), gib(20)) == {
        "verdict": "admit", "reasons": [], "fits_now": True, "candidates": 1,
        "placement_reasons": [], "tier": "normal", "borrowed": False,
        "charge": charge(20 * GIB), "usage": charge(60 * GIB), "limits": UNLIMITED}
    full = svc.fit(User("cid"), gib(21))
    assert (full["verdict"], full["fits_now"], full["candidates"]) == ("queue", False, 0)
    assert full["usage"] == {**charge(0), "gpus": 0, "servers": 0}
    assert full["placement_reasons"] == [
        "no NVIDIA A100-SXM4-80GB has 21 GiB free (largest free: 20 GiB)"]


def test_a_policy_change_is_audited_as_a_diff_and_re_processes_the_queue() -> None:
    svc = controller(Clock())
    svc.admit(User("ann"), "a", gib(60), "hub")
    assert svc.admit(User("intern"), "b", gib(40), "hub").state == "queued"
    version = svc.set_policy({"users": {"boss": {"tier": "high"},
                                        "intern": {"tier": "low",
                                                   "quota": {"gpu_memory": "30Gi"}}}},
                             "admin", target="users/intern")
    assert version == 1
    audit = _audit(svc)[1]
    assert audit == {"action": "policy.update", "target": "users/intern",
                     "detail": {"before": {"users": {"intern": {"tier": "low"}}},
                                "after": {"users": {"intern": {"tier": "low", "quota":
                                                               {"gpu_memory": "30Gi"}}}},
                                "version": 1}}
    # Re-processed under the new policy: over the new quota, the queued request is refused.
    assert svc.status("intern", "b").state == "refused"


def test_load_policy_seeds_once_then_reads_the_stored_one() -> None:
    store = Store("sqlite://")
    seeded = AdmissionController.load_policy(store, {"users": {"a": {"tier": "high"}}})
    assert policy_to_dict(seeded)["users"] == {"a": {"tier": "high"}}
    doc, version = store.policy_doc()  # type: ignore[misc]
    assert doc["users"] == {"a": {"tier": "high"}} and version == 1
    (entry,) = store.audit_log()
    assert (entry.actor, entry.action, entry.target) == ("config", "policy.seed", "policy")
    assert entry.detail == {"after": doc}
    again = AdmissionController.load_policy(store, {"users": {}})
    assert again == seeded and len(store.audit_log()) == 1


def test_release_answers_whether_there_was_a_reservation_and_audits_why() -> None:
    svc = controller(Clock())
    assert svc.release("bob", "b", "hub") is False
    svc.admit(User("bob"), "b", gib(10), "hub")
    assert svc.release("bob", "b", "hub", why="gave up") is True
    assert _audit(svc)[0] == {"action": "admission.release", "target": "bob/b",
                              "detail": {"was": "admitted", "why": "gave up"}}
    assert svc.status("bob", "b").as_dict() == {
        "user": "bob", "server": "b", "state": "unknown", "reasons": [], "position": 0,
        "queue_length": 0, "tier": "", "priority_class": "", "borrowed": False,
        "assignment": None, "charge": {}, "preempting": [], "ceiling": {}}


def test_a_re_used_ticket_is_the_same_ask_only() -> None:
    svc = controller(Clock())
    svc.admit(User("ann"), "a", gib(80), "hub")
    svc.admit(User("bob", frozenset({"x", "y"})), "b", gib(40), "hub")
    # The same request and groups, in another order: the same ticket, no new audit entry.
    before = len(_audit(svc))
    again = svc.admit(User("bob", frozenset({"y", "x"})), "b", gib(40), "hub")
    assert again.state == "queued" and len(_audit(svc)) == before
    # A changed request: released (audited with both requests) and queued anew.
    svc.admit(User("bob", frozenset({"x", "y"})), "b", gib(30), "hub")
    released = [e for e in _audit(svc) if e["action"] == "admission.release"]
    assert released == [{"action": "admission.release", "target": "bob/b",
                         "detail": {"was": "queued", "why": "re-admitted with a changed request",
                                    "request": request_doc(40 * GIB),
                                    "new_request": request_doc(30 * GIB)}}]


def test_a_preempted_server_is_told_audited_and_released() -> None:
    svc = controller(Clock())
    svc.admit(User("intern"), "train", gib(60), "hub")
    svc.preempted("intern", "train", "for boss", "aispike")
    assert svc.store.notices("intern")[0]["message"] == "for boss"
    actions = [(e["action"], e["detail"]) for e in _audit(svc)[:2]]
    assert actions == [("admission.release", {"was": "admitted", "why": "preempted"}),
                       ("preemption.stop", {"reason": "for boss"})]


@pytest.mark.parametrize(("a", "b", "want"), [
    ({"x": 1}, {"x": 1}, {}),
    ({"x": 1}, {"x": 2}, {"x": 1}),
    ({"x": 1}, {}, {"x": 1}),
    ({"u": {"a": 1, "b": 2}}, {"u": {"a": 1, "b": 3}}, {"u": {"b": 2}}),
    ({"u": {"a": 1}}, {"u": {"a": 1, "c": 3}}, {"u": {"(removed)": ["c"]}}),
    ({"u": {"a": 1}}, {"u": 5}, {"u": {"a": 1}}),
])
def test_diff_cases(a: dict[str, object], b: dict[str, object], want: dict[str, object]) -> None:
    assert _diff(a, b) == want


def test_seconds_between_never_negative() -> None:
    t = dt.datetime(2026, 1, 1)
    assert _seconds_between(None, t) == 0.0
    assert _seconds_between(t, t + dt.timedelta(seconds=5)) == 5.0
    assert _seconds_between(t + dt.timedelta(seconds=5), t) == 0.0


def test_place_answers_exactly_and_audits_the_default_prefer_node() -> None:
    svc = controller(Clock())
    assert svc.place("bob", "b", "hub") == {
        "user": "bob", "server": "b", "state": "unknown", "placed": False, "assignment": None,
        "request": None, "reasons": ["server bob/b is not admitted (its ticket is unknown); "
                                     "admission places only admitted servers"]}
    svc.admit(User("bob"), "b", gib(10), "hub")
    answer = svc.place("bob", "b", "hub")
    assert answer["placed"] is True and answer["assignment"] == assignment("bob/b", 10 * GIB)
    detail = _audit(svc)[0]["detail"]
    assert detail["prefer_node"] == "" and detail["refuted"] == []


def test_a_policy_change_targets_policy_by_default() -> None:
    svc = controller(Clock())
    svc.set_policy({"users": {}}, "admin")
    (entry,) = svc.store.audit_log()
    assert (entry.actor, entry.action, entry.target) == ("admin", "policy.update", "policy")


# -- place: the whole answer and audit, the user's groups, refuted GPUs ----------------------


def test_place_answers_a_queued_ticket_exactly() -> None:
    svc = controller(Clock())
    svc.admit(User("ann"), "a", gib(80), "hub")
    svc.admit(User("bob"), "b", gib(10), "hub")
    assert svc.place("bob", "b", "hub") == {
        "user": "bob", "server": "b", "state": "queued", "placed": False, "assignment": None,
        "request": None, "reasons": ["server bob/b is not admitted (its ticket is queued); "
                                     "admission places only admitted servers"]}


def test_place_answers_exactly_when_the_models_are_no_longer_allowed() -> None:
    svc = place_controller()
    svc.admit(User("ann"), "", place_gib(8, allowed_models=frozenset({A100})), "hub")
    svc.set_policy({"users": {"ann": {"allowed_models": [H100]}}}, "admin")
    assert svc.place("ann", "", "hub") == {
        "user": "ann", "server": "", "state": "admitted", "placed": False, "assignment": None,
        "request": None, "reasons": [f"none of the GPU models {[A100]} is allowed to ann any "
                                     "more; start the server again"]}


def test_place_restricts_to_the_models_of_the_users_groups() -> None:
    svc = place_controller()
    svc.set_policy({"groups": {"a100s": {"member": {"allowed_models": [A100]}}}}, "admin")
    assert svc.admit(User("bob", frozenset({"a100s"})), "", place_gib(8), "hub").state \
        == "admitted"
    answer = svc.place("bob", "", "hub", prefer_node="h-0")
    assert answer["placed"] is True and answer["assignment"]["node"] == "a-0"
    assert answer["request"]["allowed_models"] == [A100]


def test_place_audits_a_refuted_gpu_placed_elsewhere_and_nowhere() -> None:
    svc = place_controller([place_node("a-0", A100), place_node("a-1", A100)])
    ticket = svc.admit(User("bob"), "", place_gib(8), "hub")
    home = ticket.assignment["node"]  # type: ignore[index]
    other = "a-1" if home == "a-0" else "a-0"
    answer = svc.place("bob", "", "hub", prefer_node=home, refuted=[(home, 0)])
    assert answer["placed"] is True and answer["assignment"]["node"] == other
    (entry,) = [e for e in svc.store.audit_log() if e.action == "admission.place"]
    assert entry.target == "bob/" and entry.detail == {
        "placed": True, "before": ticket.assignment, "after": answer["assignment"],
        "prefer_node": home, "refuted": [[home, 0]]}
    nowhere = svc.place("bob", "", "hub", refuted=[("a-0", 0), ("a-1", 0)])
    assert nowhere["placed"] is False and nowhere["assignment"] is None
    assert nowhere["reasons"] and nowhere["request"] == answer["request"]
    assert svc.status("bob", "").assignment == answer["assignment"]  # unchanged
    last = svc.store.audit_log()[0]
    assert (last.action, last.target) == ("admission.place", "bob/")
    assert last.detail == {"placed": False, "reasons": nowhere["reasons"], "prefer_node": "",
                           "refuted": [["a-0", 0], ["a-1", 0]]}


# -- preemption: which victims, named how; a taken victim is never planned twice ---------------


def two_gpus(clock: Clock, **kw: float) -> AdmissionController:
    return AdmissionController(Store("sqlite://"), StaticInventory(a100_nodes(1, 2, 80)),
                               policy_from_dict(POLICY), clock=clock, **kw)


def test_the_victim_is_the_server_that_loses_the_least_work() -> None:
    clock = Clock()
    svc = two_gpus(clock)
    svc.admit(User("intern"), "old", gib(60), "hub")
    clock.now += dt.timedelta(seconds=100)
    svc.admit(User("intern"), "new", gib(60), "hub")
    clock.now += dt.timedelta(seconds=100)
    assert svc.admit(User("boss"), "x", gib(40), "hub").preempting == ["intern/new"]
    # A second high request: the other server, never the one already being stopped.
    assert svc.admit(User("boss"), "y", gib(40), "hub").preempting == ["intern/old"]
    assert svc.quota_summary(User("boss"))["servers"] == []  # queued ones hold nothing


def test_two_victims_are_named_together() -> None:
    svc = controller(Clock())
    svc.admit(User("intern"), "a", gib(30), "hub")
    svc.admit(User("intern"), "", gib(30), "hub")
    ticket = svc.admit(User("boss"), "big", gib(80), "hub")
    assert sorted(ticket.preempting) == ["intern/", "intern/a"]
    assert ticket.reasons[-1] in (
        f"stopping 2 lower-priority server(s) to make room ({names}); grace 30 s"
        for names in ("intern's 'a', intern's 'default'", "intern's 'default', intern's 'a'"))


def test_the_preview_counts_the_users_default_server() -> None:
    """The preview is no server of the user's: their default server ("") still counts."""
    svc = controller(Clock())
    svc.set_policy({"users": {"bob": {"quota": {"gpu_memory": "40Gi"}}}}, "admin")
    svc.admit(User("bob"), "", gib(40), "hub")
    preview = svc.fit(User("bob"), gib(1))
    assert preview["verdict"] == "refuse" and preview["usage"] == charge(40 * GIB)


def test_a_preemption_stop_is_audited_on_the_victim() -> None:
    svc = controller(Clock())
    svc.admit(User("intern"), "train", gib(60), "hub")
    svc.preempted("intern", "train", "for boss", "aispike")
    (stop,) = [e for e in _audit(svc) if e["action"] == "preemption.stop"]
    assert stop["target"] == "intern/train"


def test_a_release_is_audited_as_stopped_by_default() -> None:
    svc = controller(Clock())
    svc.admit(User("bob"), "b", gib(10), "hub")
    svc.release("bob", "b", "hub")
    assert _audit(svc)[0]["detail"] == {"was": "admitted", "why": "stopped"}


def test_the_preview_of_a_user_allowed_no_model_has_no_candidate() -> None:
    svc = place_controller()
    svc.set_policy({"users": {"cid": {"allowed_models": []}}}, "admin")
    preview = svc.fit(User("cid"), place_gib(8))
    assert (preview["verdict"], preview["fits_now"], preview["candidates"]) == (
        "refuse", False, 0)
