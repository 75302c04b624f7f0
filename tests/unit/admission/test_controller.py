"""The admission controller: queue order, queued starts, preemption with grace, giving up."""

from __future__ import annotations

import datetime as dt

from unit.service.service_fixtures import GIB, a100_nodes

from aispike_hub.admission.controller import AdmissionController
from aispike_hub.admission.inventory import StaticInventory
from aispike_hub.admission.wire import RequestError, request_from_dict
from aispike_hub.model import SliceRequest
from aispike_hub.quota import User, policy_from_dict
from aispike_hub.service.store import Store

POLICY = {"users": {"boss": {"tier": "high"}, "intern": {"tier": "low"}}}


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 1, 1)

    def __call__(self) -> dt.datetime:
        return self.now


def controller(clock: Clock, gib: int = 80, **kw: float) -> AdmissionController:
    return AdmissionController(Store("sqlite://"), StaticInventory(a100_nodes(1, 1, gib)),
                               policy_from_dict(POLICY), clock=clock, **kw)


def gib(n: int) -> SliceRequest:
    return SliceRequest(gpu_memory_mib=n * GIB)


def test_queue_orders_by_tier_then_arrival_and_starts_when_room_frees() -> None:
    clock = Clock()
    svc = controller(clock)
    assert svc.admit(User("ann"), "a", gib(80), "hub").state == "admitted"
    first = svc.admit(User("bob"), "b", gib(40), "hub")
    second = svc.admit(User("intern"), "c", gib(40), "hub")
    third = svc.admit(User("cid"), "d", gib(40), "hub")
    assert (first.state, first.position) == ("queued", 1)
    assert first.reasons[0].startswith("the cluster has no room")
    assert svc.status("intern", "c").position == 3  # low tier waits behind later normal ones
    assert svc.status("cid", "d").position == 2
    assert second.queue_length == 2 and third.queue_length == 3
    svc.release("ann", "a", "hub")
    assert svc.status("bob", "b").state == "admitted"
    assert svc.status("cid", "d").state == "admitted"
    assert svc.status("intern", "c").position == 1


def test_high_tier_preempts_after_grace_and_victim_is_told() -> None:
    clock = Clock()
    svc = controller(clock, preemption_grace=30)
    svc.admit(User("intern"), "train", gib(60), "hub")
    ticket = svc.admit(User("boss"), "urgent", gib(40), "hub")
    assert ticket.state == "queued" and ticket.preempting == ["intern/train"]
    assert "stopping 1 lower-priority server" in ticket.reasons[-1]
    (warning,) = svc.store.notices("intern")
    assert warning["kind"] == "preemption-warning" and "30 s" in warning["message"]
    assert svc.due_preemptions() == []
    clock.now += dt.timedelta(seconds=31)
    ((user, server, reason),) = svc.due_preemptions()
    assert (user, server) == ("intern", "train")
    assert "tier 'high' server of boss" in reason
    svc.preempted(user, server, reason, "aispike")
    assert svc.status("boss", "urgent").state == "admitted"
    assert svc.store.notices("intern")[0]["kind"] == "preempted"
    assert "preemption.stop" in [e.action for e in svc.store.audit_log()]


def test_same_tier_does_not_preempt_and_request_gives_up() -> None:
    clock = Clock()
    svc = controller(clock, queue_timeout=60)
    svc.admit(User("ann"), "a", gib(60), "hub")
    ticket = svc.admit(User("bob"), "b", gib(40), "hub")
    assert ticket.state == "queued" and ticket.preempting == []
    clock.now += dt.timedelta(seconds=61)
    svc.process()
    gone = svc.status("bob", "b")
    assert gone.state == "expired" and "gave up after 60 s" in gone.reasons[0]
    # Asking again starts a new wait.
    assert svc.admit(User("bob"), "b", gib(10), "hub").state == "admitted"


class SlowClock(Clock):
    """Each reading is later than the last: a loaded machine between two steps of one call."""

    def __call__(self) -> dt.datetime:
        self.now += dt.timedelta(seconds=1)
        return self.now


def test_the_deadline_ends_a_wait_never_a_start_that_fits() -> None:
    # The request fits at once, but the clock passes its deadline while it is being placed.
    svc = controller(SlowClock(), queue_timeout=0.5)
    assert svc.admit(User("ann"), "a", gib(40), "hub").state == "admitted"
    # One that does not fit still gives up at its deadline.
    svc.admit(User("bob"), "b", gib(60), "hub")
    assert svc.status("bob", "b").state == "expired"


def test_fit_preview_uses_the_placement_core() -> None:
    svc = controller(Clock())
    svc.admit(User("ann"), "a", gib(60), "hub")
    preview = svc.fit(User("bob"), gib(40))
    assert preview["verdict"] == "queue" and not preview["fits_now"]
    assert preview["placement_reasons"]
    ok = svc.fit(User("bob"), gib(20))
    assert ok["verdict"] == "admit" and ok["candidates"] == 1


def test_request_documents_are_checked_field_by_field() -> None:
    for doc, field_name in [
        ({"gpu_count": -1}, "request.gpu_count"),
        ({"gpu_memory_mib": "8Gi"}, "request.gpu_memory_mib"),
        ({"gpu_count": 2, "gpu_memory_mib": 1024}, "request"),
        ({"bogus": 1}, "request.bogus"),
        ({"allowed_models": "A100"}, "request.allowed_models"),
        ([], "request"),
    ]:
        try:
            request_from_dict(doc)
        except RequestError as e:
            assert e.field == field_name, (doc, e)
        else:
            raise AssertionError(f"accepted {doc}")


# --- re-admission: a held ticket is re-used only for the same ask (issue 26) ------------------


def test_re_admission_with_the_same_request_keeps_the_ticket_and_its_place() -> None:
    clock = Clock()
    svc = controller(clock)
    svc.admit(User("ann"), "a", gib(80), "hub")
    first = svc.admit(User("bob"), "b", gib(40), "hub")
    svc.admit(User("cid"), "c", gib(40), "hub")
    again = svc.admit(User("bob"), "b", gib(40), "hub")
    assert (again.state, again.position) == ("queued", 1) == (first.state, first.position)
    assert not [e for e in _audit(svc) if e["action"] == "admission.release"]


def test_a_stale_admitted_ticket_is_not_re_used_for_a_smaller_request() -> None:
    svc = controller(Clock())
    assert svc.admit(User("bob"), "", gib(8), "hub").charge["gpu_memory_mib"] == 8 * GIB
    ticket = svc.admit(User("bob"), "", gib(4), "hub")
    assert ticket.state == "admitted"
    assert ticket.charge["gpu_memory_mib"] == 4 * GIB  # not the old 8 GiB
    assert ticket.assignment is not None and ticket.assignment["gpu_memory_mib"] == [4 * GIB]
    assert svc.quota_summary(User("bob"))["usage"]["gpu_memory_mib"] == 4 * GIB
    (released,) = [e for e in _audit(svc) if e["action"] == "admission.release"]
    assert released["detail"]["why"] == "re-admitted with a changed request"


def test_a_changed_request_is_checked_against_the_quota_without_the_old_charge() -> None:
    svc = controller(Clock())
    svc.set_policy({"users": {"bob": {"quota": {"gpu_memory": "40Gi"}}}}, "admin")
    assert svc.admit(User("bob"), "", gib(40), "hub").state == "admitted"
    # The old 40 GiB does not count against the new ask: 32 GiB fits a 40 GiB quota.
    assert svc.admit(User("bob"), "", gib(32), "hub").state == "admitted"
    # A larger ask is refused by the quota, and the stale ticket is gone with it.
    refused = svc.admit(User("bob"), "", gib(48), "hub")
    assert refused.state == "refused" and "quota" in "; ".join(refused.reasons)
    assert svc.status("bob", "").state in ("unknown", "refused")
    assert svc.quota_summary(User("bob"))["usage"]["gpu_memory_mib"] == 0


def test_a_queued_ticket_with_a_changed_request_is_re_checked_and_may_fit_now() -> None:
    svc = controller(Clock())
    svc.admit(User("ann"), "a", gib(60), "hub")
    assert svc.admit(User("bob"), "b", gib(40), "hub").state == "queued"
    assert svc.admit(User("bob"), "b", gib(20), "hub").state == "admitted"


def test_changed_groups_re_check_the_ticket() -> None:
    svc = controller(Clock())
    svc.set_policy({"groups": {"small": {"quota": {"gpu_memory": "8Gi"}}}}, "admin")
    assert svc.admit(User("bob"), "", gib(16), "hub").state == "admitted"
    # Same request, but bob is now in a group capped at 8 GiB: not the old ticket.
    again = svc.admit(User("bob", frozenset({"small"})), "", gib(16), "hub")
    assert again.state == "refused"


def _audit(svc: AdmissionController) -> list[dict[str, object]]:
    return [{"action": e.action, "target": e.target, "detail": e.detail}
            for e in svc.store.audit_log(limit=500)]
