"""What the service's HTTP API answers, exactly: errors, limits and the documents it returns.

``test_auth_scopes.py`` checks *who* may call each route (the status).  A mutation run of
``aispike_hub/service/api.py`` (docs/testing.md) showed what that leaves open: a 400 naming
another field, a limit one off, an error text garbled, a body ignored or a reply emptied all
kept the right status.  Each case here pins the answer itself, through the same real tornado
application (``test_auth_scopes.Service``; only the hub's identification is a stand-in):

- ``ERRORS``: one bad call per row and its whole error body, ``{"error", "status", "field"}``
  (the ``field`` a form points at, the text a user reads);
- ``ACCEPTED``: the values just inside each limit (a limit one off refuses them);
- the rest: what a successful call returns or changes (policy parts read back, the audit log's
  filters, admissions' groups and servers, notices, places, the caller's own quota).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from test_auth_scopes import PREFIX, Service, service  # noqa: F401 (the fixture)
from tornado import httpclient

from aispike_hub.model import GIB_IN_MIB
from aispike_hub.sanity import shorten
from aispike_hub.service.api import (
    ADMIN_SCOPE,
    ADMIT_SCOPE,
    MAX_BODY,
    ServiceContext,
    handlers,
)

GIB = GIB_IN_MIB
TOP = 2**62
"""The largest id ``before`` and ``upto`` take."""
ADMITTERS = f"needs scope {ADMIT_SCOPE} or {ADMIN_SCOPE}"
ENTRY_FIELDS = "['quota', 'borrowing', 'max_slice', 'allowed_models', 'allowed_images', 'tier']"
GROUP_FIELDS = ("unknown field; use member (limits of each member), quota and borrowing (of the "
                "whole group)")
REFUTED_LIST = 'expected a list of at most 64 {"node": ..., "gpu": ...} objects'


class Answer:
    """One HTTP answer: status, headers and the JSON body (or the raw text)."""

    def __init__(self, code: int, headers: httpclient.HTTPHeaders, body: bytes) -> None:
        self.code, self.headers = code, headers
        try:
            self.doc: Any = json.loads(body) if body else None
        except ValueError:
            self.doc = body


class API:
    """``Service`` with raw bodies (an empty or over-long body) and the answer's headers."""

    def __init__(self, svc: Service) -> None:
        self.svc = svc
        self.controller = svc.controller

    def __call__(self, method: str, path: str, body: Any = None, who: str = "") -> Answer:
        async def go() -> Answer:
            data = body if isinstance(body, str) or body is None else json.dumps(body)
            if method in ("POST", "PUT") and data is None:
                data = "null"
            resp = await httpclient.AsyncHTTPClient().fetch(
                f"http://127.0.0.1:{self.svc.port}{PREFIX}{path}", method=method, body=data,
                headers={"Authorization": f"token {who}"} if who else {}, raise_error=False,
                follow_redirects=False, allow_nonstandard_methods=True)
            return Answer(resp.code, resp.headers, resp.body)

        return self.svc.loop.run_until_complete(go())

    def ok(self, method: str, path: str, body: Any = None, who: str = "admin") -> Any:
        answer = self(method, path, body, who)
        assert answer.code in (200, 201), answer.doc
        return answer.doc

    def audit(self, query: str = "") -> list[dict[str, Any]]:
        return list(self.ok("GET", f"api/audit{query}")["entries"])


@pytest.fixture
def api(service: Service) -> API:  # noqa: F811 (the fixture imported above)
    """``test_auth_scopes``'s service (alice's default server admitted), called as :class:`API`."""
    return API(service)


def _err(status: int, error: str, field: str | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"error": error, "status": status}
    if field is not None:
        doc["field"] = field
    return doc


def _bad(field: str, message: str) -> dict[str, Any]:
    return _err(400, f"{field}: {message}", field)


BOB = {"user": "bob", "groups": ["lab"], "request": {"gpu_memory_mib": 4 * GIB}}
NOTICE = {"user": "alice", "kind": "info", "message": "hello"}
A = "a"

# (method, path, body, caller, the whole answer)
ERRORS: list[tuple[str, str, Any, str, dict[str, Any]]] = [
    # bodies: none, not JSON, not an object, too large (the limit is the bytes sent)
    ("PUT", "api/policy", "", "admin",
     _bad("policy", "expected a policy document (a JSON object)")),
    ("PUT", "api/policy", [], "admin",
     _bad("policy", "expected a policy document (a JSON object)")),
    ("PUT", "api/policy", "[" * 40 + "]" * 40, "admin",
     _bad("body", "body: nested deeper than 32 levels")),
    ("PUT", "api/policy", " " * (MAX_BODY + 1), "admin", _err(413, "request body too large")),
    ("POST", "api/admissions", [], "hub",
     _bad("body", "expected a JSON object with user, server, request")),
    ("POST", "api/fit", [], "alice", _bad("body", "expected a JSON object with request")),
    ("POST", "api/notices", [], "agent",
     _bad("body", "expected a JSON object with user, kind and message")),
    ("POST", "api/place", [], "hub",
     _bad("body", "expected a JSON object with user, server, prefer_node")),
    # query arguments: whole numbers within their range, named when not
    ("GET", "api/audit?limit=abc", None, "admin",
     _bad("limit", "expected a whole number, got 'abc'")),
    ("GET", "api/audit?limit=X1", None, "admin",
     _bad("limit", "expected a whole number, got 'X1'")),
    ("GET", "api/audit?limit=" + "0" * 20 + "1", None, "admin",
     _bad("limit", f"expected a whole number, got '{'0' * 20}1'")),
    ("GET", "api/audit?limit=0", None, "admin", _bad("limit", "0 is out of range (1..1000)")),
    ("GET", "api/audit?limit=1001", None, "admin", _bad("limit", "1001 is out of range (1..1000)")),
    ("GET", "api/audit?before=-1", None, "admin", _bad("before", f"-1 is out of range (0..{TOP})")),
    ("GET", f"api/audit?before={TOP + 1}", None, "admin",
     _bad("before", f"{TOP + 1} is out of range (0..{TOP})")),
    ("GET", "api/audit?action=" + A * 65, None, "admin",
     _bad("action", f"{shorten(A * 65)} is not an action")),
    ("DELETE", "api/notices", None, "alice",
     _bad("upto", "expected the id of the last notice to dismiss")),
    ("DELETE", f"api/notices?upto={TOP + 1}", None, "alice",
     _bad("upto", f"{TOP + 1} is out of range (0..{TOP})")),
    # the policy and its parts: the field of the whole document's path
    ("PUT", "api/policy", {"users": {"x": {"quota": 5}}}, "admin",
     _bad("users.x.quota",
          "expected a mapping of ['cpu', 'gpu_memory', 'gpus', 'memory', 'servers'], got 5")),
    ("PUT", "api/policy/defaults", {"quota": 5}, "admin",
     _bad("defaults.quota",
          "expected a mapping of ['cpu', 'gpu_memory', 'gpus', 'memory', 'servers'], got 5")),
    ("PUT", "api/policy/tiers", {}, "admin", _bad("tiers", "expected a list of tiers, got {}")),
    ("PUT", "api/policy/tiers", [{"name": 1, "priority": 1}], "admin",
     _bad("tiers[0].name", "expected a name, got 1")),
    ("PUT", "api/policy/users/x", {"member": {}}, "admin",
     _bad("users.x.member", f"unknown field; use one of {ENTRY_FIELDS}")),
    ("PUT", "api/policy/groups/x", {"tier": "normal"}, "admin",
     _bad("groups.x.tier", GROUP_FIELDS)),
    ("PUT", "api/policy/users/x", 5, "admin", _bad("users.x", "expected a mapping, got 5")),
    ("DELETE", "api/policy/users/nobody", None, "admin", _err(404, "no policy entry users.nobody")),
    ("GET", "api/policy/users/nobody", None, "admin", _err(404, "no policy entry users.nobody")),
    ("DELETE", "api/policy/defaults", None, "admin",
     _err(405, "only user and group entries can be deleted")),
    # admitting: who, for which server, what
    ("POST", "api/admissions", BOB, "alice", _err(403, f"needs scope {ADMIT_SCOPE}")),
    ("POST", "api/admissions", {**BOB, "user": 7}, "hub", _bad("user", "expected a user name")),
    ("POST", "api/admissions", {**BOB, "user": ""}, "hub", _bad("user", "expected a user name")),
    ("POST", "api/admissions", {**BOB, "groups": "lab"}, "hub",
     _bad("groups", "expected a list of group names")),
    ("POST", "api/admissions", {**BOB, "groups": [7]}, "hub",
     _bad("groups", "expected a list of group names")),
    ("POST", "api/admissions", {**BOB, "server": None}, "hub",
     _bad("server", "expected a server name ('' for the default server)")),
    ("POST", "api/admissions", {**BOB, "server": "s" * 256}, "hub",
     _bad("server", "expected a server name ('' for the default server)")),
    ("POST", "api/admissions", {**BOB, "request": {"gpu_count": "x"}}, "hub",
     _bad("request.gpu_count", "expected a whole number >= 0, got 'x'")),
    ("POST", "api/fit", {"request": {"gpu_count": "x"}}, "alice",
     _bad("request.gpu_count", "expected a whole number >= 0, got 'x'")),
    ("DELETE", "api/admissions/alice/", None, "alice", _err(403, ADMITTERS)),
    ("GET", "api/admissions/alice/", None, "bob", _err(403, ADMITTERS)),
    ("GET", "api/quota?user=bob", None, "alice", _err(403, f"needs scope {ADMIN_SCOPE}")),
    # notices: each field's type and length
    ("POST", "api/notices", {**NOTICE, "user": ""}, "agent",
     _bad("user", "expected a string of 1 to 255 characters")),
    ("POST", "api/notices", {**NOTICE, "user": 7}, "agent",
     _bad("user", "expected a string of 1 to 255 characters")),
    ("POST", "api/notices", {**NOTICE, "user": "u" * 256}, "agent",
     _bad("user", "expected a string of 1 to 255 characters")),
    ("POST", "api/notices", {**NOTICE, "server": "s" * 256}, "agent",
     _bad("server", "expected a string of 1 to 255 characters")),
    ("POST", "api/notices", {**NOTICE, "kind": ""}, "agent",
     _bad("kind", "expected a string of 1 to 64 characters")),
    ("POST", "api/notices", {**NOTICE, "kind": "k" * 65}, "agent",
     _bad("kind", "expected a string of 1 to 64 characters")),
    ("POST", "api/notices", {**NOTICE, "message": ""}, "agent",
     _bad("message", "expected a string of 1 to 2000 characters")),
    ("POST", "api/notices", {**NOTICE, "message": "m" * 2001}, "agent",
     _bad("message", "expected a string of 1 to 2000 characters")),
    # placing: fields, lengths, the refuted GPUs
    ("POST", "api/place", {"user": "alice", "x": 1}, "hub",
     _bad("x", "unknown field; use one of ['prefer_node', 'refuted', 'server', 'user']")),
    # a "%" the caller sent is echoed as sent (tornado 6.5+ escapes log_message itself: the
    # API showed "%%%%" for it)
    ("POST", "api/place", {"user": "alice", "a%b": 1}, "hub",
     _bad("a%b", "unknown field; use one of ['prefer_node', 'refuted', 'server', 'user']")),
    ("DELETE", "api/policy/users/a%25s", None, "admin", _err(404, "no policy entry users.a%s")),
    ("POST", "api/place", {"user": ""}, "hub",
     _bad("user", "expected a string of 1 to 255 characters")),
    ("POST", "api/place", {"user": "alice", "server": None}, "hub",
     _bad("server", "expected a string of 0 to 255 characters")),
    ("POST", "api/place", {"user": "alice", "prefer_node": "n" * 254}, "hub",
     _bad("prefer_node", "expected a string of 0 to 253 characters")),
    ("POST", "api/place", {"user": "alice", "refuted": {}}, "hub",
     _bad("refuted", REFUTED_LIST)),
    ("POST", "api/place", {"user": "alice", "refuted": [{"node": "a-0", "gpu": 0}] * 65}, "hub",
     _bad("refuted", REFUTED_LIST)),
    ("POST", "api/place", {"user": "alice", "refuted": [{"node": "a-0"}]}, "hub",
     _bad("refuted[0]", 'expected an object with exactly "node" and "gpu"')),
    ("POST", "api/place", {"user": "alice", "refuted": [{"node": "", "gpu": 0}]}, "hub",
     _bad("refuted[0].node", "expected a node name of 1 to 253 characters")),
    ("POST", "api/place", {"user": "alice", "refuted": [{"node": "n" * 254, "gpu": 0}]}, "hub",
     _bad("refuted[0].node", "expected a node name of 1 to 253 characters")),
    ("POST", "api/place", {"user": "alice", "refuted": [{"node": "a-0", "gpu": 1024}]}, "hub",
     _bad("refuted[0].gpu", "expected a GPU index from 0 to 1023")),
]


@pytest.mark.parametrize(("method", "path", "body", "who", "expected"), ERRORS,
                         ids=[f"{m} {p[:50]} {json.dumps(b)[:40] if b is not None else ''}"
                              for m, p, b, _w, _e in ERRORS])
def test_a_refused_call_says_exactly_why(api: API, method: str, path: str, body: Any, who: str,
                                         expected: dict[str, Any]) -> None:
    answer = api(method, path, body, who)
    assert (answer.code, answer.doc) == (expected["status"], expected)
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.headers["Cache-Control"] == "no-store"


# (method, path, body, caller): each just inside a limit of ERRORS
ACCEPTED: list[tuple[str, str, Any, str]] = [
    ("PUT", "api/policy/defaults", "{}" + " " * (MAX_BODY - 2), "admin"),  # exactly MAX_BODY
    ("GET", "api/audit?limit=", None, "admin"),                   # empty: the default
    ("GET", "api/audit?limit=" + "0" * 19 + "1", None, "admin"),  # 20 characters
    ("GET", "api/audit?limit=1", None, "admin"),
    ("GET", "api/audit?limit=1000", None, "admin"),
    ("GET", "api/audit?before=0", None, "admin"),
    ("GET", f"api/audit?before={TOP}", None, "admin"),
    ("GET", "api/audit?action=" + A * 64, None, "admin"),
    ("DELETE", f"api/notices?upto={TOP}", None, "alice"),
    ("POST", "api/admissions", {**BOB, "server": "s" * 255}, "hub"),
    ("POST", "api/notices", {**NOTICE, "user": "u" * 255, "server": "s" * 255,
                             "kind": "k" * 64, "message": "m" * 2000}, "agent"),
    ("POST", "api/place", {"user": "u" * 255, "server": "s" * 255, "prefer_node": "n" * 253},
     "hub"),
    ("POST", "api/place", {"user": "alice", "refuted": [{"node": "a-0", "gpu": 1}] * 64}, "hub"),
    ("POST", "api/place", {"user": "alice", "refuted": [{"node": "a", "gpu": 1023},
                                                         {"node": "n" * 253, "gpu": 0}]}, "hub"),
]


@pytest.mark.parametrize(("method", "path", "body", "who"), ACCEPTED,
                         ids=[f"{m} {p[:50]} {json.dumps(b)[:40] if b is not None else ''}"
                              for m, p, b, _w in ACCEPTED])
def test_a_value_at_the_limit_is_accepted(api: API, method: str, path: str, body: Any,
                                          who: str) -> None:
    answer = api(method, path, body, who)
    assert answer.code in (200, 201), answer.doc


def test_answers_are_json_never_cached(api: API) -> None:
    answer = api("GET", "api/health")
    assert (answer.code, answer.doc) == (200, {"ok": True})
    assert answer.headers["Content-Type"] == "application/json"
    answer = api("GET", "api/queue", who="admin")
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.headers["Cache-Control"] == "no-store"


def test_an_internal_error_is_a_bare_500(api: API, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug's exception is answered as JSON without its text (no internals leak)."""
    def broken() -> list[Any]:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(api.controller, "queue", broken)
    answer = api("GET", "api/queue", who="admin")
    assert (answer.code, answer.doc) == (500, _err(500, "Internal Server Error"))


def test_routes_keep_a_prefix_that_ends_like_a_strip(api: API) -> None:
    ctx = ServiceContext(api.controller, "boX")
    assert handlers("/services/boX/", ctx)[0][0] == "/services/boX/api/health"
    assert handlers("/services/boX", ctx)[0][0] == "/services/boX/api/health"


def test_policy_parts_are_stored_read_back_and_audited(api: API) -> None:
    policy = api.ok("GET", "api/policy")
    assert policy["users"]["alice"] == {"quota": {"gpu_memory": "16Gi"}}, policy
    whole = api.ok("PUT", "api/policy", policy)
    assert isinstance(whole["version"], int) and whole["policy"] == policy
    defaults = {"quota": {"gpu_memory": "8Gi"}}
    assert api.ok("PUT", "api/policy/defaults", defaults)["policy"]["defaults"] == defaults
    assert api.ok("GET", "api/policy/defaults") == {"defaults": defaults}
    tiers = [{"name": "normal", "priority": 100, "preempts": True, "priority_class": "p"}]
    api.ok("PUT", "api/policy/tiers", tiers)
    assert api.ok("GET", "api/policy/tiers") == {"tiers": tiers}
    carol = {"quota": {"gpu_memory": "4Gi"}}
    api.ok("PUT", "api/policy/users/carol", carol)
    assert api.ok("GET", "api/policy/users/carol") == {"carol": carol}
    team = {"member": {"quota": {"gpu_memory": "2Gi"}}}
    api.ok("PUT", "api/policy/groups/team", team)
    assert api.ok("GET", "api/policy/groups/team") == {"team": team}
    api.ok("DELETE", "api/policy/users/alice")
    assert api("GET", "api/policy/users/alice", who="admin").code == 404
    api.ok("DELETE", "api/policy/groups/team")
    assert api("GET", "api/policy/groups/team", who="admin").code == 404
    changes = [(e["actor"], e["target"]) for e in api.audit("?action=policy.update")]
    assert changes == [("user:root", t) for t in (
        "groups.team", "users.alice", "groups.team", "users.carol", "tiers", "defaults",
        "policy")], changes


def test_the_audit_log_pages_and_filters(api: API) -> None:
    with api.controller.store.session() as s:
        for i in range(105):
            api.controller.store.audit(s, "test", "test.fill", f"t{i}")
    assert len(api.audit()) == 100                 # the default page
    assert len(api.audit("?limit=")) == 100
    assert len(api.audit("?limit=1000")) == 106    # + alice's admission
    newest = api.audit("?limit=1")
    assert [e["target"] for e in newest] == ["t104"]
    older = api.audit(f"?limit=2&before={newest[0]['id']}")
    assert [e["target"] for e in older] == ["t103", "t102"]
    admitted = api.audit("?action=admission.admitted")
    assert [(e["action"], e["target"]) for e in admitted] == [("admission.admitted", "alice/")]


def test_the_queue_lists_both_states(api: API) -> None:
    api.ok("POST", "api/admissions", {**BOB, "request": {"gpu_count": 1}}, "hub")
    queue = api.ok("GET", "api/queue")
    assert [(t["user"], t["state"]) for t in queue["queued"]] == [("bob", "queued")]
    assert [(t["user"], t["state"]) for t in queue["admitted"]] == [("alice", "admitted")]


def test_an_admission_answers_its_ticket(api: API) -> None:
    """201 with the ticket; a refusal is 200 (nothing was created), and its reason shows the
    groups sent were used; a server left out is the default server ``""``."""
    ticket = api("POST", "api/admissions", {"user": "bob", "groups": ["lab"],
                                            "request": {"gpu_memory_mib": 90 * GIB}}, "hub")
    assert (ticket.code, ticket.doc["state"]) == (200, "refused"), ticket.doc
    assert ticket.doc["reasons"] == [
        "90 GiB is more than group 'lab' may ever use (80 GiB); ask for less or ask an admin"]
    ticket = api("POST", "api/admissions", BOB, "hub")
    assert (ticket.code, ticket.doc["user"], ticket.doc["server"], ticket.doc["state"]) == (
        201, "bob", "", "admitted"), ticket.doc
    named = api.ok("POST", "api/admissions", {**BOB, "server": "gpu"}, "hub")
    assert (named["server"], named["state"]) == ("gpu", "admitted"), named
    for who in ("alice", "hub", "admin"):
        mine = api.ok("GET", "api/admissions/alice/", who=who)
        assert (mine["user"], mine["server"], mine["state"]) == ("alice", "", "admitted")
    assert api.ok("GET", "api/admissions/bob/gpu", who="hub")["server"] == "gpu"


def test_fit_answers_for_the_caller_with_their_groups(api: API) -> None:
    """Without ``user``, the caller's own name (alice's 16 GiB user quota) and hub groups
    (bob's group ``lab``) decide."""
    fit = api.ok("POST", "api/fit", {"request": {"gpu_memory_mib": 20 * GIB}}, "alice")
    assert fit["verdict"] == "refuse" and fit["limits"]["gpu_memory_mib"] == 16 * GIB, fit
    fit = api.ok("POST", "api/fit", {"request": {"gpu_memory_mib": 90 * GIB}}, "bob")
    assert fit["reasons"] == [
        "90 GiB is more than group 'lab' may ever use (80 GiB); ask for less or ask an admin"]
    fit = api.ok("POST", "api/fit", {"user": "bob", "request": {"gpu_memory_mib": 20 * GIB}},
                 "hub")
    assert fit["verdict"] == "admit", fit
    # a service has no hub groups: it is asked about as a user of none (not a 500)
    fit = api.ok("POST", "api/fit", {"request": {"gpu_memory_mib": 20 * GIB}}, "hub")
    assert fit["verdict"] == "admit", fit


def test_quota_counts_the_groups_of_whom_it_is_for(api: API) -> None:
    api.ok("PUT", "api/policy/groups/lab", {"member": {"quota": {"gpu_memory": "32Gi"}}})
    assert api.ok("GET", "api/quota", who="bob")["limits"]["gpu_memory_mib"] == 32 * GIB
    other = api.ok("GET", "api/quota?user=bob&group=lab")
    assert (other["user"], other["limits"]["gpu_memory_mib"]) == ("bob", 32 * GIB)
    assert api.ok("GET", "api/quota?user=bob")["limits"]["gpu_memory_mib"] is None


def test_notices_are_posted_read_and_dismissed_per_user(api: API) -> None:
    assert api.ok("POST", "api/notices", NOTICE, "agent") == {"posted": True}
    api.ok("POST", "api/notices", {**NOTICE, "user": "bob"}, "agent")
    mine = api.ok("GET", "api/notices", who="alice")["notices"]
    assert [(n["server"], n["kind"], n["message"]) for n in mine] == [("", "info", "hello")]
    assert api.ok("DELETE", f"api/notices?upto={mine[0]['id']}", who="alice") == {
        "dismissed": True}
    assert api.ok("GET", "api/notices", who="alice") == {"notices": []}
    assert len(api.ok("GET", "api/notices", who="bob")["notices"]) == 1


def test_a_place_reads_server_and_prefer_node(api: API) -> None:
    answer = api.ok("POST", "api/place", {"user": "alice"}, "hub")
    assert (answer["server"], answer["placed"]) == ("", True), answer
    api.ok("POST", "api/place", {"user": "alice", "prefer_node": "a-0"}, "hub")
    places = [e["detail"]["prefer_node"] for e in api.audit("?action=admission.place")]
    assert places == ["a-0", ""]
    api.ok("POST", "api/admissions", {**BOB, "server": "gpu"}, "hub")
    answer = api.ok("POST", "api/place", {"user": "bob", "server": "gpu"}, "hub")
    assert (answer["server"], answer["state"], answer["placed"]) == ("gpu", "admitted", True)
