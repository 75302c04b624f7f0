"""Admission, the queue and preemption: the order of operations around the quota core.

One :class:`AdmissionController` per service (or per in-process store in the hub).  Every
method runs under one lock (the service's, see :mod:`aispike_hub.service.app`; the hub's single
event loop for :mod:`aispike_hub.admission.inprocess`) inside one database transaction, so
"check the quota, then reserve" is atomic: twenty concurrent starts by one user cannot together
pass a limit.

Life of a request:

1. ``admit``: the quota core refuses it (the user's own quota, or never admissible as asked),
   or it joins the queue and the queue is processed at once, so a request that fits is admitted
   in the same call.
2. The queue is processed in tier order, then arrival (``process``): each queued request is
   re-checked against the quota and placed by the placement core on the cluster as the service
   sees it (nodes from the inventory, minus what admitted requests hold).  A request that does
   not fit and whose tier may preempt gets victims chosen (lower tiers, borrowed first, least
   work lost); they are warned, and after ``preemption_grace`` the service stops them through
   the hub (``due_preemptions``).  A queued request gives up after ``queue_timeout``.
3. ``place``: the hub's placer could not pin the admitted server's assignment (it no longer
   fits the placer's view, or its pin went stale): a fresh assignment on the same view as step
   2, the server's own promise and claim left out, and the reservation remembers it
   (:mod:`aispike_hub.admission.replace`).
4. ``release``: the server stopped; its reservation is gone and the queue is processed again.

Placement always sees the request restricted to the user's allowed GPU models and rounded as the
device will hold it (``rounding``; the Kubernetes DRA driver rounds memory up to whole GiB), so
the assignment a ticket carries is exactly what the hub's claim will pin.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy.orm import Session

from aispike_hub import metrics
from aispike_hub.admission.inventory import Inventory, server_assignments
from aispike_hub.admission.replace import (
    NO_ALLOWED_MODEL,
    Rounding,
    place_preferring,
    placed_request,
)
from aispike_hub.admission.wire import (
    Ticket,
    assignment_from_dict,
    assignment_to_dict,
    request_from_dict,
    request_to_dict,
)
from aispike_hub.model import Assignment, SliceRequest
from aispike_hub.placement.engine import Decision, PlacementEngine
from aispike_hub.placement.fit import leave_out_gpus
from aispike_hub.placement.preemption import RunningServer, preemption_candidates
from aispike_hub.placement.state import ClusterState
from aispike_hub.quota import (
    RESOURCES,
    Amounts,
    ClusterView,
    Policy,
    Server,
    User,
    Verdict,
    admit,
    policy_from_dict,
    policy_to_dict,
    preemption_order,
    preemption_reason,
    resolve_limits,
    victim_filter,
)
from aispike_hub.service.store import ReservationRow, Store, utcnow

__all__ = ["AdmissionController", "key_of", "server_of", "user_ceiling"]

log = logging.getLogger("aispike.admission")


def user_ceiling(policy: Policy, user: str, groups: Iterable[str]) -> dict[str, int | None]:
    """Per resource, the most ``user`` may hold: nominal quota plus borrowing (None: no limit).
    """
    limits = resolve_limits(policy, user, groups)
    return {r: limits.ceiling(r) for r in RESOURCES}


def key_of(user: str, server: str) -> str:
    return f"{user}/{server}"

def server_of(row: ReservationRow) -> Server:
    return Server(row.user, row.server, Amounts(**row.charge), row.tier, row.priority,
                  row.borrowed, frozenset(row.groups), row.seq)


class AdmissionController:
    """Admission, queue and preemption over a :class:`Store` (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        inventory: Inventory,
        policy: Policy,
        *,
        engine: PlacementEngine | None = None,
        queue_timeout: float = 600.0,
        preemption_grace: float = 30.0,
        strict_fifo: bool = False,
        clock: Callable[[], dt.datetime] = utcnow,
        rounding: Rounding | None = None,
    ) -> None:
        self.store = store
        self.inventory = inventory
        self.policy = policy
        self.engine = metrics.timed_engine(engine or PlacementEngine("aispike"), "admission")
        self.queue_timeout = queue_timeout
        self.preemption_grace = preemption_grace
        self.strict_fifo = strict_fifo
        self.clock = clock
        self.rounding = rounding
        """How the device rounds a request (``None``: placed as asked); see the docstring."""

    # -- policy --------------------------------------------------------------------------------
    @classmethod
    def load_policy(cls, store: Store, config_doc: Mapping[str, Any]) -> Policy:
        """The stored policy; on first start, the config's policy is stored (and audited)."""
        stored = store.policy_doc()
        if stored is not None:
            return policy_from_dict(stored[0])
        policy = policy_from_dict(config_doc)
        with store.session() as s:
            store.save_policy(s, policy_to_dict(policy), "config")
            store.audit(s, "config", "policy.seed", "policy", {"after": policy_to_dict(policy)})
        return policy

    def set_policy(self, doc: Mapping[str, Any], actor: str, target: str = "policy") -> int:
        """Validate and store a whole new policy; :class:`PolicyError` names a bad field."""
        policy = policy_from_dict(doc)
        before = policy_to_dict(self.policy)
        after = policy_to_dict(policy)
        with self.store.session() as s:
            version = self.store.save_policy(s, after, actor)
            self.store.audit(s, actor, "policy.update", target,
                             {"before": _diff(before, after), "after": _diff(after, before),
                              "version": version})
            self.policy = policy
            self._process(s)
        return version

    # -- cluster ------------------------------------------------------------------------------
    def _state(self, admitted: Sequence[ReservationRow], leave_out: str = "") -> ClusterState:
        """The cluster as admission sees it: other workloads, what each hub server really holds
        (when the inventory knows), and the promise of admitted servers not placed yet.
        ``leave_out`` (``user/server``): a server whose hold and promise do not count (the one
        being placed again: its stale claim is about to be replaced)."""
        state = ClusterState(list(self.inventory.nodes()))
        for a in self.inventory.foreign_assignments():
            _commit_quietly(state, a)
        actual = server_assignments(self.inventory)
        for key, held in actual.items():
            if key == leave_out:
                continue
            for a in held:
                _commit_quietly(state, a)
        for row in admitted:
            key = key_of(row.user, row.server)
            if row.assignment and key not in actual and key != leave_out:
                _commit_quietly(state, assignment_from_dict(row.assignment))
        return state

    def _gpu_mib(self, request: SliceRequest, assignment: Assignment | None) -> int:
        nodes = {n.name: n for n in self.inventory.nodes()}
        if assignment is not None and assignment.gpu_indices:
            node = nodes[assignment.node]
            return max(g.memory_mib for g in node.gpus if g.index in assignment.gpu_indices)
        sizes = [g.memory_mib for n in nodes.values() for g in n.gpus
                 if request.allows_model(g.model)]
        return max(sizes, default=0)

    def _view(self, state: ClusterState, request: SliceRequest | None, owner: str
              ) -> tuple[ClusterView, Assignment | None]:
        """What placement says about ``request`` (:func:`placed_request`'s answer; ``None``:
        no GPU model the user may use is left, so nothing is placed)."""
        if request is None:
            return ClusterView(False, (NO_ALLOWED_MODEL,), 0), None
        decision = self.engine.place(state, request, owner)
        return (ClusterView(decision.placed, decision.reasons,
                            self._gpu_mib(request, decision.assignment)), decision.assignment)

    # -- requests -----------------------------------------------------------------------------
    def admit(self, user: User, server: str, request: SliceRequest, actor: str) -> Ticket:
        """Admit, queue or refuse; idempotent for a (user, server) asking the same again.

        A ticket still held for ``(user, server)`` is re-used only when it was made for the same
        request and groups (a retried start).  Otherwise it is stale (the hub starts that server
        anew, and a server has one start at a time): it is released and the new request is
        checked from scratch in the same transaction, so a start never gets what an earlier
        start asked for (bob asking 4 GiB never gets his old 8 GiB ticket), and the old charge
        does not count against the new one.
        """
        with self.store.session() as s:
            row = s.get(ReservationRow, (user.name, server))
            if row is not None and row.state in ("admitted", "queued"):
                if _same_ask(row, user, request):
                    return self._ticket(s, row)
                self.store.audit(s, actor, "admission.release", key_of(user.name, server),
                                 {"was": row.state, "why": "re-admitted with a changed request",
                                  "request": dict(row.request),
                                  "new_request": request_to_dict(request)})
            if row is not None:
                s.delete(row)
                s.flush()
            admitted = self.store.reservations(s, "admitted")
            state = self._state(admitted)
            limits = resolve_limits(self.policy, user.name, user.groups)
            view, _ = self._view(state, placed_request(request, limits, self.rounding),
                                 key_of(user.name, server))
            result = admit(user, request, [server_of(r) for r in admitted], view, self.policy,
                           server_name=server)
            if result.verdict is Verdict.REFUSE:
                self.store.audit(s, actor, "admission.refuse", key_of(user.name, server),
                                 {"reasons": list(result.reasons),
                                  "request": request_to_dict(request)})
                metrics.admission("refused", result)
                return Ticket(user.name, server, "refused", list(result.reasons),
                              tier=result.tier.name)
            now = self.clock()
            row = ReservationRow(
                user=user.name, server=server, state="queued", seq=self.store.next_seq(s),
                groups=sorted(user.groups), request=request_to_dict(request),
                charge=result.charge.as_dict(), tier=result.tier.name,
                priority=result.tier.priority, borrowed=result.borrowed, assignment=None,
                reasons=list(result.reasons), preempting=[], created_at=now,
                deadline=now + dt.timedelta(seconds=self.queue_timeout),
            )
            s.add(row)
            s.flush()
            self._process(s)
            ticket = self._ticket(s, row)
            metrics.admission(ticket.state, result)
            self.store.audit(s, actor, f"admission.{ticket.state}", key_of(user.name, server),
                             {"reasons": ticket.reasons, "tier": ticket.tier,
                              "borrowed": ticket.borrowed, "request": request_to_dict(request),
                              "assignment": ticket.assignment})
            return ticket

    def status(self, user: str, server: str) -> Ticket:
        with self.store.session() as s:
            row = s.get(ReservationRow, (user, server))
            if row is None:
                return Ticket(user, server, "unknown")
            return self._ticket(s, row)

    def release(self, user: str, server: str, actor: str, why: str = "stopped") -> bool:
        """Forget a server's reservation (it stopped, or gave up); True if there was one."""
        with self.store.session() as s:
            row = s.get(ReservationRow, (user, server))
            if row is None:
                return False
            was = row.state
            s.delete(row)
            s.flush()
            self.store.audit(s, actor, "admission.release", key_of(user, server),
                             {"was": was, "why": why})
            self._process(s)
            return True

    def queue(self) -> list[Ticket]:
        with self.store.session() as s:
            return [self._ticket(s, r) for r in self._queue_order(s)]

    def admitted(self) -> list[Ticket]:
        with self.store.session() as s:
            return [self._ticket(s, r) for r in self.store.reservations(s, "admitted")]

    def process(self) -> None:
        """Re-check the queue (capacity may have freed, a deadline passed)."""
        with self.store.session() as s:
            self._process(s)

    def due_preemptions(self) -> list[tuple[str, str, str]]:
        """Victims whose grace is over: (user, server, reason) to stop through the hub now."""
        now = self.clock()
        out: list[tuple[str, str, str]] = []
        with self.store.session() as s:
            queued = {key_of(r.user, r.server): r for r in self.store.reservations(s, "queued")}
            wanted: dict[str, ReservationRow] = {}
            for q in queued.values():
                for victim in q.preempting:
                    wanted.setdefault(victim, q)
            if not wanted:
                return out
            for row in self.store.reservations(s, "admitted"):
                k = key_of(row.user, row.server)
                if k in wanted and row.deadline is not None and row.deadline <= now:
                    requester = wanted[k]
                    out.append((row.user, row.server, preemption_reason(
                        server_of(row), User(requester.user),
                        self.policy.tier(requester.tier)
                        if requester.tier in {t.name for t in self.policy.tiers}
                        else self.policy.tier(self.policy.default_tier))))
        return out

    def preempted(self, user: str, server: str, reason: str, actor: str) -> None:
        """Record that a victim was stopped: tell its user, audit, free its reservation."""
        metrics.preempted()
        with self.store.session() as s:
            self.store.notify(s, user, server, "preempted", reason)
            self.store.audit(s, actor, "preemption.stop", key_of(user, server),
                             {"reason": reason})
        self.release(user, server, actor, why="preempted")

    def fit(self, user: User, request: SliceRequest) -> dict[str, Any]:
        """The form's preview: would it be admitted now, and where would it go."""
        with self.store.session() as s:
            admitted = self.store.reservations(s, "admitted")
            state = self._state(admitted)
            limits = resolve_limits(self.policy, user.name, user.groups)
            placing = placed_request(request, limits, self.rounding)
            decision = (self.engine.place(state, placing) if placing is not None
                        else Decision(None, (NO_ALLOWED_MODEL,), 0))
            view = ClusterView(decision.placed, decision.reasons,
                               self._gpu_mib(request, decision.assignment))
            result = admit(user, request, [server_of(r) for r in admitted], view, self.policy,
                           server_name="\0preview")
            return {
                "verdict": result.verdict.value,
                "reasons": list(result.reasons),
                "fits_now": decision.placed,
                "candidates": decision.candidates,
                "placement_reasons": list(decision.reasons),
                "tier": result.tier.name,
                "borrowed": result.borrowed,
                "charge": result.charge.as_dict(),
                "usage": Amounts.total(server_of(r).charge for r in admitted
                                       if r.user == user.name).as_dict(),
                "limits": {r: limits.quota[r] for r in limits.quota},
            }

    def place(self, user: str, server: str, actor: str, prefer_node: str = "",
              refuted: Sequence[tuple[str, int]] = ()) -> dict[str, Any]:
        """A fresh assignment for the admitted server ``user/server`` (the hub's placer could not
        pin the one its ticket carries), stored in its reservation.

        Placed like at admission (the request restricted to the user's GPU models and rounded
        as the device holds it, on the cluster minus the other servers' claims and promises),
        with the server's own earlier hold and promise left out, on ``prefer_node`` first (a
        pending pod stays on its node), never on a ``refuted`` GPU ``(node, index)`` (the hub's
        view sees it taken: :func:`aispike_hub.placement.fit.leave_out_gpus`).  The answer:
        ``placed``; ``assignment`` (where) and ``request`` (what was placed) when placed, else
        ``reasons``; ``state``, the ticket's state (only an ``admitted`` ticket is placed:
        anything else answers ``placed: false``).
        """
        key = key_of(user, server)
        with self.store.session() as s:
            row = s.get(ReservationRow, (user, server))
            if row is None or row.state != "admitted":
                state = row.state if row is not None else "unknown"
                return {"user": user, "server": server, "state": state, "placed": False,
                        "assignment": None, "request": None,
                        "reasons": [f"server {key} is not admitted (its ticket is {state}); "
                                    "admission places only admitted servers"]}
            request = request_from_dict(row.request)
            limits = resolve_limits(self.policy, user, row.groups or ())
            placing = placed_request(request, limits, self.rounding)
            if placing is None:  # no model left: never "any" (quota.restrict_request)
                why = (f"none of the GPU models {sorted(request.allowed_models)} is allowed "
                       f"to {user} any more" if request.allowed_models else
                       f"{user} may use no GPU model any more")
                return {"user": user, "server": server, "state": row.state, "placed": False,
                        "assignment": None, "request": None,
                        "reasons": [f"{why}; start the server again"]}
            others = [r for r in self.store.reservations(s, "admitted")
                      if key_of(r.user, r.server) != key]
            cluster = self._state(others, leave_out=key)
            left_out = leave_out_gpus(cluster, refuted)
            decision = place_preferring(self.engine, cluster, placing, key, prefer_node)
            answer: dict[str, Any] = {"user": user, "server": server, "state": row.state,
                                      "placed": decision.placed, "assignment": None,
                                      "request": request_to_dict(placing),
                                      "reasons": list(decision.reasons)}
            if decision.assignment is None:
                self.store.audit(s, actor, "admission.place", key,
                                 {"placed": False, "reasons": list(decision.reasons),
                                  "prefer_node": prefer_node,
                                  "refuted": [list(g) for g in left_out]})
                return answer
            before = row.assignment
            row.assignment = answer["assignment"] = assignment_to_dict(decision.assignment)
            self.store.audit(s, actor, "admission.place", key,
                             {"placed": True, "before": before, "after": row.assignment,
                              "prefer_node": prefer_node,
                              "refuted": [list(g) for g in left_out]})
            return answer

    def quota_summary(self, user: User) -> dict[str, Any]:
        """A user's quota at a glance (the lab extension's view): use, limits, tier, servers."""
        with self.store.session() as s:
            mine = [r for r in self.store.reservations(s, "admitted") if r.user == user.name]
            limits = resolve_limits(self.policy, user.name, user.groups)
            return {
                "user": user.name,
                "tier": limits.tier.name,
                "usage": Amounts.total(server_of(r).charge for r in mine).as_dict(),
                "limits": {r: limits.quota[r] for r in limits.quota},
                "borrowing": dict(limits.borrowing),
                "max_slice_mib": limits.max_slice_mib,
                "servers": [{"server": r.server, "charge": dict(r.charge)} for r in mine],
            }

    # -- the queue ----------------------------------------------------------------------------
    def _queue_order(self, s: Session) -> list[ReservationRow]:
        rows = self.store.reservations(s, "queued")
        return sorted(rows, key=lambda r: (-r.priority, r.seq))

    def _ticket(self, s: Session, row: ReservationRow) -> Ticket:
        position, length = 0, 0
        if row.state == "queued":
            order = self._queue_order(s)
            length = len(order)
            position = 1 + next((i for i, r in enumerate(order)
                                 if (r.user, r.server) == (row.user, row.server)), 0)
        tiers = {t.name: t for t in self.policy.tiers}
        tier = tiers.get(row.tier)
        return Ticket(
            row.user, row.server, row.state, list(row.reasons), position, length, row.tier,
            tier.kube_priority_class if tier else "", row.borrowed, row.assignment,
            dict(row.charge), list(row.preempting), user_ceiling(self.policy, row.user,
                                                                 row.groups or ()),
        )

    def _process(self, s: Session) -> None:
        """Admit what can be admitted, in tier then arrival order; plan preemptions."""
        now = self.clock()
        queued = self.store.reservations(s, "queued")
        if not queued:
            return  # nothing waits: no need to read (and place) every admitted server
        admitted = self.store.reservations(s, "admitted")
        state = self._state(admitted)
        usage = [server_of(r) for r in admitted]
        victims_taken: set[str] = {v for r in queued for v in r.preempting}
        order = self._queue_order(s)
        for turn, row in enumerate(order):
            user = User(row.user, frozenset(row.groups))
            key = key_of(row.user, row.server)
            request = request_from_dict(row.request)
            limits = resolve_limits(self.policy, user.name, user.groups)
            placing = placed_request(request, limits, self.rounding)
            view, assignment = self._view(state, placing, key)
            result = admit(user, request, usage, view, self.policy, server_name=row.server)
            row.tier, row.priority = result.tier.name, result.tier.priority
            row.borrowed = result.borrowed
            row.charge = result.charge.as_dict()
            if result.verdict is Verdict.REFUSE:
                self._give_up(s, row, "; ".join(result.reasons), state="refused")
                continue
            if result.verdict is Verdict.ADMIT and assignment is not None:
                state.commit(assignment)
                row.state, row.assignment, row.admitted_at = "admitted", \
                    assignment_to_dict(assignment), now
                row.reasons = list(result.reasons)
                row.seq = self.store.next_seq(s)
                row.deadline = None
                metrics.queue_left("admitted", row.created_at, now)
                for v in row.preempting:
                    victims_taken.discard(v)
                row.preempting = []
                usage.append(server_of(row))
                continue
            row.reasons = list(result.reasons)
            # The deadline ends a wait, never a start that fits now: a request that fits is
            # admitted even when its deadline passed while it was being placed (a slow commit on
            # a loaded machine once gave up a request that had never waited).
            if row.deadline is not None and row.deadline <= now:
                self._give_up(s, row, f"gave up after {self.queue_timeout:g} s in the queue: "
                              + "; ".join(row.reasons))
                continue
            if result.may_preempt and not row.preempting and placing is not None:
                self._plan_preemption(s, row, user, result.tier, placing, state, admitted,
                                      victims_taken)
            if self.strict_fifo:
                _wait_their_turn(order[turn + 1:],
                                 sum(r.state == "queued" for r in order[:turn + 1]))
                break

    def _plan_preemption(self, s: Session, row: ReservationRow, user: User, tier: Any,
                         request: SliceRequest, state: ClusterState,
                         admitted: Sequence[ReservationRow], taken: set[str]) -> None:
        by_key = {key_of(r.user, r.server): r for r in admitted}
        now = self.clock()
        # Who may be preempted is the quota rule (tiers, borrowing, never your own server);
        # which of them must stop for the request to fit is the placement core's.
        allowed = preemption_order(user, tier, row.borrowed,
                                   [server_of(r) for r in admitted
                                    if key_of(r.user, r.server) not in taken and r.assignment])
        running = [
            RunningServer(
                key_of(sv.user, sv.name),
                assignment_from_dict(by_key[key_of(sv.user, sv.name)].assignment or {}),
                sv.priority,
                work_lost=_seconds_between(by_key[key_of(sv.user, sv.name)].admitted_at, now),
                borrowed=sv.borrowed,
            )
            for sv in allowed
        ]
        options = preemption_candidates(
            state, request, running, tier.priority,
            may_preempt=victim_filter(user, tier, row.borrowed, allowed),
            limit=1)
        if not options:
            return
        chosen = set(options[0].victims)
        victims = [sv for sv in allowed if key_of(sv.user, sv.name) in chosen]
        row.preempting = [key_of(v.user, v.name) for v in victims]
        names = ", ".join(f"{v.user}'s '{v.name or 'default'}'" for v in victims)
        row.reasons = [*row.reasons,
                       f"stopping {len(victims)} lower-priority server(s) to make room "
                       f"({names}); grace {self.preemption_grace:g} s"]
        for v in victims:
            taken.add(key_of(v.user, v.name))
            victim_row = by_key[key_of(v.user, v.name)]
            victim_row.deadline = now + dt.timedelta(seconds=self.preemption_grace)
            metrics.preemption_warned()
            self.store.notify(
                s, v.user, v.name, "preemption-warning",
                f"Your server '{v.name or 'default'}' will be stopped in "
                f"{self.preemption_grace:g} s: a tier '{tier.name}' server needs its room "
                f"and the cluster is full. Save your work.")
            self.store.audit(s, "aispike", "preemption.plan", key_of(v.user, v.name),
                             {"for": key_of(row.user, row.server), "tier": tier.name,
                              "victim_tier": v.tier, "borrowed": v.borrowed})

    def _give_up(self, s: Session, row: ReservationRow, why: str, state: str = "expired") -> None:
        metrics.queue_left(state, row.created_at, self.clock())
        row.state = state
        row.reasons = [why]
        row.preempting = []
        self.store.notify(s, row.user, row.server, state, why)
        self.store.audit(s, "aispike", f"admission.{state}", key_of(row.user, row.server),
                         {"reason": why})


def _same_ask(row: ReservationRow, user: User, request: SliceRequest) -> bool:
    """Whether ``row`` was made for this very request by a user in the same groups."""
    return (dict(row.request or {}) == request_to_dict(request)
            and sorted(row.groups or ()) == sorted(user.groups))


def _seconds_between(start: dt.datetime | None, end: dt.datetime) -> float:
    return max((end - start).total_seconds(), 0.0) if start is not None else 0.0


def _commit_quietly(state: ClusterState, assignment: Assignment) -> None:
    try:
        state.commit(assignment)
    except ValueError as e:  # a node left the inventory: its servers are being rebuilt
        log.warning("ignoring stale assignment %s: %s", assignment, e)


def _diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """The top-level (and one level down) parts of ``a`` that differ from ``b``."""
    out: dict[str, Any] = {}
    for k, v in a.items():
        if b.get(k) == v:
            continue
        if isinstance(v, Mapping) and isinstance(b.get(k), Mapping):
            sub = {kk: vv for kk, vv in v.items() if b[k].get(kk) != vv}
            removed = [kk for kk in b[k] if kk not in v]
            out[k] = {**sub, **({"(removed)": removed} if removed else {})}
        else:
            out[k] = v
    return out


def _wait_their_turn(rows: Sequence[ReservationRow], ahead: int) -> None:
    """With a strict first-in-first-out queue, the requests behind one that waits are not
    looked at in this pass: their tickets say so, instead of what admission found when they
    came (which could read "admitted on borrowed capacity" on a queued ticket).  Other users'
    names stay out of the text."""
    for k, row in enumerate(rows):
        n = ahead + k
        row.reasons = [f"waits its turn: {n} earlier request{'s are' if n != 1 else ' is'} "
                       "queued ahead (this hub's queue is first in, first out)"]
