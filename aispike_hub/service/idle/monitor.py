"""The idle monitor: reads the hub, the servers' kernels and the node agents; reports, warns, stops.

One poll (every ``poll_interval`` seconds):

1. the hub's REST API through the service's :class:`~aispike_hub.service.hubclient.HubClient`:
   users with ready servers (their groups, servers' start and last activity);
2. every node agent's ``/usage`` document (``agent_urls``): GPU memory and utilisation per
   notebook, appended to each server's samples;
3. each server's ``api/kernels`` through the proxy (``proxy_url``), with
   ``no_track_activity`` so the poll itself does not count as the server's activity;
4. the pure policy (:mod:`aispike_hub.idle.policy`) judges every server and decides the next step;
   the monitor carries it out according to the user's ``mode``: ``dry-run`` reports (and audits
   what it would do), ``warn`` tells the owner (a notice for the lab extension, the webhook and
   the notify hook), ``stop`` also stops the server through the hub after ``grace``.

Steps 2 and 3 only fetch; :mod:`.signals` turns the answers into each server's
:class:`~aispike_hub.idle.policy.ServerSignals`.

Robustness: a hub that does not answer means no action at all in that poll (the report keeps
the last state, marked stale); an agent that does not answer (or whose NVML is down, or whose
reading is stale) leaves a gap in the samples of the servers it covers, and those servers are
``unknown`` until the samples cover the window again; a server whose kernels do not answer is
``unknown`` unless its GPU shows it computing.  Nothing is ever stopped on missing data.

Hub scopes it needs (least): ``list:users``, ``read:users:activity``, ``read:users:groups``,
``read:servers``, ``servers`` (stop), ``access:servers`` (kernels); ``delete:servers`` with
``remove_named_servers``; ``admin:users`` with ``cull_users``.

Warnings live in memory: after a restart a reclaimable server is warned again and gets its full
grace period again (later, never earlier).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import inspect
import json
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tornado import httpclient
from traitlets import Bool, Dict, Float, Int, List, Unicode, Union
from traitlets import Callable as CallableTrait
from traitlets.config import LoggingConfigurable

from aispike_hub import metrics
from aispike_hub.idle.policy import (
    Assessment,
    Decision,
    IdlePolicy,
    IdleRule,
    assess,
    decide,
    describe_seconds,
    user_removable,
)
from aispike_hub.service.hubclient import HubAPIError, HubClient
from aispike_hub.service.idle.signals import (
    KernelAnswer,
    SampleBook,
    ServerKey,
    SourceState,
    iso,
    kernel_signals,
    parse_time,
    server_signals,
    with_user_activity,
)
from aispike_hub.service.store import Store


@dataclass
class ServerEntry:
    """One row of the report."""

    user: str
    server: str
    groups: tuple[str, ...]
    rule: IdleRule
    assessment: Assessment
    decision: Decision
    warned_at: float | None
    node: str = ""

    def as_dict(self, now: float) -> dict[str, Any]:
        a, d = self.assessment, self.decision
        stop_due = (a.reclaimable and not self.rule.exempt and d.action == "stop"
                    and self.rule.mode != "dry-run")
        return {
            "user": self.user, "server": self.server, "groups": list(self.groups),
            "node": self.node, "verdict": a.verdict, "evidence": list(a.evidence),
            "reclaimable": a.reclaimable and not self.rule.exempt, "computing": a.computing,
            "over_max_age": a.over_max_age, "action": d.action, "reason": d.reason,
            "mode": self.rule.mode, "exempt": self.rule.exempt,
            "gpu_memory_mib": a.gpu_memory_mib, "gpu_share": round(a.gpu_share, 4),
            "wasted_gpu_hours": round(a.wasted_gpu_hours, 4),
            "last_interaction": iso(a.last_interaction), "idle_since": iso(a.idle_since),
            "warned_at": iso(self.warned_at), "stop_at": iso(d.stop_at), "stop_due": stop_due,
            "age_seconds": a.age_seconds,
        }


Hook = Callable[[dict[str, Any]], Awaitable[None] | None]


class IdleMonitor(LoggingConfigurable):
    """Finds idle GPU notebooks and inactive users; warns owners and reclaims by policy.

    ``timeout``, ``max_age``, ``cull_users``, ``remove_named_servers``, ``concurrency`` mean what
    they mean in jupyterhub-idle-culler.  The thresholds here are the defaults of every user;
    ``policy`` overrides them per group and user (docs/idle.md).
    """

    enabled = Bool(True, help="Run the idle monitor in the AISpike service.").tag(config=True)

    poll_interval = Float(
        60.0, help="""Seconds between polls of the hub, the agents and the kernels (also the
        spacing of GPU samples)."""
    ).tag(config=True)

    timeout = Union(
        [Float(), Unicode()], default_value=3600.0,
        help="""Seconds (or '1h') without user interaction after which a server that does not
        compute is idle (jupyterhub-idle-culler's timeout).""",
    ).tag(config=True)

    max_age = Union(
        [Float(), Unicode()], default_value=0.0,
        help="Reclaim any server older than this, whatever it does; 0 = never.",
    ).tag(config=True)

    grace = Union(
        [Float(), Unicode()], default_value=900.0,
        help="Seconds between warning the owner and stopping the server.",
    ).tag(config=True)

    gpu_busy_percent = Float(
        5.0, help="GPU utilisation at or above this counts as computing."
    ).tag(config=True)

    gpu_window = Union(
        [Float(), Unicode()], default_value=900.0,
        help="""Seconds the GPU must have been quiet (and watched without a gap) before a
        server can be called idle.""",
    ).tag(config=True)

    abandoned_after = Union(
        [Float(), Unicode()], default_value=86400.0,
        help="A user without interaction on any server this long has abandoned their servers.",
    ).tag(config=True)

    mode = Unicode(
        "dry-run",
        help="""What to do with idle servers by default: 'dry-run' (report only), 'warn'
        (report, warn owners; stopping left to jupyterhub-idle-culler with the AISpike arbiter
        hook), 'stop' (warn, then stop after grace).""",
    ).tag(config=True)

    policy = Dict(
        help="""Per group and user overrides: {"defaults": {...}, "groups": {name: {...}},
        "users": {name: {...}}} with the keys timeout, max_age, grace, gpu_busy_percent,
        gpu_window, abandoned_after, mode, exempt (docs/idle.md). A user in several groups gets
        the most lenient value of each.""",
    ).tag(config=True)

    cull_users = Bool(
        False,
        help="""Also remove users without a running server whose last activity is older than
        their timeout (needs admin:users), as jupyterhub-idle-culler's cull_users.""",
    ).tag(config=True)

    cull_admin_users = Bool(
        False, help="With cull_users: remove admin users too."
    ).tag(config=True)

    remove_named_servers = Bool(
        False, help="Remove named servers after stopping them (needs delete:servers)."
    ).tag(config=True)

    concurrency = Int(
        10, help="Most requests to the hub, the agents and servers in flight at once."
    ).tag(config=True)

    agent_urls = List(
        Unicode(),
        help="""The node agents' usage documents, e.g. ['http://gpu-node-1:9402/usage']. Empty:
        no GPU signal (kernels and the hub's activity decide, as a plain culler with kernel
        state).""",
    ).tag(config=True)

    agent_service = Unicode(
        "",
        help="""HOST:PORT of a headless Service whose DNS records are the node agents (the Helm
        chart sets its agents' Service): resolved at every poll, each address's /usage is read
        besides agent_urls, so agents that come and go with GPU nodes are found without listing
        nodes. Empty: agent_urls only.""",
    ).tag(config=True)

    agent_stale_after = Float(
        300.0, help="An agent reading older than this many seconds counts as no answer."
    ).tag(config=True)

    poll_kernels = Bool(
        True,
        help="""Read each server's kernels (execution state, last activity) through the proxy.
        Off: the hub's last activity stands for user interaction.""",
    ).tag(config=True)

    proxy_url = Unicode(
        "",
        help="""URL of the proxy through which servers are reached for their kernels (e.g.
        http://proxy-public/). Default: the servers' full_url when the hub has a public_url.""",
    ).tag(config=True)

    request_timeout = Float(10.0, help="Seconds before a request counts as no answer.").tag(
        config=True)

    webhook_url = Unicode(
        "",
        help="""POST every warning, stop and user removal here as JSON ({"event", "user",
        "server", "verdict", "evidence", "stop_at", ...}), e.g. to a chat or mail gateway.""",
    ).tag(config=True)

    notify_hook = CallableTrait(
        None, allow_none=True,
        help="""Called (sync or async) with the same JSON document as webhook_url, e.g. to send
        an email. Its failures are logged, never fatal.""",
    ).tag(config=True)

    def __init__(self, store: Store, hub_api_url: str = "", api_token: str = "", *,
                 hub: HubClient | None = None, **kw: Any) -> None:
        """``hub``: the service's hub client (its stops go through it); without one, a client
        of ``hub_api_url`` with ``api_token`` and this monitor's timeout and concurrency."""
        super().__init__(**kw)
        self.store = store
        self._semaphore = asyncio.Semaphore(max(1, self.concurrency))
        self.hub = hub if hub is not None else HubClient(
            hub_api_url, api_token, request_timeout=self.request_timeout, limit=self._semaphore)
        self.idle_policy = IdlePolicy.from_dict(self.policy, self.base_rule())
        history = max([self.idle_policy.defaults.gpu_window]
                      + [float(e["gpu_window"]) for s in (self.idle_policy.groups,
                                                          self.idle_policy.users)
                         for e in s.values() if "gpu_window" in e])
        self.book = SampleBook(history + 2 * self.poll_interval)
        self.sources = {url: SourceState(url) for url in self.agent_urls}
        self.warned: dict[ServerKey, float] = {}
        self.dry_run_done: dict[ServerKey, set[str]] = {}
        self.entries: dict[ServerKey, ServerEntry] = {}
        self.inactive_users: list[dict[str, Any]] = []
        self.hub_ok = False
        self.hub_error = "not polled yet"
        self.generated_at: float | None = None

    def base_rule(self) -> IdleRule:
        """The traits as the policy's defaults (validated like a policy document)."""
        doc = {"timeout": self.timeout, "max_age": self.max_age, "grace": self.grace,
               "gpu_busy_percent": self.gpu_busy_percent, "gpu_window": self.gpu_window,
               "abandoned_after": self.abandoned_after, "mode": self.mode}
        return IdlePolicy.from_dict({"defaults": doc}).defaults

    # -- I/O ---------------------------------------------------------------------------------
    async def fetch_json(self, url: str, method: str = "GET", body: Any = None,
                         token: bool = True) -> Any:
        """A JSON request to an agent, a server (through the proxy, with the hub token when
        ``token``) or the webhook; the hub's own API goes through :attr:`hub`."""
        headers = {"Accept": "application/json"}
        if token:
            headers.update(self.hub.auth_headers)
        async with self._semaphore:
            resp = await httpclient.AsyncHTTPClient().fetch(
                url, method=method, headers=headers, request_timeout=self.request_timeout,
                body=None if body is None else json.dumps(body),
                allow_nonstandard_methods=True)
        return json.loads(resp.body) if resp.body else None

    async def poll_agent(self, url: str, now: float) -> tuple[str, Any]:
        """(url, document) or (url, error text)."""
        state = self.sources[url]
        try:
            doc = await self.fetch_json(url, token=False)
            if not isinstance(doc, dict):
                raise ValueError("not a usage document")
            if not doc.get("nvml", {}).get("available", True):
                raise ValueError("NVML unavailable on the node")
            age = now - float(doc.get("time") or 0)
            if age > self.agent_stale_after:
                raise ValueError(f"stale reading ({describe_seconds(age)} old)")
        except Exception as e:
            state.ok, state.error = False, _error_text(e)
            self.log.warning("idle: agent %s did not answer: %s", url, state.error)
            return url, f"agent {url} ({state.error})"
        state.ok, state.error, state.node, state.at = True, "", str(doc.get("node", "")), now
        return url, doc

    def server_url(self, server: Mapping[str, Any]) -> str:
        if self.proxy_url:
            return self.proxy_url.rstrip("/") + str(server.get("url") or "/")
        return str(server.get("full_url") or "")

    async def poll_kernels_of(self, server: Mapping[str, Any]) -> KernelAnswer:
        """The server's kernels and its own last activity (``api/status``, which unlike the
        hub's does not move when the proxy forwards our poll); an error text when it did not
        answer; None when not polled."""
        base = self.server_url(server)
        if not self.poll_kernels or not base:
            return None
        base = base.rstrip("/")
        try:
            kernels, status = await asyncio.gather(
                self.fetch_json(base + "/api/kernels?no_track_activity=1"),
                self.fetch_json(base + "/api/status"))
            return kernel_signals(kernels, status)
        except Exception as e:
            return f"kernels of the server ({_error_text(e)})"

    async def stop_server(self, user: str, server: str) -> bool:
        """Stop a server through the hub (removing a named one with ``remove_named_servers``);
        True once the hub stopped it, is stopping it or has no such server
        (:meth:`.HubClient.stop_server`), False (logged) when it refused or did not answer."""
        try:
            result = await self.hub.stop_server(
                user, server, remove=bool(server) and self.remove_named_servers)
        except HubAPIError as e:
            self.log.warning("idle: stopping %s/%s failed: %s", user, server, e)
            return False
        self.log.debug("idle: %s/%s: %s", user, server, result)
        return True

    async def tell(self, event: dict[str, Any]) -> None:
        """The webhook and the notify hook (best effort)."""
        if self.webhook_url:
            try:
                await self.fetch_json(self.webhook_url, "POST", event, token=False)
            except Exception as e:
                self.log.warning("idle: webhook %s failed: %s", self.webhook_url, e)
        if self.notify_hook is not None:
            try:
                result = self.notify_hook(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                self.log.exception("idle: notify_hook failed")

    def audit(self, action: str, target: str, detail: dict[str, Any],
              notice: tuple[str, str, str, str] | None = None) -> None:
        with self.store.session() as s:
            Store.audit(s, "aispike:idle", action, target, detail)
            if notice:
                Store.notify(s, *notice)

    # -- one poll ----------------------------------------------------------------------------
    async def poll(self, now: float | None = None) -> None:
        """Read everything, judge every server, act; never raises for an unavailable source."""
        now = time.time() if now is None else now
        try:
            users = await self.hub.users("ready")
        except Exception as e:
            self.hub_ok, self.hub_error = False, _error_text(e)
            self.log.warning("idle: hub API did not answer (%s): no action this poll",
                             self.hub_error)
            return
        self.hub_ok, self.hub_error = True, ""
        running: list[tuple[dict[str, Any], str, dict[str, Any]]] = [
            (u, name, s) for u in users for name, s in (u.get("servers") or {}).items()
            if s.get("ready") and not s.get("pending")]
        keys = [(u["name"], name) for u, name, _ in running]
        urls = await self.agent_targets()
        agents = await asyncio.gather(*(self.poll_agent(url, now) for url in urls))
        kernels = await asyncio.gather(*(self.poll_kernels_of(s) for _, _, s in running))
        answered = {url: doc for url, doc in agents if isinstance(doc, dict)}
        failed = {url: doc for url, doc in agents if isinstance(doc, str)}
        gpu = self.book.record(now, answered, failed, keys)

        signals = with_user_activity({
            (user["name"], name): server_signals(
                user["name"], name, server, k,
                gpu[(user["name"], name)] if urls else None)
            for (user, name, server), k in zip(running, kernels, strict=True)}, now)

        entries: dict[ServerKey, ServerEntry] = {}
        for user, name, _server in running:
            key = (user["name"], name)
            groups = tuple(sorted(user.get("groups") or ()))
            rule = self.idle_policy.rule_for(user["name"], groups)
            assessment = assess(signals[key], rule, now)
            decision = decide(assessment, rule, self.warned.get(key), now)
            entry = ServerEntry(key[0], name, groups, rule, assessment, decision,
                                self.warned.get(key), self.node_of(key))
            await self.act(entry, now)
            entry.warned_at = self.warned.get(key)
            entries[key] = entry
        for key in set(self.warned) - set(entries):  # stopped by someone else
            self.warned.pop(key, None)
            self.dry_run_done.pop(key, None)
        self.entries = entries
        self.inactive_users = self.find_inactive_users(entries, now)
        if self.cull_users:
            await self.remove_users(now)
        self.generated_at = now

    async def agent_targets(self) -> list[str]:
        """The agents' /usage URLs to read this poll: agent_urls and, with agent_service, one
        per address its name resolves to now (a failed lookup leaves agent_urls only)."""
        urls = list(self.agent_urls)
        if self.agent_service:
            host, _, port = self.agent_service.rpartition(":")
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(
                    host, int(port), type=socket.SOCK_STREAM)
            except (OSError, ValueError) as e:
                self.log.warning("idle: agent_service %s did not resolve (%s)",
                                 self.agent_service, e)
                infos = []
            for *_, sockaddr in infos:
                ip = str(sockaddr[0])
                url = f"http://[{ip}]:{port}/usage" if ":" in ip else f"http://{ip}:{port}/usage"
                if url not in urls:
                    urls.append(url)
        for url in urls:
            self.sources.setdefault(url, SourceState(url))
        return urls

    def node_of(self, key: ServerKey) -> str:
        url = self.book.source.get(key, "")
        return self.sources[url].node if url in self.sources else ""

    async def act(self, entry: ServerEntry, now: float) -> None:
        """Carry out one decision according to the user's mode; audit what was done."""
        key, d, a, rule = (entry.user, entry.server), entry.decision, entry.assessment, entry.rule
        target = f"{entry.user}/{entry.server}"
        label = entry.server or "default"
        detail = {"verdict": a.verdict, "reason": d.reason, "evidence": list(a.evidence),
                  "gpu_memory_mib": a.gpu_memory_mib, "mode": rule.mode,
                  "stop_at": iso(d.stop_at)}
        event = {"user": entry.user, "server": entry.server, **detail}
        if rule.mode == "dry-run":
            done = self.dry_run_done.setdefault(key, set())
            if d.action == "warn":
                self.warned[key] = now
            if d.action in ("warn", "stop") and d.action not in done:
                done.add(d.action)
                self.audit("idle.dry-run", target, {**detail, "would": d.action})
                self.log.info("idle (dry-run): would %s %s: %s", d.action, target, d.reason)
            if d.action == "cancel":
                self.warned.pop(key, None)
                self.dry_run_done.pop(key, None)
            return
        if d.action == "warn":
            self.warned[key] = now
            when = dt.datetime.fromtimestamp(d.stop_at or now, dt.UTC).strftime("%H:%M UTC")
            held = f" holding {a.gpu_memory_mib / 1024:.1f} GiB of GPU memory" \
                if a.gpu_memory_mib else ""
            why = {"max_age": "has reached the maximum age",
                   "abandoned": "has not been used for a long time",
                   }.get(d.reason, "is idle")
            then = (f"it will be stopped at {when}" if rule.mode == "stop"
                    else "it may be stopped")
            message = (f"Your server '{label}'{held} {why}; {then} unless you use it (run a "
                       f"cell). Save your work.")
            self.audit("idle.warn", target, detail,
                       (entry.user, entry.server, "idle-warning", message))
            self.log.info("idle: warned %s: %s", target, d.reason)
            metrics.idle_warned(d.reason)
            await self.tell({"event": "warn", "message": message, **event})
        elif d.action == "stop" and rule.mode == "stop":
            if key not in self.warned:  # grace 0: warned and stopped at once
                self.warned[key] = now
            if await self.stop_server(entry.user, entry.server):
                message = (f"Your server '{label}' was stopped: {d.reason} "
                           f"({'; '.join(a.evidence)}).")
                self.audit("idle.stop", target, detail,
                           (entry.user, entry.server, "idle-stopped", message))
                self.log.info("idle: stopped %s: %s", target, d.reason)
                metrics.idle_stopped(d.reason)
                self.warned.pop(key, None)
                await self.tell({"event": "stop", "message": message, **event})
        elif d.action == "cancel":
            self.warned.pop(key, None)
            self.audit("idle.cancel", target, detail,
                       (entry.user, entry.server, "idle-cleared",
                        f"Your server '{label}' is in use again; it will not be stopped."))
        elif d.action == "hold":
            self.log.info("idle: %s warned but data is missing; not stopped", target)

    def find_inactive_users(self, entries: Mapping[ServerKey, ServerEntry],
                            now: float) -> list[dict[str, Any]]:
        """Users whose every running server is abandoned (inactive everywhere)."""
        by_user: dict[str, list[ServerEntry]] = {}
        for e in entries.values():
            by_user.setdefault(e.user, []).append(e)
        out = []
        for user, mine in sorted(by_user.items()):
            if all(e.assessment.verdict == "abandoned" for e in mine):
                last = max((e.assessment.last_interaction or 0.0) for e in mine) or None
                out.append({
                    "user": user, "last_interaction": iso(last),
                    "inactive_for_seconds": now - last if last else None,
                    "servers": [e.server for e in mine],
                    "gpu_memory_mib": sum(e.assessment.gpu_memory_mib for e in mine),
                    "wasted_gpu_hours": round(sum(e.assessment.wasted_gpu_hours
                                                  for e in mine), 4)})
        return out

    async def remove_users(self, now: float) -> None:
        try:
            users = await self.hub.users("inactive")
        except Exception as e:
            self.log.warning("idle: listing inactive users failed: %s", _error_text(e))
            return
        for user in users:
            rule = self.idle_policy.rule_for(user["name"], user.get("groups") or ())
            running = sum(1 for s in (user.get("servers") or {}).values() if s.get("ready")
                          or s.get("pending"))
            if not user_removable(last_activity=parse_time(user.get("last_activity")),
                                  servers_running=running, admin=bool(user.get("admin")),
                                  rule=rule, now=now, cull_admin_users=self.cull_admin_users):
                continue
            detail = {"last_activity": user.get("last_activity"), "mode": rule.mode}
            if rule.mode != "stop":
                continue  # only the stop mode removes anyone; the report lists them anyway
            try:
                removed = await self.hub.delete_user(user["name"])
            except HubAPIError as e:
                self.log.warning("idle: removing user %s failed: %s", user["name"], e)
                continue
            if not removed:
                continue  # removed by someone else meanwhile: nothing of ours to audit
            self.audit("idle.remove-user", user["name"], detail)
            await self.tell({"event": "remove-user", "user": user["name"], **detail})

    # -- report ------------------------------------------------------------------------------
    def report(self, now: float | None = None) -> dict[str, Any]:
        """The JSON report of the admin panel (docs/idle.md, "Report API")."""
        now = time.time() if now is None else now
        servers = [e.as_dict(now) for _, e in sorted(self.entries.items())]
        reclaim = [s for s in servers if s["reclaimable"]]
        by_verdict = {v: sum(1 for s in servers if s["verdict"] == v)
                      for v in ("active", "busy", "idle", "abandoned", "unknown")}
        return {
            "generated_at": iso(self.generated_at),
            "stale": not self.hub_ok,
            "hub": {"ok": self.hub_ok, "error": self.hub_error},
            "sources": [s.as_dict() for s in self.sources.values()],
            "policy": self.idle_policy.as_dict(),
            "servers": servers,
            "inactive_users": self.inactive_users,
            "totals": {
                "servers": len(servers), "by_verdict": by_verdict,
                "reclaimable_servers": len(reclaim),
                "reclaimable_gpu_memory_mib": sum(s["gpu_memory_mib"] for s in reclaim),
                "reclaimable_gpu_share": round(sum(s["gpu_share"] for s in reclaim), 4),
                "wasted_gpu_hours": round(sum(s["wasted_gpu_hours"] for s in reclaim), 4),
                "warned": sum(1 for s in servers if s["warned_at"]),
            },
        }

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set; a failing poll is logged and retried next time."""
        while not stop.is_set():
            try:
                await self.poll()
            except Exception:
                self.log.exception("idle: poll failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.poll_interval)


def _error_text(e: BaseException) -> str:
    if isinstance(e, httpclient.HTTPClientError):
        return f"HTTP {e.code}" + (f" {e.message}" if e.message else "")
    return str(e) or type(e).__name__
