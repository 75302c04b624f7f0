"""The AISpike service's one client of JupyterHub's REST API.

Every request the service makes to the hub (the idle monitor listing users and stopping or
removing what it reclaims, the queue stopping preempted servers, the admin panel's stop button
through the monitor) goes through :class:`HubClient`, so that the URLs, the token, the timeouts
and the meaning of each answer are written down once.

Operations and what their answers mean (JupyterHub 6, ``jupyterhub/apihandlers/users.py``):

``users(state)``
    ``GET /users?state=...`` page by page (``application/jupyterhub-pagination+json``);
    every page must answer 200.

``stop_server(user, server, remove=False)``
    ``DELETE /users/<user>/server`` (default server) or ``/users/<user>/servers/<server>``
    (named; with body ``{"remove": true}`` to also delete it).

    * 204: stopped, or it was not running: :data:`STOPPED`;
    * 202: the hub is stopping it (it answers 202 once a stop takes longer than its
      ``slow_stop_timeout``, or when a stop was already under way): :data:`STOPPING`;
    * 404: no such user or named server, i.e. already gone: :data:`GONE`;
    * anything else raises :class:`HubAPIError`, 400 included: in JupyterHub 6 a 400 means the
      hub refused (the server is being renamed, named servers are off, ``remove`` of the default
      server), never that the server is gone, so the caller retries later.

    The three results all mean "the hub will not run this server any more": callers treat them
    alike and the distinction is for logs.

``whoami()``
    ``GET /user``: the model of this client's own token (``scopes``: what it may do).

``active_servers()``
    ``GET /users?state=active``, all pages: ``user/server`` of every server the hub lists as
    active (running, starting or stopping; '' names the default server).  Raises
    :class:`HubAPIError` unless the token may list users and read every server
    (``list:users`` and ``read:servers``, checked in ``GET /user``'s ``scopes`` first: without
    them the hub answers with fewer users or none and no error), so a reconciler never mistakes
    "not allowed to see" for "none".

``delete_user(name)``
    ``DELETE /users/<name>``: True on 204 (removed), False on 404 (already gone, nothing done);
    anything else raises :class:`HubAPIError` (400: a server of theirs is still stopping).

Failures are one exception type, :class:`HubAPIError`, with the HTTP status (None when the hub
did not answer: refused connection, timeout) and the hub's own message when it gave one.

Timeouts: reads wait ``request_timeout`` seconds; stops and removals wait ``stop_timeout``
(default 60 s), longer than the hub's ``slow_stop_timeout`` (10 s) after which it answers 202,
so a slow spawner gives "stopping" rather than a timeout.  ``limit`` (optional) is a semaphore
shared with the caller's other requests (the idle monitor's ``concurrency``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any, Final, Literal
from urllib.parse import quote, urlencode

from tornado import httpclient

StopResult = Literal["stopped", "stopping", "gone"]
STOPPED: Final[StopResult] = "stopped"
STOPPING: Final[StopResult] = "stopping"
GONE: Final[StopResult] = "gone"

PAGE_SIZE = 200
"""Users per page of ``GET /users`` (the hub caps it at its own ``api_page_max_limit``)."""


class HubAPIError(Exception):
    """A request to the hub's API that failed: its HTTP status (None: no answer) and message."""

    def __init__(self, method: str, path: str, status: int | None, message: str) -> None:
        self.method, self.path, self.status, self.message = method, path, status, message
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"HTTP {self.status} {self.message}".rstrip() if self.status else self.message


def _hub_message(body: bytes | None, fallback: str) -> str:
    """The ``message`` of the hub's JSON error body, else the HTTP reason."""
    try:
        doc = json.loads(body or b"")
    except ValueError:
        return fallback
    return str(doc.get("message") or fallback) if isinstance(doc, dict) else fallback


def user_path(user: str) -> str:
    return f"/users/{quote(user, safe='')}"


def server_path(user: str, server: str = "") -> str:
    """The API path of a user's default server ('' name) or one of their named servers."""
    if server:
        return f"{user_path(user)}/servers/{quote(server, safe='')}"
    return f"{user_path(user)}/server"


class HubClient:
    """An async client of the hub's REST API with one token (see the module doc)."""

    def __init__(self, api_url: str, token: str, *, request_timeout: float = 10.0,
                 stop_timeout: float = 60.0, limit: asyncio.Semaphore | None = None) -> None:
        self.api_url = api_url.rstrip("/")
        self.token = token
        self.request_timeout = request_timeout
        self.stop_timeout = stop_timeout
        self.limit = limit

    @property
    def auth_headers(self) -> dict[str, str]:
        """The header that authenticates with this client's token (also to servers' APIs)."""
        return {"Authorization": f"token {self.token}"}

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        if self.limit is None:
            yield
        else:
            async with self.limit:
                yield

    async def request(self, method: str, path: str, body: Any = None, *,
                      timeout: float | None = None,
                      accept: str = "application/json") -> tuple[int, Any]:
        """(status, decoded JSON or None) of a 2xx answer; anything else raises HubAPIError."""
        req = httpclient.HTTPRequest(
            self.api_url + path, method=method,
            headers={**self.auth_headers, "Accept": accept},
            body=None if body is None else json.dumps(body),
            allow_nonstandard_methods=True,
            request_timeout=self.request_timeout if timeout is None else timeout)
        try:
            async with self._slot():
                resp = await httpclient.AsyncHTTPClient().fetch(req)
        except httpclient.HTTPClientError as e:
            if e.code == 599:  # tornado's "no answer" (timeout, closed connection)
                raise HubAPIError(method, path, None, e.message or "no answer") from e
            body_bytes = e.response.body if e.response is not None else None
            raise HubAPIError(method, path, e.code,
                              _hub_message(body_bytes, e.message or "")) from e
        except OSError as e:  # refused, unreachable, DNS
            raise HubAPIError(method, path, None, str(e) or type(e).__name__) from e
        try:
            return resp.code, json.loads(resp.body) if resp.body else None
        except ValueError as e:
            raise HubAPIError(method, path, resp.code, "the hub's answer is not JSON") from e

    async def users(self, state: str = "") -> list[dict[str, Any]]:
        """Every user model (with ``servers``), optionally only those with servers in ``state``
        ('ready', 'active', 'inactive'), all pages."""
        users: list[dict[str, Any]] = []
        offset = 0
        while True:
            query: dict[str, str | int] = {"offset": offset, "limit": PAGE_SIZE}
            if state:
                query = {"state": state, **query}
            _, page = await self.request(
                "GET", f"/users?{urlencode(query)}",
                accept="application/jupyterhub-pagination+json")
            items = page["items"] if isinstance(page, dict) else (page or [])
            users += items
            nxt = page.get("_pagination", {}).get("next") if isinstance(page, dict) else None
            if not nxt or not items:
                return users
            offset = int(nxt.get("offset", offset + len(items)))

    async def stop_server(self, user: str, server: str = "", *,
                          remove: bool = False) -> StopResult:
        """Stop a server (and with ``remove`` delete a named one); see the module doc for the
        answers.  Raises HubAPIError when the hub refused or did not answer."""
        body = {"remove": True} if remove and server else None
        try:
            status, _ = await self.request("DELETE", server_path(user, server), body,
                                           timeout=self.stop_timeout)
        except HubAPIError as e:
            if e.status == 404:
                return GONE
            raise
        return STOPPING if status == 202 else STOPPED

    async def delete_user(self, name: str) -> bool:
        """Remove a user from the hub: True once removed, False if there was no such user."""
        try:
            await self.request("DELETE", user_path(name), timeout=self.stop_timeout)
        except HubAPIError as e:
            if e.status == 404:
                return False
            raise
        return True

    async def whoami(self) -> dict[str, Any]:
        """The model of this client's token (its ``scopes``, ``name``, ``kind``)."""
        _, model = await self.request("GET", "/user")
        return model if isinstance(model, dict) else {}

    async def active_servers(self) -> frozenset[str]:
        """``user/server`` of every active server (see the module doc); raises HubAPIError when
        the token may not read servers."""
        scopes = set((await self.whoami()).get("scopes") or [])
        missing = sorted({"list:users", "read:servers"} - scopes)
        if missing:
            raise HubAPIError("GET", "/user", 403,
                              f"the token cannot see every server (needs {', '.join(missing)})")
        keys: set[str] = set()
        for user in await self.users("active"):
            servers = user.get("servers")
            if not isinstance(servers, dict):
                raise HubAPIError("GET", "/users", 403,
                                  "the token cannot read servers (needs read:servers)")
            keys.update(f"{user.get('name', '')}/{name}" for name in servers)
        return frozenset(keys)
