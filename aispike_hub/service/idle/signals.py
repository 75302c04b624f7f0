"""Agent and kernel answers turned into per-server signals for the idle policy.

The node agents' ``/usage`` documents say which notebook holds how much of which GPU;
:func:`usage_by_server` sums them per (user, server) and :class:`SampleBook` keeps each server's
samples over the policy's GPU window, with a gap wherever the agent that reports the server did
not answer (so a server is never judged idle on missing data).  Times from the hub and from
jupyter-server are ISO 8601 (:func:`parse_time`, :func:`iso`).  Nothing here does I/O: the
monitor (:mod:`.monitor`) polls, this module only interprets.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from aispike_hub.idle.policy import (
    GpuSample,
    GpuSignals,
    IdleRule,
    KernelSignals,
    ServerSignals,
    assess,
)

ServerKey = tuple[str, str]
"""(user name, server name); '' is the default server."""


def parse_time(value: Any) -> float | None:
    """Epoch seconds of an ISO 8601 time from the hub or jupyter-server (None stays None)."""
    if not value:
        return None
    when = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def iso(seconds: float | None) -> str | None:
    """ISO 8601 UTC with a Z of epoch seconds, as the hub writes times (None stays None)."""
    if seconds is None:
        return None
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat().replace("+00:00", "Z")


# --- agent usage documents -> samples ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerGpuUse:
    """One server's GPU use in one agent document: summed memory, highest utilisation."""

    node: str
    memory_used_mib: int
    utilization_percent: float
    memory_total_mib: int


def usage_by_server(doc: Mapping[str, Any]) -> dict[ServerKey, ServerGpuUse]:
    """Per (user, server): what the agent's ``/usage`` document says it uses.

    Processes whose owner the agent does not know (no user) are left out.
    """
    totals = {g.get("index"): int(g.get("memory_total_mib") or 0) for g in doc.get("gpus", [])}
    out: dict[ServerKey, ServerGpuUse] = {}
    for nb in doc.get("notebooks", []):
        if not nb.get("user"):
            continue
        key = (str(nb["user"]), str(nb.get("server") or ""))
        prev = out.get(key)
        mem = int(nb.get("memory_used_mib") or 0)
        util = float(nb.get("utilization_percent") or 0.0)
        total = totals.get(nb.get("gpu_index"), 0)
        if prev:
            mem, util = prev.memory_used_mib + mem, max(prev.utilization_percent, util)
            total += prev.memory_total_mib
        out[key] = ServerGpuUse(str(doc.get("node", "")), mem, util, total)
    return out


@dataclass
class SourceState:
    """What one agent answered last."""

    url: str
    ok: bool = False
    error: str = "not polled yet"
    node: str = ""
    at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"url": self.url, "ok": self.ok, "error": self.error, "node": self.node,
                "at": iso(self.at)}


class SampleBook:
    """Each server's GPU samples without gaps, and which agent reports it.

    A poll in which the server's agent did not answer clears its samples (a gap).  A server no
    agent has reported yet gets a zero sample when every agent answered (it holds no GPU), and a
    gap otherwise (it may be on the node that did not answer).
    """

    def __init__(self, history: float) -> None:
        self.history = history
        self.samples: dict[ServerKey, deque[GpuSample]] = {}
        self.source: dict[ServerKey, str] = {}
        self.total_mib: dict[ServerKey, int] = {}

    def record(self, now: float, answered: Mapping[str, Mapping[str, Any]],
               failed: Mapping[str, str], servers: Sequence[ServerKey]
               ) -> dict[ServerKey, tuple[GpuSignals, tuple[str, ...]]]:
        """Add this poll's readings; return each server's signals and what is missing."""
        seen: dict[ServerKey, tuple[str, ServerGpuUse]] = {}
        for url, doc in answered.items():
            for key, use in usage_by_server(doc).items():
                seen[key] = (url, use)
        out: dict[ServerKey, tuple[GpuSignals, tuple[str, ...]]] = {}
        for key in servers:
            book = self.samples.setdefault(key, deque())
            missing: tuple[str, ...] = ()
            if key in seen:
                url, use = seen[key]
                self.source[key] = url
                self.total_mib[key] = use.memory_total_mib
                book.append(GpuSample(now, use.memory_used_mib, use.utilization_percent))
            else:
                url = self.source.get(key, "")
                down = [failed[url]] if url in failed else (
                    [] if url else list(failed.values()))
                if down:
                    book.clear()
                    missing = tuple(down)
                else:
                    book.append(GpuSample(now, 0, 0.0))
            while book and book[0].time < now - self.history:
                book.popleft()
            out[key] = (GpuSignals(tuple(book), self.total_mib.get(key, 0)), missing)
        for key in set(self.samples) - set(servers):  # stopped servers
            self.samples.pop(key, None)
            self.source.pop(key, None)
            self.total_mib.pop(key, None)
        return out


def kernel_signals(kernels: Sequence[Mapping[str, Any]],
                   status: Any) -> tuple[KernelSignals, float | None]:
    """A server's ``api/kernels`` and ``api/status`` answers as the policy's kernel signals,
    and the server's own last activity (None when its status does not say)."""
    times = [t for k in kernels if (t := parse_time(k.get("last_activity"))) is not None]
    executing = sum(1 for k in kernels if k.get("execution_state") == "busy")
    own = parse_time(status.get("last_activity")) if isinstance(status, dict) else None
    return KernelSignals(len(kernels), executing, max(times) if times else None), own


KernelAnswer = tuple[KernelSignals, float | None] | str | None
"""What polling one server's kernels gave: its signals and own last activity, an error text
(it did not answer), or None (not polled)."""


def server_signals(user: str, name: str, server: Mapping[str, Any], kernels: KernelAnswer,
                   gpu: tuple[GpuSignals, tuple[str, ...]] | None) -> ServerSignals:
    """One server's signals from the hub's server model, its kernels' answer and its GPU
    samples (None without agents), with every source that did not answer in ``missing``."""
    missing = list(gpu[1]) if gpu is not None else []
    if isinstance(kernels, str):
        missing.append(kernels)
    activity = parse_time(server.get("last_activity"))
    if isinstance(kernels, tuple) and kernels[1] is not None:
        activity = kernels[1]  # the server's own: our poll through the proxy is not in it
    return ServerSignals(
        user=user, server=name, started=parse_time(server.get("started")),
        hub_last_activity=activity,
        kernels=kernels[0] if isinstance(kernels, tuple) else None,
        gpu=gpu[0] if gpu is not None else None,
        missing=tuple(missing))


def with_user_activity(signals: Mapping[ServerKey, ServerSignals],
                       now: float) -> dict[ServerKey, ServerSignals]:
    """Each server's signals with its user's last interaction: the latest over all their
    servers (a user active on one server has not abandoned the others)."""
    latest: dict[str, float] = {}
    for (user, _), sig in signals.items():
        last = assess(sig, IdleRule(), now).last_interaction
        if last is not None:
            latest[user] = max(latest.get(user, 0.0), last)
    return {key: replace(sig, user_last_activity=latest[key[0]]) if key[0] in latest else sig
            for key, sig in signals.items()}
