"""What the admin panel's routes and the idle report answer, exactly (issue 26, item 7).

The companion of ``test_api_answers.py`` for ``service/panel/handlers.py`` and
``service/idle/handlers.py``: the mutation run of those modules (docs/testing.md) kept the
status of ``test_auth_scopes.py`` right while an error text, a limit, a reply, the error page or
a route's arguments changed.  Same real tornado application; only the hub's identification is a
stand-in.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from test_api_answers import API, api, service  # noqa: F401 (the fixtures)
from test_auth_scopes import PREFIX
from tornado import httpclient

from aispike_hub.idle.policy import IdleRule, ServerSignals, assess, decide
from aispike_hub.service.api import ADMIN_SCOPE, ServiceContext
from aispike_hub.service.idle import IdleMonitor
from aispike_hub.service.idle.handlers import idle_handlers
from aispike_hub.service.idle.monitor import ServerEntry
from aispike_hub.service.panel import AdminPanel
from aispike_hub.service.panel.handlers import panel_handlers

HOURS = "hours: expected more than 0 and at most 2160"

# (method, path, body, caller, the whole answer)
ERRORS: list[tuple[str, str, Any, str, dict[str, Any]]] = [
    ("GET", "api/panel/history?hours=abc", None, "admin",
     {"error": "hours: expected a number", "status": 400}),
    ("GET", "api/panel/history?hours=0", None, "admin", {"error": HOURS, "status": 400}),
    ("GET", "api/panel/history?hours=2160.5", None, "admin", {"error": HOURS, "status": 400}),
    ("GET", "api/panel/history?hours=2161", None, "admin", {"error": HOURS, "status": 400}),
    ("POST", "api/panel/idle/alice//stop", {"confirm": "alice"}, "admin",
     {"error": 'confirm: confirm the stop by sending {"confirm": "alice/"}', "status": 400,
      "field": "confirm"}),
    ("POST", "api/panel/idle/alice/gpu/warn", ["alice/gpu"], "admin",
     {"error": 'confirm: confirm the warn by sending {"confirm": "alice/gpu"}', "status": 400,
      "field": "confirm"}),
    ("POST", "api/panel/idle/" + "7" * 80 + "//stop", {}, "admin",
     {"error": 'confirm: confirm the stop by sending {"confirm": "' + "7" * 59 + '…"}',
      "status": 400, "field": "confirm"}),
    # confirmed: past the check, on to the hub (a stand-in address nothing answers)
    ("POST", "api/panel/idle/alice//stop", {"confirm": "alice/"}, "admin",
     {"error": "the hub did not stop alice/; see the service log", "status": 502}),
    ("GET", "api/idle/servers/alice/", None, "admin",
     {"error": "no running server alice/ in the idle report", "status": 404}),
]


@pytest.mark.parametrize(("method", "path", "body", "who", "expected"), ERRORS,
                         ids=[f"{m} {p[:60]}" for m, p, _b, _w, _e in ERRORS])
def test_a_refused_panel_call_says_exactly_why(api: API, method: str, path: str, body: Any,  # noqa: F811
                                               who: str, expected: dict[str, Any]) -> None:
    answer = api(method, path, body, who)
    assert (answer.code, answer.doc) == (expected["status"], expected)


@pytest.mark.parametrize("query", ["", "?hours=0.01", "?hours=2160"])
def test_history_hours_at_the_limits(api: API, query: str) -> None:  # noqa: F811
    answer = api("GET", f"api/panel/history{query}", who="admin")
    assert answer.code == 200 and isinstance(answer.doc, dict), answer.doc


@pytest.mark.parametrize("path", ["api/panel/map", "api/panel/quotas", "api/panel/queue",
                                  "api/panel/history?hours=1"])
def test_panel_replies_are_compact_json_documents(api: API, path: str) -> None:  # noqa: F811
    raw = api.svc.loop.run_until_complete(_raw(api, path))
    doc = json.loads(raw)
    assert isinstance(doc, dict) and doc, raw
    assert json.dumps(doc, separators=(",", ":")).encode() == raw


async def _raw(calls: API, path: str) -> bytes:
    """The answer's bytes as sent (``API`` parses them)."""
    resp = await httpclient.AsyncHTTPClient().fetch(
        f"http://127.0.0.1:{calls.svc.port}{PREFIX}{path}",
        headers={"Authorization": "token admin"})
    return bytes(resp.body)


def test_the_map_reads_its_filters(api: API) -> None:  # noqa: F811
    view = api.ok("GET", "api/panel/map?node=a-0")
    assert view["filter"] == {"model": "", "node": "a-0", "pool": "", "group": "", "user": ""}


def _monitor(calls: API) -> IdleMonitor:
    """The idle monitor behind the service's routes (it has not polled: no hub here)."""
    for rule in calls.svc.app.wildcard_router.rules:
        monitor = (rule.target_kwargs or {}).get("monitor")
        if isinstance(monitor, IdleMonitor):
            return monitor
    raise AssertionError("no idle route")


def _entry(user: str, last_activity: float, now: float) -> ServerEntry:
    rule = IdleRule(mode="stop", timeout=60, grace=30)
    signals = ServerSignals(user, "", started=0.0, hub_last_activity=last_activity)
    assessment = assess(signals, rule, now)
    return ServerEntry(user, "", ("lab",), rule, assessment, decide(assessment, rule, None, now),
                       None)


def test_the_idle_report_filters_by_verdict(api: API) -> None:  # noqa: F811
    report = api.ok("GET", "api/idle/report")
    assert report["servers"] == [] and report["stale"] is True, report
    now = time.time()
    monitor = _monitor(api)
    monitor.entries = {("alice", ""): _entry("alice", now - 3600, now),
                       ("bob", ""): _entry("bob", now, now)}
    monitor.generated_at = now
    verdicts = {s["user"]: s["verdict"] for s in api.ok("GET", "api/idle/report")["servers"]}
    assert verdicts == {"alice": "idle", "bob": "active"}, verdicts
    idle = api.ok("GET", "api/idle/report?verdict=idle")["servers"]
    assert [s["user"] for s in idle] == ["alice"]
    row = api.ok("GET", "api/idle/servers/alice/", who="alice")
    assert (row["user"], row["verdict"], row["stale"]) == ("alice", "idle", True), row
    assert row["generated_at"] == api.ok("GET", "api/idle/report")["generated_at"] and row[
        "generated_at"], row
    assert api.ok("GET", "api/idle/servers/bob/", who="culler")["verdict"] == "active"


def test_a_refused_page_is_the_panel_error_page(api: API) -> None:  # noqa: F811
    """A page's 403 is HTML that says why, with its status, for the user it was refused to."""
    answer = api("GET", "admin/", who="alice")
    assert answer.code == 403
    page = answer.doc.decode() if isinstance(answer.doc, bytes) else str(answer.doc)
    assert f"the admin panel needs the scope {ADMIN_SCOPE}" in page, page
    assert '<h1 class="h4">403</h1>' in page and 'user: "alice"' in page, page
    assert 'xsrf_token: "",' in page, page  # an error page carries no form token
    assert answer.headers["Cache-Control"] == "no-store"


def test_metrics_are_prometheus_text(api: API) -> None:  # noqa: F811
    answer = api("GET", "metrics", who="scraper")
    assert answer.code == 200
    assert answer.headers["Content-Type"].startswith("text/plain"), answer.headers
    text = answer.doc.decode() if isinstance(answer.doc, bytes) else json.dumps(answer.doc)
    assert "aispike_" in text and "a-0" in text, text[:2000]


def test_metrics_without_prometheus_client_is_a_501_naming_the_extra(
        api: API, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """A service installed without the `service` extra has no prometheus-client: a scrape gets
    501 and the command that installs it, not a 500."""
    import sys

    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import fails
    answer = api("GET", "metrics", who="scraper")
    assert answer.code == 501
    text = answer.doc.decode() if isinstance(answer.doc, bytes) else json.dumps(answer.doc)
    assert "/metrics needs prometheus-client: pip install 'aispike-hub[service]'" in text, text


def test_the_service_root_and_static_files(api: API) -> None:  # noqa: F811
    answer = api("GET", "", who="admin")
    assert (answer.code, answer.headers["Location"]) == (302, "/services/aispike/admin/")
    answer = api("GET", "panel-static/panel.css")
    assert answer.code == 200 and answer.doc, answer.code


def test_routes_keep_a_prefix_that_ends_like_a_strip(api: API) -> None:  # noqa: F811
    ctx = ServiceContext(api.controller, "boX")
    monitor = IdleMonitor(api.controller.store, "http://127.0.0.1:1/hub/api", "t")
    assert idle_handlers("/services/boX/", ctx, monitor)[0][0] == "/services/boX/api/idle/report"
    panel = AdminPanel(ctx, monitor, "/services/boX/", hub_prefix="/hub/")
    assert panel_handlers(panel)[0][0] == "/services/boX/?"


def test_an_error_text_keeps_a_percent_as_raised() -> None:
    """The API's and the panel's error pages read one function: a ``%`` a caller sent (a
    name, a field) is shown once, whatever tornado does to ``log_message``."""
    from tornado import web

    from aispike_hub.service.api import FieldError, error_text

    assert error_text(web.HTTPError(404, "no server a%b")) == "no server a%b"
    assert error_text(FieldError("a%b", "unknown field")) == "a%b: unknown field"
    assert error_text(None) is None
