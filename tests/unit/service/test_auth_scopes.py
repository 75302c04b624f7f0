"""Every scope and owner check of the service's HTTP API, at unit level (issue 26, item 7).

The real tornado application (the service's routes: ``api.handlers``, ``idle_handlers``,
``panel_handlers``) runs in-process on a loopback port; only the hub is replaced: a stand-in
``hub_auth`` maps ``Authorization: token <who>`` to a hub user or service model with the scopes
JupyterHub would give it.  The identification itself (``HubOAuthenticated.check_hub_user``,
the ``hub_scopes`` gate) is JupyterHub's own code.

Each row of ``CASES`` is one call: method, path, body, caller, expected status.  The table is the
authorization matrix of ``aispike_hub/service/api.py``'s module doc, plus the idle report and
the admin panel.  For each protected route it has a 403 for a caller without the scope, a 403
for another user's server (owner checks), and a 2xx for the owner / admin / scoped service.
A 404 where noted means the caller got past the check (nothing to find).  The same routes
through a real hub: tests/integration (the service and the panel).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyterhub.services.auth import check_scopes
from tornado import httpclient, httpserver, web
from tornado.testing import bind_unused_port

from aispike_hub.admission.controller import AdmissionController
from aispike_hub.admission.inventory import StaticInventory
from aispike_hub.model import GIB_IN_MIB, Gpu, Node, SliceRequest
from aispike_hub.quota import User, policy_from_dict
from aispike_hub.service.api import (
    ADMIN_SCOPE,
    ADMIT_SCOPE,
    NOTIFY_SCOPE,
    APIHandler,
    ServiceContext,
    handlers,
)
from aispike_hub.service.idle import IdleMonitor
from aispike_hub.service.idle.handlers import IDLE_SCOPE, idle_handlers
from aispike_hub.service.panel import AdminPanel
from aispike_hub.service.panel.handlers import METRICS_SCOPE, PageHandler, panel_handlers
from aispike_hub.service.store import Store

GIB = GIB_IN_MIB
PREFIX = "/services/aispike/"
ACCESS = "access:services!service=aispike"


def _user(name: str, *scopes: str, groups: tuple[str, ...] = ("lab",)) -> dict[str, Any]:
    return {"kind": "user", "name": name, "groups": list(groups), "scopes": [ACCESS, *scopes]}


def _service(name: str, *scopes: str) -> dict[str, Any]:
    return {"kind": "service", "name": name, "scopes": list(scopes)}


CALLERS: dict[str, dict[str, Any]] = {
    "alice": _user("alice"),                          # a hub user, owner of alice's server
    "bob": _user("bob"),                              # another hub user
    "admin": _user("root", ADMIN_SCOPE),              # quota admin (no admit scope)
    "hub": _service("jupyterhub", ADMIT_SCOPE),       # the hub's spawner
    "agent": _service("aispike-agent", NOTIFY_SCOPE),  # a node agent
    "culler": _service("idle-culler", IDLE_SCOPE),    # reads the idle report
    "scraper": _service("prometheus", METRICS_SCOPE),  # reads /metrics
    "svc-alice": _service("alice", ACCESS),           # a *service* named like the user
    "mallory": {"kind": "user", "name": "mallory", "groups": [], "scopes": []},  # no access
}


class StandInHubAuth:
    """What a handler asks of ``hub_auth``: the caller's model from its token."""

    access_scopes: frozenset[str] = frozenset()
    login_url = ""
    base_url = PREFIX
    hub_prefix = "/hub/"
    hub_host = ""

    def get_user(self, handler: web.RequestHandler) -> dict[str, Any] | None:
        token = handler.request.headers.get("Authorization", "").removeprefix("token ")
        model = CALLERS.get(token)
        return json.loads(json.dumps(model)) if model else None

    def check_scopes(self, required: set[str], model: dict[str, Any]) -> set[str]:
        return set(check_scopes(required, set(model["scopes"])))

    def _persist_url_token_if_set(self, handler: web.RequestHandler) -> None:
        pass


POLICY = {
    "users": {"alice": {"quota": {"gpu_memory": "16Gi"}}},
    "groups": {"lab": {"quota": {"gpu_memory": "80Gi"}}},
}


class Service:
    """The service's routes on a loopback port, in a private event loop."""

    def __init__(self, tmp_path: Path) -> None:
        store = Store(f"sqlite:///{tmp_path}/s.sqlite")
        nodes = [Node("a-0", 64_000, 512 * GIB, (Gpu(0, "NVIDIA A100-SXM4-80GB", 80 * GIB),))]
        self.controller = AdmissionController(store, StaticInventory(nodes),
                                              policy_from_dict(POLICY))
        ctx = ServiceContext(self.controller, "aispike")
        monitor = IdleMonitor(store, "http://127.0.0.1:1/hub/api", "t")
        panel = AdminPanel(ctx, monitor, PREFIX, hub_prefix="/hub/")
        panel.authenticate_prometheus = True
        routes = handlers(PREFIX, ctx) + idle_handlers(PREFIX, ctx, monitor)
        routes += panel_handlers(panel)
        self.app = web.Application(routes, cookie_secret=b"x" * 32, xsrf_cookies=False)
        self.loop = asyncio.new_event_loop()
        sock, self.port = bind_unused_port()

        async def listen() -> httpserver.HTTPServer:  # on this loop, not the thread's default
            server = httpserver.HTTPServer(self.app)
            server.add_sockets([sock])
            return server

        self.server = self.loop.run_until_complete(listen())

    def call(self, method: str, path: str, body: Any = None, who: str = "") -> tuple[int, Any]:
        async def go() -> tuple[int, Any]:
            headers = {"Authorization": f"token {who}"} if who else {}
            data = None if body is None else json.dumps(body)
            if method in ("POST", "PUT") and data is None:
                data = "null"
            resp = await httpclient.AsyncHTTPClient().fetch(
                f"http://127.0.0.1:{self.port}{PREFIX}{path}", method=method, body=data,
                headers=headers, raise_error=False, follow_redirects=False,
                allow_nonstandard_methods=True)
            try:
                doc = json.loads(resp.body) if resp.body else None
            except ValueError:
                doc = resp.body
            return resp.code, doc

        return self.loop.run_until_complete(go())


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Service]:
    auth = StandInHubAuth()
    monkeypatch.setattr(APIHandler, "_hub_auth", auth)
    monkeypatch.setattr(PageHandler, "_hub_auth", auth)
    svc = Service(tmp_path)
    # alice's default server is admitted, as the hub would have it after a start.
    assert svc.controller.admit(User("alice", frozenset({"lab"})), "",
                                SliceRequest(gpu_memory_mib=8 * GIB), "test").state == "admitted"
    try:
        yield svc
    finally:
        svc.server.stop()
        svc.loop.run_until_complete(svc.server.close_all_connections())
        svc.loop.close()


ADMIT_DOC = {"user": "bob", "groups": ["lab"], "server": "",
             "request": {"gpu_memory_mib": 4 * GIB}}
FIT_DOC = {"request": {"gpu_memory_mib": 4 * GIB}}
TIERS = [{"name": "normal", "priority": 100, "preempts": True}]
NOTICE = {"user": "alice", "kind": "info", "message": "hello"}
PLACE_DOC = {"user": "alice", "server": "", "prefer_node": "a-0"}

# (method, path, body, caller, status)
CASES: list[tuple[str, str, Any, str, int]] = [
    # health: anyone, even without a token
    ("GET", "api/health", None, "", 200),
    # a hub user without access to the service is stopped at the hub gate
    ("GET", "api/notices", None, "mallory", 403),
    ("GET", "api/quota", None, "mallory", 403),
    # no identity at all: 401 (log in)
    ("GET", "api/notices", None, "", 401),
    ("GET", "api/policy", None, "", 401),
    # the policy: custom:aispike:admin only
    ("GET", "api/policy", None, "alice", 403),
    ("GET", "api/policy", None, "hub", 403),
    ("GET", "api/policy", None, "admin", 200),
    ("PUT", "api/policy", POLICY, "alice", 403),
    ("PUT", "api/policy", POLICY, "hub", 403),
    ("PUT", "api/policy", POLICY, "admin", 200),
    ("PUT", "api/policy/defaults", {}, "alice", 403),
    ("PUT", "api/policy/defaults", {}, "admin", 200),
    ("PUT", "api/policy/tiers", TIERS, "alice", 403),
    ("PUT", "api/policy/tiers", TIERS, "admin", 200),
    ("PUT", "api/policy/users/alice", {"quota": {"gpu_memory": "80Gi"}}, "alice", 403),
    ("PUT", "api/policy/users/alice", {"quota": {"gpu_memory": "80Gi"}}, "admin", 200),
    ("DELETE", "api/policy/users/alice", None, "alice", 403),
    ("DELETE", "api/policy/users/alice", None, "admin", 200),
    ("DELETE", "api/policy/groups/lab", None, "alice", 403),
    ("DELETE", "api/policy/groups/lab", None, "admin", 200),
    # audit log and queue: admin only
    ("GET", "api/audit", None, "alice", 403),
    ("GET", "api/audit", None, "hub", 403),
    ("GET", "api/audit", None, "admin", 200),
    ("GET", "api/queue", None, "alice", 403),
    ("GET", "api/queue", None, "hub", 403),
    ("GET", "api/queue", None, "admin", 200),
    # admitting: the hub's spawner only (not even an admin, not the user)
    ("POST", "api/admissions", ADMIT_DOC, "bob", 403),
    ("POST", "api/admissions", ADMIT_DOC, "admin", 403),
    ("POST", "api/admissions", ADMIT_DOC, "hub", 201),
    # one admission: its user, the spawner, an admin may read it
    ("GET", "api/admissions/alice/", None, "alice", 200),
    ("GET", "api/admissions/alice/", None, "bob", 403),
    ("GET", "api/admissions/alice/", None, "svc-alice", 403),
    ("GET", "api/admissions/alice/", None, "agent", 403),
    ("GET", "api/admissions/alice/", None, "admin", 200),
    ("GET", "api/admissions/alice/", None, "hub", 200),
    # ... only the spawner or an admin may release it (not its user)
    ("DELETE", "api/admissions/alice/", None, "alice", 403),
    ("DELETE", "api/admissions/alice/", None, "bob", 403),
    ("DELETE", "api/admissions/alice/", None, "svc-alice", 403),
    ("DELETE", "api/admissions/alice/", None, "admin", 200),
    ("DELETE", "api/admissions/alice/", None, "hub", 200),
    # placing an admitted server again: the hub's placer only (it moves the server's promise),
    # like admitting; not its owner, not an admin
    ("POST", "api/place", PLACE_DOC, "alice", 403),
    ("POST", "api/place", PLACE_DOC, "bob", 403),
    ("POST", "api/place", PLACE_DOC, "svc-alice", 403),
    ("POST", "api/place", PLACE_DOC, "admin", 403),
    ("POST", "api/place", PLACE_DOC, "agent", 403),
    ("POST", "api/place", PLACE_DOC, "hub", 200),
    # fit: any user for themselves; for another user the spawner or an admin
    ("POST", "api/fit", FIT_DOC, "alice", 200),
    ("POST", "api/fit", {**FIT_DOC, "user": "alice"}, "alice", 200),
    ("POST", "api/fit", {**FIT_DOC, "user": "bob"}, "alice", 403),
    ("POST", "api/fit", {**FIT_DOC, "user": "alice"}, "svc-alice", 403),
    ("POST", "api/fit", {**FIT_DOC, "user": "bob"}, "admin", 200),
    ("POST", "api/fit", {**FIT_DOC, "user": "bob"}, "hub", 200),
    # notices: read and dismiss one's own; post: node agents (notify) and admins
    ("GET", "api/notices", None, "alice", 200),
    ("DELETE", "api/notices?upto=0", None, "alice", 200),
    ("POST", "api/notices", NOTICE, "alice", 403),
    ("POST", "api/notices", NOTICE, "hub", 403),
    ("POST", "api/notices", NOTICE, "agent", 201),
    ("POST", "api/notices", NOTICE, "admin", 201),
    # quota summary: one's own; another user's for admins only
    ("GET", "api/quota", None, "alice", 200),
    ("GET", "api/quota?user=alice", None, "alice", 200),
    ("GET", "api/quota?user=bob", None, "alice", 403),
    ("GET", "api/quota?user=alice", None, "svc-alice", 403),
    ("GET", "api/quota?user=bob", None, "hub", 403),
    ("GET", "api/quota?user=bob", None, "admin", 200),
    # the idle report: admins and custom:aispike:idle
    ("GET", "api/idle/report", None, "alice", 403),
    ("GET", "api/idle/report", None, "hub", 403),
    ("GET", "api/idle/report", None, "admin", 200),
    ("GET", "api/idle/report", None, "culler", 200),
    # one server's row: its owner too (404: past the check, the monitor has not polled yet)
    ("GET", "api/idle/servers/alice/", None, "alice", 404),
    ("GET", "api/idle/servers/alice/", None, "bob", 403),
    ("GET", "api/idle/servers/alice/", None, "svc-alice", 403),
    ("GET", "api/idle/servers/alice/", None, "admin", 404),
    ("GET", "api/idle/servers/alice/", None, "culler", 404),
    # the admin panel's API: admin only
    ("GET", "api/panel/map", None, "alice", 403),
    ("GET", "api/panel/map", None, "culler", 403),
    ("GET", "api/panel/map", None, "admin", 200),
    ("GET", "api/panel/quotas", None, "alice", 403),
    ("GET", "api/panel/quotas", None, "admin", 200),
    ("GET", "api/panel/queue", None, "alice", 403),
    ("GET", "api/panel/queue", None, "admin", 200),
    ("GET", "api/panel/history?hours=1", None, "alice", 403),
    ("GET", "api/panel/history?hours=1", None, "admin", 200),
    ("POST", "api/panel/idle/alice//stop", {"confirm": "alice/"}, "alice", 403),
    ("POST", "api/panel/idle/alice//stop", {"confirm": "alice/"}, "culler", 403),
    ("POST", "api/panel/idle/alice//stop", {"confirm": "wrong"}, "admin", 400),  # past the check
    # /metrics (authenticate_prometheus): read:metrics or admin
    ("GET", "metrics", None, "alice", 403),
    ("GET", "metrics", None, "scraper", 200),
    ("GET", "metrics", None, "admin", 200),
    # the panel's pages: admin only
    ("GET", "admin/", None, "alice", 403),
    ("GET", "admin/", None, "culler", 403),
    ("GET", "admin/", None, "admin", 200),
]


@pytest.mark.parametrize(("method", "path", "body", "who", "status"), CASES,
                         ids=[f"{m} {p} as {w or 'anonymous'}" for m, p, _, w, _s in CASES])
def test_scope_and_owner_checks(service: Service, method: str, path: str, body: Any, who: str,
                                status: int) -> None:
    code, doc = service.call(method, path, body, who)
    assert code == status, doc
    if status == 403 and isinstance(doc, dict) and path.startswith("api/") and who != "mallory":
        assert "scope" in doc["error"]  # says what is missing


def test_a_refused_release_releases_nothing(service: Service) -> None:
    """A 403 on DELETE must come before the release, not after it."""
    for who in ("alice", "bob", "svc-alice"):
        assert service.call("DELETE", "api/admissions/alice/", None, who)[0] == 403
        assert service.controller.status("alice", "").state == "admitted"
    assert service.call("DELETE", "api/admissions/alice/", None, "hub") == (
        200, {"released": True})
    assert service.controller.status("alice", "").state != "admitted"


def test_a_refused_policy_edit_changes_nothing(service: Service) -> None:
    before = service.call("GET", "api/policy", None, "admin")[1]
    assert service.call("PUT", "api/policy/users/alice", {"quota": {"gpu_memory": "80Gi"}},
                        "alice")[0] == 403
    assert service.call("GET", "api/policy", None, "admin")[1] == before


def test_fit_and_quota_answer_for_the_caller_not_a_named_user(service: Service) -> None:
    """Without ``user`` (or for oneself), the caller's own name and hub groups count."""
    code, mine = service.call("GET", "api/quota", None, "alice")
    assert code == 200 and mine["user"] == "alice"
    code, other = service.call("GET", "api/quota?user=bob&group=lab", None, "admin")
    assert code == 200 and other["user"] == "bob"
    # a refused admission for bob is not created by a 403'd POST
    assert service.call("POST", "api/admissions", ADMIT_DOC, "bob")[0] == 403
    assert service.controller.status("bob", "").state not in ("admitted", "queued")


@pytest.mark.parametrize(("body", "field"), [
    (None, "body"),
    ([], "body"),
    ({"server": ""}, "user"),
    ({"user": ""}, "user"),
    ({"user": 7}, "user"),
    ({"user": "alice", "server": None}, "server"),
    ({"user": "alice", "server": "x" * 256}, "server"),
    ({"user": "alice", "prefer_node": ["a-0"]}, "prefer_node"),
    ({"user": "alice", "prefer_node": "n" * 254}, "prefer_node"),
    ({"user": "alice", "request": {"gpu_count": 1}}, "request"),
    ({"user": "alice", "refuted": {"node": "a-0", "gpu": 0}}, "refuted"),
    ({"user": "alice", "refuted": [{"node": "a-0", "gpu": 0}] * 65}, "refuted"),
    ({"user": "alice", "refuted": ["a-0"]}, "refuted[0]"),
    ({"user": "alice", "refuted": [{"node": "a-0"}]}, "refuted[0]"),
    ({"user": "alice", "refuted": [{"node": "a-0", "gpu": 0, "x": 1}]}, "refuted[0]"),
    ({"user": "alice", "refuted": [{"node": "a-0", "gpu": 0}, {"node": "", "gpu": 0}]},
     "refuted[1].node"),
    ({"user": "alice", "refuted": [{"node": "n" * 254, "gpu": 0}]}, "refuted[0].node"),
    ({"user": "alice", "refuted": [{"node": "a-0", "gpu": -1}]}, "refuted[0].gpu"),
    ({"user": "alice", "refuted": [{"node": "a-0", "gpu": 1024}]}, "refuted[0].gpu"),
    ({"user": "alice", "refuted": [{"node": "a-0", "gpu": True}]}, "refuted[0].gpu"),
    ({"user": "alice", "refuted": [{"node": "a-0", "gpu": "0"}]}, "refuted[0].gpu"),
])
def test_a_bad_place_body_is_a_400_naming_the_field(service: Service, body: Any,
                                                    field: str) -> None:
    code, doc = service.call("POST", "api/place", body, "hub")
    assert code == 400 and doc["field"] == field, doc


def test_a_refused_place_moves_nothing_and_the_hubs_answers(service: Service) -> None:
    before = service.controller.status("alice", "").assignment
    assert service.call("POST", "api/place", PLACE_DOC, "alice")[0] == 403
    assert service.controller.status("alice", "").assignment == before
    code, answer = service.call("POST", "api/place", PLACE_DOC, "hub")
    assert code == 200 and answer["placed"] and answer["assignment"]["node"] == "a-0"
    assert service.controller.status("alice", "").assignment == answer["assignment"]
    code, answer = service.call("POST", "api/place", {"user": "bob"}, "hub")
    assert code == 200 and not answer["placed"] and answer["state"] == "unknown"


def test_a_place_never_lands_on_a_gpu_the_hub_refuted(service: Service) -> None:
    """``refuted``: GPUs the hub's view sees taken; the one GPU here is, so nothing is placed,
    the reasons say so, the promise stays, and the audit names what was left out."""
    before = service.controller.status("alice", "").assignment
    code, answer = service.call("POST", "api/place", {**PLACE_DOC, "refuted": [
        {"node": "a-0", "gpu": 0}, {"node": "gone", "gpu": 3}]}, "hub")
    assert code == 200 and not answer["placed"] and answer["reasons"], answer
    assert service.controller.status("alice", "").assignment == before
    entry = [e for e in service.controller.store.audit_log()
             if e.action == "admission.place"][-1]
    assert entry.detail["refuted"] == [["a-0", 0]]  # an unknown GPU is skipped
    code, answer = service.call("POST", "api/place", {**PLACE_DOC, "refuted": []}, "hub")
    assert code == 200 and answer["placed"] and answer["assignment"]["node"] == "a-0"


def test_one_part_of_the_policy_reads_back(service: Service) -> None:
    """GET on a policy part answered 500 (found by tests/unit/fuzz/test_fuzz_routes.py)."""
    assert service.call("GET", "api/policy/users/alice", who="alice")[0] == 403
    code, doc = service.call("GET", "api/policy/users/alice", who="admin")
    assert code == 200 and doc["alice"]["quota"]["gpu_memory"] == "16Gi", doc
    assert service.call("GET", "api/policy/groups/nobody", who="admin")[0] == 404
    code, doc = service.call("GET", "api/policy/tiers", who="admin")
    assert code == 200 and "tiers" in doc
