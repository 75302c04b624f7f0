"""benchmarks/product_path.py: the decision-time figures of the DRA benchmarks are read from the
product's Prometheus histogram; these cases pin how they are read (a wrong quantile would
misreport every latency row)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import product_path as pp

TEXT = """\
# HELP aispike_placement_decision_seconds Seconds the placement core took to decide
# TYPE aispike_placement_decision_seconds histogram
aispike_placement_decision_seconds_bucket{caller="admission",le="0.001",outcome="placed"} 4.0
aispike_placement_decision_seconds_bucket{caller="admission",le="0.0025",outcome="placed"} 8.0
aispike_placement_decision_seconds_bucket{caller="admission",le="+Inf",outcome="placed"} 10.0
aispike_placement_decision_seconds_bucket{caller="admission",le="0.001",outcome="unplaced"} 0.0
aispike_placement_decision_seconds_bucket{caller="admission",le="0.0025",outcome="unplaced"} 2.0
aispike_placement_decision_seconds_bucket{caller="admission",le="+Inf",outcome="unplaced"} 2.0
aispike_placement_decision_seconds_bucket{caller="hub",le="0.001",outcome="placed"} 7.0
aispike_placement_decision_seconds_bucket{caller="hub",le="0.0025",outcome="placed"} 7.0
aispike_placement_decision_seconds_bucket{caller="hub",le="+Inf",outcome="placed"} 7.0
aispike_placement_decision_seconds_count{caller="admission",outcome="placed"} 10.0
"""


def test_histogram_adds_both_outcomes_of_one_caller() -> None:
    assert pp.histogram(TEXT, "admission") == [(0.001, 4.0), (0.0025, 10.0),
                                               (math.inf, 12.0)]
    assert pp.histogram(TEXT, "hub") == [(0.001, 7.0), (0.0025, 7.0), (math.inf, 7.0)]
    assert pp.histogram(TEXT, "nobody") == []


def test_quantile_interpolates_inside_its_bucket() -> None:
    buckets = pp.histogram(TEXT, "admission")
    # rank 0.5 * 12 = 6: 4 below 1 ms, the bucket (1, 2.5] ms holds 6 -> 1 + 1.5 * 2/6 = 1.5 ms
    assert math.isclose(pp.quantile(buckets, 0.5), 0.0015)
    # rank 0.25 * 12 = 3 inside the first bucket (0, 1] ms holding 4 -> 0.75 ms
    assert math.isclose(pp.quantile(buckets, 0.25), 0.00075)
    # rank 0.99 * 12 = 11.88 falls in +Inf: the last finite bound is reported
    assert pp.quantile(buckets, 0.99) == 0.0025
    assert math.isnan(pp.quantile([], 0.5))
    assert math.isnan(pp.quantile([(0.001, 0.0), (math.inf, 0.0)], 0.5))


def test_minus_keeps_only_the_observations_between_two_scrapes() -> None:
    before = [(0.001, 1.0), (math.inf, 3.0)]
    after = [(0.001, 4.0), (math.inf, 9.0)]
    assert pp.minus(after, before) == [(0.001, 3.0), (math.inf, 6.0)]
    assert pp.observations(pp.minus(after, before)) == 6
    assert pp.observations([]) == 0


def test_pct_is_the_nearest_rank_from_below() -> None:
    assert pp.pct([5.0, 1.0, 3.0, 2.0], 0.5) == 3.0
    assert pp.pct([5.0, 1.0, 3.0, 2.0], 0.99) == 5.0
    assert math.isnan(pp.pct([], 0.5))


def test_failure_causes_reads_the_hubs_wording_per_user() -> None:
    log = ("[E 2026 JupyterHub base:1218] Failed to add alice to proxy!\n"
           "[W 2026 JupyterHub user:1058] bob's server failed to start in 900 seconds\n")
    assert pp.failure_causes(log, ["alice", "bob", "carol"]) == {
        "the proxy did not take the route": 1, "the hub's start timeout": 1, "other": 1}
    assert pp.failure_causes(log, []) == {}
