"""The service's reconciliation loop: observe, :func:`~.reconcile.decide`, act, audit.

The rules are :mod:`aispike_hub.service.reconcile` (pure); this module only gathers what they
read (the store's tickets, the hub's active servers through :class:`~.hubclient.HubClient`, our
claims, the pods and their namespaces from the Kubernetes inventory) and carries out what they
return:

- a ticket is released through the controller (under the service's lock, and only if it is
  still the ticket that was judged: a server restarted meanwhile has a new one), audited
  ``reconcile.release``;
- a first sighting of a missing server is written on the ticket (``missing_since``);
- an orphan claim is deleted with its uid and resourceVersion as preconditions (a claim
  changed since it was observed is left for the next pass), audited ``reconcile.claim``;
- a claim stuck on kube-scheduler's delete-protection finalizer in a terminating namespace has
  that finalizer removed (a patch guarded by its resourceVersion), audited
  ``reconcile.unprotect``.

When: once at start, before the service listens (nothing is admitted before the store agrees
with the hub and the cluster); every :attr:`Reconciler.interval` seconds; and soon after each
admission event the service sees (a release or a policy change wakes it, at most every
:attr:`Reconciler.event_spacing` seconds).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Mapping, Sequence
from typing import Any

from traitlets import Bool, Float
from traitlets.config import LoggingConfigurable

from aispike_hub.admission.controller import key_of
from aispike_hub.service.api import ServiceContext
from aispike_hub.service.hubclient import HubAPIError, HubClient
from aispike_hub.service.reconcile import (
    Action,
    ClaimView,
    ClearMissing,
    ClearPodMissing,
    DeleteClaim,
    DeletePod,
    MarkMissing,
    MarkPodMissing,
    NamespaceState,
    Observation,
    PodView,
    ReleaseTicket,
    Settings,
    TicketView,
    Unprotect,
    decide,
)
from aispike_hub.service.store import ReservationRow, Store, utcnow

ACTOR = "aispike:reconcile"
AUDIT_ACTIONS = ("reconcile.release", "reconcile.pod", "reconcile.claim", "reconcile.unprotect")
"""Audit actions of reconciliation (the admin panel lists them)."""
CLAIM_FINALIZER = "resource.kubernetes.io/delete-protection"


def parse_time(text: str) -> dt.datetime | None:
    """A Kubernetes timestamp (``2026-12-04T12:00:00Z``) as naive UTC, like the store's."""
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    return parsed


def touched(row: ReservationRow) -> dt.datetime:
    return max(row.created_at, row.admitted_at or row.created_at)


class Reconciler(LoggingConfigurable):
    """Tickets, hub servers and claims brought to agree (see the module docstring)."""

    enabled = Bool(
        True,
        help="""Reconcile the service's tickets with the hub's servers and our ResourceClaims
        with the pods: at start, every `interval` seconds and after admission events.""",
    ).tag(config=True)

    interval = Float(60.0, help="Seconds between two reconciliation passes.").tag(config=True)

    event_spacing = Float(
        5.0, help="Least seconds between two passes woken by admission events."
    ).tag(config=True)

    grace = Float(
        60.0,
        help="""Seconds a ticket may stay without a server in the hub before it is released
        (a ticket from before the service started is released at the first complete
        listing: the hub lists starting servers too).""",
    ).tag(config=True)

    orphan_seconds = Float(
        300.0,
        help="""Age after which one of our ResourceClaims that no pod uses is deleted (its
        spawner died before creating the pod, or the pod went).  Like Placer.orphan_seconds,
        counted from the claim's creation, so a restart does not reset it.""",
    ).tag(config=True)

    claims = Bool(
        True,
        help="""Also reconcile ResourceClaims (Kubernetes inventory only).  Needs delete and
        patch on resourceclaims and get on namespaces; without them it is logged and
        skipped.""",
    ).tag(config=True)

    delete_orphan_pods = Bool(
        True,
        help="""Delete a pod of this hub's servers (aispike.io/hub-server) whose server the hub
        has not listed for `grace` seconds: a spawn the hub forgot because it was killed
        mid-spawn would otherwise hold its GPU memory, CPU and RAM for ever.  Needs delete on
        pods (the Helm chart grants it); without it the pod is logged and kept.""",
    ).tag(config=True)

    def __init__(self, ctx: ServiceContext, hub: HubClient, kube: Any | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ctx = ctx
        self.hub = hub
        self.kube = kube
        """The :class:`aispike_hub.kube.inventory.Inventory` (None: no Kubernetes view)."""
        self.started_at = utcnow()
        self.totals = {"released": 0, "pods_deleted": 0, "claims_deleted": 0, "unprotected": 0,
                       "passes": 0}
        self.last: dict[str, Any] = {}
        """When the last pass ran, what it saw and did (the admin panel shows it)."""
        self._poke = asyncio.Event()
        self._hub_problem = ""
        self._pod_missing: dict[str, dt.datetime] = {}
        """Pod uid -> when a pass first saw its server absent from the hub (kept in memory: a
        restart only starts the grace over)."""

    @property
    def store(self) -> Store:
        return self.ctx.controller.store

    def poke(self) -> None:
        """An admission event: run a pass soon."""
        self._poke.set()

    def settings(self) -> Settings:
        """The rules' settings; the hub identity is the Kubernetes inventory's
        (``Inventory.hub_id``, ``Inventory.owns_unnamed``): one setting for counting and
        reconciling."""
        hub_id = str(getattr(self.kube, "hub_id", "") or "")
        owns = bool(getattr(self.kube, "owns_unnamed", False))
        return Settings(self.grace, self.orphan_seconds, hub_id, owns, self.delete_orphan_pods)

    # -- observe -------------------------------------------------------------------------------
    def _tickets(self) -> list[TicketView]:
        with self.store.session() as s:
            return [TicketView(r.user, r.server, r.state, touched(r), r.missing_since)
                    for r in self.store.reservations(s) if r.state in ("admitted", "queued")]

    async def _servers(self) -> tuple[frozenset[str] | None, dt.datetime]:
        listed_at = utcnow()
        try:
            servers = await self.hub.active_servers()
        except HubAPIError as e:
            problem = f"the hub's servers are unknown ({e}): no ticket is judged"
            if problem != self._hub_problem:
                self.log.warning("reconcile: %s", problem)
            self._hub_problem = problem
            return None, listed_at
        self._hub_problem = ""
        return servers, listed_at

    def _kube_view(self) -> tuple[list[ClaimView] | None, list[PodView]]:
        if self.kube is None or not self.claims:
            return None, []
        claims = [
            ClaimView(c.namespace, c.name, c.uid, c.resource_version, parse_time(c.created),
                      c.owner_pod, c.hub_server, c.deleting, c.is_allocated or c.allocating)
            for c in self.kube.claims() if c.ours
        ]
        pods = [PodView(p.namespace, p.name, tuple(p.claim_names), p.uid, parse_time(p.created),
                        p.hub_server, p.deleting, self._pod_missing.get(p.uid))
                for p in self.kube.pods()]
        return claims, pods

    def _namespaces(self, names: set[str]) -> Mapping[str, NamespaceState] | None:
        from kubernetes.client.exceptions import ApiException

        out: dict[str, NamespaceState] = {}
        for name in sorted(names):
            try:
                ns = self.kube.api.get("namespaces", name)  # type: ignore[union-attr]
            except ApiException as e:
                if e.status == 404:
                    continue  # deleted
                self.log.warning("reconcile: cannot read namespace %s (%s): claims are judged "
                                 "by age only", name, e.status)
                return None
            meta = ns.get("metadata") or {}
            phase = (ns.get("status") or {}).get("phase")
            out[name] = "terminating" if meta.get("deletionTimestamp") or phase == \
                "Terminating" else "active"
        return out

    async def look(self) -> Observation:
        tickets = self._tickets()
        servers, listed_at = await self._servers()
        claims, pods = self._kube_view()
        namespaces = None
        if claims:
            namespaces = await asyncio.to_thread(self._namespaces,
                                                 {c.namespace for c in claims})
        return Observation(now=utcnow(), started_at=self.started_at, tickets=tickets,
                           servers=servers, listed_at=listed_at, claims=claims, pods=pods,
                           namespaces=namespaces)

    # -- act -----------------------------------------------------------------------------------
    async def _release(self, a: ReleaseTicket, judged: Mapping[str, TicketView]) -> bool:
        key = key_of(a.user, a.server)
        async with self.ctx.lock:
            with self.store.session() as s:
                row = s.get(ReservationRow, (a.user, a.server))
                seen = judged.get(key)
                if row is None or seen is None or touched(row) != seen.touched \
                        or row.state not in ("admitted", "queued"):
                    return False  # released, or a new start of that server, meanwhile
                self.store.audit(s, ACTOR, "reconcile.release", key,
                                 {"state": a.state, "reason": a.reason,
                                  "charge": dict(row.charge)})
            released = self.ctx.controller.release(a.user, a.server, ACTOR, why=a.reason)
        self.ctx.wakeup.set()
        self.log.warning("reconcile: released %s (%s): %s", key, a.state, a.reason)
        return released

    def _mark(self, a: MarkMissing | ClearMissing, judged: Mapping[str, TicketView]) -> None:
        with self.store.session() as s:
            row = s.get(ReservationRow, (a.user, a.server))
            seen = judged.get(key_of(a.user, a.server))
            if row is None or seen is None or touched(row) != seen.touched:
                return
            row.missing_since = a.since if isinstance(a, MarkMissing) else None

    def _delete_claim(self, a: DeleteClaim) -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            self.kube.api.delete("resourceclaims", a.name, a.namespace,  # type: ignore[union-attr]
                                 uid=a.uid, resource_version=a.resource_version)
        except ApiException as e:
            if e.status in (404, 409):
                return False  # gone, or changed since observed: the next pass looks again
            raise
        self.kube.drop(a.namespace, a.name, a.uid)  # type: ignore[union-attr]
        return True

    def _unprotect(self, a: Unprotect) -> bool:
        from kubernetes.client.exceptions import ApiException

        api = self.kube.api  # type: ignore[union-attr]
        try:
            fresh = api.get("resourceclaims", a.name, a.namespace)
            meta = fresh.get("metadata") or {}
            if meta.get("uid") != a.uid:
                return False
            finalizers = [f for f in meta.get("finalizers") or [] if f != CLAIM_FINALIZER]
            api.merge_patch("resourceclaims", a.name, {"metadata": {
                "resourceVersion": meta.get("resourceVersion"), "finalizers": finalizers}},
                a.namespace)
        except ApiException as e:
            if e.status in (404, 409):
                return False
            raise
        return True

    def _delete_pod(self, a: DeletePod) -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            self.kube.api.delete("pods", a.name, a.namespace, uid=a.uid)  # type: ignore[union-attr]
        except ApiException as e:
            if e.status in (404, 409):
                return False  # gone, or a new pod of that name meanwhile
            raise
        return True

    async def _pod(self, a: DeletePod) -> bool:
        try:
            done = await asyncio.to_thread(self._delete_pod, a)
        except Exception as e:  # a permission or API error: logged, the rest goes on
            self.log.warning("reconcile: deleting pod %s/%s failed: %s", a.namespace, a.name, e)
            return False
        self._pod_missing.pop(a.uid, None)
        if done:
            with self.store.session() as s:
                self.store.audit(s, ACTOR, "reconcile.pod", f"{a.namespace}/{a.name}",
                                 {"reason": a.reason, "uid": a.uid, "hub_server": a.hub_server})
            self.log.warning("reconcile: deleted pod %s/%s: %s", a.namespace, a.name, a.reason)
        return done

    async def _claim(self, a: DeleteClaim | Unprotect) -> bool:
        try:
            if isinstance(a, DeleteClaim):
                done = await asyncio.to_thread(self._delete_claim, a)
            else:
                done = await asyncio.to_thread(self._unprotect, a)
        except Exception as e:  # a permission or API error: logged, the rest goes on
            self.log.warning("reconcile: %s of claim %s/%s failed: %s",
                             type(a).__name__, a.namespace, a.name, e)
            return False
        if done:
            kind = "reconcile.claim" if isinstance(a, DeleteClaim) else "reconcile.unprotect"
            detail = {"reason": a.reason, "uid": a.uid}
            if isinstance(a, DeleteClaim):
                detail["hub_server"] = a.hub_server
            with self.store.session() as s:
                self.store.audit(s, ACTOR, kind, f"{a.namespace}/{a.name}", detail)
            self.log.warning("reconcile: %s %s/%s: %s",
                             "deleted claim" if isinstance(a, DeleteClaim) else
                             "removed delete-protection from", a.namespace, a.name, a.reason)
        return done

    async def apply(self, actions: Sequence[Action], seen: Observation) -> dict[str, int]:
        judged = {t.key: t for t in seen.tickets}
        done = {"released": 0, "pods_deleted": 0, "claims_deleted": 0, "unprotected": 0}
        if seen.claims is not None:  # forget the absences of pods that are gone
            present = {p.uid for p in seen.pods}
            self._pod_missing = {u: t for u, t in self._pod_missing.items() if u in present}
        for a in actions:
            if isinstance(a, ReleaseTicket):
                done["released"] += await self._release(a, judged)
            elif isinstance(a, MarkMissing | ClearMissing):
                self._mark(a, judged)
            elif isinstance(a, MarkPodMissing):
                self._pod_missing.setdefault(a.uid, a.since)
            elif isinstance(a, ClearPodMissing):
                self._pod_missing.pop(a.uid, None)
            elif isinstance(a, DeletePod):
                done["pods_deleted"] += await self._pod(a)
            elif isinstance(a, DeleteClaim):
                done["claims_deleted"] += await self._claim(a)
            else:
                done["unprotected"] += await self._claim(a)
        return done

    async def run_once(self, why: str = "interval") -> dict[str, int]:
        """One pass: observe, decide, act.  What it did, by kind."""
        started = time.monotonic()
        seen = await self.look()
        actions = decide(seen, self.settings())
        done = await self.apply(actions, seen)
        for k, v in done.items():
            self.totals[k] += v
        self.totals["passes"] += 1
        self.last = {"at": seen.now.isoformat() + "Z", "why": why, "done": done,
                     "tickets": len(seen.tickets),
                     "hub_servers": None if seen.servers is None else len(seen.servers),
                     "claims": None if seen.claims is None else len(seen.claims),
                     "seconds": round(time.monotonic() - started, 3),
                     "problem": self._hub_problem}
        return done

    async def run(self, stop: asyncio.Event) -> None:
        """Pass every ``interval`` seconds and after pokes, until ``stop``."""
        last = time.monotonic()
        while not stop.is_set():
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._poke.wait())]
            every = self.interval if not self._hub_problem else min(self.interval,
                                                                    2 * self.event_spacing)
            remaining = max(every - (time.monotonic() - last), 0.0)
            await asyncio.wait(waiters, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()
            if stop.is_set():
                return
            why = "event" if self._poke.is_set() else "interval"
            if why == "event":
                await asyncio.sleep(max(self.event_spacing - (time.monotonic() - last), 0.0))
            self._poke.clear()
            last = time.monotonic()
            try:
                await self.run_once(why)
            except Exception:
                self.log.exception("reconcile pass failed")
