"""Property: whatever the interleaving of starts, stops and time passing, no user or group ever
holds more than its quota plus borrowing, and no admitted request is ever lost.

Drives the real admission controller (store on sqlite, placement engine on a small cluster);
preemptions that fall due are carried out as the service does (stop, then release).
"""

from __future__ import annotations

import datetime as dt

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from service_fixtures import GIB, a100_nodes

from aispike_hub.admission.controller import AdmissionController
from aispike_hub.admission.inventory import StaticInventory
from aispike_hub.model import SliceRequest
from aispike_hub.quota import RESOURCES, Amounts, User, policy_from_dict, resolve_limits
from aispike_hub.service.store import Store

POLICY = policy_from_dict({
    "defaults": {"quota": {"gpu_memory": "24Gi", "servers": 3}, "tier": "low"},
    "groups": {
        "lab": {"member": {"quota": {"gpu_memory": "40Gi"}, "borrowing": {"gpu_memory": "16Gi"},
                           "tier": "normal"},
                "quota": {"gpu_memory": "64Gi"}, "borrowing": {"gpu_memory": "32Gi"}},
        "vip": {"member": {"tier": "high", "quota": {"gpus": 2}}},
    },
})
USERS = {
    "ann": frozenset({"lab"}), "bob": frozenset({"lab"}), "cid": frozenset(),
    "dee": frozenset({"vip"}), "eve": frozenset({"lab", "vip"}),
}

op = st.one_of(
    st.tuples(st.just("start"), st.sampled_from(sorted(USERS)), st.sampled_from("abcd"),
              st.sampled_from([4, 8, 16, 20, 40, 80])),
    st.tuples(st.just("stop"), st.sampled_from(sorted(USERS)), st.sampled_from("abcd"),
              st.just(0)),
    st.tuples(st.just("tick"), st.just(""), st.just(""), st.sampled_from([5, 40, 700])),
)


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 1, 1)

    def __call__(self) -> dt.datetime:
        return self.now


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op, min_size=1, max_size=40))
def test_any_interleaving_respects_quota_and_loses_nothing(ops: list[tuple[str, str, str, int]]
                                                           ) -> None:
    clock = Clock()
    store = Store("sqlite://")
    svc = AdmissionController(store, StaticInventory(a100_nodes(2, 2)), POLICY,
                              queue_timeout=600, preemption_grace=30, clock=clock)
    expected_admitted: set[tuple[str, str]] = set()
    expected_waiting: set[tuple[str, str]] = set()
    requested: dict[tuple[str, str], SliceRequest] = {}
    try:
        for kind, user, server, amount in ops:
            if kind == "start":
                request = (SliceRequest(gpu_count=1) if amount == 80
                           else SliceRequest(gpu_memory_mib=amount * GIB))
                held = svc.status(user, server)
                changed = requested.get((user, server), request) != request
                requested[(user, server)] = request
                ticket = svc.admit(User(user, USERS[user]), server, request, "hub")
                assert ticket.state in ("admitted", "queued", "refused"), ticket
                if ticket.state == "refused":
                    assert ticket.reasons, "a refusal always says why"
                if held.state in ("admitted", "queued") and changed:
                    # a start with a changed request replaces the stale ticket (released, then
                    # the new request decided from scratch): the old one may go
                    expected_admitted.discard((user, server))
                    expected_waiting.discard((user, server))
            elif kind == "stop":
                svc.release(user, server, "hub")
                expected_admitted.discard((user, server))
                expected_waiting.discard((user, server))
            else:
                clock.now += dt.timedelta(seconds=amount)
                svc.process()
                for victim_user, victim_server, reason in svc.due_preemptions():
                    assert "was stopped to make room" in reason
                    svc.preempted(victim_user, victim_server, reason, "aispike")
                    expected_admitted.discard((victim_user, victim_server))
            tickets = {(t.user, t.server): t for t in svc.admitted()}
            queued = {(t.user, t.server) for t in svc.queue()}
            # Nothing admitted disappears except by stop or preemption.
            assert expected_admitted <= set(tickets), expected_admitted - set(tickets)
            # Queued requests are admitted, still queued, or told why they gave up.
            for key in expected_waiting - set(tickets) - queued:
                assert svc.status(*key).state in ("expired", "refused"), key
            expected_admitted = set(tickets)
            expected_waiting = queued
            check_limits(tickets)
    finally:
        store.close()


def check_limits(tickets: dict[tuple[str, str], object]) -> None:
    per_user: dict[str, Amounts] = {}
    per_group: dict[str, Amounts] = {}
    for (user, _server), t in tickets.items():
        charge = Amounts(**t.charge)  # type: ignore[attr-defined]
        per_user[user] = per_user.get(user, Amounts()) + charge
        for g in USERS[user]:
            per_group[g] = per_group.get(g, Amounts()) + charge
    for user, used in per_user.items():
        limits = resolve_limits(POLICY, user, USERS[user])
        for r in RESOURCES:
            ceiling = limits.ceiling(r)
            assert ceiling is None or used.get(r) <= ceiling, (user, r, used)
    for g, used in per_group.items():
        entry = POLICY.groups[g]
        for r in RESOURCES:
            q = entry.quota.get(r)
            if q is not None:
                assert used.get(r) <= q + (entry.borrowing.get(r) or 0), (g, r, used)
