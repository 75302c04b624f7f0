"""What mutation testing of the idle policy found untested (issue 26, item 7), one case each.

`mutmut run "aispike_hub.idle.policy*"` left these one-line changes alive after
`test_boundaries_idle.py`: a kernel that is executing no longer counted as computing, the latest
GPU sample replaced by an earlier one, the GPU window's edge for the peak, a server with no GPU
holding memory, a GPU of unknown size dividing by zero, the `busy` boundary of a computing
server, samples covering exactly the window judged as "not yet", and the reasons `decide` gives
(callers show them and count them in metrics).  docs/testing.md lists what is left and why.
"""

from __future__ import annotations

import pytest

from aispike_hub.idle.policy import (
    GpuSample,
    GpuSignals,
    IdlePolicy,
    IdlePolicyError,
    IdleRule,
    KernelSignals,
    ServerSignals,
    assess,
    decide,
)

NOW = 1_000_000.0
RULE = IdleRule(timeout=3600.0, grace=600.0, gpu_busy_percent=5.0, gpu_window=900.0,
                abandoned_after=86400.0, max_age=0.0, mode="stop")
GIB = 1024


def server(*, last: float = NOW - 7200, executing: int = 0, gpu: GpuSignals | None = None,
           started: float | None = NOW - 200_000, user_last: float | None = None
           ) -> ServerSignals:
    return ServerSignals("ada", "", started=started, kernels=KernelSignals(1, executing, last),
                         gpu=gpu, user_last_activity=user_last)


def samples(times: list[float], mib: int = 20 * GIB, util: float = 0.0,
            total: int = 80 * GIB, **special: tuple[int, float]) -> GpuSignals:
    """GPU samples at ``times``; ``special`` maps ``"t<seconds before NOW>"`` to (MiB, %)."""
    out = []
    for t in times:
        m, u = special.get(f"t{int(NOW - t)}", (mib, util))
        out.append(GpuSample(t, m, u))
    return GpuSignals(tuple(out), total)


EVERY_MINUTE_2H = [NOW - 60 * i for i in range(120, -1, -1)]


def test_an_executing_kernel_is_computing_even_long_after_its_last_activity() -> None:
    busy = assess(server(executing=1), RULE, NOW)
    assert (busy.verdict, busy.computing) == ("busy", True)
    quiet = assess(server(executing=0), RULE, NOW)
    assert (quiet.verdict, quiet.computing) == ("idle", False)


def test_computing_and_inactive_exactly_the_timeout_is_busy_not_active() -> None:
    assert assess(server(last=NOW - 3600, executing=1), RULE, NOW).verdict == "busy"
    assert assess(server(last=NOW - 3599, executing=1), RULE, NOW).verdict == "active"


def test_without_a_gpu_nothing_is_held() -> None:
    a = assess(server(), RULE, NOW)
    assert (a.gpu_memory_mib, a.gpu_share, a.wasted_gpu_hours) == (0, 0.0, 0.0)
    assert not any(e.startswith("GPU") for e in a.evidence)


def test_a_gpu_without_samples_says_so_and_holds_nothing() -> None:
    a = assess(server(gpu=GpuSignals((), 80 * GIB)), RULE, NOW)
    assert "GPU: no samples yet" in a.evidence
    assert (a.gpu_memory_mib, a.gpu_share) == (0, 0.0)


def test_the_memory_held_is_the_latest_samples() -> None:
    gpu = samples(EVERY_MINUTE_2H, mib=10 * GIB, t0=(30 * GIB, 0.0))
    a = assess(server(gpu=gpu), RULE, NOW)
    assert a.gpu_memory_mib == 30 * GIB and a.gpu_share == pytest.approx(30 / 80)
    assert "GPU: holds 30.0 GiB" in a.evidence[-2]


def test_a_gpu_of_unknown_size_holds_no_share_and_does_not_fail() -> None:
    a = assess(server(gpu=samples(EVERY_MINUTE_2H, total=0)), RULE, NOW)
    assert a.verdict == "idle" and a.gpu_share == 0.0 and a.wasted_gpu_hours == 0.0


@pytest.mark.parametrize(("edge", "peak"), [(900, "3%"), (901, "0%")])
def test_the_peak_counts_a_sample_exactly_at_the_windows_edge(edge: int, peak: str) -> None:
    times = sorted(set(EVERY_MINUTE_2H) | {NOW - edge})
    gpu = samples(times, **{f"t{edge}": (20 * GIB, 3.0)})
    (line,) = [e for e in assess(server(gpu=gpu), RULE, NOW).evidence if e.startswith("GPU")]
    assert f"peak utilisation {peak} in the last 15 min" in line


def test_no_sample_in_the_window_peaks_at_zero() -> None:
    gpu = samples([NOW - 60 * i for i in range(120, 16, -1)], util=4.0)
    (line,) = [e for e in assess(server(gpu=gpu), RULE, NOW).evidence if e.startswith("GPU")]
    assert "peak utilisation 0% in the last 15 min" in line


def test_samples_covering_exactly_the_window_are_judged() -> None:
    exactly = samples([NOW - 900 + 60 * i for i in range(16)])
    assert assess(server(gpu=exactly), RULE, NOW).verdict == "idle"
    short = samples([NOW - 899 + 60 * i for i in range(15)])
    assert assess(server(gpu=short), RULE, NOW).verdict == "unknown"


def test_max_age_evidence_only_when_over_it() -> None:
    rule = IdleRule(timeout=3600.0, max_age=7200.0, mode="stop")
    young = assess(server(last=NOW - 10, started=NOW - 100), rule, NOW)
    assert not any(e.startswith("running for") for e in young.evidence)
    old = assess(server(last=NOW - 10, started=NOW - 7200), rule, NOW)
    assert "running for 2 h 00 min, max_age is 2 h 00 min" in old.evidence
    unknown_start = assess(server(last=NOW - 10, started=None), rule, NOW)
    assert unknown_start.over_max_age is False and unknown_start.age_seconds is None


def test_abandoned_evidence_says_how_long_the_user_was_away() -> None:
    a = assess(server(last=NOW - 3 * 86400, user_last=NOW - 3 * 86400), RULE, NOW)
    assert a.verdict == "abandoned"
    assert "user inactive on every server for 3 d 0 h (abandoned after 24 h 00 min)" \
        in a.evidence


# -- decide's reasons (the monitor logs, notifies and counts them by reason) ------------------

IDLE = assess(server(), RULE, NOW)
ACTIVE = assess(server(last=NOW - 10), RULE, NOW)
UNKNOWN = assess(ServerSignals("ada", "", started=NOW - 200_000, missing=("agent",)), RULE,
                 NOW)

DECISIONS = [
    ("exempt, not warned", IDLE, IdleRule(exempt=True), None, ("none", "exempt", None)),
    ("exempt, warned: the warning is withdrawn", IDLE, IdleRule(exempt=True), NOW - 5,
     ("cancel", "exempt", None)),
    ("data missing after a warning: held", UNKNOWN, RULE, NOW - 100,
     ("hold", "data missing: not stopped until it is back", NOW + 500)),
    ("active again after a warning: withdrawn", ACTIVE, RULE, NOW - 100,
     ("cancel", "active again", None)),
    ("active, not warned: nothing", ACTIVE, RULE, None, ("none", "active", None)),
    ("idle, not warned: warned with the grace", IDLE, RULE, None, ("warn", "idle", NOW + 600)),
    ("idle, a grace of one second still warns first", IDLE, IdleRule(grace=1.0, mode="stop"),
     None, ("warn", "idle", NOW + 1)),
    ("idle, no grace: stopped at once", IDLE, IdleRule(grace=0.0, mode="stop"), None,
     ("stop", "idle", NOW)),
    ("idle, warned, grace over: stopped", IDLE, RULE, NOW - 600, ("stop", "idle", NOW)),
    ("idle, warned, within the grace: waits", IDLE, RULE, NOW - 100,
     ("wait", "idle", NOW + 500)),
]


@pytest.mark.parametrize(("case", "assessment", "rule", "warned_at", "expected"), DECISIONS,
                         ids=[c[0] for c in DECISIONS])
def test_decisions_and_their_reasons(case: str, assessment: object, rule: IdleRule,
                                     warned_at: float | None,
                                     expected: tuple[str, str, float | None]) -> None:
    d = decide(assessment, rule, warned_at, NOW)  # type: ignore[arg-type]
    assert (d.action, d.reason, d.stop_at) == expected, case


# -- the policy document: groups combined, values on their bounds, errors that say what -------

def test_several_groups_combine_to_what_stops_fewest_servers() -> None:
    policy = IdlePolicy.from_dict({"groups": {
        "a": {"gpu_busy_percent": 2, "mode": "stop", "exempt": False, "timeout": "1h",
              "max_age": "2h"},
        "b": {"gpu_busy_percent": 10, "mode": "warn", "exempt": True, "timeout": "2h",
              "max_age": 0}}})
    rule = policy.rule_for("ada", ["a", "b"])
    assert rule.gpu_busy_percent == 2.0  # the lower threshold finds more GPUs busy
    assert rule.mode == "warn"  # warn stops fewer than stop (alphabetically it would be stop)
    assert rule.exempt is True
    assert rule.timeout == 7200.0 and rule.max_age == 0.0  # 0 = never


@pytest.mark.parametrize(("value", "ok"), [(0, True), (100, True), (100.5, False), (-0.1, False),
                                           (True, False), ("5", False)])
def test_gpu_busy_percent_bounds(value: object, ok: bool) -> None:
    doc = {"defaults": {"gpu_busy_percent": value}}
    if ok:
        assert IdlePolicy.from_dict(doc).defaults.gpu_busy_percent == value
    else:
        with pytest.raises(IdlePolicyError, match=r"expected a percentage 0\.\.100"):
            IdlePolicy.from_dict(doc)


BAD_POLICIES = [
    ([1], "policy", "expected an object with defaults, groups, users"),
    ({"limits": {}}, "limits", "unknown section; known: defaults, groups, users"),
    ({"groups": [1]}, "groups", "expected an object of name -> settings"),
    ({"users": {"ada": 5}}, "users.ada", "expected an object of idle settings"),
    ({"defaults": {"nap": 1}}, "defaults.nap", "unknown setting; known: abandoned_after, "
                                               "exempt, gpu_busy_percent"),
    ({"defaults": {"mode": "cull"}}, "defaults.mode", "expected one of dry-run, warn, stop"),
    ({"defaults": {"exempt": "yes"}}, "defaults.exempt", "expected true or false"),
    ({"defaults": {"timeout": True}}, "defaults.timeout", "expected seconds or a duration"),
    ({"defaults": {"timeout": "soon"}}, "defaults.timeout", "expected seconds or a duration"),
    ({"defaults": {"timeout": -1}}, "defaults.timeout", "must be a duration >= 0"),
]


@pytest.mark.parametrize(("doc", "where", "says"), BAD_POLICIES, ids=[b[1] for b in BAD_POLICIES])
def test_a_bad_policy_names_the_field_and_what_it_expects(doc: object, where: str,
                                                          says: str) -> None:
    with pytest.raises(IdlePolicyError) as e:
        IdlePolicy.from_dict(doc)
    assert str(e.value).startswith(where) and says in str(e.value), str(e.value)


def test_no_document_is_the_defaults() -> None:
    assert IdlePolicy.from_dict(None) == IdlePolicy()


@pytest.mark.parametrize(("seconds", "text"), [
    (-5, "0 s"), (0.9, "0 s"), (59, "59 s"), (60, "1 min"), (3599, "59 min"),
    (3600, "1 h 00 min"), (48 * 3600 - 1, "47 h 59 min"), (48 * 3600, "2 d 0 h"),
    (3 * 86400 + 7200, "3 d 2 h")])
def test_durations_read_as_an_admin_writes_them(seconds: float, text: str) -> None:
    from aispike_hub.idle.policy import describe_seconds

    assert describe_seconds(seconds) == text


@pytest.mark.parametrize(("mib", "text"), [(1023, "1023 MiB"), (1024, "1.0 GiB"),
                                           (100 * 1024, "100.0 GiB")])
def test_memory_reads_in_gib_from_one_gib(mib: int, text: str) -> None:
    from aispike_hub.idle.policy import _mib

    assert _mib(mib) == text


def test_missing_sources_are_named_in_the_evidence() -> None:
    a = assess(ServerSignals("ada", "", started=NOW - 200_000, missing=("agent", "kernels")),
               RULE, NOW)
    assert a.verdict == "unknown"
    assert "no answer from agent; kernels: not judged" in a.evidence
    assert "last start 2 d 7 h ago (timeout 1 h 00 min)" in a.evidence
