"""The idle monitor's REST API: ``api/idle/report`` and ``api/idle/servers/<user>/<server>``.

The report is the monitor's last poll (:meth:`.monitor.IdleMonitor.report`); admins and holders
of ``custom:aispike:idle`` (the admin panel, jupyterhub-idle-culler's arbiter hook) read all of
it, a user reads the row of their own server.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import unquote

from tornado import web

from aispike_hub.service.api import ADMIN_SCOPE, APIHandler, ServiceContext
from aispike_hub.service.idle.monitor import IdleMonitor
from aispike_hub.service.idle.signals import iso

IDLE_SCOPE = "custom:aispike:idle"
"""Read the idle report (the admin panel, jupyterhub-idle-culler's arbiter hook)."""


class IdleReportHandler(APIHandler):
    """GET api/idle/report: the whole report (admins, ``custom:aispike:idle``)."""

    monitor: IdleMonitor

    def initialize(self, ctx: ServiceContext, monitor: IdleMonitor) -> None:  # type: ignore[override]
        super().initialize(ctx)
        self.monitor = monitor

    @property
    def hub_scopes(self) -> set[str]:
        return super().hub_scopes | {IDLE_SCOPE}

    def get(self) -> None:
        self.require(ADMIN_SCOPE, IDLE_SCOPE)
        report = self.monitor.report()
        verdict = self.get_argument("verdict", None)
        if verdict:
            report["servers"] = [s for s in report["servers"] if s["verdict"] == verdict]
        self.reply(report)


class IdleServerHandler(IdleReportHandler):
    """GET api/idle/servers/<user>/<server>: one server's row (its owner may read it too)."""

    def get(self, user: str, server: str) -> None:  # type: ignore[override]
        user, server = unquote(user), unquote(server)
        if self.caller["name"] != user or self.caller.get("kind") != "user":
            self.require(ADMIN_SCOPE, IDLE_SCOPE)
        entry = self.monitor.entries.get((user, server))
        if entry is None:
            raise web.HTTPError(404, f"no running server {user}/{server} in the idle report")
        self.reply({**entry.as_dict(time.time()), "generated_at": iso(self.monitor.generated_at),
                    "stale": not self.monitor.hub_ok})


def idle_handlers(prefix: str, ctx: ServiceContext,
                  monitor: IdleMonitor) -> list[tuple[str, type, dict[str, Any]]]:
    p = prefix.rstrip("/")
    kw = {"ctx": ctx, "monitor": monitor}
    return [
        (rf"{p}/api/idle/report", IdleReportHandler, kw),
        (rf"{p}/api/idle/servers/([^/]+)/([^/]*)", IdleServerHandler, kw),
    ]
