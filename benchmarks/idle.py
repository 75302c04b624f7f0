"""Idle reclaim over a synthetic day of notebook sessions: AISpike's policy vs the plain culler.

    python benchmarks/idle.py [--sessions 400] [--seed 7] [--timeouts 30,60,120]

Each session holds a GPU slice (1/4, 1/2 or a whole GPU) from its start until its owner stops
it or the day ends, and goes through phases, minute by minute:

| archetype | share | phases |
|---|---|---|
| leaves the tab open | 30 % | works 1-3 h (pauses up to 40 min) -> kernel idle, tab open |
| closes the tab | 20 % | works 1-2 h -> kernel idle, no tab |
| trains, no browser | 20 % | works 20-40 min -> trains 3-10 h, prints every 20-150 min -> idle |
| trains with the tab open | 10 % | works 30-60 min -> trains 2-6 h (tab open) -> idle, tab open |
| lunch break | 10 % | works 1-2 h -> away 70-120 min, no tab -> works 1-2 h -> stops the server |
| tidy | 10 % | works 1-3 h -> stops the server |

The first four hold their slice until the end of the day once idle.

What each culler sees, per minute: the hub's last activity (moved by an open tab's polling, by
work, and by kernel output, as jupyterhub-singleuser reports it), the kernels' execution state
and last activity, and the GPU's utilisation (bursts while working, ~90 % while training, 0 when
idle), sampled once a minute as the monitor does.

- **plain**: jupyterhub-idle-culler's rule: stop when the hub's last activity is older than the
  timeout (checked every minute).
- **aispike**: :func:`aispike_hub.idle.policy.assess` and :func:`decide` (the same code as the
  service): warn when idle, stop after a 15 min grace, GPU window 15 min, mode stop.

Reported: GPU-hours reclaimed (slice share x hours between the stop and the session's end during
which it would have sat idle), busy servers stopped (stopped while training: work lost), and
users interrupted (stopped while away, came back later: they restart their server).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aispike_hub.idle.policy import (
    GpuSample,
    GpuSignals,
    IdleRule,
    KernelSignals,
    ServerSignals,
    assess,
    decide,
)

DAY = 24 * 60
WORK, TRAIN, IDLE_TAB, IDLE_CLOSED = "work", "train", "idle-tab", "idle-closed"


@dataclass
class Minute:
    phase: str
    hub_activity: bool
    kernel_activity: bool
    executing: bool
    gpu_util: float


@dataclass
class Session:
    user: str
    start: int
    share: float
    minutes: list[Minute] = field(default_factory=list)

    @property
    def end(self) -> int:
        return self.start + len(self.minutes)


def _work(rng: random.Random, n: int) -> list[Minute]:
    """Working: cells most minutes, GPU bursts, with pauses (reading, thinking) up to 40 min."""
    out: list[Minute] = []
    while len(out) < n:
        for _ in range(rng.randint(5, 30)):
            run = rng.random() < 0.5
            out.append(Minute(WORK, True, run, run and rng.random() < 0.3,
                              rng.uniform(30, 95) if run and rng.random() < 0.6 else 0.0))
        pause = rng.choice([0, 0, 5, 10, 20, 40])
        out += [Minute(WORK, True, False, False, 0.0) for _ in range(pause)]
    return out[:n]


def _train(rng: random.Random, n: int, tab: bool) -> list[Minute]:
    every = rng.randint(20, 150)
    return [Minute(TRAIN, tab or i % every == 0, i % every == 0, True, rng.uniform(80, 99))
            for i in range(n)]


def _idle(n: int, tab: bool) -> list[Minute]:
    return [Minute(IDLE_TAB if tab else IDLE_CLOSED, tab, False, False, 0.0) for _ in range(n)]


def synthetic_day(n: int, seed: int) -> list[Session]:
    rng = random.Random(seed)
    kinds = ["tab"] * 30 + ["closed"] * 20 + ["train"] * 20 + ["train-tab"] * 10 \
        + ["lunch"] * 10 + ["tidy"] * 10
    sessions = []
    for i in range(n):
        start = int(rng.uniform(7 * 60, 17 * 60))
        s = Session(f"u{i}", start, rng.choice([0.25, 0.25, 0.5, 1.0]))
        kind = rng.choice(kinds)
        h = 60
        if kind == "tab":
            s.minutes = _work(rng, rng.randint(h, 3 * h))
        elif kind == "closed":
            s.minutes = _work(rng, rng.randint(h, 2 * h))
        elif kind == "train":
            s.minutes = _work(rng, rng.randint(20, 40)) + _train(rng, rng.randint(3 * h, 10 * h),
                                                                  False)
        elif kind == "train-tab":
            s.minutes = _work(rng, rng.randint(30, 60)) + _train(rng, rng.randint(2 * h, 6 * h),
                                                                  True)
        elif kind == "lunch":
            s.minutes = _work(rng, rng.randint(h, 2 * h)) + _idle(rng.randint(70, 120), False) \
                + _work(rng, rng.randint(h, 2 * h))
        else:
            s.minutes = _work(rng, rng.randint(h, 3 * h))
        if kind in ("tab", "closed", "train", "train-tab"):
            tab = kind in ("tab", "train-tab")
            s.minutes += _idle(max(0, DAY - s.end), tab)
        s.minutes = s.minutes[:DAY - start]
        sessions.append(s)
    return sessions


@dataclass
class Outcome:
    reclaimed_gpu_hours: float = 0.0
    busy_stopped: int = 0
    interrupted: int = 0
    stopped: int = 0


def _account(s: Session, stop_at: int, out: Outcome) -> None:
    i = stop_at - s.start
    out.stopped += 1
    if s.minutes[i].phase == TRAIN:
        out.busy_stopped += 1
    rest = s.minutes[i:]
    out.reclaimed_gpu_hours += s.share * sum(1 for m in rest if m.phase in (IDLE_TAB,
                                                                            IDLE_CLOSED)) / 60
    if any(m.phase == WORK for m in rest):
        out.interrupted += 1


def plain_culler(sessions: list[Session], timeout: int) -> Outcome:
    out = Outcome()
    for s in sessions:
        last = s.start
        for i, m in enumerate(s.minutes):
            t = s.start + i
            if m.hub_activity:
                last = t
            if t - last >= timeout:
                _account(s, t, out)
                break
    return out


def aispike_culler(sessions: list[Session], timeout: int, grace: int = 15,
                   window: int = 15) -> Outcome:
    rule = IdleRule(timeout=timeout * 60, grace=grace * 60, gpu_window=window * 60,
                    abandoned_after=DAY * 60, mode="stop")
    out = Outcome()
    for s in sessions:
        hub_last = kernel_last = float(s.start * 60)
        samples: deque[GpuSample] = deque(maxlen=window + 2)
        warned: float | None = None
        for i, m in enumerate(s.minutes):
            now = float((s.start + i) * 60)
            if m.hub_activity:
                hub_last = now
            if m.kernel_activity:
                kernel_last = now
            samples.append(GpuSample(now, 1024, m.gpu_util))
            signals = ServerSignals(
                s.user, "", started=s.start * 60.0, hub_last_activity=hub_last,
                kernels=KernelSignals(1, int(m.executing), kernel_last),
                gpu=GpuSignals(tuple(samples), 4096), user_last_activity=kernel_last)
            d = decide(assess(signals, rule, now), rule, warned, now)
            if d.action == "warn":
                warned = now
            elif d.action == "cancel":
                warned = None
            elif d.action == "stop":
                _account(s, s.start + i, out)
                break
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sessions", type=int, default=400)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--timeouts", default="30,60,120", help="minutes, comma separated")
    args = p.parse_args(argv)
    sessions = synthetic_day(args.sessions, args.seed)
    idle_total = sum(s.share * sum(1 for m in s.minutes if m.phase in (IDLE_TAB, IDLE_CLOSED))
                     for s in sessions) / 60
    held = sum(s.share * len(s.minutes) for s in sessions) / 60
    print(f"{len(sessions)} sessions (seed {args.seed}): {held:.0f} GPU-hours held, "
          f"{idle_total:.0f} of them idle\n")
    print("| timeout | culler | GPU-h reclaimed | of idle | busy stopped | users interrupted "
          "| ratio | time |")
    print("|---|---|---|---|---|---|---|---|")
    ok = True
    for timeout in (int(t) for t in args.timeouts.split(",")):
        started = time.perf_counter()
        plain = plain_culler(sessions, timeout)
        t_plain = time.perf_counter() - started
        started = time.perf_counter()
        ours = aispike_culler(sessions, timeout)
        t_ours = time.perf_counter() - started
        ratio = ours.reclaimed_gpu_hours / plain.reclaimed_gpu_hours \
            if plain.reclaimed_gpu_hours else float("inf")
        for name, o, secs, r in (("plain last-activity", plain, t_plain, ""),
                                 ("aispike", ours, t_ours, f"{ratio:.2f}x")):
            print(f"| {timeout} min | {name} | {o.reclaimed_gpu_hours:.1f} | "
                  f"{o.reclaimed_gpu_hours / idle_total:.0%} | {o.busy_stopped} | "
                  f"{o.interrupted} | {r} | {secs:.1f} s |")
        ok = ok and ratio >= 2 and ours.busy_stopped == 0
    verdict = "met" if ok else "NOT met"
    print(f"\ntarget (>= 2x reclaimed, 0 busy stopped) at every timeout: {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
