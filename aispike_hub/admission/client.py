"""The REST adapter of admission: a small async client for the AISpike service.

The spawner (``AISpikeSpawner``) runs inside the hub.  Before it creates anything it calls
:meth:`AdmissionClient.admit`; a refusal becomes a ``SpawnException`` with the service's reasons,
a queued ticket becomes spawn progress messages ("waiting in the queue: position 2 of 5 ...")
until the service admits it; when the server stops it calls :meth:`release`.  The service does
the check-and-reserve atomically, so the spawner needs no lock of its own.

It satisfies :class:`~aispike_hub.admission.protocol.Admission`, like the in-process adapter;
the service answers with the same :class:`~aispike_hub.admission.controller.AdmissionController`
(its handlers are :mod:`aispike_hub.service.api`), and requests travel in the one wire format of
:mod:`aispike_hub.admission.wire`.

Configure it in ``jupyterhub_config.py``::

    c.AdmissionClient.url = "http://aispike:10101/services/aispike/"
    c.AdmissionClient.api_token = "<the aispike service's token>"
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import weakref
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any
from urllib.parse import quote

from tornado import httpclient
from traitlets import Enum, Float, Integer, Unicode, default
from traitlets.config import LoggingConfigurable

from aispike_hub.admission.pending import PendingReleases, pending_releases
from aispike_hub.admission.wire import request_to_dict
from aispike_hub.model import SliceRequest

__all__ = ["AdmissionClient", "AdmissionError", "AdmissionUnavailable"]

UNAVAILABLE_STATUSES = frozenset({502, 503, 504, 599})
"""Answers that mean "the service is not there" (599: tornado's no answer; 502-504: a proxy
in front of a service that is down), as opposed to the service refusing."""


class AdmissionError(RuntimeError):
    """The service answered with an error (its JSON ``error`` and ``field``)."""

    def __init__(self, status: int, message: str, field: str = "") -> None:
        super().__init__(f"AISpike service: {message}")
        self.status = status
        self.message = message
        self.field = field


class AdmissionUnavailable(AdmissionError):
    """The service could not be asked: nothing may start unchecked, so the start fails."""

    def __init__(self, cause: str) -> None:
        super().__init__(
            503, "the AISpike service that admits GPU servers is not answering, so no new "
            "server can start until it is back (nothing starts unchecked); try again in a "
            f"minute or ask an admin ({cause})")


_CLIENTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop,
                                     dict[int, httpclient.AsyncHTTPClient]] = (
    weakref.WeakKeyDictionary())


def _http_client(max_connections: int) -> httpclient.AsyncHTTPClient:
    """The hub's client for the AISpike service: one per event loop and pool size, apart from
    tornado's shared instance (which other code in the hub process may fill)."""
    size = max(1, max_connections)
    clients = _CLIENTS.setdefault(asyncio.get_running_loop(), {})
    client = clients.get(size)
    if client is None:
        client = clients[size] = httpclient.AsyncHTTPClient(force_instance=True,
                                                            max_clients=size)
    return client


class AdmissionClient(LoggingConfigurable):
    """Admit, follow and release a server's admission with the AISpike service."""

    url = Unicode(
        help="""Base URL of the AISpike service, with its prefix, e.g.
        http://127.0.0.1:10101/services/aispike/ (default $AISPIKE_SERVICE_URL)."""
    ).tag(config=True)

    @default("url")
    def _url(self) -> str:
        return os.environ.get("AISPIKE_SERVICE_URL", "http://127.0.0.1:10101/services/aispike/")

    api_token = Unicode(
        help="""Token with the custom:aispike:admit scope (usually the aispike service's own
        api_token; default $AISPIKE_SERVICE_TOKEN)."""
    ).tag(config=True)

    @default("api_token")
    def _api_token(self) -> str:
        return os.environ.get("AISPIKE_SERVICE_TOKEN", "")

    poll_interval = Float(
        1.0, help="Seconds between checks of a queued admission."
    ).tag(config=True)

    request_timeout = Float(30.0, help="Seconds to wait for one answer.").tag(config=True)

    max_connections = Integer(
        64, help="""Requests to the AISpike service in flight at once from this hub (its own
        connection pool).  Tornado's shared default client allows 10 and counts the time a
        request waits for one of them against `request_timeout`: in a burst of starts the
        admissions then time out in that queue ("Timeout in request queue") and are taken for
        an unreachable service.""",
    ).tag(config=True)

    when_unavailable = Enum(
        ["refuse", "wait"], "refuse",
        help="""What a start does when the AISpike service does not answer: 'refuse' (the
        default) fails it at once with that reason; 'wait' asks again every
        `unavailable_retry` seconds for up to `unavailable_wait` seconds, then fails it.
        Either way nothing starts without the service's admission (fail closed).""",
    ).tag(config=True)

    unavailable_wait = Float(
        300.0, help="With when_unavailable='wait': seconds a start waits for the service."
    ).tag(config=True)

    unavailable_retry = Float(
        5.0, help="With when_unavailable='wait': seconds between two tries."
    ).tag(config=True)

    # -- deferred releases (aispike_hub.admission.pending) ----------------------------------
    pending_releases_file = Unicode(
        "aispike_pending_releases.json",
        help="""File (JSON) of releases the AISpike service could not be told about because it
        was unreachable (e.g. at hub shutdown JupyterHub stops services before servers). They
        are sent again every release_retry_interval seconds and before the next call to the
        service, also after a hub restart. Relative paths are in the hub's working directory,
        next to jupyterhub.sqlite; empty: kept in memory only (lost with the hub process; the
        service's reconciliation then frees those tickets).""",
    ).tag(config=True)

    release_retry_interval = Float(
        15.0, help="Seconds between attempts to send deferred releases while the service is "
        "unreachable.",
    ).tag(config=True)

    async def _call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        request = httpclient.HTTPRequest(
            self.url.rstrip("/") + "/api/" + path.lstrip("/"),
            method=method,
            headers={"Authorization": f"token {self.api_token}",
                     "Content-Type": "application/json"},
            body=json.dumps(body) if body is not None else None,
            allow_nonstandard_methods=True,
            request_timeout=self.request_timeout,
        )
        try:
            response = await _http_client(self.max_connections).fetch(request)
        except httpclient.HTTPClientError as e:
            doc: dict[str, Any] = {}
            if e.response is not None and e.response.body:
                with contextlib.suppress(ValueError):
                    doc = json.loads(e.response.body)
            raise AdmissionError(e.code, str(doc.get("error", e)), doc.get("field", "")) from None
        out: dict[str, Any] = json.loads(response.body)
        return out

    @staticmethod
    def _path(user: str, server: str) -> str:
        return f"admissions/{quote(user, safe='')}/{quote(server, safe='')}"

    async def admit(self, user: str, server: str, groups: Iterable[str],
                    request: SliceRequest) -> dict[str, Any]:
        """Ask for admission: a ticket whose ``state`` is admitted, queued or refused.

        Deferred releases go first (this server's always: sent later, it would take the new
        ticket away).  Raises :class:`AdmissionUnavailable` when the service cannot be asked
        (see :attr:`when_unavailable`)."""
        await self.send_pending_releases(must=(user, server))
        return await self._admit_fail_closed({
            "user": user, "server": server, "groups": sorted(groups),
            "request": request_to_dict(request),
        })

    async def _admit_fail_closed(self, body: dict[str, Any], path: str = "admissions"
                                 ) -> dict[str, Any]:
        """POST the admission (or a ``place``); an unreachable service refuses, or with 'wait'
        is asked again (both are idempotent per user and server: a retry never admits twice,
        and a second place only replaces the first)."""
        deadline = time.monotonic() + self.unavailable_wait
        while True:
            try:
                return await self._call("POST", path, body)
            except AdmissionError as e:
                if e.status not in UNAVAILABLE_STATUSES:
                    raise
                cause = e.message
            except OSError as e:  # refused, unreachable, DNS
                cause = str(e) or type(e).__name__
            if self.when_unavailable != "wait" or time.monotonic() >= deadline:
                raise AdmissionUnavailable(cause)
            self.log.warning("AISpike service unavailable (%s); asking again for %s/%s in "
                             "%g s", cause, body["user"], body["server"], self.unavailable_retry)
            await asyncio.sleep(self.unavailable_retry)

    async def status(self, user: str, server: str) -> dict[str, Any]:
        await self.send_pending_releases()
        return await self._call("GET", self._path(user, server))

    async def release(self, user: str, server: str) -> bool:
        """The server stopped: give its reservation back (idempotent).

        When the service cannot be reached the release is kept (:attr:`pending_releases_file`)
        and sent again later; the error is raised all the same, for the caller's log."""
        pending = self._pending()
        async with pending.lock():
            try:
                released = await self._release_now(user, server)
            except Exception as e:
                if not unreachable(e):
                    raise
                pending.add(user, server)
                pending.retry_soon(self.release_retry_interval, self.send_pending_releases)
                self.log.warning("the AISpike service is unreachable (%s): the release of %s/%s "
                                 "is kept in %s and sent again", e, user, server,
                                 pending.path or "memory")
                raise
            pending.discard(user, server)
            return released

    async def _release_now(self, user: str, server: str) -> bool:
        return bool((await self._call("DELETE", self._path(user, server)))["released"])

    def _pending(self) -> PendingReleases:
        return pending_releases(self.pending_releases_file)

    async def send_pending_releases(self, must: tuple[str, str] | None = None) -> None:
        """Send the releases kept while the service was unreachable (see
        :mod:`aispike_hub.admission.pending`); raises only for ``must`` still unreachable."""
        pending = self._pending()
        if not len(pending):
            return
        async with pending.lock():
            await pending.flush(self._release_now, unreachable, must)

    async def fit(self, user: str, groups: Iterable[str], request: SliceRequest
                  ) -> dict[str, Any]:
        """The fit preview for the options form."""
        await self.send_pending_releases()
        return await self._call("POST", "fit", {"user": user, "groups": sorted(groups),
                                                "request": request_to_dict(request)})

    async def place(self, user: str, server: str, prefer_node: str = "",
                    refuted: Sequence[tuple[str, int]] = ()) -> dict[str, Any]:
        """A fresh place for the admitted server (``POST api/place``): the hub's placer asks
        when the ticket's assignment no longer fits its view or the pin went stale.

        Fails closed like :meth:`admit`: an unreachable service raises
        :class:`AdmissionUnavailable` (after waiting, with ``when_unavailable='wait'``), and the
        placer then refuses the pin with that reason instead of deciding on its own."""
        await self.send_pending_releases()
        body: dict[str, Any] = {"user": user, "server": server}
        if prefer_node:
            body["prefer_node"] = prefer_node
        if refuted:
            body["refuted"] = [{"node": node, "gpu": index} for node, index in refuted]
        return await self._admit_fail_closed(body, "place")

    async def follow(self, ticket: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Yield the ticket each time it changes while it is queued, then the final one."""
        last = None
        while ticket["state"] == "queued":
            seen = (ticket["position"], ticket["queue_length"], tuple(ticket["reasons"]))
            if seen != last:
                last = seen
                yield ticket
            await asyncio.sleep(self.poll_interval)
            ticket = await self.status(ticket["user"], ticket["server"])
        yield ticket


def unreachable(e: BaseException) -> bool:
    """Whether ``e`` says the service could not be reached (worth trying again), as opposed
    to an answer refusing the call."""
    if isinstance(e, AdmissionError):
        return e.status == 599 or e.status in (502, 503, 504)
    return isinstance(e, (OSError, asyncio.TimeoutError))
