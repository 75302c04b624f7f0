"""The admin panel's tornado handlers: pages (hub OAuth, admin scope), the JSON API, metrics and
idle actions, and :func:`panel_handlers`, the routes the service mounts."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from jupyterhub.services.auth import HubOAuthenticated, check_scopes
from tornado import web

from aispike_hub.kube import rejections
from aispike_hub.service.api import (
    ADMIN_SCOPE,
    ADMIT_SCOPE,
    APIHandler,
    ServiceContext,
    error_text,
)
from aispike_hub.service.idle import IDLE_SCOPE
from aispike_hub.service.panel.pages import (
    HERE,
    MAP_FILTERS,
    PAGES,
    AdminPanel,
    finish_compressed,
    script_json,
)
from aispike_hub.service.prometheus import exposition

METRICS_SCOPE = "read:metrics"
"""JupyterHub's scope for reading metrics: a scraper needs this, not the quota-editing scope."""


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
        message = error_text(exc) or self._reason
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

    @property
    def hub_scopes(self) -> set[str]:
        # A scraper's token may hold read:metrics alone: let the hub identify it here.
        return {*super().hub_scopes, METRICS_SCOPE}

    async def get(self) -> None:
        if self.panel.authenticate_prometheus:
            # JupyterHub's own scope for scraping (the chart's aispike-metrics role), or an admin.
            self.require(METRICS_SCOPE, ADMIN_SCOPE)
        values = await asyncio.to_thread(self.panel.current_sample)
        cluster = await asyncio.to_thread(self.panel.cluster_map)  # cached: current_sample's
        try:
            body, content_type = exposition(values, cluster)
            body += rejections.exposition()  # objects the Kubernetes inventory refused
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
            from aispike_hub.sanity import shorten_text
            from aispike_hub.service.api import FieldError

            key = shorten_text(f"{user}/{server}", 60)  # never echo a hostile 300-digit name
            raise FieldError("confirm", f"confirm the {action} by sending "
                             f"{{\"confirm\": \"{key}\"}}")
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
