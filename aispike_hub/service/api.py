"""REST API of the AISpike service (tornado handlers, authenticated by the hub).

Who may call what (JupyterHub scopes; custom scopes are defined in ``jupyterhub_config.py``,
see docs/quotas.md):

| endpoint | method | who |
|---|---|---|
| ``api/health`` | GET | anyone |
| ``api/policy`` | GET, PUT | ``custom:aispike:admin`` |
| ``api/policy/defaults``, ``/tiers``, ``/users/<n>``, ``/groups/<n>`` | PUT, DELETE | admin |
| ``api/audit`` | GET | ``custom:aispike:admin`` |
| ``api/queue`` | GET | ``custom:aispike:admin`` |
| ``api/admissions`` | POST | ``custom:aispike:admit`` (the hub's spawner) |
| ``api/admissions/<user>/<server>`` | GET | the spawner, an admin, the user |
| ``api/admissions/<user>/<server>`` | DELETE | the spawner, an admin |
| ``api/place`` | POST | ``custom:aispike:admit`` (the hub's placer: re-place an admitted server) |
| ``api/fit`` | POST | any hub user (for themselves), the spawner |
| ``api/notices`` | GET, DELETE | any hub user (their own) |
| ``api/quota`` | GET | any hub user (their own; ``?user=`` for admins) |
| ``api/notices`` | POST | ``custom:aispike:notify`` (node agents: slice enforcement), admin |

Errors are JSON ``{"error": message, "field": name}``; ``field`` names the offending field of a
policy or request document, so a form or script can point at it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any, cast
from urllib.parse import unquote

from jupyterhub.services.auth import HubOAuthenticated, check_scopes
from tornado import web

from aispike_hub.admission.controller import AdmissionController
from aispike_hub.admission.wire import RequestError, request_from_dict
from aispike_hub.quota import (
    PolicyError,
    User,
    entry_from_dict,
    group_from_dict,
    policy_to_dict,
    tiers_from_list,
)
from aispike_hub.sanity import SHORT, Rejected, loads_json, shorten, shorten_text

ADMIN_SCOPE = "custom:aispike:admin"
ADMIT_SCOPE = "custom:aispike:admit"
NOTIFY_SCOPE = "custom:aispike:notify"
MAX_BODY = 1 << 20


class ServiceContext:
    """What every handler shares: the controller and the lock that makes admission atomic."""

    def __init__(self, controller: AdmissionController, service_name: str) -> None:
        self.controller = controller
        self.lock = asyncio.Lock()
        self.service_name = service_name
        self.wakeup = asyncio.Event()
        """Set after a release or policy change, so the background loop acts at once."""


class APIHandler(HubOAuthenticated, web.RequestHandler):  # type: ignore[misc]
    """JSON in and out; identifies the caller through the hub (token or OAuth cookie)."""

    ctx: ServiceContext

    def initialize(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    @property
    def hub_scopes(self) -> set[str]:
        # Let anyone the hub identifies through; each method checks what it needs.
        return {f"access:services!service={self.ctx.service_name}", ADMIN_SCOPE, ADMIT_SCOPE,
                NOTIFY_SCOPE}

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = error_text(exc) or self._reason
        out: dict[str, Any] = {"error": message, "status": status_code}
        field = getattr(exc, "field", None)
        if field:
            out["field"] = field
        self.finish(json.dumps(out))

    # -- identity ------------------------------------------------------------------------------
    @property
    def caller(self) -> dict[str, Any]:
        model = self.current_user
        if not model:
            raise web.HTTPError(403 if self.request.headers.get("Authorization") else 401,
                                "log in to the hub, or send a token with the needed scope")
        return cast(dict[str, Any], model)

    def has_scope(self, scope: str) -> bool:
        return bool(check_scopes({scope}, set(self.caller.get("scopes", []))))

    def require(self, *scopes: str) -> None:
        if not any(self.has_scope(s) for s in scopes):
            raise web.HTTPError(403, f"needs scope {' or '.join(scopes)}")

    @property
    def actor(self) -> str:
        c = self.caller
        return f"{c.get('kind', 'user')}:{c['name']}"

    def body(self) -> Any:
        if len(self.request.body) > MAX_BODY:
            raise web.HTTPError(413, "request body too large")
        try:
            return loads_json(self.request.body or b"null", what="body", max_length=MAX_BODY)
        except Rejected as e:
            raise FieldError("body", e.message) from None

    def int_argument(self, name: str, default: int | None, lo: int, hi: int) -> int | None:
        """Query argument ``name`` as an int in ``lo..hi`` (a 400 naming it otherwise)."""
        text = self.get_argument(name, None)
        if text is None or text == "":
            return default
        if not text.strip().lstrip("-").isdigit() or len(text) > 20:
            raise FieldError(name, f"expected a whole number, got {shorten(text)}")
        value = int(text)
        if not lo <= value <= hi:
            raise FieldError(name, f"{value} is out of range ({lo}..{hi})")
        return value

    def reply(self, doc: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(doc, default=str))


class HealthHandler(web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish('{"ok": true}')


_TORNADO_ESCAPES = hasattr(web.HTTPError, "get_message")
"""Tornado 6.5+ doubles each ``%`` of ``HTTPError.log_message`` itself (its logging formats
it) and gives the text as raised by ``get_message()``; older versions log ``log_message`` as a
format string, so a ``%`` must be doubled here."""


def error_text(exc: object) -> str | None:
    """The message of an ``HTTPError`` as raised: ``log_message`` is the %-escaped form on
    tornado 6.5+, which showed callers ``%%`` for each ``%`` of a name they sent."""
    get_message = getattr(exc, "get_message", None)
    if callable(get_message):
        return cast("str | None", get_message())
    return cast("str | None", getattr(exc, "log_message", None))


class FieldError(web.HTTPError):
    """A 400 naming the field; the message is cut to 300 characters (values are quoted
    short where they are made: :func:`aispike_hub.sanity.shorten`)."""

    def __init__(self, field: str, message: str) -> None:
        field = shorten_text(field, SHORT)
        text = shorten_text(f"{field}: {message}", 300)
        super().__init__(400, text if _TORNADO_ESCAPES else text.replace("%", "%%"))
        self.field = field


def _field_error(e: PolicyError | RequestError) -> FieldError:
    return FieldError(e.field, e.message)


class PolicyHandler(APIHandler):
    """The whole policy document."""

    def get(self) -> None:
        self.require(ADMIN_SCOPE)
        self.reply(policy_to_dict(self.ctx.controller.policy))

    async def put(self) -> None:
        self.require(ADMIN_SCOPE)
        doc = self.body()
        if not isinstance(doc, Mapping):
            raise FieldError("policy", "expected a policy document (a JSON object)")
        await self._store(doc, "policy")

    async def _store(self, doc: Mapping[str, Any], target: str) -> None:
        async with self.ctx.lock:
            try:
                version = self.ctx.controller.set_policy(doc, self.actor, target)
            except PolicyError as e:
                raise _field_error(e) from None
        self.ctx.wakeup.set()
        self.reply({"version": version, "policy": policy_to_dict(self.ctx.controller.policy)})


class PolicyPartHandler(PolicyHandler):
    """One part: defaults, tiers, one user or one group (validated with the whole policy)."""

    def _edit(self, kind: str, name: str, value: Any) -> tuple[dict[str, Any], str]:
        doc = policy_to_dict(self.ctx.controller.policy)
        name = unquote(name)
        try:
            if kind == "defaults":
                entry_from_dict("defaults", value)
                doc["defaults"] = value
                return doc, "defaults"
            if kind == "tiers":
                tiers_from_list("tiers", value)
                if isinstance(value, dict):
                    raise PolicyError("tiers", "expected a list of tiers")
                doc["tiers"] = value
                return doc, "tiers"
            section = cast(dict[str, Any], doc["users" if kind == "users" else "groups"])
            path = f"{kind}.{name}"
            if value is None:
                if name not in section:
                    raise web.HTTPError(404, f"no policy entry {shorten_text(path)}")
                del section[name]
            else:
                (entry_from_dict if kind == "users" else group_from_dict)(path, value)
                section[name] = value
            return doc, path
        except PolicyError as e:
            raise _field_error(e) from None

    def get(self, kind: str, name: str = "") -> None:  # type: ignore[override]
        """One part of the policy (the whole document's GET would not take the path's parts:
        a 500 the route fuzz test found)."""
        self.require(ADMIN_SCOPE)
        doc = policy_to_dict(self.ctx.controller.policy)
        if kind in ("defaults", "tiers"):
            self.reply({kind: doc.get(kind)})
            return
        section = cast(dict[str, Any], doc.get(kind) or {})
        name = unquote(name)
        if name not in section:
            raise web.HTTPError(404, f"no policy entry {kind}.{shorten_text(name)}")
        self.reply({name: section[name]})

    async def put(self, kind: str, name: str = "") -> None:  # type: ignore[override]
        self.require(ADMIN_SCOPE)
        doc, target = self._edit(kind, name, self.body())
        await self._store(doc, target)

    async def delete(self, kind: str, name: str = "") -> None:
        self.require(ADMIN_SCOPE)
        if kind not in ("users", "groups"):
            raise web.HTTPError(405, "only user and group entries can be deleted")
        doc, target = self._edit(kind, name, None)
        await self._store(doc, target)


class AuditHandler(APIHandler):
    def get(self) -> None:
        self.require(ADMIN_SCOPE)
        limit = self.int_argument("limit", 100, 1, 1000) or 100
        before = self.int_argument("before", None, 0, 2**62)
        action = self.get_argument("action", None)
        if action is not None and len(action) > 64:
            raise FieldError("action", f"{shorten(action)} is not an action")
        entries = self.ctx.controller.store.audit_log(limit, action, before)
        self.reply({"entries": [e.as_dict() for e in entries]})


class QueueHandler(APIHandler):
    def get(self) -> None:
        self.require(ADMIN_SCOPE)
        c = self.ctx.controller
        self.reply({"queued": [t.as_dict() for t in c.queue()],
                    "admitted": [t.as_dict() for t in c.admitted()]})


def _user_from(doc: Mapping[str, Any]) -> User:
    name, groups = doc.get("user"), doc.get("groups", [])
    if not isinstance(name, str) or not name:
        raise FieldError("user", "expected a user name")
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise FieldError("groups", "expected a list of group names")
    return User(name, frozenset(groups))


class AdmissionsHandler(APIHandler):
    async def post(self) -> None:
        """Admit (or queue, or refuse) one server; atomic with every other admission."""
        self.require(ADMIT_SCOPE)
        doc = self.body()
        if not isinstance(doc, Mapping):
            raise FieldError("body", "expected a JSON object with user, server, request")
        user = _user_from(doc)
        server = doc.get("server", "")
        if not isinstance(server, str) or len(server) > 255:
            raise FieldError("server", "expected a server name ('' for the default server)")
        try:
            request = request_from_dict(doc.get("request"))
        except RequestError as e:
            raise _field_error(e) from None
        async with self.ctx.lock:
            ticket = self.ctx.controller.admit(user, server, request, self.actor)
        self.reply(ticket.as_dict(), 201 if ticket.state != "refused" else 200)


class AdmissionHandler(APIHandler):
    def get(self, user: str, server: str) -> None:
        user, server = unquote(user), unquote(server)
        if self.caller["name"] != user or self.caller.get("kind") != "user":
            self.require(ADMIT_SCOPE, ADMIN_SCOPE)
        self.reply(self.ctx.controller.status(user, server).as_dict())

    async def delete(self, user: str, server: str) -> None:
        self.require(ADMIT_SCOPE, ADMIN_SCOPE)
        user, server = unquote(user), unquote(server)
        async with self.ctx.lock:
            released = self.ctx.controller.release(user, server, self.actor)
        self.ctx.wakeup.set()
        self.reply({"released": released})


PLACE_FIELDS = {"user": 255, "server": 255, "prefer_node": 253}
"""``POST api/place`` body: each string field and its longest value (253: a Kubernetes node
name); ``refuted`` is the one list field (:func:`_refuted_gpus`)."""
MAX_REFUTED = 64
"""The most GPUs one ``POST api/place`` may name as refuted (the placer asks at most
``Placer.ask_attempts`` times, each answer naming at most one node's GPUs)."""


def _refuted_gpus(value: Any) -> list[tuple[str, int]]:
    """``refuted`` of ``POST api/place``: ``[{"node": str, "gpu": int}, ...]``, the GPUs the
    hub's view sees taken; each bad entry refused with its place named."""
    if not isinstance(value, list) or len(value) > MAX_REFUTED:
        raise FieldError("refuted", f"expected a list of at most {MAX_REFUTED} "
                         '{"node": ..., "gpu": ...} objects')
    gpus = []
    for i, item in enumerate(value):
        where = f"refuted[{i}]"
        if not isinstance(item, Mapping) or set(item) != {"node", "gpu"}:
            raise FieldError(where, 'expected an object with exactly "node" and "gpu"')
        node, gpu = item["node"], item["gpu"]
        if not isinstance(node, str) or not 0 < len(node) <= PLACE_FIELDS["prefer_node"]:
            raise FieldError(f"{where}.node", "expected a node name of 1 to 253 characters")
        if isinstance(gpu, bool) or not isinstance(gpu, int) or not 0 <= gpu < 1024:
            raise FieldError(f"{where}.gpu", "expected a GPU index from 0 to 1023")
        gpus.append((node, gpu))
    return gpus


class PlaceHandler(APIHandler):
    async def post(self) -> None:
        """A fresh assignment for an admitted server: the hub's placer could not pin the one its
        ticket carries (``{"user", "server", "prefer_node"?, "refuted"?}``; see
        :meth:`AdmissionController.place`).  Only the hub (``custom:aispike:admit``), like
        admitting: the answer moves the server's promise."""
        self.require(ADMIT_SCOPE)
        doc = self.body()
        if not isinstance(doc, Mapping):
            raise FieldError("body", "expected a JSON object with user, server, prefer_node")
        for key in doc:
            if key not in PLACE_FIELDS and key != "refuted":
                raise FieldError(str(key), "unknown field; use one of "
                                 f"{sorted([*PLACE_FIELDS, 'refuted'])}")
        for key, limit in PLACE_FIELDS.items():
            value = doc.get(key, "")
            if not isinstance(value, str) or len(value) > limit or (key == "user" and not value):
                raise FieldError(key, f"expected a string of {int(key == 'user')} to {limit} "
                                 "characters")
        refuted = _refuted_gpus(doc.get("refuted", []))
        async with self.ctx.lock:
            answer = self.ctx.controller.place(doc["user"], doc.get("server", ""), self.actor,
                                               doc.get("prefer_node", ""), refuted)
        self.reply(answer)


class FitHandler(APIHandler):
    def post(self) -> None:
        """Would this request be admitted now, and does it fit (the options form's preview)?"""
        doc = self.body()
        if not isinstance(doc, Mapping):
            raise FieldError("body", "expected a JSON object with request")
        if "user" in doc and (doc["user"] != self.caller["name"]
                              or self.caller.get("kind") != "user"):
            self.require(ADMIT_SCOPE, ADMIN_SCOPE)
            user = _user_from(doc)
        else:
            user = User(self.caller["name"], frozenset(self.caller.get("groups", [])))
        try:
            request = request_from_dict(doc.get("request"))
        except RequestError as e:
            raise _field_error(e) from None
        self.reply(self.ctx.controller.fit(user, request))


class NoticesHandler(APIHandler):
    def get(self) -> None:
        """What the caller must be told: preemption warnings and reasons, expired waits."""
        self.reply({"notices": self.ctx.controller.store.notices(self.caller["name"])})

    def post(self) -> None:
        """A notice for a user from a node agent (docs/isolation.md) or an admin:
        ``{"user", "server", "kind", "message"}``."""
        self.require(NOTIFY_SCOPE, ADMIN_SCOPE)
        doc = self.body()
        if not isinstance(doc, Mapping):
            raise FieldError("body", "expected a JSON object with user, kind and message")
        fields = {}
        for key, limit, required in (("user", 255, True), ("server", 255, False),
                                     ("kind", 64, True), ("message", 2000, True)):
            value = doc.get(key, "")
            if not isinstance(value, str) or len(value) > limit or (required and not value):
                raise FieldError(key, f"expected a string of 1 to {limit} characters")
            fields[key] = value
        with self.ctx.controller.store.session() as s:
            self.ctx.controller.store.notify(s, fields["user"], fields["server"], fields["kind"],
                                             fields["message"])
        self.reply({"posted": True}, 201)

    def delete(self) -> None:
        upto = self.int_argument("upto", None, 0, 2**62)
        if upto is None:
            raise FieldError("upto", "expected the id of the last notice to dismiss")
        self.ctx.controller.store.dismiss_notices(self.caller["name"], upto)
        self.reply({"dismissed": True})


class QuotaHandler(APIHandler):
    def get(self) -> None:
        """The caller's quota summary (the lab extension); admins may ask for any user."""
        name = self.get_argument("user", self.caller["name"])
        if name != self.caller["name"] or self.caller.get("kind") != "user":
            self.require(ADMIN_SCOPE)
            user = User(name, frozenset(self.get_arguments("group")))
        else:
            user = User(name, frozenset(self.caller.get("groups", [])))
        self.reply(self.ctx.controller.quota_summary(user))


def handlers(prefix: str, ctx: ServiceContext) -> list[tuple[str, type, dict[str, Any]]]:
    """URL routes under the service's prefix (e.g. ``/services/aispike/``)."""
    p = prefix.rstrip("/")
    kw = {"ctx": ctx}
    return [
        (rf"{p}/api/health", HealthHandler, {}),
        (rf"{p}/api/policy", PolicyHandler, kw),
        (rf"{p}/api/policy/(defaults|tiers)()", PolicyPartHandler, kw),
        (rf"{p}/api/policy/(users|groups)/([^/]+)", PolicyPartHandler, kw),
        (rf"{p}/api/audit", AuditHandler, kw),
        (rf"{p}/api/queue", QueueHandler, kw),
        (rf"{p}/api/admissions", AdmissionsHandler, kw),
        (rf"{p}/api/admissions/([^/]+)/([^/]*)", AdmissionHandler, kw),
        (rf"{p}/api/place", PlaceHandler, kw),
        (rf"{p}/api/fit", FitHandler, kw),
        (rf"{p}/api/notices", NoticesHandler, kw),
        (rf"{p}/api/quota", QuotaHandler, kw),
    ]
