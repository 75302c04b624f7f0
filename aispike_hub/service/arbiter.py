"""The AISpike idle policy as a ``cull_arbiter_hook`` for jupyterhub-idle-culler 2.0.

For hubs that already run jupyterhub-idle-culler: keep it (its options, its schedule), and let it
ask the AISpike service whether a server may go.  In ``idle_culler_config.py``::

    from aispike_hub.service.arbiter import AISpikeArbiter
    c.IdleCuller.cull_arbiter_hook = AISpikeArbiter("http://aispike:10101/services/aispike/")

The culler then stops a server only when the AISpike idle monitor says its grace is over
(``stop_due``: reclaimable, owner warned, not exempt, not dry-run); run the monitor with
``mode = "warn"`` so it warns owners and leaves the stopping to the culler.  A busy server is
kept however long the hub has not seen traffic, and an unanswered question (service down, server
unknown, stale report) keeps the server: the hook never stops on missing data.  The culler's own
``max_age`` still applies, as it bypasses the hook.

The culler's token (``$JUPYTERHUB_API_TOKEN``) needs ``custom:aispike:idle`` and
``access:services!service=aispike`` on top of the culler's usual scopes.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from typing import Any
from urllib.parse import quote

from tornado import httpclient

log = logging.getLogger("aispike.arbiter")


class AISpikeArbiter:
    """Callable as jupyterhub-idle-culler's ``cull_arbiter_hook`` (async; keyword arguments)."""

    def __init__(self, service_url: str = "", token: str = "", timeout: float = 10.0) -> None:
        self.service_url = (service_url or os.environ.get(
            "AISPIKE_SERVICE_URL", "http://127.0.0.1:10101/services/aispike/")).rstrip("/")
        self.token = token or os.environ.get("JUPYTERHUB_API_TOKEN", "")
        self.timeout = timeout

    async def verdict(self, user: str, server: str) -> dict[str, Any] | None:
        """The idle monitor's row for one server, or None when it cannot be had."""
        url = f"{self.service_url}/api/idle/servers/{quote(user, safe='')}/{quote(server, safe='')}"
        try:
            resp = await httpclient.AsyncHTTPClient().fetch(
                url, headers={"Authorization": f"token {self.token}"},
                request_timeout=self.timeout)
            doc = json.loads(resp.body)
        except Exception as e:
            log.warning("AISpike arbiter: no verdict for %s/%s (%s): keeping it", user, server, e)
            return None
        return doc if isinstance(doc, dict) else None

    async def __call__(self, *, inactive: dt.timedelta | None = None,
                       inactive_limit: float = 0, server: dict[str, Any], **_: Any) -> bool:
        user, _sep, name = str(server.get("full_name", "")).partition("/")
        if not user:
            return False
        row = await self.verdict(user, name)
        if row is None or row.get("stale"):
            return False
        due = bool(row.get("stop_due"))
        log.info("AISpike arbiter: %s/%s is %s (%s): %s", user, name, row.get("verdict"),
                 "; ".join(row.get("evidence", [])), "cull" if due else "keep")
        return due
