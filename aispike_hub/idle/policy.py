"""Is a notebook server idle?  Signals in, a verdict with its evidence out (pure: no I/O, no clock).

The plain jupyterhub-idle-culler knows one signal, the hub's last activity, and gets two cases
wrong: a notebook that trains for ten hours without a browser looks idle (no traffic), and one
whose kernel sits on 20 GiB of GPU memory behind an open browser tab never does (the tab polls).
Here a server is judged by what it computes and by what its user does, separately:

- **computing**: a kernel is executing, or the server's GPU utilisation reached
  ``gpu_busy_percent`` at least once in the last ``gpu_window`` seconds;
- **user interaction**: the last activity of its kernels (executions and their output), which an
  open tab does not move; the hub's last activity only when the server has no kernel.

| computing | interaction within ``timeout`` | none anywhere for ``abandoned_after`` | verdict |
|---|---|---|---|
| yes | yes | - | ``active`` |
| yes | no | - | ``busy`` (kept: it computes) |
| no | yes | - | ``active`` |
| no | no | no | ``idle`` (holds its slice without use) |
| no | no | yes | ``abandoned`` |

``unknown`` when the data needed to call a server idle is missing (an agent or the server did
not answer, GPU samples do not yet cover the window): a server is never stopped on missing data.
``max_age`` (as in jupyterhub-idle-culler) reclaims a server by age alone, whatever it does.

What happens next is :func:`decide`: warn the owner, wait ``grace`` seconds, stop; a server that
becomes active or busy in the meantime is let go.  Thresholds come from an :class:`IdlePolicy`
(defaults, per group, per user), resolved for one user into an :class:`IdleRule`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

Verdict = Literal["active", "busy", "idle", "abandoned", "unknown"]
VERDICTS: tuple[Verdict, ...] = ("active", "busy", "idle", "abandoned", "unknown")
RECLAIMABLE: frozenset[str] = frozenset({"idle", "abandoned"})

Mode = Literal["stop", "warn", "dry-run"]
MODES: tuple[Mode, ...] = ("dry-run", "warn", "stop")
"""Most lenient first: a user in several groups gets the most lenient mode of them."""

Action = Literal["none", "warn", "wait", "stop", "cancel", "hold"]


class IdlePolicyError(ValueError):
    """A field of an idle policy document is wrong; ``field`` names it (``groups.gpu.timeout``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# --- policy --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IdleRule:
    """The idle thresholds that apply to one user's servers (times in seconds).

    The defaults are safe: nothing is stopped (``dry-run``) until an admin has read the report
    and chosen ``warn`` or ``stop``; an hour without interaction before a server counts as idle;
    15 minutes of quiet GPU before "not computing" is believed; 15 minutes' warning.
    """

    timeout: float = 3600.0
    """Seconds without user interaction after which a server that does not compute is idle
    (jupyterhub-idle-culler's ``timeout``)."""
    max_age: float = 0.0
    """Reclaim any server older than this, whatever it does; 0 = never (the culler's
    ``max_age``)."""
    grace: float = 900.0
    """Seconds between the owner's warning and the stop."""
    gpu_busy_percent: float = 5.0
    """GPU utilisation at or above this counts as computing."""
    gpu_window: float = 900.0
    """Seconds of GPU samples looked at; a quiet GPU must have been quiet this long."""
    abandoned_after: float = 86400.0
    """A user without interaction on any server this long has abandoned their servers."""
    mode: Mode = "dry-run"
    """``dry-run``: report only; ``warn``: report and warn owners (stopping left to the
    culler's hook or an admin); ``stop``: warn, then stop after ``grace``."""
    exempt: bool = False
    """Never warn or stop (still reported)."""

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


DURATION_FIELDS = ("timeout", "max_age", "grace", "gpu_window", "abandoned_after")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_duration(where: str, value: Any) -> float:
    """Seconds from ``90``, ``"90s"``, ``"30m"``, ``"2h"`` or ``"1d"``."""
    if isinstance(value, bool):
        raise IdlePolicyError(where, f"expected seconds or a duration like '30m', got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    else:
        raise IdlePolicyError(where, f"expected seconds or a duration like '30m', got {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise IdlePolicyError(where, f"must be a duration >= 0, got {value!r}")
    return seconds


def _entry(path: str, doc: Any) -> dict[str, Any]:
    """Validated fields of one policy entry (only those it sets)."""
    if not isinstance(doc, Mapping):
        raise IdlePolicyError(path, "expected an object of idle settings")
    known = {f.name for f in fields(IdleRule)}
    out: dict[str, Any] = {}
    for key, value in doc.items():
        where = f"{path}.{key}"
        if key not in known:
            raise IdlePolicyError(where, f"unknown setting; known: {', '.join(sorted(known))}")
        if key in DURATION_FIELDS:
            out[key] = parse_duration(where, value)
        elif key == "gpu_busy_percent":
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not 0 <= value <= 100:
                raise IdlePolicyError(where, f"expected a percentage 0..100, got {value!r}")
            out[key] = float(value)
        elif key == "mode":
            if value not in MODES:
                raise IdlePolicyError(where, f"expected one of {', '.join(MODES)}, got {value!r}")
            out[key] = value
        else:  # exempt
            if not isinstance(value, bool):
                raise IdlePolicyError(where, f"expected true or false, got {value!r}")
            out[key] = value
    return out


def _most_lenient(key: str, values: list[Any]) -> Any:
    """Of several groups' values, the one that stops the fewest servers."""
    if key == "max_age":
        return 0.0 if 0.0 in values else max(values)
    if key == "gpu_busy_percent":
        return min(values)
    if key == "mode":
        return min(values, key=MODES.index)
    if key == "exempt":
        return any(values)
    return max(values)


@dataclass(frozen=True, slots=True)
class IdlePolicy:
    """Idle thresholds: defaults, then per group (most lenient of the user's groups), then user.

    The document form (``from_dict`` / ``as_dict``)::

        {"defaults": {"timeout": "1h", "mode": "stop"},
         "groups": {"course": {"timeout": "30m"}, "research": {"abandoned_after": "3d"}},
         "users": {"alice": {"exempt": true}}}
    """

    defaults: IdleRule = IdleRule()
    groups: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    users: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, doc: Any, base: IdleRule | None = None) -> IdlePolicy:
        """Validate a policy document; ``base`` supplies defaults the document does not set."""
        if doc is None:
            doc = {}
        if not isinstance(doc, Mapping):
            raise IdlePolicyError("policy", "expected an object with defaults, groups, users")
        for key in doc:
            if key not in ("defaults", "groups", "users"):
                raise IdlePolicyError(key, "unknown section; known: defaults, groups, users")
        defaults = replace(base or IdleRule(), **_entry("defaults", doc.get("defaults") or {}))
        sections: dict[str, dict[str, dict[str, Any]]] = {}
        for section in ("groups", "users"):
            raw = doc.get(section) or {}
            if not isinstance(raw, Mapping):
                raise IdlePolicyError(section, "expected an object of name -> settings")
            sections[section] = {str(name): _entry(f"{section}.{name}", entry)
                                 for name, entry in raw.items()}
        return cls(defaults, sections["groups"], sections["users"])

    def as_dict(self) -> dict[str, Any]:
        return {"defaults": self.defaults.as_dict(),
                "groups": {k: dict(v) for k, v in sorted(self.groups.items())},
                "users": {k: dict(v) for k, v in sorted(self.users.items())}}

    def rule_for(self, user: str, groups: Iterable[str] = ()) -> IdleRule:
        """The thresholds for ``user``: their own entry, else their groups', else defaults."""
        merged: dict[str, Any] = {}
        entries = [self.groups[g] for g in sorted(set(groups)) if g in self.groups]
        for key in {k for e in entries for k in e}:
            merged[key] = _most_lenient(key, [e[key] for e in entries if key in e])
        merged.update(self.users.get(user, {}))
        return replace(self.defaults, **merged)


# --- signals -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GpuSample:
    """One reading of a server's GPU use, summed over its GPUs (utilisation: the highest)."""

    time: float
    memory_used_mib: int
    utilization_percent: float


@dataclass(frozen=True, slots=True)
class GpuSignals:
    """A server's GPU samples, oldest first, without gaps: every poll since the first answered.

    A poll its agent did not answer clears the samples (a gap), so how far back they reach is
    how long the GPU has been watched without interruption.
    """

    samples: tuple[GpuSample, ...] = ()
    memory_total_mib: int = 0
    """Memory of the GPUs the server uses (to express what it holds as a share of GPUs)."""

    def covered_seconds(self, now: float) -> float:
        return now - self.samples[0].time if self.samples else 0.0


@dataclass(frozen=True, slots=True)
class KernelSignals:
    """The server's kernels as jupyter-server reports them."""

    count: int
    executing: int
    last_activity: float | None
    """Latest kernel activity (executions, their output); None when there is no kernel."""


@dataclass(frozen=True, slots=True)
class ServerSignals:
    """Everything known about one server at one time (epoch seconds)."""

    user: str
    server: str
    started: float | None = None
    hub_last_activity: float | None = None
    """The server's last activity as the hub (or the server itself) reports it."""
    kernels: KernelSignals | None = None
    """None: not collected (the hub's last activity is used instead)."""
    gpu: GpuSignals | None = None
    """None: no GPU source covers this server (no agents configured)."""
    user_last_activity: float | None = None
    """The user's last interaction on any of their servers."""
    missing: tuple[str, ...] = ()
    """Sources that should have answered for this server and did not (never act on these)."""


@dataclass(frozen=True, slots=True)
class Assessment:
    """A verdict with its evidence and what the report shows."""

    verdict: Verdict
    evidence: tuple[str, ...]
    computing: bool
    last_interaction: float | None
    idle_since: float | None
    """When the server stopped being used (for idle and abandoned servers)."""
    gpu_memory_mib: int
    """GPU memory the server holds now (latest sample)."""
    gpu_share: float
    """What it holds as a share of GPUs (20 GiB of an 80 GiB GPU = 0.25); 0 when unknown."""
    wasted_gpu_hours: float
    """GPU share times hours held without use (idle and abandoned servers)."""
    age_seconds: float | None
    over_max_age: bool

    @property
    def reclaimable(self) -> bool:
        return self.verdict in RECLAIMABLE or self.over_max_age


def describe_seconds(seconds: float) -> str:
    """``"2 h 05 min"``, ``"12 min"``, ``"40 s"``."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def _mib(mib: int) -> str:
    return f"{mib / 1024:.1f} GiB" if mib >= 1024 else f"{mib} MiB"


def assess(signals: ServerSignals, rule: IdleRule, now: float) -> Assessment:
    """The verdict for one server under ``rule`` at ``now`` (see the module's table)."""
    ev: list[str] = []
    age = now - signals.started if signals.started is not None else None
    over_max_age = bool(rule.max_age and age is not None and age >= rule.max_age)
    if over_max_age and age is not None:
        ev.append(f"running for {describe_seconds(age)}, max_age is "
                  f"{describe_seconds(rule.max_age)}")

    kernels = signals.kernels
    executing = bool(kernels and kernels.executing)
    if kernels is not None:
        ev.append(f"{kernels.executing} of {kernels.count} kernels executing")

    gpu = signals.gpu
    held, share, gpu_active_at, last_busy = 0, 0.0, None, None
    if gpu is not None and gpu.samples:
        latest = gpu.samples[-1]
        held = latest.memory_used_mib
        share = held / gpu.memory_total_mib if gpu.memory_total_mib else 0.0
        busy = [s for s in gpu.samples if s.utilization_percent >= rule.gpu_busy_percent]
        last_busy = busy[-1].time if busy else None
        recent = [s for s in gpu.samples if s.time >= now - rule.gpu_window]
        peak = max((s.utilization_percent for s in recent), default=0.0)
        if last_busy is not None and last_busy >= now - rule.gpu_window:
            gpu_active_at = last_busy
        ev.append(f"GPU: holds {_mib(held)}, peak utilisation {peak:.0f}% in the last "
                  f"{describe_seconds(min(rule.gpu_window, gpu.covered_seconds(now)))} "
                  f"(busy from {rule.gpu_busy_percent:g}%)")
    elif gpu is not None:
        ev.append("GPU: no samples yet")
    computing = executing or gpu_active_at is not None

    last: float | None
    if kernels is not None and kernels.count and kernels.last_activity is not None:
        last, source = kernels.last_activity, "kernel activity"
    elif signals.hub_last_activity is not None:
        last, source = signals.hub_last_activity, "hub activity"
    else:
        last, source = signals.started, "start"
    inactive = now - last if last is not None else None
    if inactive is not None:
        ev.append(f"last {source} {describe_seconds(inactive)} ago "
                  f"(timeout {describe_seconds(rule.timeout)})")
    user_last = max((t for t in (signals.user_last_activity, last) if t is not None), default=None)

    verdict: Verdict
    if computing:
        verdict = "active" if inactive is not None and inactive < rule.timeout else "busy"
    elif inactive is None or inactive < rule.timeout:
        verdict = "active"
    elif signals.missing:
        verdict = "unknown"
        ev.append("no answer from " + "; ".join(signals.missing) + ": not judged")
    elif gpu is not None and gpu.covered_seconds(now) < rule.gpu_window:
        verdict = "unknown"
        ev.append(f"GPU samples cover {describe_seconds(gpu.covered_seconds(now))} of the "
                  f"{describe_seconds(rule.gpu_window)} window: not judged yet")
    elif user_last is not None and now - user_last >= rule.abandoned_after:
        verdict = "abandoned"
        ev.append(f"user inactive on every server for {describe_seconds(now - user_last)} "
                  f"(abandoned after {describe_seconds(rule.abandoned_after)})")
    else:
        verdict = "idle"

    idle_since = None
    wasted = 0.0
    if verdict in RECLAIMABLE:
        idle_since = max(t for t in (last, last_busy, signals.started) if t is not None)
        wasted = share * (now - idle_since) / 3600.0
    return Assessment(verdict, tuple(ev), computing, last, idle_since, held, share, wasted, age,
                      over_max_age)


# --- what to do ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decision:
    """The next step for one server: warn its owner, wait, stop, or let it go."""

    action: Action
    reason: str
    stop_at: float | None = None
    """When the server is (or would be) stopped, once warned."""


def decide(assessment: Assessment, rule: IdleRule, warned_at: float | None,
           now: float) -> Decision:
    """Warn, then stop after ``grace``, only while the server stays reclaimable.

    ``warned_at`` is when its owner was warned (None: not warned).  ``unknown`` after a warning
    holds: nothing is stopped on missing data, and the warning stands until the data is back.
    The mode (dry-run, warn, stop) is applied by the caller; the steps are the same for all.
    """
    if rule.exempt:
        return Decision("cancel" if warned_at is not None else "none", "exempt")
    if not assessment.reclaimable:
        if assessment.verdict == "unknown" and warned_at is not None:
            return Decision("hold", "data missing: not stopped until it is back",
                            warned_at + rule.grace)
        if warned_at is not None:
            return Decision("cancel", f"{assessment.verdict} again")
        return Decision("none", assessment.verdict)
    reason = "max_age" if assessment.over_max_age else assessment.verdict
    if warned_at is None:
        if rule.grace <= 0:
            return Decision("stop", reason, now)
        return Decision("warn", reason, now + rule.grace)
    stop_at = warned_at + rule.grace
    if now >= stop_at:
        return Decision("stop", reason, stop_at)
    return Decision("wait", reason, stop_at)


def user_removable(*, last_activity: float | None, servers_running: int, admin: bool,
                   rule: IdleRule, now: float, cull_admin_users: bool = False) -> bool:
    """jupyterhub-idle-culler's ``cull_users``: remove a user with no running server whose last
    activity is older than ``timeout`` (admins only with ``cull_admin_users``; exempt never)."""
    if servers_running or rule.exempt or (admin and not cull_admin_users):
        return False
    return last_activity is not None and now - last_activity >= rule.timeout
