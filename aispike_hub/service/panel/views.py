"""What the admin panel's pages show, computed on the service side: the GPU map, quotas against
limits, the queue, the idle actions, and the history charts.

:class:`PanelViews` holds the data and its caches; it reads its settings (map cache, page size,
history interval, Prometheus) from the :class:`~.pages.AdminPanel` that owns it, at call time,
so a changed setting takes effect at once.  Quotas come from the quota core's report
(:func:`aispike_hub.quota.quota_report`): the panel only formats what admission enforces.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any, Protocol

from sqlalchemy import String, func, select
from sqlalchemy import cast as sql_cast
from tornado import web

from aispike_hub.admission.controller import AdmissionController, key_of
from aispike_hub.admission.inventory import server_assignments
from aispike_hub.admission.wire import assignment_from_dict, request_from_dict
from aispike_hub.placement.fragmentation import Workload, default_notebook_workload
from aispike_hub.quota import (
    RESOURCES,
    Amounts,
    Server,
    Use,
    entry_to_dict,
    group_to_dict,
    quota_report,
)
from aispike_hub.service.api import ServiceContext
from aispike_hub.service.gpumap import ClusterMap, Holding, Live, MapFilter, holdings_of
from aispike_hub.service.history import History
from aispike_hub.service.idle import IdleMonitor
from aispike_hub.service.prometheus import PrometheusError, PrometheusSource
from aispike_hub.service.store import ReservationRow, Store, utcnow


class ViewSettings(Protocol):
    """The settings the views read (the :class:`~.pages.AdminPanel`'s traits)."""

    log: logging.Logger | logging.LoggerAdapter[Any]
    pool_labels: list[str]
    nodes_per_view: int
    page_size: int
    map_cache_seconds: float
    history_interval: float
    history_retention: float
    prometheus_url: str
    prometheus_selector: str
    prometheus_timeout: float


class PanelViews:
    """The data behind the panel's pages and JSON (see the module docstring)."""

    def __init__(self, ctx: ServiceContext, monitor: IdleMonitor,
                 settings: ViewSettings) -> None:
        self.ctx = ctx
        self.monitor = monitor
        self.settings = settings
        self.history = History(ctx.controller.store, settings.history_retention)
        self._map: ClusterMap | None = None
        self._map_at = 0.0
        self._map_key: tuple[Any, ...] = ()
        self._map_live_at: float | None = None
        self._build = threading.Lock()
        self._parsed: dict[tuple[Any, ...], tuple[list[Holding], Any]] = {}
        """Raw reservation columns -> (holdings, request): rebuilds parse only new rows."""
        self._quotas: tuple[tuple[Any, ...], dict[str, Any]] | None = None
        self._view: tuple[ClusterMap, Any, tuple[Any, ...], dict[str, Any]] | None = None
        """(map, its verdicts, the view's arguments, the view): the last view, reused while
        none of them changed (compared by identity: holding them keeps their ids unique)."""

    @property
    def controller(self) -> AdmissionController:
        return self.ctx.controller

    @property
    def log(self) -> logging.Logger | logging.LoggerAdapter[Any]:
        return self.settings.log

    # -- the map -----------------------------------------------------------------------------
    def live(self) -> dict[tuple[str, str], Live]:
        out = {}
        for key, entry in self.monitor.entries.items():
            samples = self.monitor.book.samples.get(key)
            util = samples[-1].utilization_percent if samples else None
            a = entry.assessment
            out[key] = Live(a.verdict, a.gpu_memory_mib, util, a.evidence)
        return out

    def fingerprint(self) -> tuple[Any, ...]:
        """Changes whenever the slices, the nodes or the policy change (one cheap query)."""
        with self.controller.store.session() as s:
            count, top = s.execute(
                select(func.count(), func.max(ReservationRow.seq))
                .where(ReservationRow.state == "admitted")).one()
            queued = s.scalar(select(func.count()).where(ReservationRow.state == "queued"))
        inv = self.controller.inventory
        # A live inventory (Kubernetes) counts its events; a fixed one only changes by object.
        changes = getattr(inv, "version", None)
        return (count, top, queued, id(inv.nodes()),
                changes if changes is not None else len(inv.foreign_assignments()),
                id(self.controller.policy))

    def cluster_map(self, fresh: bool = False) -> ClusterMap:
        """The map of now: rebuilt when the slices or nodes changed (at most once per
        ``map_cache_seconds`` under churn); the idle monitor's verdicts are always current."""
        with self._build:
            now = time.monotonic()
            key = self.fingerprint()
            if not fresh and self._map is not None and (
                    key == self._map_key or now - self._map_at < self.settings.map_cache_seconds):
                if self._map_live_at != self.monitor.generated_at:  # a new poll: new verdicts
                    self._map.live = self.live()
                    self._map_live_at = self.monitor.generated_at
                return self._map
            self._map = self._build_map()
            self._map_at, self._map_key = now, key
            self._map_live_at = self.monitor.generated_at
            return self._map

    def _build_map(self) -> ClusterMap:
        holdings: list[Holding] = []
        seen = []
        # Plain columns, JSON as its text: a row seen at the last build is not parsed again.
        cols = (ReservationRow.user, ReservationRow.server, sql_cast(ReservationRow.groups, String),
                ReservationRow.tier, sql_cast(ReservationRow.assignment, String),
                sql_cast(ReservationRow.request, String))
        with self.controller.store.session() as s:
            rows = s.execute(select(*cols).where(ReservationRow.state == "admitted")).all()
        parsed: dict[tuple[Any, ...], tuple[list[Holding], Any]] = {}
        # What the cluster says each hub server holds (Kubernetes inventory): shown instead of
        # the admission's decision, which it replaces once the server's claim exists.
        actual = dict(server_assignments(self.controller.inventory))
        for row in rows:
            raw = tuple(row)
            entry = self._parsed.get(raw) or parsed.get(raw)
            user, server, groups, tier = raw[0], raw[1], raw[2], raw[3]
            if entry is None:
                a = json.loads(raw[4]) if raw[4] else None
                entry = (holdings_of(assignment_from_dict(a), user, server,
                                     json.loads(groups) if groups else (), tier) if a else [],
                         request_from_dict(json.loads(raw[5])))
            parsed[raw] = entry
            held = actual.pop(key_of(user, server), None)
            if held is None:
                holdings += entry[0]
            else:
                owner_groups = json.loads(groups) if groups else ()
                for a in held:
                    holdings += holdings_of(a, user, server, owner_groups, tier)
            seen.append(entry[1])
        self._parsed = parsed
        for key, held in actual.items():  # a server the service no longer admits (stopping)
            user, _, server = key.partition("/")
            for a in held:
                holdings += holdings_of(a, user, server)
        for a in self.controller.inventory.foreign_assignments():
            holdings += holdings_of(a)
        workload = (Workload.from_requests(seen) if len(seen) >= 20
                    else default_notebook_workload())
        return ClusterMap(list(self.controller.inventory.nodes()), holdings, self.live(),
                          workload, tuple(self.settings.pool_labels))

    def quotas(self) -> dict[str, Any]:
        """:meth:`compute_quotas`, reused while nothing changed."""
        key = self.fingerprint()
        if self._quotas is None or self._quotas[0] != key:
            self._quotas = (key, self.compute_quotas())
        return self._quotas[1]

    def map_view(self, args: Mapping[str, str]) -> dict[str, Any]:
        f = MapFilter(**{k: args.get(k, "").strip() for k in
                         ("model", "node", "pool", "group", "user")})
        level = args.get("level", "auto")
        if level not in ("auto", "pools", "nodes"):
            raise web.HTTPError(400, "level: expected auto, pools or nodes")
        try:
            offset = int(args.get("offset", "0") or 0)
            limit = min(int(args.get("limit", "") or self.settings.page_size), 2000)
        except ValueError:
            raise web.HTTPError(400, "offset, limit: expected whole numbers") from None
        cmap = self.cluster_map()
        live, args_key = cmap.live, (f, level, offset, limit)
        view = self._view
        if (view is not None and view[0] is cmap and view[1] is live
                and view[2] == args_key):
            return view[3]  # nothing changed since this very view was computed
        out = cmap.view(f, level, offset, limit, self.settings.nodes_per_view)
        out["generated_at"] = utcnow().isoformat() + "Z"
        self._view = (cmap, live, args_key, out)
        return out

    # -- quotas ------------------------------------------------------------------------------
    def compute_quotas(self) -> dict[str, Any]:
        """Per user and group: each resource's use against its limit (the quota core's report,
        formatted)."""
        policy = self.controller.policy
        R = ReservationRow
        with self.controller.store.session() as s:  # plain columns: no ORM objects for 10,000s
            rows = s.execute(select(R.state, R.user, R.server, R.charge, R.tier, R.priority,
                                    R.borrowed, R.groups, R.seq)
                             .where(R.state.in_(("admitted", "queued")))).all()
        servers = []
        groups_of: dict[str, set[str]] = {}
        queued_of: dict[str, int] = {}
        for state, user, server, charge, tier, priority, borrowed, groups, seq in rows:
            groups_of.setdefault(user, set()).update(groups or ())
            if state == "admitted":  # what server_of() makes of a row
                servers.append(Server(user, server, Amounts(**charge), tier, priority,
                                      bool(borrowed), frozenset(groups or ()), seq))
            else:
                queued_of[user] = queued_of.get(user, 0) + 1
        report = quota_report(policy, servers, groups_of)
        users = [{
            "user": u.user, "groups": list(u.groups), "tier": u.tier, "servers": u.servers,
            "queued": queued_of.get(u.user, 0),
            "entry": entry_to_dict(policy.users[u.user]) if u.user in policy.users else None,
            "resources": _resources(u.resources),
            "borrowing": list(u.borrowing), "over": list(u.over),
        } for u in report.users]
        groups_out = []
        for g in report.groups:
            entry = policy.groups.get(g.group)
            groups_out.append({
                "group": g.group, "members_running": list(g.members_running),
                "entry": group_to_dict(entry) if entry else None,
                "resources": _resources(g.resources),
                "borrowing": list(g.borrowing), "over": list(g.over)})
        return {"resources": list(RESOURCES), "users": users, "groups": groups_out,
                "defaults": entry_to_dict(policy.defaults),
                "tiers": [t.name for t in policy.tiers], "default_tier": policy.default_tier}

    # -- queue -------------------------------------------------------------------------------
    def queue(self) -> dict[str, Any]:
        tickets = {(t.user, t.server): t for t in self.controller.queue()}
        now = utcnow()
        rows = []
        with self.controller.store.session() as s:
            for r in Store.reservations(s, "queued"):
                t = tickets.get((r.user, r.server))
                if t is None:
                    continue
                rows.append({
                    **t.as_dict(), "groups": list(r.groups), "request": dict(r.request),
                    "queued_at": r.created_at.isoformat() + "Z",
                    "wait_seconds": round((now - r.created_at).total_seconds(), 1),
                    "gives_up_in_seconds": round((r.deadline - now).total_seconds(), 1)
                    if r.deadline else None})
        rows.sort(key=lambda x: x["position"])
        return {"queued": rows, "length": len(rows), "generated_at": now.isoformat() + "Z",
                "reconciled": self.reconciled()}

    def reconciled(self, limit: int = 20) -> dict[str, Any]:
        """What reconciliation released or deleted (newest first, from the audit log), its
        totals since the service started and its last pass (docs/operations.md)."""
        from aispike_hub.service.reconciler import AUDIT_ACTIONS

        store = self.controller.store
        entries = sorted((e for action in AUDIT_ACTIONS for e in store.audit_log(limit, action)),
                         key=lambda e: e.id, reverse=True)[:limit]
        reconciler = getattr(self.settings, "reconciler", None)
        return {"entries": [e.as_dict() for e in entries],
                "totals": dict(reconciler.totals) if reconciler is not None else {},
                "last": dict(reconciler.last) if reconciler is not None else {}}

    # -- idle actions ------------------------------------------------------------------------
    async def idle_action(self, user: str, server: str, action: str, actor: str) -> dict[str, Any]:
        """An admin's warn or stop of one server of the idle report (audited, user told)."""
        entry = self.monitor.entries.get((user, server))
        label = server or "default"
        target = f"{user}/{server}"
        detail: dict[str, Any] = {"by": actor}
        why = ""
        if entry is not None:
            a = entry.assessment
            detail.update(verdict=a.verdict, evidence=list(a.evidence),
                          gpu_memory_mib=a.gpu_memory_mib)
            why = f" ({'; '.join(a.evidence[:2])})" if a.evidence else ""
        if action == "warn":
            message = (f"An admin asks you to use or stop your server '{label}'{why}: it holds "
                       f"GPU capacity others are waiting for, and may be stopped. Save your work.")
            with self.controller.store.session() as s:
                Store.audit(s, actor, "panel.idle-warn", target, detail)
                Store.notify(s, user, server, "idle-warning", message)
            await self.monitor.tell({"event": "warn", "user": user, "server": server,
                                     "message": message, **detail})
            return {"warned": True, "message": message}
        stopped = await self.monitor.stop_server(user, server)
        if not stopped:
            raise web.HTTPError(502, f"the hub did not stop {target}; see the service log")
        message = f"Your server '{label}' was stopped by an admin{why}."
        with self.controller.store.session() as s:
            Store.audit(s, actor, "panel.idle-stop", target, detail)
            Store.notify(s, user, server, "idle-stopped", message)
        await self.monitor.tell({"event": "stop", "user": user, "server": server,
                                 "message": message, **detail})
        self._map = None
        return {"stopped": True, "message": message}

    # -- history -----------------------------------------------------------------------------
    def current_sample(self) -> dict[str, float]:
        """The cluster now: what the history records and /metrics exports."""
        values = self.cluster_map().sample()
        with self.controller.store.session() as s:
            values["queued"] = float(s.scalar(
                select(func.count()).where(ReservationRow.state == "queued")) or 0)
        return values

    def sample(self) -> None:
        self.history.record(utcnow(), self.current_sample())

    def history_view(self, hours: float) -> dict[str, Any]:
        """The charts' series from the service's own samples."""
        until = utcnow()
        since = until - dt.timedelta(hours=hours)
        out = self.history.series(since, until, self.settings.history_interval or 60.0)
        out["sampling"] = self.settings.history_interval > 0
        out["source"] = "history"
        return out

    async def charts(self, hours: float) -> dict[str, Any]:
        """The charts' series: from Prometheus when configured and answering, else (with a
        ``note`` saying why) from the service's own history."""
        url = self.settings.prometheus_url
        if not url:
            return await asyncio.to_thread(self.history_view, hours)
        until = utcnow()
        since = until - dt.timedelta(hours=hours)
        source = PrometheusSource(url, self.settings.prometheus_selector,
                                  self.settings.prometheus_timeout)
        try:
            out = await source.series(since, until)
        except PrometheusError as e:
            self.log.warning("panel: Prometheus at %s: %s; charts from the service's history",
                             url, e)
            out = await asyncio.to_thread(self.history_view, hours)
            out["note"] = (f"Prometheus at {url} did not answer ({e}); these "
                           f"charts come from the service's own history.")
            return out
        out["source"] = "prometheus"
        out["prometheus_url"] = url
        out["sampling"] = True
        return out

    async def run(self, stop: asyncio.Event) -> None:
        """Sample the history every ``history_interval`` seconds until ``stop`` is set."""
        if self.settings.history_interval <= 0:
            return
        while not stop.is_set():
            try:
                async with self.ctx.lock:
                    await asyncio.to_thread(self.sample)
            except Exception:
                self.log.exception("panel: history sample failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.history_interval)


def _resources(resources: Mapping[str, Use]) -> dict[str, dict[str, Any]]:
    """The JSON of one user's or group's resources: used, quota, ceiling and source."""
    return {r: {"used": u.used, "quota": u.quota, "ceiling": u.ceiling, "source": u.source}
            for r, u in resources.items()}
