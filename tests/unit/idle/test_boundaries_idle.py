"""Exact boundaries of the idle rules (issue 26, item 7): each case sits on the threshold.

Idle exactly at the timeout, GPU use exactly at the busy threshold, a sample exactly at the
window's edge, age exactly at max_age, a stop exactly at the end of the grace, abandonment
exactly at ``abandoned_after``.  One tick either side would flip a ``<`` / ``<=`` mutant.
"""

from __future__ import annotations

import pytest

from aispike_hub.idle.policy import (
    GpuSample,
    GpuSignals,
    IdleRule,
    KernelSignals,
    ServerSignals,
    assess,
    decide,
    user_removable,
)

NOW = 1_000_000.0
RULE = IdleRule(timeout=3600.0, grace=600.0, gpu_busy_percent=5.0, gpu_window=900.0,
                abandoned_after=86400.0, max_age=0.0, mode="stop")
GIB = 1024


def signals(last: float, *, util: float | None = None, busy_at: float | None = None,
            started: float = NOW - 200_000, user_last: float | None = None) -> ServerSignals:
    """A server whose kernel was last active at ``last``; GPU samples every 60 s over 2 h at 0 %
    utilisation, with one sample at ``busy_at`` of ``util`` %."""
    gpu = None
    if util is not None:
        times = sorted({NOW - 60 * i for i in range(121)} | ({busy_at} if busy_at else set()))
        gpu = GpuSignals(tuple(GpuSample(t, 20 * GIB, util if t == busy_at else 0.0)
                               for t in times), 80 * GIB)
    return ServerSignals("ada", "", started=started, kernels=KernelSignals(1, 0, last), gpu=gpu,
                         user_last_activity=user_last)


# (case, signals, verdict)
CASES = [
    ("inactive one second short of the timeout", signals(NOW - 3599), "active"),
    ("inactive exactly the timeout", signals(NOW - 3600), "idle"),
    ("GPU exactly at the busy threshold, in the window", signals(NOW - 7200, util=5.0,
                                                                 busy_at=NOW - 60), "busy"),
    ("GPU just under the busy threshold", signals(NOW - 7200, util=4.99, busy_at=NOW - 60),
     "idle"),
    ("busy sample exactly at the window's edge", signals(NOW - 7200, util=50.0,
                                                         busy_at=NOW - 900), "busy"),
    ("busy sample just outside the window", signals(NOW - 7200, util=50.0, busy_at=NOW - 901),
     "idle"),
    ("user inactive exactly abandoned_after", signals(NOW - 86400, user_last=NOW - 86400),
     "abandoned"),
    ("user inactive just under abandoned_after", signals(NOW - 86399, user_last=NOW - 86399),
     "idle"),
]


@pytest.mark.parametrize(("case", "sig", "verdict"), CASES, ids=[c[0] for c in CASES])
def test_verdict_on_the_threshold(case: str, sig: ServerSignals, verdict: str) -> None:
    assert assess(sig, RULE, NOW).verdict == verdict


def test_idle_since_and_wasted_hours_use_the_latest_activity_and_the_held_share() -> None:
    a = assess(signals(NOW - 7200, util=50.0, busy_at=NOW - 5400), RULE, NOW)
    assert a.verdict == "idle" and a.idle_since == NOW - 5400  # the busy sample is later
    assert a.gpu_memory_mib == 20 * GIB and a.gpu_share == pytest.approx(0.25)
    assert a.wasted_gpu_hours == pytest.approx(0.25 * 5400 / 3600)


@pytest.mark.parametrize(("age", "over"), [(7199.0, False), (7200.0, True)])
def test_max_age_exactly(age: float, over: bool) -> None:
    rule = IdleRule(timeout=3600.0, max_age=7200.0, mode="stop")
    a = assess(signals(NOW - 10, started=NOW - age), rule, NOW)
    assert a.over_max_age is over and a.age_seconds == age
    assert (decide(a, rule, None, NOW).reason == "max_age") is over


@pytest.mark.parametrize(("since_warning", "action"), [(599.0, "wait"), (600.0, "stop")])
def test_stop_exactly_at_the_end_of_the_grace(since_warning: float, action: str) -> None:
    a = assess(signals(NOW - 7200), RULE, NOW)
    d = decide(a, RULE, NOW - since_warning, NOW)
    assert (d.action, d.stop_at) == (action, NOW - since_warning + 600.0)


def test_no_grace_stops_at_once_and_a_grace_warns_first() -> None:
    a = assess(signals(NOW - 7200), RULE, NOW)
    assert decide(a, IdleRule(grace=0.0, mode="stop"), None, NOW).action == "stop"
    d = decide(a, RULE, None, NOW)
    assert (d.action, d.stop_at) == ("warn", NOW + 600.0)


@pytest.mark.parametrize(("inactive", "removable"), [(3599.0, False), (3600.0, True)])
def test_user_removal_exactly_at_the_timeout(inactive: float, removable: bool) -> None:
    assert user_removable(last_activity=NOW - inactive, servers_running=0, admin=False,
                          rule=RULE, now=NOW) is removable
