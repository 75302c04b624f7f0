"""What the admin panel's idle action sends on: the action and the admin who asked (issue 26,
item 7).

``test_panel_answers.py`` confirms a stop past the confirmation check (a 502 from a stand-in
address nothing answers), so the mutation run of ``service/panel/handlers.py`` kept two
survivors there: the handler passing ``None`` for the route's ``action`` (a warn then stops
the server) or for ``self.actor`` (the audit and the webhook then name nobody).  Here the
idle monitor's hub API and webhook are a real tornado server on loopback that records every
request, so the test sees what the panel makes the service send: a ``DELETE`` of the server
to the hub for a stop, none for a warn, and the webhook's event with the action and ``by``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from test_api_answers import API, api, service  # noqa: F401 (the fixtures)
from test_panel_answers import _monitor
from tornado import httpserver, web
from tornado.testing import bind_unused_port

from aispike_hub.service.hubclient import HubClient

ADMIN_ACTOR = "user:root"
"""``test_auth_scopes.CALLERS["admin"]``: the hub user ``root`` with the admin scope."""


class Recorder(web.RequestHandler):
    """Answers every request as the hub would a stop (204) and records it."""

    def initialize(self, seen: list[tuple[str, str, Any]]) -> None:
        self.seen = seen

    def _record(self) -> None:
        body = json.loads(self.request.body) if self.request.body else None
        self.seen.append((self.request.method or "", self.request.path, body))
        self.set_status(204)

    def delete(self) -> None:
        self._record()

    def post(self) -> None:
        self._record()


@pytest.fixture
def hub(api: API) -> Iterator[list[tuple[str, str, Any]]]:  # noqa: F811
    """The stand-in hub and webhook on a loopback port; the requests they received."""
    seen: list[tuple[str, str, Any]] = []
    app = web.Application([(r"/.*", Recorder, {"seen": seen})])
    sock, port = bind_unused_port()

    async def listen() -> httpserver.HTTPServer:
        server = httpserver.HTTPServer(app)
        server.add_sockets([sock])
        return server

    server = api.svc.loop.run_until_complete(listen())
    monitor = _monitor(api)
    monitor.hub = HubClient(f"http://127.0.0.1:{port}/hub/api", "t")
    monitor.webhook_url = f"http://127.0.0.1:{port}/webhook"
    try:
        yield seen
    finally:
        server.stop()


def test_a_warn_warns_and_stops_nothing(api: API, hub: list[tuple[str, str, Any]]) -> None:  # noqa: F811
    """Rule: the panel's warn route warns: the hub is asked to stop nothing, the webhook hears
    a ``warn`` event by the admin who confirmed it, and the audit names that admin."""
    doc = api.ok("POST", "api/panel/idle/alice//warn", {"confirm": "alice/"})
    assert doc["warned"] is True, doc
    assert [(m, p) for m, p, _ in hub] == [("POST", "/webhook")], hub
    event = hub[0][2]
    assert (event["event"], event["user"], event["server"], event["by"]) == (
        "warn", "alice", "", ADMIN_ACTOR), event
    entry = api.audit("?action=panel.idle-warn")[0]
    assert (entry["actor"], entry["target"]) == (ADMIN_ACTOR, "alice/"), entry


def test_a_stop_stops_the_server_through_the_hub(api: API, hub: list[tuple[str, str, Any]]) -> None:  # noqa: F811
    """Rule: the panel's stop route stops the server through the hub's API (``DELETE`` of
    alice's default server), then the webhook hears a ``stop`` by the admin, who is audited."""
    doc = api.ok("POST", "api/panel/idle/alice//stop", {"confirm": "alice/"})
    assert doc["stopped"] is True, doc
    assert [(m, p) for m, p, _ in hub] == [
        ("DELETE", "/hub/api/users/alice/server"), ("POST", "/webhook")], hub
    event = hub[1][2]
    assert (event["event"], event["by"]) == ("stop", ADMIN_ACTOR), event
    entry = api.audit("?action=panel.idle-stop")[0]
    assert (entry["actor"], entry["target"]) == (ADMIN_ACTOR, "alice/"), entry
