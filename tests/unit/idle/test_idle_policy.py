"""The idle policy as tables: signals -> verdict, verdict + warning -> next step, policy documents.

Each row is one situation an admin could describe in a sentence (the ids).  Times are minutes
before ``NOW``; GPU samples are one a minute, as the monitor takes them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pytest

from aispike_hub.idle.policy import (
    Assessment,
    GpuSample,
    GpuSignals,
    IdlePolicy,
    IdlePolicyError,
    IdleRule,
    KernelSignals,
    ServerSignals,
    assess,
    decide,
    describe_seconds,
    parse_duration,
    user_removable,
)

NOW = 1_000_000.0
MIN = 60.0
GIB = 1024
RULE = IdleRule(timeout=60 * MIN, gpu_window=15 * MIN, grace=15 * MIN,
                abandoned_after=24 * 60 * MIN, gpu_busy_percent=5.0, mode="stop")


def ago(minutes: float) -> float:
    return NOW - minutes * MIN


def gpu(util: float | list[float], held_gib: float = 20, minutes: int = 60,
        total_gib: int = 80) -> GpuSignals:
    """One sample a minute for ``minutes``; ``util`` constant or per sample (oldest first)."""
    utils = util if isinstance(util, list) else [util] * minutes
    n = len(utils)
    return GpuSignals(tuple(GpuSample(ago(n - 1 - i), int(held_gib * GIB), u)
                            for i, u in enumerate(utils)), total_gib * GIB)


def kernels(last_min: float | None, executing: int = 0, count: int = 1) -> KernelSignals:
    return KernelSignals(count, executing, None if last_min is None else ago(last_min))


@dataclass(frozen=True)
class Case:
    signals: ServerSignals
    verdict: str
    evidence: str = ""
    """A phrase the evidence must contain."""


def server(**kw: Any) -> ServerSignals:
    base: dict[str, Any] = {"user": "ada", "server": "train", "started": ago(600),
                            "hub_last_activity": ago(1)}
    return ServerSignals(**{**base, **kw})


VERDICTS = {
    # The two cases the plain culler gets wrong.
    "long training without a browser is kept (busy)": Case(
        server(hub_last_activity=ago(600), kernels=kernels(last_min=590, executing=1),
               gpu=gpu(97)), "busy", "1 of 1 kernels executing"),
    "training whose kernel looks idle but whose GPU works is busy": Case(
        server(hub_last_activity=ago(600), kernels=kernels(last_min=590), gpu=gpu(85)),
        "busy", "peak utilisation 85%"),
    "idle kernel holding 20 GiB with an open tab is flagged": Case(
        server(hub_last_activity=ago(1), kernels=kernels(last_min=120), gpu=gpu(0)),
        "idle", "last kernel activity 2 h 00 min ago"),
    # Ordinary cases.
    "user ran a cell 10 minutes ago, GPU quiet: active": Case(
        server(kernels=kernels(last_min=10), gpu=gpu(0)), "active"),
    "user works and the GPU computes: active": Case(
        server(kernels=kernels(last_min=1, executing=1), gpu=gpu(60)), "active"),
    "GPU burst 5 minutes ago within the window counts as computing": Case(
        server(kernels=kernels(last_min=200), gpu=gpu([0.0] * 55 + [40.0] + [0.0] * 4)),
        "busy"),
    "GPU burst 40 minutes ago, outside the window, does not": Case(
        server(kernels=kernels(last_min=200), gpu=gpu([0.0] * 20 + [40.0] + [0.0] * 39)),
        "idle"),
    "utilisation just under the threshold is quiet": Case(
        server(kernels=kernels(last_min=200), gpu=gpu(4.9)), "idle"),
    "no kernel: the hub's last activity decides (recent)": Case(
        server(kernels=kernels(None, count=0), gpu=gpu(0, held_gib=0)), "active"),
    "no kernel and no hub activity for 2 h: idle": Case(
        server(hub_last_activity=ago(120), kernels=kernels(None, count=0),
               gpu=gpu(0, held_gib=0)), "idle", "last hub activity"),
    "kernels not collected: hub activity is used": Case(
        server(hub_last_activity=ago(90), gpu=gpu(0)), "idle", "last hub activity"),
    "no agents configured (no GPU signal): kernels and hub decide": Case(
        server(hub_last_activity=ago(1), kernels=kernels(last_min=90)), "idle"),
    "user away for two days on every server: abandoned": Case(
        server(hub_last_activity=ago(1), kernels=kernels(last_min=2 * 24 * 60), gpu=gpu(0),
               started=ago(3 * 24 * 60), user_last_activity=ago(2 * 24 * 60)),
        "abandoned", "user inactive on every server"),
    "user active on another server today: idle, not abandoned": Case(
        server(kernels=kernels(last_min=2 * 24 * 60), gpu=gpu(0), started=ago(3 * 24 * 60),
               user_last_activity=ago(30)), "idle"),
    # Missing data: never judged idle.
    "agent did not answer: unknown, not idle": Case(
        server(kernels=kernels(last_min=300), gpu=GpuSignals(),
               missing=("agent http://node-3:9400/usage (connection refused)",)),
        "unknown", "no answer from agent http://node-3:9400/usage"),
    "server's kernels did not answer: unknown": Case(
        server(hub_last_activity=ago(300), gpu=gpu(0), missing=("kernels (HTTP 503)",)),
        "unknown"),
    "samples cover only 5 of 15 minutes (after a gap): unknown": Case(
        server(kernels=kernels(last_min=300), gpu=gpu(0, minutes=5)),
        "unknown", "GPU samples cover 4 min of the 15 min window"),
    "missing data does not hide a computing GPU": Case(
        server(kernels=kernels(last_min=300), gpu=gpu(90),
               missing=("kernels (timeout)",)), "busy"),
    "missing data on a recently used server: active (nothing to decide)": Case(
        server(kernels=kernels(last_min=5), missing=("agent x (503)",)), "active"),
}


@pytest.mark.parametrize("case", VERDICTS.values(), ids=VERDICTS.keys())
def test_verdicts(case: Case) -> None:
    a = assess(case.signals, RULE, NOW)
    assert a.verdict == case.verdict, a.evidence
    if case.evidence:
        assert any(case.evidence in e for e in a.evidence), a.evidence


def test_idle_server_reports_what_it_wastes() -> None:
    a = assess(server(hub_last_activity=ago(1), kernels=kernels(last_min=120), gpu=gpu(0)),
               RULE, NOW)
    assert a.verdict == "idle" and a.reclaimable
    assert a.gpu_memory_mib == 20 * GIB and a.gpu_share == pytest.approx(0.25)
    assert a.idle_since == ago(120)
    assert a.wasted_gpu_hours == pytest.approx(0.25 * 2)


def test_busy_and_active_waste_nothing() -> None:
    for signals in (VERDICTS["long training without a browser is kept (busy)"].signals,
                    VERDICTS["user works and the GPU computes: active"].signals):
        a = assess(signals, RULE, NOW)
        assert not a.reclaimable and a.wasted_gpu_hours == 0 and a.idle_since is None


def test_max_age_reclaims_even_a_busy_server() -> None:
    busy = VERDICTS["long training without a browser is kept (busy)"].signals
    a = assess(busy, replace(RULE, max_age=8 * 60 * MIN), NOW)
    assert a.verdict == "busy" and a.over_max_age and a.reclaimable
    assert decide(a, RULE, None, NOW).reason == "max_age"
    assert not assess(busy, RULE, NOW).over_max_age  # max_age 0 = never


# --- decisions ------------------------------------------------------------------------------


def verdict(v: str) -> Assessment:
    return Assessment(v, (), v == "busy", None, None, 0, 0.0, 0.0, 0.0, False)  # type: ignore[arg-type]


DECISIONS = {
    "idle, not warned: warn, stop after grace": ("idle", None, RULE, "warn", NOW + 15 * MIN),
    "idle, warned 5 min ago: wait": ("idle", ago(5), RULE, "wait", ago(5) + 15 * MIN),
    "idle, warned 15 min ago: stop": ("idle", ago(15), RULE, "stop", ago(15) + 15 * MIN),
    "abandoned, warned long ago: stop": ("abandoned", ago(60), RULE, "stop", ago(45)),
    "active again after a warning: cancel": ("active", ago(5), RULE, "cancel", None),
    "busy after a warning: cancel": ("busy", ago(14), RULE, "cancel", None),
    "unknown after a warning: hold, never stop": ("unknown", ago(60), RULE, "hold", ago(45)),
    "unknown, not warned: nothing": ("unknown", None, RULE, "none", None),
    "busy: nothing": ("busy", None, RULE, "none", None),
    "exempt idle server: nothing": ("idle", None, replace(RULE, exempt=True), "none", None),
    "exempt after a warning: cancel": ("idle", ago(5), replace(RULE, exempt=True), "cancel",
                                       None),
    "grace 0: stop at once": ("idle", None, replace(RULE, grace=0), "stop", NOW),
}


@pytest.mark.parametrize("row", DECISIONS.values(), ids=DECISIONS.keys())
def test_decisions(row: tuple[str, float | None, IdleRule, str, float | None]) -> None:
    v, warned_at, rule, action, stop_at = row
    d = decide(verdict(v), rule, warned_at, NOW)
    assert (d.action, d.stop_at) == (action, stop_at), d


# --- policy documents -----------------------------------------------------------------------

POLICY = {
    "defaults": {"timeout": "1h", "mode": "stop"},
    "groups": {
        "course": {"timeout": "30m", "mode": "stop", "max_age": "8h"},
        "research": {"timeout": "4h", "abandoned_after": "3d", "gpu_busy_percent": 2},
        "pilot": {"mode": "dry-run"},
        "staff": {"max_age": 0},
    },
    "users": {"ada": {"exempt": True}, "bob": {"timeout": 600}},
}


@pytest.mark.parametrize(("user", "groups", "expected"), [
    ("zoe", [], {"timeout": 3600, "mode": "stop", "max_age": 0, "exempt": False}),
    ("zoe", ["course"], {"timeout": 1800, "max_age": 8 * 3600}),
    ("zoe", ["course", "research"], {"timeout": 4 * 3600, "abandoned_after": 3 * 86400,
                                     "gpu_busy_percent": 2.0, "max_age": 8 * 3600}),
    ("zoe", ["course", "staff"], {"max_age": 0}),
    ("zoe", ["course", "pilot"], {"mode": "dry-run"}),
    ("ada", ["course"], {"exempt": True, "timeout": 1800}),
    ("bob", ["research"], {"timeout": 600, "abandoned_after": 3 * 86400}),
    ("zoe", ["unknown-group"], {"timeout": 3600}),
], ids=["defaults", "group", "most lenient of two groups", "max_age 0 (never) is most lenient",
        "dry-run is most lenient", "user entry on top of group", "user overrides group",
        "group without an entry"])
def test_rule_resolution(user: str, groups: list[str], expected: dict[str, Any]) -> None:
    rule = IdlePolicy.from_dict(POLICY).rule_for(user, groups)
    assert {k: getattr(rule, k) for k in expected} == expected


def test_safe_defaults() -> None:
    rule = IdlePolicy.from_dict({}).rule_for("anyone")
    assert rule.mode == "dry-run" and rule.max_age == 0 and rule.grace > 0
    assert rule.timeout >= 3600 and rule.gpu_window >= 600


def test_base_rule_is_overridden_by_the_document() -> None:
    base = IdleRule(timeout=7200, mode="warn")
    rule = IdlePolicy.from_dict({"defaults": {"grace": "5m"}}, base).rule_for("x")
    assert (rule.timeout, rule.mode, rule.grace) == (7200, "warn", 300)


def test_policy_round_trips() -> None:
    policy = IdlePolicy.from_dict(POLICY)
    assert IdlePolicy.from_dict(policy.as_dict()) == policy


@pytest.mark.parametrize(("doc", "field"), [
    ({"defaults": {"timeout": "soon"}}, "defaults.timeout"),
    ({"defaults": {"timeout": -5}}, "defaults.timeout"),
    ({"defaults": {"timeout": True}}, "defaults.timeout"),
    ({"groups": {"course": {"mode": "delete"}}}, "groups.course.mode"),
    ({"groups": {"course": {"gpu_busy_percent": 150}}}, "groups.course.gpu_busy_percent"),
    ({"users": {"ada": {"exempt": "yes"}}}, "users.ada.exempt"),
    ({"users": {"ada": {"timeuot": 5}}}, "users.ada.timeuot"),
    ({"users": ["ada"]}, "users"),
    ({"groups": {"course": 5}}, "groups.course"),
    ({"cull": {}}, "cull"),
    ([], "policy"),
])
def test_bad_documents_name_the_field(doc: Any, field: str) -> None:
    with pytest.raises(IdlePolicyError) as e:
        IdlePolicy.from_dict(doc)
    assert e.value.field == field


@pytest.mark.parametrize(("value", "seconds"), [
    (90, 90.0), (1.5, 1.5), ("90", 90.0), ("45s", 45.0), ("30m", 1800.0), ("2h", 7200.0),
    ("1d", 86400.0), (" 1.5h ", 5400.0)])
def test_durations(value: Any, seconds: float) -> None:
    assert parse_duration("x", value) == seconds


def test_describe_seconds() -> None:
    assert [describe_seconds(s) for s in (40, 720, 7500, 3 * 86400 + 7200)] == \
        ["40 s", "12 min", "2 h 05 min", "3 d 2 h"]


@pytest.mark.parametrize(("kw", "removable"), [
    ({"last_activity": ago(120), "servers_running": 0, "admin": False}, True),
    ({"last_activity": ago(30), "servers_running": 0, "admin": False}, False),
    ({"last_activity": ago(120), "servers_running": 1, "admin": False}, False),
    ({"last_activity": ago(120), "servers_running": 0, "admin": True}, False),
    ({"last_activity": ago(120), "servers_running": 0, "admin": True,
      "cull_admin_users": True}, True),
    ({"last_activity": None, "servers_running": 0, "admin": False}, False),
], ids=["inactive user", "recent user", "has a server", "admin kept", "admin culled when asked",
        "never active: kept"])
def test_user_removal(kw: dict[str, Any], removable: bool) -> None:
    assert user_removable(rule=RULE, now=NOW, **kw) is removable
