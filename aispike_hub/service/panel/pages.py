"""The admin panel's pages: the :class:`AdminPanel` configurable, template rendering on the hub's
own ``page.html``, static files with content hashes, and compression.

Templates and static files are package data of :mod:`aispike_hub.service`
(``templates/panel/*.html``, ``static/*``): :data:`HERE` is that package's folder, not this one.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tornado import web
from traitlets import Bool, Float, Int, List, Unicode, default
from traitlets.config import LoggingConfigurable

from aispike_hub.admission.controller import AdmissionController
from aispike_hub.service.api import ADMIN_SCOPE, ServiceContext
from aispike_hub.service.gpumap import ClusterMap, Live
from aispike_hub.service.history import History
from aispike_hub.service.idle import IdleMonitor
from aispike_hub.service.panel.views import PanelViews

HERE = Path(__file__).parent.parent
"""The :mod:`aispike_hub.service` folder, where ``templates/`` and ``static/`` are."""
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
        True, help=f"""Require a hub token with read:metrics (or {ADMIN_SCOPE}) to read
        /metrics (as the hub's own authenticate_prometheus). Off: anyone who reaches the service
        may read the gauges."""
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
        self.views = PanelViews(ctx, monitor, self)
        """The data the pages show (:mod:`.views`); the methods below are its front."""
        self._env: Any = None
        self.reconciler: Any = None
        """The service's :class:`~aispike_hub.service.reconciler.Reconciler` (its totals and
        last pass appear on the queue page), when the service has one."""

    @property
    def controller(self) -> AdmissionController:
        return self.ctx.controller

    @property
    def history(self) -> History:
        return self.views.history

    # -- the views (see PanelViews) ----------------------------------------------------------
    def live(self) -> dict[tuple[str, str], Live]:
        return self.views.live()

    def fingerprint(self) -> tuple[Any, ...]:
        return self.views.fingerprint()

    def cluster_map(self, fresh: bool = False) -> ClusterMap:
        return self.views.cluster_map(fresh)

    def map_view(self, args: Mapping[str, str]) -> dict[str, Any]:
        return self.views.map_view(args)

    def quotas(self) -> dict[str, Any]:
        return self.views.quotas()

    def compute_quotas(self) -> dict[str, Any]:
        return self.views.compute_quotas()

    def queue(self) -> dict[str, Any]:
        return self.views.queue()

    async def idle_action(self, user: str, server: str, action: str, actor: str) -> dict[str, Any]:
        return await self.views.idle_action(user, server, action, actor)

    def current_sample(self) -> dict[str, float]:
        return self.views.current_sample()

    def sample(self) -> None:
        self.views.sample()

    def history_view(self, hours: float) -> dict[str, Any]:
        return self.views.history_view(hours)

    async def charts(self, hours: float) -> dict[str, Any]:
        return await self.views.charts(hours)

    async def run(self, stop: asyncio.Event) -> None:
        """Sample the history every ``history_interval`` seconds until ``stop`` is set."""
        await self.views.run(stop)

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

