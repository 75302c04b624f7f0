"""What the AISpike service knows about this server: idle warning, notices, the user's quota.

The notebook server asks with its own ``$JUPYTERHUB_API_TOKEN`` (the hub gives it the user's
``access:services!service=aispike`` scope when ``Spawner.server_token_scopes`` lists it, see
docs/lab-extension.md), so it sees exactly what its user may see.  Answers are cached for
``poll_interval`` seconds; a service that does not answer makes the section
``{"available": false, "error": ...}`` and never fails the request.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any
from urllib.parse import quote

from tornado import httpclient
from traitlets import Float, Unicode, default
from traitlets.config import LoggingConfigurable

IDLE_NOTICE_KINDS = ("idle-warning", "idle-stopped", "idle-cleared", "preempted")


def idle_state(row: dict[str, Any] | None, notices: list[dict[str, Any]]) -> dict[str, Any]:
    """The idle section: is this server warned, until when, why, and the warning's text.

    ``row`` is the service's idle report row for this server (None: not in the report, i.e.
    nothing to say); ``notices`` are this server's notices, newest first.
    """
    warning = next((n for n in notices if n.get("kind") == "idle-warning"), None)
    cleared = next((n for n in notices if n.get("kind") == "idle-cleared"), None)
    if warning and cleared and int(cleared.get("id", 0)) > int(warning.get("id", 0)):
        warning = None
    warned = bool(row and row.get("warned_at")) if row is not None else warning is not None
    return {
        "available": True,
        "warned": warned,
        "verdict": (row or {}).get("verdict", ""),
        "reason": (row or {}).get("reason", ""),
        "evidence": list((row or {}).get("evidence", [])),
        "stop_at": (row or {}).get("stop_at"),
        "warned_at": (row or {}).get("warned_at"),
        "message": warning.get("message", "") if warned and warning else "",
        "notice_id": int(warning["id"]) if warned and warning and "id" in warning else None,
    }


class ServiceView(LoggingConfigurable):
    """Reads this server's idle state, notices and its user's quota from the AISpike service."""

    url = Unicode(
        help="""Base URL of the AISpike service with its prefix, e.g.
        http://aispike:10101/services/aispike/ (default $AISPIKE_SERVICE_URL). Empty: no idle
        warnings or quota are shown.""",
    ).tag(config=True)

    @default("url")
    def _url(self) -> str:
        return os.environ.get("AISPIKE_SERVICE_URL", "")

    token = Unicode(
        help="""Token to call the service with; default this server's $JUPYTERHUB_API_TOKEN
        (never the service's own token: the notebook's user can read this value).""",
    ).tag(config=True)

    @default("token")
    def _token(self) -> str:
        return os.environ.get("JUPYTERHUB_API_TOKEN", "")

    poll_interval = Float(30.0, help="Seconds an answer of the service is reused.").tag(
        config=True)

    request_timeout = Float(5.0, help="Seconds to wait for the service.").tag(config=True)

    user = Unicode(help="Hub user of this server; default $JUPYTERHUB_USER.").tag(config=True)

    @default("user")
    def _user(self) -> str:
        return os.environ.get("JUPYTERHUB_USER", "")

    server_name = Unicode(
        help="This server's name; default $JUPYTERHUB_SERVER_NAME ('' = default server)."
    ).tag(config=True)

    @default("server_name")
    def _server_name(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVER_NAME", "")

    _cache: tuple[float, dict[str, Any]] | None = None

    async def _get(self, path: str) -> Any:
        request = httpclient.HTTPRequest(
            self.url.rstrip("/") + "/api/" + path,
            headers={"Authorization": f"token {self.token}"},
            request_timeout=self.request_timeout)
        response = await httpclient.AsyncHTTPClient().fetch(request)
        return json.loads(response.body)

    async def _idle_row(self) -> dict[str, Any] | None:
        try:
            row: dict[str, Any] = await self._get(
                f"idle/servers/{quote(self.user, safe='')}/{quote(self.server_name, safe='')}")
            return row
        except httpclient.HTTPClientError as e:
            if e.code == 404:  # not in the report (yet, or no idle monitor): nothing to say
                return None
            raise

    async def read(self, now: float | None = None) -> dict[str, Any]:
        """``{"idle": ..., "quota": ..., "notices": [...]}``, from the cache when fresh."""
        now = time.monotonic() if now is None else now
        if self._cache and now - self._cache[0] < self.poll_interval:
            return self._cache[1]
        if not self.url or not self.user:
            why = "no AISpike service configured (AISPIKE_SERVICE_URL)"
            out: dict[str, Any] = {"idle": {"available": False, "error": why},
                                   "quota": {"available": False, "error": why}, "notices": []}
            self._cache = (now, out)
            return out
        row, notices, quota = await asyncio.gather(
            self._idle_row(), self._get("notices"), self._get("quota"), return_exceptions=True)
        mine: list[dict[str, Any]] = []
        out = {}
        if isinstance(notices, BaseException):
            self.log.debug("AISpike: notices unavailable: %s", notices)
        else:
            mine = [n for n in notices.get("notices", [])
                    if n.get("server", "") == self.server_name and n.get("kind") in
                    IDLE_NOTICE_KINDS]
        if isinstance(row, BaseException):
            out["idle"] = {"available": False, "error": _error_text(row)}
        else:
            out["idle"] = idle_state(row, mine)
        if isinstance(quota, BaseException):
            out["quota"] = {"available": False, "error": _error_text(quota)}
        else:
            out["quota"] = {"available": True, **quota}
        out["notices"] = mine
        self._cache = (now, out)
        return out


def _error_text(e: BaseException) -> str:
    if isinstance(e, httpclient.HTTPClientError):
        return f"the AISpike service answered HTTP {e.code}"
    return f"the AISpike service did not answer ({type(e).__name__}: {e})"
