"""The service's hub client, and the monitor and the queue using it, against a stand-in hub.

The stand-in is a small real tornado application in the test's event loop that answers the
four requests the service makes, with the status codes JupyterHub 6.1.1 gives for them
(``jupyterhub/apihandlers/users.py``): ``GET /users`` (paginated, ``state`` filter),
``DELETE /users/<u>/server``, ``DELETE /users/<u>/servers/<s>`` (404 no such user or named
server, 400 named servers off or ``remove`` of the default server, 202 when the stop is slow or
already under way, else 204) and ``DELETE /users/<u>`` (404, 400 while a server is stopping,
204).  It is not JupyterHub: it checks only the token, keeps users in a dict and starts no
servers.  The client against a real hub: tests/integration/test_idle_hub.py.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from tornado import httpserver, web
from tornado.testing import bind_unused_port

from aispike_hub.service.app import AISpikeService
from aispike_hub.service.hubclient import GONE, STOPPED, STOPPING, HubAPIError, HubClient
from aispike_hub.service.idle import IdleMonitor
from aispike_hub.service.store import Store

TOKEN = "s3cret"
LONG_AGO = "2020-01-01T00:00:00Z"


class StandInHub:
    """Users and servers in a dict, answered like JupyterHub 6.1.1 (see the module doc)."""

    def __init__(self, named_servers: bool = True, page_max: int = 2) -> None:
        self.users: dict[str, dict[str, Any]] = {}
        self.named_servers = named_servers
        self.page_max = page_max
        self.requests: list[tuple[str, str, Any]] = []
        self.slow: set[tuple[str, str]] = set()  # stops that answer 202
        self.stopping: set[str] = set()  # users with a stop under way (DELETE user: 400)
        self.delay = 0.0
        self.url = ""
        self.read_servers = True  # False: the token lacks read:servers (models without servers)

    def add(self, name: str, *servers: str, admin: bool = False,
            last_activity: str = LONG_AGO) -> None:
        self.users[name] = {
            "name": name, "admin": admin, "groups": [], "last_activity": last_activity,
            "servers": {s: {"name": s, "ready": True, "pending": None, "started": LONG_AGO,
                            "last_activity": LONG_AGO, "url": f"/user/{name}/{s}"}
                        for s in servers}}

    def app(self) -> web.Application:
        hub = self

        class Base(web.RequestHandler):
            def prepare(self) -> None:
                body = json.loads(self.request.body) if self.request.body else None
                hub.requests.append((self.request.method or "", self.request.uri or "", body))
                if self.request.headers.get("Authorization") != f"token {TOKEN}":
                    raise web.HTTPError(403, "Action is not authorized with current scopes")

            def write_error(self, status_code: int, **kw: Any) -> None:
                exc = kw.get("exc_info", (None, None))[1]
                message = getattr(exc, "log_message", None) or self._reason
                self.finish({"status": status_code, "message": message})

        class Users(Base):
            async def get(self) -> None:
                await asyncio.sleep(hub.delay)
                state = self.get_argument("state", "")
                offset = int(self.get_argument("offset", "0"))
                limit = min(int(self.get_argument("limit", "200")), hub.page_max)
                rows = []
                for u in hub.users.values():
                    ready = {k: s for k, s in u["servers"].items() if s["ready"]}
                    if state == "ready" and not ready:
                        continue
                    if state == "inactive" and ready:
                        continue
                    row = {**u, "servers": ready}
                    if not hub.read_servers:
                        del row["servers"]
                    rows.append(row)
                page = rows[offset:offset + limit]
                nxt = ({"offset": offset + limit, "limit": limit}
                       if offset + limit < len(rows) else None)
                if "jupyterhub-pagination" in self.request.headers.get("Accept", ""):
                    self.finish({"items": page, "_pagination": {
                        "offset": offset, "limit": limit, "total": len(rows), "next": nxt}})
                else:
                    self.finish(json.dumps(page))

        class Me(Base):
            def get(self) -> None:
                scopes = ["list:users", "read:users", "admin:servers", "read:users:activity"]
                if hub.read_servers:
                    scopes.append("read:servers")
                self.finish({"kind": "service", "name": "aispike", "scopes": scopes})

        class User(Base):
            def delete(self, name: str) -> None:
                name = unquote(name)
                if name not in hub.users:
                    raise web.HTTPError(404)
                if name in hub.stopping:
                    raise web.HTTPError(400, f"{name}'s server is in the process of "
                                        "stopping, please wait.")
                del hub.users[name]
                self.set_status(204)

        class Server(Base):
            def delete(self, name: str, server: str = "") -> None:
                name, server = unquote(name), unquote(server or "")
                body = json.loads(self.request.body) if self.request.body else {}
                remove = (body or {}).get("remove", False)
                user = hub.users.get(name)
                if user is None:
                    raise web.HTTPError(404)
                if server:
                    if not hub.named_servers:
                        raise web.HTTPError(400, "Named servers are not enabled.")
                    if server not in user["servers"]:
                        raise web.HTTPError(404, f"{name} has no server named '{server}'")
                elif remove:
                    raise web.HTTPError(400, "Cannot delete the default server")
                if (name, server) in hub.slow:
                    self.set_status(202)
                    return
                if server in user["servers"]:
                    if remove:
                        del user["servers"][server]
                    else:
                        user["servers"][server]["ready"] = False
                self.set_status(204)

        return web.Application([
            (r"/hub/api/user", Me),
            (r"/hub/api/users", Users),
            (r"/hub/api/users/([^/]+)", User),
            (r"/hub/api/users/([^/]+)/server", Server),
            (r"/hub/api/users/([^/]+)/servers/([^/]+)", Server),
        ])


def run_with_hub(hub: StandInHub, test: Callable[[str], Awaitable[None]]) -> None:
    """Serve the stand-in on a free port in this event loop while ``test(api_url)`` runs."""

    async def main() -> None:
        sock, port = bind_unused_port()
        server = httpserver.HTTPServer(hub.app())
        server.add_sockets([sock])
        hub.url = f"http://127.0.0.1:{port}/hub/api"
        try:
            await test(hub.url)
        finally:
            server.stop()
            await server.close_all_connections()

    asyncio.run(main())


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the client ----------------------------------------------------------------------------------


def test_users_reads_every_page_with_the_state_filter() -> None:
    hub = StandInHub(page_max=2)
    for name in "abcde":
        hub.add(name, "")
    hub.add("idle-user")  # no server: not 'ready'

    async def test(url: str) -> None:
        client = HubClient(url + "/", TOKEN)
        ready = await client.users("ready")
        assert [u["name"] for u in ready] == list("abcde")
        assert [u["name"] for u in await client.users("inactive")] == ["idle-user"]
        assert len(await client.users()) == 6

    run_with_hub(hub, test)
    gets = [uri for method, uri, _ in hub.requests if method == "GET"]
    assert gets[:3] == ["/hub/api/users?state=ready&offset=0&limit=200",
                        "/hub/api/users?state=ready&offset=2&limit=200",
                        "/hub/api/users?state=ready&offset=4&limit=200"]


def test_stop_server_answers_stopped_stopping_gone_and_raises_on_a_refusal() -> None:
    hub = StandInHub()
    hub.add("ada", "", "train")
    hub.add("bob", "")
    hub.slow.add(("bob", ""))

    async def test(url: str) -> None:
        client = HubClient(url, TOKEN)
        assert await client.stop_server("ada") == STOPPED
        assert await client.stop_server("ada", "train", remove=True) == STOPPED
        assert "train" not in hub.users["ada"]["servers"]
        assert await client.stop_server("ada", "train") == GONE  # removed above
        assert await client.stop_server("nobody") == GONE
        assert await client.stop_server("bob") == STOPPING
        # A default server is never removed: the client does not send remove for it.
        assert await client.stop_server("ada", "", remove=True) == STOPPED

    run_with_hub(hub, test)
    deletes = [(uri, body) for method, uri, body in hub.requests if method == "DELETE"]
    assert deletes[:2] == [("/hub/api/users/ada/server", None),
                           ("/hub/api/users/ada/servers/train", {"remove": True})]
    assert deletes[-1] == ("/hub/api/users/ada/server", None)


def test_a_400_is_an_error_with_the_hubs_status_and_message() -> None:
    hub = StandInHub(named_servers=False)
    hub.add("ada", "")

    async def test(url: str) -> None:
        with pytest.raises(HubAPIError) as e:
            await HubClient(url, TOKEN).stop_server("ada", "train")
        assert (e.value.status, e.value.message) == (400, "Named servers are not enabled.")
        assert str(e.value) == "HTTP 400 Named servers are not enabled."
        assert (e.value.method, e.value.path) == ("DELETE", "/users/ada/servers/train")
        with pytest.raises(HubAPIError) as e:
            await HubClient(url, "wrong").users("ready")
        assert e.value.status == 403 and "not authorized" in e.value.message

    run_with_hub(hub, test)


def test_names_are_quoted_into_one_path_segment() -> None:
    hub = StandInHub()
    hub.add("a b@c", "x/y")

    async def test(url: str) -> None:
        assert await HubClient(url, TOKEN).stop_server("a b@c", "x/y") == STOPPED

    run_with_hub(hub, test)
    assert hub.requests[-1][1] == "/hub/api/users/a%20b%40c/servers/x%2Fy"


def test_delete_user_true_when_removed_false_when_gone_error_when_refused() -> None:
    hub = StandInHub()
    hub.add("ada")
    hub.add("bob")
    hub.stopping.add("bob")

    async def test(url: str) -> None:
        client = HubClient(url, TOKEN)
        assert await client.delete_user("ada") is True
        assert await client.delete_user("ada") is False
        with pytest.raises(HubAPIError) as e:
            await client.delete_user("bob")
        assert e.value.status == 400 and "stopping" in e.value.message

    run_with_hub(hub, test)


def test_no_answer_is_an_error_without_a_status() -> None:
    hub = StandInHub()
    hub.delay = 2.0

    async def test(url: str) -> None:
        with pytest.raises(HubAPIError) as e:
            await HubClient(url, TOKEN, request_timeout=0.2).users("ready")
        assert e.value.status is None and e.value.message
        with pytest.raises(HubAPIError) as e:
            await HubClient(f"http://127.0.0.1:{_closed_port()}/hub/api", TOKEN).stop_server("a")
        assert e.value.status is None and str(e.value) == e.value.message

    run_with_hub(hub, test)


# --- its users: the idle monitor and the queue's preemption ------------------------------------


def test_the_monitor_stops_removes_named_servers_and_culls_users_through_the_client(
        tmp_path: Path) -> None:
    hub = StandInHub()
    hub.add("ada", "nb")
    hub.add("gone")  # no server, inactive for years: removed with cull_users
    store = Store(f"sqlite:///{tmp_path}/s.sqlite")
    monitor = IdleMonitor(store, "", "", mode="stop", timeout=60, grace=0, gpu_window=0,
                          abandoned_after=120, poll_kernels=False, remove_named_servers=True,
                          cull_users=True)

    async def test(url: str) -> None:
        monitor.hub = HubClient(url, TOKEN)
        await monitor.poll()

    run_with_hub(hub, test)
    deletes = [(uri, body) for method, uri, body in hub.requests if method == "DELETE"]
    assert ("/hub/api/users/ada/servers/nb", {"remove": True}) in deletes
    assert ("/hub/api/users/gone", None) in deletes
    actions = [e.action for e in store.audit_log()]
    assert "idle.stop" in actions and "idle.remove-user" in actions
    assert "gone" not in hub.users
    store.close()


def test_the_monitor_and_the_queue_count_gone_as_stopped_and_a_refusal_as_not(
        tmp_path: Path) -> None:
    hub = StandInHub(named_servers=False)
    hub.add("ada", "")
    store = Store(f"sqlite:///{tmp_path}/s.sqlite")
    monitor = IdleMonitor(store, "", "")
    service = AISpikeService()

    async def test(url: str) -> None:
        monitor.hub = service.hub = HubClient(url, TOKEN)
        for stop in (monitor.stop_server, service.stop_server):
            assert await stop("ada", "") is True
            assert await stop("nobody", "") is True  # 404: already gone
            assert await stop("ada", "named") is False  # 400: refused, tried again later

    run_with_hub(hub, test)
    store.close()
