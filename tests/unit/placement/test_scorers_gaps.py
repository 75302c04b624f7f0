"""The scorers' rules the first mutation round left unchecked (issue 26 item 7; docs/testing.md,
``scorers.py``): CPU balance's rho at its edges, the scarce-host term with two rare servers, the
slice-value term on one option and on GPUs of two sizes, the fragmentation scorer's measure,
packing's rounding and tier-2 floor, the scorers' defaults, one scorer on two clusters, and a
cached item of one byte.

One rule per test; every expected number is worked out by hand in the test's comment.
"""

from __future__ import annotations

import numpy as np
import pytest
from placement_clusters import GIB, make_node
from test_scorers_findings import context as findings_context

from aispike_hub.model import Assignment, SliceRequest
from aispike_hub.placement.filter import find_options
from aispike_hub.placement.fragmentation import Workload
from aispike_hub.placement.scorers import (
    BestFitScorer,
    CpuBalanceScorer,
    DotProductScorer,
    FragmentationScorer,
    GpuFitScorer,
    GpuPackingScorer,
    LocalityScorer,
    ScarceHostScorer,
    ScoringContext,
    SliceValueScorer,
)
from aispike_hub.placement.state import ClusterState


def context(state: ClusterState, request: SliceRequest) -> ScoringContext:
    return ScoringContext(state, request, find_options(state, request), np.random.default_rng(0))


# -- CpuBalanceScorer: rho ------------------------------------------------------------------


def test_cpu_balance_is_off_for_a_mix_without_gpu_types() -> None:
    """Rule: a mix of CPU-only servers has no CPU per GPU of demand: rho is 0 (not a division
    by zero, not a default) and the term scores every option 0.  On a node with 2 idle GPUs and
    8 CPUs, a 20 GiB slice taking all 8 CPUs would score, with a rho > 0,
    max(0, 2 - 8000 / rho) - max(0, 2 - 0.25 - 0 / rho): -1.75 for a fallback rho of 1; with
    rho 0 it is 0 (and dividing by rho 0 would give nan)."""
    workload = Workload.from_requests([SliceRequest(gpu_count=0, cpu_milli=50_000)] * 3
                                      + [SliceRequest(gpu_count=0, cpu_milli=2000)])
    scorer = CpuBalanceScorer(workload)
    state = ClusterState([make_node("a", gpus=2, cpu=8000)])
    ctx = context(state, SliceRequest(gpu_memory_mib=20 * GIB, cpu_milli=8000))
    assert scorer.rho(state) == 0.0
    assert scorer.score(ctx).tolist() == [0.0]


def test_cpu_balance_counts_a_slice_larger_than_the_typical_gpu_as_one_gpu() -> None:
    """Rule: a memory slice is priced on the cluster's typical GPU, at most one GPU.  Three
    nodes of one 40 GiB GPU and one of an 80 GiB GPU: the typical GPU is the median, 40 GiB.
    A mix of 60 GiB slices with 6 CPUs: 60/40 = 1.5, capped at 1 GPU, so rho = 6000 / 1 = 6000
    (uncapped it would be 6000 / 1.5 = 4000)."""
    state = ClusterState([make_node(f"s{i}", gpus=1, gib=40) for i in range(3)]
                         + [make_node("l", gpus=1, gib=80)])
    workload = Workload.from_requests([SliceRequest(gpu_memory_mib=60 * GIB, cpu_milli=6000)])
    assert CpuBalanceScorer(workload).rho(state) == 6000.0


def test_cpu_balance_takes_the_typical_gpu_from_one_gpu_nodes_not_cpu_nodes() -> None:
    """Rule: the typical GPU is the median GPU size of the nodes that have GPUs, one GPU each
    included, CPU-only nodes left out.  One node of one 80 GiB GPU and two CPU-only nodes: the
    typical GPU is 80 GiB, and a mix of 20 GiB slices with 2 CPUs has rho = 2000 / (20/80) =
    8000.  (Counting the CPU-only nodes, or only nodes of two GPUs or more, would price the
    slice on a 1 MiB "GPU": one whole GPU, rho 2000.)"""
    state = ClusterState([make_node("g", gpus=1, gib=80), make_node("c0", gpus=0),
                          make_node("c1", gpus=0)])
    workload = Workload.from_requests([SliceRequest(gpu_memory_mib=20 * GIB, cpu_milli=2000)])
    assert CpuBalanceScorer(workload).rho(state) == 8000.0


# -- ScarceHostScorer with two scarce server types --------------------------------------------

EIGHT = SliceRequest(gpu_count=8, cpu_milli=120_000)
FOUR = SliceRequest(gpu_count=4, cpu_milli=100_000)
# Both are scarce: of twelve GPU nodes only "big" (128 CPUs) has the CPUs, 1 < 10 % of 12.
# FOUR is the more frequent type (2 of 303 against 1), so it is the first scarce type.
TWO_RARE = Workload.from_requests(
    [SliceRequest(gpu_memory_mib=40 * GIB, cpu_milli=11_000)] * 300 + [FOUR, FOUR, EIGHT])


def two_rare_context(request: SliceRequest) -> ScoringContext:
    """Eleven 96-CPU nodes and "big" (128 CPUs, row 11), eight idle 80 GiB GPUs each."""
    nodes = [make_node(f"n{i}", gpus=8, cpu=96_000) for i in range(11)]
    nodes.append(make_node("big", gpus=8, cpu=128_000))
    return context(ClusterState(nodes), request)


def test_scarce_host_with_two_rare_servers_counts_each() -> None:
    """Rule: the term is minus the number of scarce server types a node could host right now:
    "big" (8 idle GPUs, 128 CPUs free) could host both the 4-GPU, 100-CPU and the 8-GPU,
    120-CPU server, so a 40 GiB slice there scores -1 - 1 = -2; the 96-CPU nodes host neither,
    0."""
    ctx = two_rare_context(SliceRequest(gpu_memory_mib=40 * GIB, cpu_milli=11_000))
    assert ScarceHostScorer(TWO_RARE).scarce(ctx.state) == [FOUR, EIGHT]
    out = ScarceHostScorer(TWO_RARE).score(ctx)
    big = ctx.options.node == 11
    assert big.any() and out[big].tolist() == [-2.0] * int(big.sum())
    assert not out[~big].any()


def test_scarce_host_lets_a_request_pass_only_the_servers_it_is_as_big_as() -> None:
    """Rule: a request as big in GPUs and CPU as one scarce server is not held back by that one,
    but still by a bigger one: a 4-GPU, 100-CPU request (the first scarce type itself) on
    "big" scores 0 for itself and -1 for the 8-GPU, 120-CPU server = -1 (skipping the rest of
    the list after the first match would say 0).  Only "big" has 100 CPUs for it."""
    ctx = two_rare_context(FOUR)
    assert ctx.options.node.tolist() == [11]
    assert ScarceHostScorer(TWO_RARE).score(ctx).tolist() == [-1.0]


# -- SliceValueScorer -------------------------------------------------------------------------
# The mix: 30 GiB slices only.  On an 80 GiB GPU the grid unit is gcd(80, 30) = 10 GiB, 8
# units; a 30 GiB slice is 3 units, two fit a GPU, so its price is 1/2 GPU, and free space of f
# units is worth V(f) = floor(f / 3) / 2: V(0..2) = 0, V(3..5) = 0.5, V(6..8) = 1.  On a 40 GiB
# GPU the unit is gcd(40, 30) = 10 GiB, 4 units; one 30 GiB slice fills it: price 1, V(0..2) =
# 0, V(3..4) = 1.  A 20 GiB slice (2 units) is a size the mix never asks for: its price is what
# it displaces, V(2) = 0 on both.  loss(f, s) = V(f) - price(s) - V(f - s).
THIRTIES = Workload.from_requests([SliceRequest(gpu_memory_mib=30 * GIB, cpu_milli=1000)])
TWENTY = SliceRequest(gpu_memory_mib=20 * GIB, cpu_milli=1000)


def test_slice_value_of_one_option() -> None:
    """Rule: a single option is scored like any other.  One 80 GiB GPU with 40 GiB in use (4
    units free): a 20 GiB slice there leaves 2 units, room for no 30 GiB slice where there was
    room for one: loss V(4) - 0 - V(2) = 0.5 - 0 - 0 = 0.5, a score of -0.5 (not 0)."""
    state = ClusterState([make_node("a", gpus=1, gib=80)])
    state.commit(Assignment("a", (0,), (40 * GIB,)))
    ctx = context(state, TWENTY)
    assert len(ctx.options) == 1
    assert SliceValueScorer(THIRTIES).score(ctx).tolist() == [-0.5]


def test_slice_value_prices_each_option_on_its_own_gpu_size() -> None:
    """Rule: each option's loss comes from the table of its own GPU's memory size.  Node "s"
    has an idle 40 GiB GPU, node "l" an idle 80 GiB GPU.  A 20 GiB slice on the 40 GiB GPU
    leaves 2 of 4 units: V(4) - 0 - V(2) = 1 - 0 - 0 = 1 (no 30 GiB slice fits any more); on the
    80 GiB GPU it leaves 6 of 8: V(8) - 0 - V(6) = 1 - 0 - 1 = 0.  Scores -1 and 0."""
    state = ClusterState([make_node("s", gpus=1, gib=40), make_node("l", gpus=1, gib=80)])
    ctx = context(state, TWENTY)
    assert ctx.options.node.tolist() == [0, 1]
    assert SliceValueScorer(THIRTIES).score(ctx).tolist() == [-1.0, 0.0]


# -- FragmentationScorer ----------------------------------------------------------------------


def test_fragmentation_scorer_builds_its_model_with_its_measure() -> None:
    """Rule: ``measure`` reaches the fragmentation model (``capacity`` is not silently FGD)."""
    state = ClusterState([make_node("a", gpus=2)])
    scorer = FragmentationScorer(THIRTIES, measure="capacity")
    assert scorer.model_for(state).measure == "capacity"
    assert FragmentationScorer(THIRTIES).model_for(state).measure == "fgd"


@pytest.mark.parametrize("faithful", [False, True])
def test_fragmentation_scorer_model_is_rebuilt_for_another_state(faithful: bool) -> None:
    """Rule: the cached model belongs to one state; another state gets its own."""
    one, two = ClusterState([make_node("a", gpus=1)]), ClusterState([make_node("b", gpus=1)])
    scorer = FragmentationScorer(THIRTIES, faithful=faithful)
    assert scorer.model_for(one).state is one
    assert scorer.model_for(two).state is two


# -- defaults, built inside the test (mutmut maps a test to the code its body runs) ------------


def test_scorer_defaults_bestfit_exact_dotprod_faithful_gpu_fit_best() -> None:
    """Rule: ``BestFitScorer()`` gives the exact score, ``DotProductScorer()`` the published
    (floored) one, ``GpuFitScorer()`` packs (best fit).  On test_scorers_findings' cluster
    (the arithmetic is there): bestfit 28.125, 28.125, 37.5 (faithful would be 0, 0, 100);
    dotprod 92, 90, 90 (exact: 92.578125, 90.625, 90.625); GPU fit minus the GiB left: -10,
    -60, -60 (worst fit: +10, +60, +60)."""
    ctx = findings_context()
    assert BestFitScorer().score(ctx).tolist() == [28.125, 28.125, 37.5]
    assert DotProductScorer().score(ctx).tolist() == [92.0, 90.0, 90.0]
    assert GpuFitScorer().score(ctx).tolist() == [-10.0 * GIB, -60.0 * GIB, -60.0 * GIB]



def test_gpu_worst_fit_is_plus_the_memory_left() -> None:
    """Rule: worst fit scores plus the MiB a slice leaves on its GPU (no other scale): on
    test_scorers_findings' cluster 10, 60 and 60 GiB."""
    assert GpuFitScorer(best=False).score(findings_context()).tolist() == [
        10.0 * GIB, 60.0 * GIB, 60.0 * GIB]

# -- GpuPackingScorer: the percentage's rounding and tier 2's floor ------------------------------
# Tier 1 (a slice on a shared GPU) is 100 - pct // 10 with pct = free * 100 // capacity, both
# floored.  (pct = free * 100 / capacity unfloored gives the same tier: floor(floor(x) / 10) =
# floor(x / 10) for x >= 0, and x = 100 f / c is at least 1 / c away from the next multiple of 10
# when not one, far more than a float's rounding error: an equivalent mutant.)


@pytest.mark.parametrize(("used_mib", "expected"), [
    # 80 GiB = 81920 MiB; 24412 free: 100 * 24412 / 81920 = 29.8 -> pct 29 -> 100 - 2 = 98
    # (rounding 29.8 up to 30, or counting 101 % of it, 30.09, would say 97)
    (81920 - 24412, 98.0),
    # 40960 free: pct 50 -> 100 - 50 // 10 = 95 (dividing by 11 would say 100 - 4 = 96)
    (40960, 95.0),
])
def test_packing_tier_one_floors_the_free_percentage_then_its_tens(used_mib: int,
                                                                   expected: float) -> None:
    """Rule: a shared GPU's tier-1 score drops one point per whole ten per cent of it free,
    counting only whole per cents."""
    state = ClusterState([make_node("a", gpus=1, gib=80)])
    state.commit(Assignment("a", (0,), (used_mib,)))
    ctx = context(state, TWENTY)
    assert GpuPackingScorer().score(ctx).tolist() == [expected]


def test_packing_tier_two_never_drops_below_33() -> None:
    """Rule: idle GPUs on a used node score 50 - GPUs asked, but at least 33 (the top of the
    idle-node tier): a 20-GPU request on a used 24-GPU node scores max(50 - 20, 100 // 3) = 33
    (not 33.33, not 30)."""
    state = ClusterState([make_node("a", gpus=24)])
    state.commit(Assignment("a", (0,), (GIB,)))
    ctx = context(state, SliceRequest(gpu_count=20, cpu_milli=1000))
    assert len(ctx.options) == 1
    assert GpuPackingScorer().score(ctx).tolist() == [33.0]


# -- one scorer, two clusters ---------------------------------------------------------------------


def test_cpu_balance_prices_rho_again_on_another_cluster() -> None:
    """Rule: rho belongs to a cluster: the same scorer on another cluster uses that cluster's
    typical GPU.  20 GiB slices with 2 CPUs: on 80 GiB GPUs rho = 2000 / (20/80) = 8000; on
    40 GiB GPUs 2000 / (20/40) = 4000."""
    scorer = CpuBalanceScorer(Workload.from_requests(
        [SliceRequest(gpu_memory_mib=20 * GIB, cpu_milli=2000)]))
    big = ClusterState([make_node("a", gpus=2, gib=80)])
    small = ClusterState([make_node("b", gpus=2, gib=40)])
    assert scorer.rho(big) == 8000.0
    assert scorer.rho(small) == 4000.0
    assert scorer.rho(big) == 8000.0


def test_scarce_host_finds_the_scarce_types_again_on_another_cluster() -> None:
    """Rule: which server types are scarce depends on the cluster: the 8-GPU, 120-CPU server is
    scarce among eleven 96-CPU nodes and one 128-CPU node (1 host of 12 < 10 %), not on twelve
    128-CPU nodes (12 of 12), even for a scorer that has seen the first cluster."""
    scorer = ScarceHostScorer(TWO_RARE)
    mixed = two_rare_context(FOUR).state
    roomy = ClusterState([make_node(f"b{i}", gpus=8, cpu=128_000) for i in range(12)])
    assert scorer.scarce(mixed) == [FOUR, EIGHT]
    assert scorer.scarce(roomy) == []


# -- CpuBalanceScorer: any rho above 0 counts ---------------------------------------------------


def test_cpu_balance_scores_with_a_rho_below_one_milli() -> None:
    """Rule: the term is off only for rho 0; a mix asking 1 milli-CPU per two GPUs has rho =
    1 / 2 = 0.5 and still scores.  A 20 GiB slice taking all of a node's 1000 milli-CPUs (2
    idle GPUs): before max(0, 2 - 1000 / 0.5) = 0, after max(0, 2 - 0.25 - 0 / 0.5) = 1.75;
    the score is 0 - 1.75 = -1.75."""
    scorer = CpuBalanceScorer(Workload.from_requests([SliceRequest(gpu_count=2, cpu_milli=1)]))
    state = ClusterState([make_node("a", gpus=2, cpu=1000)])
    ctx = context(state, SliceRequest(gpu_memory_mib=20 * GIB, cpu_milli=1000))
    assert scorer.rho(state) == 0.5
    assert scorer.score(ctx).tolist() == [-1.75]


# -- LocalityScorer: any cached byte counts -------------------------------------------------------


def test_locality_counts_an_item_of_one_byte() -> None:
    """Rule: a node holds an item when its cached size is above 0, however small: an image of 1
    byte cached on "a" only is the whole request (1 of 1 byte) there, nothing on "b"."""
    state = ClusterState([make_node("a", gpus=1, images={"tiny:1": 1}), make_node("b", gpus=1)])
    ctx = context(state, SliceRequest(gpu_memory_mib=GIB, image="tiny:1"))
    assert ctx.options.node.tolist() == [0, 1]
    assert LocalityScorer().score(ctx).tolist() == [1.0, 0.0]


# -- caches of what depends on capacities: the same state object, the same capacities -------------


def test_scarce_host_sees_a_node_grown_in_place() -> None:
    """Rule: the scarce types are recomputed when a node's capacity changes in place
    (``update_node``, a live cluster's node facts).  Eleven 96-CPU nodes and "big": FOUR and
    EIGHT are scarce (1 host of 12).  Two 96-CPU nodes grow to 128 CPUs: 3 of 12 = 25 % can host
    both, so neither is scarce any more, on the very same state object."""
    scorer = ScarceHostScorer(TWO_RARE)
    state = two_rare_context(FOUR).state
    assert scorer.scarce(state) == [FOUR, EIGHT]
    for name in ("n0", "n1"):
        assert state.update_node(make_node(name, gpus=8, cpu=128_000))
    assert scorer.scarce(state) == []


def test_capacity_caches_never_take_a_new_state_at_a_reused_address_for_the_old() -> None:
    """Rule: a cached value belongs to one state object, not to its ``id``.  States built per
    request and freed are often allocated where the last one was; keyed by ``id``, a scorer
    handed the 80 GiB cluster's rho (8000) to a 40 GiB one.  Both caches are asked for states
    made one after another, each freed before the next, until an address repeats."""
    import gc

    scorer = CpuBalanceScorer(Workload.from_requests(
        [SliceRequest(gpu_memory_mib=20 * GIB, cpu_milli=2000)]))
    scarce = ScarceHostScorer(TWO_RARE)
    seen: set[int] = set()
    reused = False
    for k in range(200):
        gib = 80 if k % 2 == 0 else 40
        state = ClusterState([make_node(f"c{k}", gpus=2, gib=gib)])
        reused = reused or id(state) in seen
        seen.add(id(state))
        # 2000 milli per 20/gib of a GPU: 8000 on 80 GiB GPUs, 4000 on 40 GiB
        assert scorer.rho(state) == (8000.0 if gib == 80 else 4000.0)
        # one 2-GPU node of 64 CPUs hosts neither FOUR nor EIGHT: both scarce (0 of 1)
        assert scarce.scarce(state) == [FOUR, EIGHT]
        del state
        gc.collect()
    assert reused  # the case the rule is about happened (CPython reuses freed addresses)
