"""Fuzz every route of the AISpike service's HTTP API (hypothesis): no 5xx, no stall (issue 26).

The real tornado application (``api.handlers``, ``idle_handlers``, ``panel_handlers``, as
``AISpikeService.make_app`` wires them) listens on loopback; only the hub's identification is a
stand-in (``test_auth_scopes.StandInHubAuth``), and the caller holds every scope, so each
request reaches the handler's parsing.  The routes are read from the application itself: a new
route is fuzzed without editing this file (``test_every_route_is_fuzzed``).

Each example sends one request with a hostile body (deep nesting, 5,000-digit numbers,
``Infinity``/``NaN``, NUL bytes, long strings, wrong types, raw non-JSON), hostile query
arguments, a hostile header and hostile path segments, and asserts: the status is below 500;
a 4xx answer is short (the value shortened, no 300-digit echo) and names what was wrong; the
request is answered within ``REQUEST_TIMEOUT`` seconds.  Run: ``.venv/bin/python -m pytest
tests/unit/fuzz/test_fuzz_routes.py -q`` (40 examples per route, 2 cores: well under a
minute).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tornado import httpclient, web

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service"))
from test_auth_scopes import CALLERS, PREFIX, Service, StandInHubAuth

from aispike_hub.service.api import APIHandler, handlers
from aispike_hub.service.idle.handlers import idle_handlers
from aispike_hub.service.panel.handlers import PageHandler, panel_handlers

REQUEST_TIMEOUT = 10.0
"""Seconds one request may take (a stall fails the example)."""
ROUTE_FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                      suppress_health_check=[HealthCheck.function_scoped_fixture,
                                             HealthCheck.too_slow])
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")


def deep(n: int) -> str:
    return "[" * n + "]" * n


RAW_BODIES: list[str] = [
    "", "null", "{", "[]", "{}", deep(5000), '{"a":' * 3000 + "1" + "}" * 3000, "9" * 5000,
    '{"request": {"gpu_memory_mib": Infinity}}', '{"request": {"gpu_memory_mib": NaN}}',
    '{"user": "a\\u0000b", "server": "", "request": {}}', '"' + "x" * 20000 + '"',
    '{"request": {"gpu_memory_mib": 1e999999, "cpu": "1e999999"}}', "\x00\x01\x02",
    '{"quota": {"gpu_memory": "' + "9" * 300 + 'Gi"}}', '{"groups": []}',
    '{"user": 5, "groups": "lab", "server": [], "request": "x"}',
    '[{"name": "a\\u0000", "priority": 1e308}]', '{"defaults": {"quota": {"servers": -1}}}',
]
HOSTILE_TEXT: list[str] = [
    "", "abc", "-1", "0", "1e999999", "9" * 400, "inf", "nan", "-inf", "\x00", "x" * 5000,
    "1.5", "true", "[]", "{}", "%00", "../../etc/passwd", "<script>", "alice", "10**24",
]
hostile_text = st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(max_size=40))
scalar = st.one_of(st.sampled_from([None, True, -1, 0, 10**30, 1e308, -1e308]),
                   st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                   hostile_text)
json_value = st.recursive(scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.sampled_from(["user", "server", "groups", "request", "quota",
                                     "gpu_memory_mib", "gpu_count", "cpu_milli",
                                     "memory_mib", "kind", "message", "name", "priority",
                                     "defaults", "tiers", "gpu_memory", "servers"]), inner,
                    max_size=5)), max_leaves=15)
body = st.one_of(st.sampled_from(RAW_BODIES), json_value.map(json.dumps))
QUERY_KEYS = ["upto", "limit", "before", "user", "group", "name", "hours", "verdict", "action",
              "server", "target", "offset", "kind"]
"""Every argument the handlers read (``get_argument``/``_int_arg`` in aispike_hub/service), and
a few they do not."""
query = st.dictionaries(st.sampled_from(QUERY_KEYS), hostile_text, max_size=4)
header = st.sampled_from(["x" * 8000, "\t", "alice", "1e999999", "%00"])


def _stub_routes() -> list[tuple[str, type]]:
    """The routes as the service wires them (their patterns and handler classes)."""
    panel = SimpleNamespace(prefix=PREFIX, ctx=None)
    routes = [*handlers(PREFIX, None), *idle_handlers(PREFIX, None, None),  # type: ignore[arg-type]
              *panel_handlers(panel)]  # type: ignore[arg-type]
    return [(pattern, cls) for pattern, cls, *_ in routes]


ROUTES = _stub_routes()
GROUP = re.compile(r"\((?:\?P<\w+>)?([^()]*)\)")


def concrete(pattern: str, segments: list[str]) -> str:
    """A path matching ``pattern``: alternatives take their first word; ``[^/]+``-like groups
    take the next hostile segment (URL-quoted)."""
    values = iter(segments)

    def one(m: re.Match[str]) -> str:
        inner = m.group(1)
        if inner == "":
            return ""
        if re.fullmatch(r"[\w|-]+", inner):
            return inner.split("|")[0]
        if inner == ".*":
            return "panel.js"
        seg = next(values, "alice") or ("x" if inner.endswith("+") else "")
        return quote(seg, safe="")

    path = GROUP.sub(one, pattern).replace("/?", "/").replace("\\", "")
    assert path.startswith(PREFIX.rstrip("/")), path
    return path


def methods_of(cls: type) -> list[str]:
    """The methods ``cls`` answers (the others are tornado's 405), one in ten examples
    anyway: a method the route does not take must be a 405, not a 500."""
    own = [m for m in METHODS
           if getattr(cls, m.lower()) is not getattr(web.RequestHandler, m.lower())]
    return [*own * 9, *METHODS] if own else list(METHODS)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    mp = pytest.MonkeyPatch()
    auth = StandInHubAuth()
    mp.setattr(APIHandler, "_hub_auth", auth)
    mp.setattr(PageHandler, "_hub_auth", auth)
    everything = sorted({s for c in CALLERS.values() for s in c["scopes"]})
    mp.setitem(CALLERS, "fuzz", {"kind": "user", "name": "fuzz", "groups": ["lab"],
                                 "scopes": everything})
    svc = Service(tmp_path_factory.mktemp("fuzz-routes"))
    try:
        yield svc
    finally:
        svc.server.stop()
        svc.loop.run_until_complete(svc.server.close_all_connections())
        svc.loop.close()
        mp.undo()


def test_every_route_is_fuzzed(service: Service) -> None:
    """The application's own routes are exactly the ones fuzzed below."""
    served = {rule.matcher.regex.pattern.rstrip("$")
              for rule in service.app.default_router.rules[0].target.rules}
    assert served == {p.rstrip("$") for p, _ in ROUTES}


def send(service: Service, method: str, path: str, args: dict[str, str], data: str,
         hdr: str) -> httpclient.HTTPResponse:
    async def go() -> httpclient.HTTPResponse:
        url = f"http://127.0.0.1:{service.port}{path}"
        if args:
            url += "?" + urlencode(args)
        return await httpclient.AsyncHTTPClient().fetch(
            url, method=method, body=data if method in ("POST", "PUT", "PATCH") else None,
            headers={"Authorization": "token fuzz", "X-Forwarded-For": hdr,
                     "Content-Type": "application/json", "X-Fuzz": hdr},
            raise_error=False, follow_redirects=False, allow_nonstandard_methods=True,
            request_timeout=REQUEST_TIMEOUT)

    return service.loop.run_until_complete(go())


@pytest.mark.parametrize(("pattern", "cls"), ROUTES, ids=[p.removeprefix(PREFIX.rstrip("/"))
                                                         for p, _ in ROUTES])
@ROUTE_FUZZ
@given(choice=st.data(), segments=st.lists(hostile_text, max_size=3), args=query, data=body,
       hdr=header)
def test_route_survives_hostile_input(service: Service, pattern: str, cls: type,
                                      choice: st.DataObject, segments: list[str],
                                      args: dict[str, str], data: str, hdr: str) -> None:
    method = choice.draw(st.sampled_from(methods_of(cls)), label="method")
    path = concrete(pattern, segments)
    resp = send(service, method, path, args, data, hdr)
    assert resp.code != 599, f"{method} {path}: no answer ({resp.error})"
    assert resp.code < 500, f"{method} {path} {args} {data[:200]!r}: {resp.code} " \
                            f"{resp.body[:500]!r}"
    if 400 <= resp.code < 500 and resp.code not in (401, 403, 404, 405):
        text = resp.body.decode("utf-8", "replace")
        assert len(text) < 4096, f"{method} {path}: a {len(text)}-character error"
        assert not re.search(r"\d{100}", text), f"{method} {path}: echoes a long number"
        assert "x" * 200 not in text, f"{method} {path}: echoes a long string"


def test_plain_examples_reach_the_handlers(service: Service) -> None:
    """The fixture's caller gets past the gates: for most routes a plain request (a real user
    name in the path, an empty JSON object as body) is answered by the handler, not by a 401,
    403 or 405.  Without this, a broken stand-in identity would turn every fuzz example above
    into a 403 and the fuzzing would test the gate only.  Drives its own requests, so it holds
    whatever order the tests run in."""
    codes: dict[str, set[int]] = {}
    for pattern, cls in ROUTES:
        route = pattern.removeprefix(PREFIX.rstrip("/"))
        for method in dict.fromkeys(methods_of(cls)):
            resp = send(service, method, concrete(pattern, ["alice", "default"]), {}, "{}",
                        "alice")
            codes.setdefault(route, set()).add(resp.code)
            assert resp.code < 500, f"{method} {route}: {resp.code} {resp.body[:300]!r}"
    reached = {route for route, seen in codes.items() if seen - {401, 403, 405}}
    assert len(reached) >= len(ROUTES) // 2, sorted(codes.items())
