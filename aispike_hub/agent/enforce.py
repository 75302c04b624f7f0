"""Slice enforcement by the node agent: a notebook over its GPU-memory slice is warned, then
stopped.

The last layer of isolation (docs/isolation.md).  Each agent tick, for every notebook using a GPU
(NVML's per-process memory, summed per owner and GPU by :mod:`aispike_hub.agent.metrics`), the
enforcer compares its use with its slice:

- the slice of a pod comes from the claims the DRA plugin prepared (``status.reservedFor`` names
  the pods; the user cannot change it); a process without a prepared claim (the local spawner)
  is judged by the slice in its own environment (``CUDA_DEVICE_MEMORY_LIMIT_<i>`` /
  ``AISPIKE_GPU_MEMORY_LIMITS`` with ``NVIDIA_VISIBLE_DEVICES``);
- over = use > slice + ``tolerance_mib`` (CUDA's context is outside every framework's limit);
- the first tick over: a **warning** notice to the user ("free memory within N s or ...");
- still over after ``grace_seconds``: by policy nothing more (``warn``), SIGINT to the notebook's
  GPU processes (``interrupt``: the running cell stops with KeyboardInterrupt, the kernel
  lives), or SIGKILL (``kill``: Jupyter restarts the kernel); after an interrupt that did not help,
  SIGKILL once ``kill_after_seconds`` more have passed (0: never).  Each step is a notice too.
- back within the slice: the episode ends (a notice says so if the user was warned).

The decision (:func:`decide`) is pure: observations, the episodes so far and the time in,
actions out.  :class:`Enforcer` reads the agent's snapshot, runs :func:`decide`, sends the
signals and posts the notices (to the AISpike service, whose notices the lab extension shows).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from traitlets import Enum, Float, Integer, Unicode
from traitlets.config import Configurable

from aispike_hub.agent.metrics import NotebookGpuUse
from aispike_hub.agent.procs import ProcessInfo
from aispike_hub.contract import (
    ENV_GPU_MEMORY_LIMIT,
    ENV_GPU_MEMORY_LIMITS,
    ENV_HAMI_LIMIT_PREFIX,
    ENV_NOTICES_TOKEN,
    ENV_NVIDIA_VISIBLE_DEVICES,
)

log = logging.getLogger(__name__)

NOTICE_KIND = "gpu-memory"
"""``kind`` of the notices enforcement posts (the lab extension shows notices by kind)."""


# ---------------------------------------------------------------------------------------------
# Pure: who is over, and what to do about it
# ---------------------------------------------------------------------------------------------


def limits_from_environ(environ: Mapping[str, str] | None) -> dict[str, int]:
    """GPU UUID -> MiB from a process's environment (the variables the CDI spec sets)."""
    if not environ:
        return {}
    visible = environ.get(ENV_NVIDIA_VISIBLE_DEVICES, "")
    uuids = [u.strip() for u in visible.split(",") if u.strip()]
    uuids = [u for u in uuids if u.startswith(("GPU-", "MIG-"))]  # not "all", not indices
    per_gpu = [v for v in environ.get(ENV_GPU_MEMORY_LIMITS, "").split(",") if v.strip()]
    single = environ.get(ENV_GPU_MEMORY_LIMIT, "")
    out: dict[str, int] = {}
    for i, uuid in enumerate(uuids):
        raw = environ.get(f"{ENV_HAMI_LIMIT_PREFIX}{i}", "").strip().lower()
        mib: int | None = None
        try:
            if raw:
                mib = hami_limit_mib(raw)
            elif i < len(per_gpu):
                mib = int(per_gpu[i])
            elif single:
                mib = int(single)
        except ValueError:
            mib = None
        if mib:
            out[uuid] = mib
    return out


def hami_limit_mib(value: str) -> int:
    """MiB in a HAMi-core limit: ``8192m``, ``8g``, or bytes."""
    v = value.strip().lower()
    if v.endswith("g"):
        return int(v[:-1]) * 1024
    if v.endswith("m"):
        return int(v[:-1])
    return int(v) // 2**20


@dataclass(frozen=True, slots=True)
class Observation:
    """One notebook's use of one GPU, with its slice."""

    key: str
    """Who: ``pod:<uid>`` or ``server:<user>/<server>``."""
    user: str
    server: str
    pod: str
    gpu_uuid: str
    used_mib: int
    limit_mib: int
    pids: tuple[int, ...]


def observations(
    notebooks: Sequence[NotebookGpuUse],
    processes: Mapping[int, ProcessInfo],
    limits_by_pod: Mapping[str, Mapping[str, int]],
) -> list[Observation]:
    """Notebooks with a known slice on the GPU they use (others cannot be judged, and are not)."""
    out = []
    for nb in notebooks:
        o = nb.owner
        limit: int | None = None
        if o.pod_uid:
            key = f"pod:{o.pod_uid}"
            limit = limits_by_pod.get(o.pod_uid, {}).get(nb.gpu_uuid)
        elif o.user:
            key = f"server:{o.user}/{o.server}"
        else:
            continue
        if limit is None:
            for pid in nb.pids:
                info = processes.get(pid)
                limit = limits_from_environ(info.environ if info else None).get(nb.gpu_uuid)
                if limit is not None:
                    break
        if limit is None:
            continue
        out.append(
            Observation(key, o.user, o.server, o.pod, nb.gpu_uuid, nb.memory_used_mib, limit,
                        nb.pids)
        )
    return out


@dataclass(frozen=True, slots=True)
class EnforcementPolicy:
    action: str = "interrupt"
    """``warn``, ``interrupt`` or ``kill``."""
    grace_seconds: float = 60.0
    tolerance_mib: int = 1024
    kill_after_seconds: float = 120.0
    """After an interrupt that did not bring use back, kill this much later; 0: never."""


@dataclass(slots=True)
class Episode:
    """One notebook over its slice on one GPU, from the first tick over until back within."""

    since: float
    warned: bool = False
    interrupted_at: float | None = None
    killed: bool = False


@dataclass(frozen=True, slots=True)
class Action:
    kind: str
    """``warn``, ``interrupt``, ``kill`` or ``resolved``."""
    observation: Observation
    message: str
    pids: tuple[int, ...] = ()


def _gib(mib: int) -> str:
    return f"{mib / 1024:.1f} GiB"


def _who(o: Observation) -> str:
    return f"server '{o.server}'" if o.server else "your server"


def decide(
    seen: Sequence[Observation],
    episodes: dict[tuple[str, str], Episode],
    now: float,
    policy: EnforcementPolicy,
) -> list[Action]:
    """The actions for this tick; updates ``episodes`` (keyed by (who, GPU UUID))."""
    actions: list[Action] = []
    current = set()
    for o in seen:
        k = (o.key, o.gpu_uuid)
        current.add(k)
        over = o.used_mib > o.limit_mib + policy.tolerance_mib
        if not over:
            ep = episodes.pop(k, None)
            if ep is not None and ep.warned and not ep.killed:
                actions.append(Action("resolved", o, (
                    f"{_who(o)} is back within its GPU-memory slice ({_gib(o.used_mib)} of "
                    f"{_gib(o.limit_mib)}).")))
            continue
        ep = episodes.get(k)
        if ep is None:
            ep = episodes[k] = Episode(since=now)
        usage = (f"{_who(o)} uses {_gib(o.used_mib)} of GPU memory, but its slice is "
                 f"{_gib(o.limit_mib)}")
        if not ep.warned:
            ep.warned = True
            then = {
                "warn": "Other notebooks on this GPU may run out of memory.",
                "interrupt": f"Free memory within {policy.grace_seconds:.0f} s (delete tensors, "
                             "torch.cuda.empty_cache()) or the running cell will be interrupted.",
                "kill": f"Free memory within {policy.grace_seconds:.0f} s (delete tensors, "
                        "torch.cuda.empty_cache()) or the kernel will be stopped.",
            }[policy.action]
            actions.append(Action("warn", o, f"{usage}. {then}"))
            continue
        if policy.action == "warn" or ep.killed or now - ep.since < policy.grace_seconds:
            continue
        if policy.action == "interrupt" and ep.interrupted_at is None:
            ep.interrupted_at = now
            actions.append(Action("interrupt", o, (
                f"{usage}, for more than {policy.grace_seconds:.0f} s: the running cell was "
                "interrupted. Free memory or restart the kernel; ask for a bigger slice if you "
                "need one."), o.pids))
            continue
        escalate = policy.action == "kill" or (
            ep.interrupted_at is not None and policy.kill_after_seconds > 0
            and now - ep.interrupted_at >= policy.kill_after_seconds
        )
        if escalate:
            ep.killed = True
            actions.append(Action("kill", o, (
                f"{usage}, for more than {now - ep.since:.0f} s: its kernel was stopped to protect "
                "the other notebooks on this GPU. Restart it; ask for a bigger slice if you need "
                "one."), o.pids))
    for k in list(episodes):
        if k not in current:  # the processes are gone
            del episodes[k]
    return actions


# ---------------------------------------------------------------------------------------------
# I/O: notices and signals
# ---------------------------------------------------------------------------------------------


class NoticeSink(Protocol):
    """Where the user is told (the AISpike service's notices, shown by the lab extension)."""

    def post(self, user: str, server: str, kind: str, message: str) -> None: ...


class LogNotices:
    """Notices into the agent's log only (no service configured)."""

    def post(self, user: str, server: str, kind: str, message: str) -> None:
        log.warning("notice for %s/%s (%s): %s", user, server, kind, message)


@dataclass
class ServiceNotices:
    """Posts notices to the AISpike service: ``POST <url>/api/notices`` with a hub token that has
    the ``custom:aispike:notify`` scope.  Failures are logged; enforcement goes on."""

    url: str
    token: str
    timeout: float = 5.0
    sent: list[dict[str, str]] = field(default_factory=list)

    def post(self, user: str, server: str, kind: str, message: str) -> None:
        doc = {"user": user, "server": server, "kind": kind, "message": message}
        request = urllib.request.Request(
            self.url.rstrip("/") + "/api/notices",
            data=json.dumps(doc).encode(),
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
            self.sent.append(doc)
        except Exception as e:
            log.warning("cannot post a notice for %s to %s: %s (%s)", user, self.url, e, message)


def send_signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass  # gone already
    except PermissionError as e:
        log.error("cannot signal pid %d: %s (the agent needs hostPID and root)", pid, e)


class Enforcer(Configurable):
    """Slice enforcement (settings are ``c.Enforcer.<name>``)."""

    policy = Enum(
        ["off", "warn", "interrupt", "kill"],
        "warn",
        help="""What to do with a notebook over its GPU-memory slice: off (nothing), warn (a
        notice to the user), interrupt (warn, then after grace_seconds SIGINT its GPU processes:
        the running cell stops, the kernel lives; then kill after kill_after_seconds if still
        over), kill (warn, then SIGKILL its GPU processes after grace_seconds).""",
    ).tag(config=True)

    grace_seconds = Float(
        60.0, help="Seconds over the slice between the warning and the interrupt or kill."
    ).tag(config=True)

    kill_after_seconds = Float(
        120.0,
        help="""With policy interrupt: seconds after the interrupt before a kill if still over;
        0: never.""",
    ).tag(config=True)

    tolerance_mib = Integer(
        1024,
        help="""MiB over the slice that are tolerated: the CUDA context is outside every
        framework's limit (518 MiB measured with PyTorch 2.11 on an H200).""",
    ).tag(config=True)

    notices_url = Unicode(
        "",
        help="""The AISpike service's URL (e.g. http://aispike:10101/services/aispike) to post
        notices to; empty: notices only in the agent's log.""",
    ).tag(config=True)

    notices_token = Unicode(
        "",
        help="Hub API token with custom:aispike:notify; default $AISPIKE_NOTICES_TOKEN.",
    ).tag(config=True)

    def __init__(
        self,
        sink: NoticeSink | None = None,
        signal_process: Callable[[int, int], None] = send_signal,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        token = self.notices_token or os.environ.get(ENV_NOTICES_TOKEN, "")
        self.sink: NoticeSink = sink or (
            ServiceNotices(self.notices_url, token) if self.notices_url else LogNotices()
        )
        self.signal_process = signal_process
        self.episodes: dict[tuple[str, str], Episode] = {}

    def rules(self) -> EnforcementPolicy:
        return EnforcementPolicy(
            self.policy, self.grace_seconds, self.tolerance_mib, self.kill_after_seconds
        )

    def tick(
        self,
        notebooks: Sequence[NotebookGpuUse],
        processes: Mapping[int, ProcessInfo],
        limits_by_pod: Mapping[str, Mapping[str, int]],
        now: float,
    ) -> list[Action]:
        """Judge one snapshot; signal and notify; the actions taken."""
        if self.policy == "off":
            return []
        actions = decide(observations(notebooks, processes, limits_by_pod), self.episodes, now,
                         self.rules())
        for a in actions:
            signum = {"interrupt": signal.SIGINT, "kill": signal.SIGKILL}.get(a.kind)
            if signum is not None:
                for pid in a.pids:
                    self.signal_process(pid, signum)
            log.warning(
                "%s %s on %s: %s MiB used, slice %s MiB (pids %s)",
                a.kind, a.observation.key, a.observation.gpu_uuid, a.observation.used_mib,
                a.observation.limit_mib, ",".join(map(str, a.pids or a.observation.pids)),
            )
            self.sink.post(a.observation.user, a.observation.server, NOTICE_KIND, a.message)
        return actions
