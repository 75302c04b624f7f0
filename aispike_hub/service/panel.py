"""The admin panel: pages and JSON served by the AISpike service, for AISpike admins only.

Pages (under the service's prefix, e.g. ``/services/aispike/``), each extending the hub's own
``page.html`` and using the hub's CSS and scripts through the hub's static URL, so they look
like the hub's pages and keep its navigation bar (the service appears in its Services menu):

| page | what |
|---|---|
| ``admin/`` | GPU map: node pools, then nodes and GPUs as bars of slices; filters |
| ``admin/quotas`` | per user and group: limit vs use; editing through the policy API |
| ``admin/queue`` | waiting spawns: position, reason, wait |
| ``admin/idle`` | the idle monitor's report; warn and stop (with a confirmation) |
| ``admin/history`` | allocation, fragmentation, GPU-hours busy and idle over time |

The same data as JSON (``custom:aispike:admin``; the idle report also ``custom:aispike:idle``):
``api/panel/map``, ``api/panel/quotas``, ``api/panel/queue``, ``api/panel/history``,
``api/idle/report`` (the idle monitor's own API) and
``POST api/panel/idle/<user>/<server>/<warn|stop>``.
Policy edits use the existing ``api/policy/...`` endpoints.  ``metrics`` serves the panel's
gauges (allocation, fragmentation, GPUs held by state, queue) for Prometheus; with
``AdminPanel.prometheus_url`` set, the history charts come from Prometheus (:mod:`.prometheus`),
else (or when it does not answer) from the service's own samples (:mod:`.history`).

Speed on large clusters: the map is built once per change of the slices, nodes or policy
(parsed reservations are reused across builds), views only sum per-node aggregates, the map
page carries its first view inline (one request to first paint), JSON and pages are gzipped,
and static files (the hub's and the panel's) carry a content hash so browsers cache them.

Everything is computed on the service side from what the service already holds: the
controller's inventory and admitted reservations (:mod:`.admission`), the idle monitor's
verdicts (:mod:`.idle`), the quota core's limits (:mod:`aispike_hub.quota`) and the placement
core's fragmentation; the browser only draws.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gzip
import json
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from jupyterhub.services.auth import HubOAuthenticated, check_scopes
from sqlalchemy import String, func, select
from sqlalchemy import cast as sql_cast
from tornado import web
from traitlets import Bool, Float, Int, List, Unicode, default
from traitlets.config import LoggingConfigurable

from aispike_hub.placement.fragmentation import Workload, default_notebook_workload
from aispike_hub.quota import (
    RESOURCES,
    UNLIMITED,
    Amounts,
    Server,
    entry_to_dict,
    group_to_dict,
    resolve_limits,
    usage_of,
)
from aispike_hub.service.admission import (
    AdmissionController,
    assignment_from_dict,
    key_of,
    request_from_dict,
    server_assignments,
)
from aispike_hub.service.api import ADMIN_SCOPE, ADMIT_SCOPE, APIHandler, ServiceContext
from aispike_hub.service.gpumap import ClusterMap, Holding, Live, MapFilter, holdings_of
from aispike_hub.service.history import History
from aispike_hub.service.idle import IDLE_SCOPE, IdleMonitor
from aispike_hub.service.prometheus import PrometheusError, PrometheusSource, exposition
from aispike_hub.service.store import ReservationRow, Store, utcnow

HERE = Path(__file__).parent
PAGES = {"": ("map", "GPU map"), "quotas": ("quotas", "Quotas"), "queue": ("queue", "Queue"),
         "idle": ("idle", "Idle servers"), "history": ("history", "History")}
"""URL tail -> (template, tab title)."""
MAP_FILTERS = ("model", "node", "pool", "group", "user")


def hub_templates_dir() -> str:
    """Where the installed JupyterHub keeps its templates (``page.html``)."""
    from jupyterhub._data import DATA_FILES_PATH

    return os.path.join(DATA_FILES_PATH, "templates")


def hub_static_dir() -> str:
    """Where the installed JupyterHub keeps its static files."""
    from jupyterhub._data import DATA_FILES_PATH

    return os.path.join(DATA_FILES_PATH, "static")


def static_version(root: str, path: str) -> str | None:
    """The content hash tornado (and so the hub) puts in ``?v=`` of a static URL."""
    return web.StaticFileHandler.get_version({"static_path": root}, path)


def script_json(doc: Any) -> str:
    """JSON safe to put inside ``<script type="application/json">`` (no ``</script>``)."""
    return (json.dumps(doc, default=str, separators=(",", ":"))
            .replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


GZIP_MIN_BYTES = 1024


def finish_compressed(handler: web.RequestHandler, body: bytes) -> None:
    """Finish with ``body``, gzipped when the client accepts it and it is worth it."""
    handler.add_header("Vary", "Accept-Encoding")
    if (len(body) >= GZIP_MIN_BYTES
            and "gzip" in handler.request.headers.get("Accept-Encoding", "")):
        body = gzip.compress(body, compresslevel=4)
        handler.set_header("Content-Encoding", "gzip")
    handler.finish(body)


class AdminPanel(LoggingConfigurable):
    """The admin panel of the AISpike service (pages, JSON, history sampler)."""

    enabled = Bool(True, help="Serve the admin panel pages and their API.").tag(config=True)

    pool_labels = List(
        Unicode(),
        default_value=["aispike.io/pool", "cloud.google.com/gke-nodepool",
                       "eks.amazonaws.com/nodegroup", "kubernetes.azure.com/agentpool",
                       "aispike.io/gpu-model"],
        help="""Node labels that name a node's pool, first match wins; a node without any is
        in the pool of its first GPU's model. The map aggregates by pool, then zooms in.""",
    ).tag(config=True)

    nodes_per_view = Int(
        60, help="""Show nodes (not pools) when at most this many nodes match the filters."""
    ).tag(config=True)

    page_size = Int(300, help="Most nodes drawn at once when zoomed into a pool.").tag(config=True)

    map_cache_seconds = Float(
        2.0, help="Seconds the computed map is reused between requests (actions clear it)."
    ).tag(config=True)

    history_interval = Float(
        60.0, help="""Seconds between samples of the cluster into the store (allocation,
        fragmentation, GPUs held busy and idle) for the history charts; 0 turns sampling off."""
    ).tag(config=True)

    history_retention = Float(
        30 * 86400.0, help="Seconds of history kept in the store."
    ).tag(config=True)

    hub_prefix = Unicode(
        help="""The hub's URL prefix (its static files and pages live below it); default
        $JUPYTERHUB_BASE_URL + 'hub/'."""
    ).tag(config=True)

    hub_static_versions = Bool(
        True, help="""Give the hub's static files (CSS, scripts) the content hash the hub itself
        puts in their URLs (?v=...), computed from the JupyterHub installed with the service, so
        browsers reuse their cached copies instead of asking the hub again on every page. Turn
        off when the service runs a different JupyterHub version than the hub."""
    ).tag(config=True)

    prometheus_url = Unicode(
        "", help="""Base URL of a Prometheus server that scrapes this service's /metrics (e.g.
        http://prometheus.monitoring:9090). When set, the history charts come from PromQL
        range queries (/api/v1/query_range) over the service's gauges; when empty, or when
        Prometheus does not answer, from the service's own samples in its store
        (history_interval), with a note on the page saying so."""
    ).tag(config=True)

    prometheus_selector = Unicode(
        "", help="""Label matchers added to every PromQL query, to pick this service's series
        when Prometheus scrapes several hubs, e.g. 'job="aispike", namespace="jhub"'."""
    ).tag(config=True)

    prometheus_timeout = Float(
        5.0, help="Seconds to wait for Prometheus before falling back to the service's history."
    ).tag(config=True)

    authenticate_prometheus = Bool(
        True, help=f"""Require a hub token with {ADMIN_SCOPE} to read /metrics (as the hub's own
        authenticate_prometheus). Off: anyone who reaches the service may read the gauges."""
    ).tag(config=True)

    @default("hub_prefix")
    def _hub_prefix_default(self) -> str:
        return os.environ.get("JUPYTERHUB_BASE_URL", "/").rstrip("/") + "/hub/"

    def __init__(self, ctx: ServiceContext, monitor: IdleMonitor, prefix: str,
                 **kw: Any) -> None:
        super().__init__(**kw)
        self.ctx = ctx
        self.monitor = monitor
        self.prefix = prefix.rstrip("/") + "/"
        self.history = History(ctx.controller.store, self.history_retention)
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
        self._env: Any = None

    @property
    def controller(self) -> AdmissionController:
        return self.ctx.controller

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
                    key == self._map_key or now - self._map_at < self.map_cache_seconds):
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
                          workload, tuple(self.pool_labels))

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
            limit = min(int(args.get("limit", "") or self.page_size), 2000)
        except ValueError:
            raise web.HTTPError(400, "offset, limit: expected whole numbers") from None
        cmap = self.cluster_map()
        live, args_key = cmap.live, (f, level, offset, limit)
        view = self._view
        if (view is not None and view[0] is cmap and view[1] is live
                and view[2] == args_key):
            return view[3]  # nothing changed since this very view was computed
        out = cmap.view(f, level, offset, limit, self.nodes_per_view)
        out["generated_at"] = utcnow().isoformat() + "Z"
        self._view = (cmap, live, args_key, out)
        return out

    # -- quotas ------------------------------------------------------------------------------
    def compute_quotas(self) -> dict[str, Any]:
        """Per user and group: each resource's use against its limit (the quota core's)."""
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
        by_user: dict[str, list[Any]] = {}
        for sv in servers:
            by_user.setdefault(sv.user, []).append(sv)
        users = []
        for name in sorted(set(policy.users) | set(by_user) | set(groups_of)):
            groups = sorted(groups_of.get(name, ()))
            limits = resolve_limits(policy, name, groups)
            used = usage_of(by_user.get(name, ()), name)
            resources = {}
            for res in RESOURCES:
                quota, ceiling = limits.quota[res], limits.ceiling(res)
                resources[res] = {"used": used.get(res), "quota": quota, "ceiling": ceiling,
                                  "source": limits.sources.get(res, "")}
            users.append({
                "user": name, "groups": groups, "tier": limits.tier.name,
                "servers": len(by_user.get(name, ())),
                "queued": queued_of.get(name, 0),
                "entry": entry_to_dict(policy.users[name]) if name in policy.users else None,
                "resources": resources, **_over(resources)})
        groups_out = []
        by_group: dict[str, list[Any]] = {}
        for sv in servers:
            for g in sv.groups:
                by_group.setdefault(g, []).append(sv)
        for g in sorted(set(policy.groups) | set(by_group)):
            entry = policy.groups.get(g)
            members = by_group.get(g, [])
            used = Amounts.total(sv.charge for sv in members)
            resources = {}
            for res in RESOURCES:
                q = entry.quota.get(res) if entry else None
                b = entry.borrowing.get(res) if entry else None
                quota = None if q is None or q == UNLIMITED else q
                ceiling = None if quota is None or b == UNLIMITED else quota + (b or 0)
                resources[res] = {"used": used.get(res), "quota": quota, "ceiling": ceiling,
                                  "source": f"group '{g}'" if quota is not None else ""}
            groups_out.append({
                "group": g, "members_running": sorted({sv.user for sv in members}),
                "entry": group_to_dict(entry) if entry else None, "resources": resources,
                **_over(resources)})
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
        return {"queued": rows, "length": len(rows), "generated_at": now.isoformat() + "Z"}

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
        out = self.history.series(since, until, self.history_interval or 60.0)
        out["sampling"] = self.history_interval > 0
        out["source"] = "history"
        return out

    async def charts(self, hours: float) -> dict[str, Any]:
        """The charts' series: from Prometheus when configured and answering, else (with a
        ``note`` saying why) from the service's own history."""
        if not self.prometheus_url:
            return await asyncio.to_thread(self.history_view, hours)
        until = utcnow()
        since = until - dt.timedelta(hours=hours)
        source = PrometheusSource(self.prometheus_url, self.prometheus_selector,
                                  self.prometheus_timeout)
        try:
            out = await source.series(since, until)
        except PrometheusError as e:
            self.log.warning("panel: Prometheus at %s: %s; charts from the service's history",
                             self.prometheus_url, e)
            out = await asyncio.to_thread(self.history_view, hours)
            out["note"] = (f"Prometheus at {self.prometheus_url} did not answer ({e}); these "
                           f"charts come from the service's own history.")
            return out
        out["source"] = "prometheus"
        out["prometheus_url"] = self.prometheus_url
        out["sampling"] = True
        return out

    async def run(self, stop: asyncio.Event) -> None:
        """Sample the history every ``history_interval`` seconds until ``stop`` is set."""
        if self.history_interval <= 0:
            return
        while not stop.is_set():
            try:
                async with self.ctx.lock:
                    await asyncio.to_thread(self.sample)
            except Exception:
                self.log.exception("panel: history sample failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.history_interval)

    # -- pages -------------------------------------------------------------------------------
    @property
    def env(self) -> Any:
        if self._env is None:
            import jinja2

            self._env = jinja2.Environment(
                loader=jinja2.ChoiceLoader([
                    jinja2.FileSystemLoader(str(HERE / "templates")),
                    jinja2.FileSystemLoader(hub_templates_dir()),
                ]),
                autoescape=True)
        return self._env

    def render(self, template: str, user: Mapping[str, Any] | None, xsrf_token: str,
               **extra: Any) -> str:
        hub = self.hub_prefix
        versions = self.hub_static_versions

        def static_url(path: str, include_version: bool = True) -> str:
            v = static_version(hub_static_dir(), path) if include_version and versions else None
            return f"{hub}static/{path}" + (f"?v={v}" if v else "")

        here = str(HERE / "static")

        name = str(user["name"]) if user else ""
        ctx = {
            "static_url": static_url, "base_url": hub, "prefix": hub,
            "logo_url": hub + "home", "login_url": hub + "login", "logout_url": hub + "logout",
            "user": {"name": name, "json_escaped_name": json.dumps(name)[1:-1]} if user
            else None,
            "parsed_scopes": set(user.get("scopes", [])) if user else set(),
            "services": [{"name": self.ctx.service_name, "href": self.prefix}],
            "admin_access": False, "no_spawner_check": True, "xsrf_token": xsrf_token,
            "version_hash": "", "announcement": None,
            "panel_prefix": self.prefix, "panel_static": self.prefix + "panel-static/",
            "panel_versions": {f: static_version(here, f) for f in ("panel.js", "panel.css")},
            "pages": [(self.prefix + "admin/" + tail, title, tpl)
                      for tail, (tpl, title) in PAGES.items()],
            **extra,
        }
        return str(self.env.get_template(template).render(**ctx))


def _over(resources: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Which resources are over the nominal quota (borrowing) or over the ceiling."""
    borrowing = [r for r, v in resources.items()
                 if v["quota"] is not None and v["used"] > v["quota"]]
    over = [r for r, v in resources.items()
            if v["ceiling"] is not None and v["used"] > v["ceiling"]]
    return {"borrowing": borrowing, "over": over}


# --- handlers ------------------------------------------------------------------------------------


def _is_admin(model: Mapping[str, Any] | None) -> bool:
    return bool(model) and bool(check_scopes({ADMIN_SCOPE}, set(model.get("scopes", []))))  # type: ignore[union-attr]


class PageHandler(HubOAuthenticated, web.RequestHandler):  # type: ignore[misc]
    """One admin page; log in through the hub (OAuth), then 403 without the admin scope."""

    panel: AdminPanel
    page: str

    def initialize(self, panel: AdminPanel, page: str = "") -> None:
        self.panel = panel
        self.page = page

    @property
    def hub_scopes(self) -> set[str]:
        return {f"access:services!service={self.panel.ctx.service_name}", ADMIN_SCOPE,
                ADMIT_SCOPE, IDLE_SCOPE}

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")

    @web.authenticated
    async def get(self) -> None:
        if not _is_admin(self.current_user):
            raise web.HTTPError(403, f"the admin panel needs the scope {ADMIN_SCOPE}")
        template, title = PAGES[self.page]
        extra: dict[str, Any] = {}
        if template == "map":
            # The first view rides along with the page: drawn without a second request.
            args = {k: self.get_argument(k, "") for k in MAP_FILTERS}
            with contextlib.suppress(web.HTTPError):  # the script asks the API: it explains
                extra["initial_json"] = script_json(
                    await asyncio.to_thread(self.panel.map_view, args))
        html = self.panel.render(f"panel/{template}.html", self.current_user,
                                 self.xsrf_token.decode(), page_title=title, active=template,
                                 **extra)
        finish_compressed(self, html.encode())

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = getattr(exc, "log_message", None) or self._reason
        user = getattr(self, "_hub_auth_user_cache", None)
        self.finish(self.panel.render("panel/error.html", user, "", status_code=status_code,
                                      message=message, page_title="Error", active=""))


class PanelAPIHandler(APIHandler):
    """JSON of the panel (``custom:aispike:admin``)."""

    panel: AdminPanel

    def initialize(self, ctx: ServiceContext, panel: AdminPanel) -> None:  # type: ignore[override]
        super().initialize(ctx)
        self.panel = panel

    def args(self) -> dict[str, str]:
        return {k: self.get_argument(k) for k in self.request.arguments}

    def reply(self, doc: Any, status: int = 200) -> None:
        """Compact JSON, gzipped for clients that accept it."""
        self.set_status(status)
        finish_compressed(self, json.dumps(doc, default=str, separators=(",", ":")).encode())


class MapHandler(PanelAPIHandler):
    async def get(self) -> None:
        self.require(ADMIN_SCOPE)
        # Off the event loop: a large cluster takes a moment, and admissions must not wait.
        self.reply(await asyncio.to_thread(self.panel.map_view, self.args()))


class QuotasHandler(PanelAPIHandler):
    async def get(self) -> None:
        self.require(ADMIN_SCOPE)
        self.reply(await asyncio.to_thread(self.panel.quotas))


class PanelQueueHandler(PanelAPIHandler):
    def get(self) -> None:
        self.require(ADMIN_SCOPE)
        self.reply(self.panel.queue())


class HistoryHandler(PanelAPIHandler):
    async def get(self) -> None:
        self.require(ADMIN_SCOPE)
        try:
            hours = float(self.get_argument("hours", "24"))
        except ValueError:
            raise web.HTTPError(400, "hours: expected a number") from None
        if not 0 < hours <= 24 * 90:
            raise web.HTTPError(400, "hours: expected more than 0 and at most 2160")
        self.reply(await self.panel.charts(hours))


class MetricsHandler(PanelAPIHandler):
    """The panel's gauges in Prometheus' text format, for Prometheus to scrape."""

    async def get(self) -> None:
        if self.panel.authenticate_prometheus:
            self.require(ADMIN_SCOPE)
        values = await asyncio.to_thread(self.panel.current_sample)
        try:
            body, content_type = exposition(values)
        except ImportError:
            raise web.HTTPError(501, "/metrics needs prometheus-client: "
                                "pip install 'aispike-hub[service]'") from None
        self.set_header("Content-Type", content_type)
        self.finish(body)


class IdleActionHandler(PanelAPIHandler):
    async def post(self, user: str, server: str, action: str) -> None:
        """Warn or stop one server; the body must confirm it: {"confirm": "<user>/<server>"}."""
        self.require(ADMIN_SCOPE)
        user, server = unquote(user), unquote(server)
        doc = self.body()
        if not isinstance(doc, Mapping) or doc.get("confirm") != f"{user}/{server}":
            from aispike_hub.service.api import FieldError

            raise FieldError("confirm", f"confirm the {action} by sending "
                             f"{{\"confirm\": \"{user}/{server}\"}}")
        self.reply(await self.panel.idle_action(user, server, action, self.actor))


class RootHandler(web.RequestHandler):
    """The service's own URL (the hub's Services menu links here): on to the map."""

    def initialize(self, panel: AdminPanel) -> None:
        self.panel = panel

    def get(self) -> None:
        self.redirect(self.panel.prefix + "admin/")


def panel_handlers(panel: AdminPanel) -> list[tuple[str, type, dict[str, Any]]]:
    p = panel.prefix.rstrip("/")
    kw = {"ctx": panel.ctx, "panel": panel}
    routes: list[tuple[str, type, dict[str, Any]]] = [
        (rf"{p}/?", RootHandler, {"panel": panel}),
        (rf"{p}/panel-static/(.*)", web.StaticFileHandler, {"path": str(HERE / "static")}),
        (rf"{p}/api/panel/map", MapHandler, kw),
        (rf"{p}/api/panel/quotas", QuotasHandler, kw),
        (rf"{p}/api/panel/queue", PanelQueueHandler, kw),
        (rf"{p}/api/panel/history", HistoryHandler, kw),
        (rf"{p}/metrics", MetricsHandler, kw),
        (rf"{p}/api/panel/idle/([^/]+)/([^/]*)/(warn|stop)", IdleActionHandler, kw),
    ]
    for tail in PAGES:
        routes.append((rf"{p}/admin/{tail}", PageHandler, {"panel": panel, "page": tail}))
    return routes
