"""Exact scores of the node and GPU scorers, pinned where mutation testing found them unchecked
(issue 26 item 7).

One small cluster, every expected number worked out by hand from the scorer's formula (the
comments show the arithmetic), so a changed weight, sign or boundary shows:

- node a: 64 CPUs, two 80 GiB GPUs, GPU 0 with 50 GiB in use (30 GiB free), GPU 1 idle;
- node b: 32 CPUs, two idle 80 GiB GPUs;
- the request: a 20 GiB slice with 8 CPUs.  Its options: (a, GPU 0), (a, GPU 1), (b, GPU 0).
"""

from __future__ import annotations

import numpy as np
import pytest
from placement_clusters import GIB, make_node

from aispike_hub.model import Assignment, SliceRequest
from aispike_hub.placement.filter import find_options
from aispike_hub.placement.fragmentation import Workload
from aispike_hub.placement.scorers import (
    BestFitScorer,
    CpuBalanceScorer,
    DotProductScorer,
    GpuFitScorer,
    GpuPackingScorer,
    LocalityScorer,
    ScarceHostScorer,
    Scorer,
    ScoringContext,
    SpreadScorer,
)
from aispike_hub.placement.state import ClusterState

REQUEST = SliceRequest(gpu_memory_mib=20 * GIB, cpu_milli=8000)


def context(request: SliceRequest = REQUEST) -> ScoringContext:
    state = ClusterState([make_node("a", gpus=2, cpu=64_000), make_node("b", gpus=2, cpu=32_000)])
    state.commit(Assignment("a", (0,), (50 * GIB,)))
    ctx = ScoringContext(state, request, find_options(state, request), np.random.default_rng(0))
    assert list(zip(ctx.options.node.tolist(), ctx.options.slot.tolist(), strict=True)) == [
        (0, 0), (0, 1), (1, 0)]
    return ctx


# BestFit: cpu_left = (free - 8000) / 64000: a 0.875, b 0.375; free GPUs a (30+80)/80 = 1.375,
# b 2; taken 20/80 = 0.25; gpu_left = (free - taken) / 2 GPUs: a 0.5625, b 0.875;
# score = (1 - (cpu_left + gpu_left) / 2) * 100: a 28.125, b 37.5.
# Spread: mean of cpu (a 56/64 = 0.875, b 24/32 = 0.75), RAM (1, 1), GPU ((free - taken) / 2:
# a 0.5625, b 0.875), times 100: a 81.25, b 87.5.
# DotProduct (faithful): GPU left in milli-GPUs (the slice's GPU, or all idle GPUs for an idle
# one): a/0 375, a/1 1000, b 2000; dot = cpu_free/64000 * 8000/64000 + left/2000 * 250/2000:
# a/0 0.125 + 0.0234375, a/1 0.125 + 0.0625, b 0.0625 + 0.125; (1 - dot/2) * 100, floored.
# Packing: a/0 a shared GPU 37 % free: 100 - 37 // 10 = 97; a/1 an idle GPU on a used node:
# 50 - 1 GPU = 49; b a wholly idle node with 2 idle GPUs: 33 - 2 = 31.
# GpuFit (best): minus the MiB left on the GPU: 10, 60, 60 GiB.
EXACT = [
    ("bestfit", BestFitScorer(), [28.125, 28.125, 37.5]),
    ("bestfit faithful (floor, then min-max to 0..100)", BestFitScorer(faithful=True),
     [0.0, 0.0, 100.0]),
    ("spread", SpreadScorer(), [81.25, 81.25, 87.5]),
    ("dotprod faithful", DotProductScorer(), [92.0, 90.0, 90.0]),
    ("dotprod exact", DotProductScorer(faithful=False), [92.578125, 90.625, 90.625]),
    ("packing", GpuPackingScorer(), [97.0, 49.0, 31.0]),
    ("gpu best fit", GpuFitScorer(best=True), [-10.0 * GIB, -60.0 * GIB, -60.0 * GIB]),
    ("gpu worst fit", GpuFitScorer(best=False), [10.0 * GIB, 60.0 * GIB, 60.0 * GIB]),
]


@pytest.mark.parametrize(("scorer", "expected"), [e[1:] for e in EXACT], ids=[e[0] for e in EXACT])
def test_exact_scores_of_the_node_and_gpu_scorers(scorer: Scorer, expected: list[float]) -> None:
    """Rule: each scorer's published formula, to the last digit (see the module's arithmetic);
    the options disagree on every scorer, so a changed term changes a number."""
    assert scorer.score(context()).tolist() == pytest.approx(expected, abs=1e-9)


def test_spread_on_a_one_gpu_node_divides_by_its_one_gpu() -> None:
    """Rule: spread's GPU term is the capacity left over the node's own GPU count, also for a
    node of one GPU (16 CPUs, one idle 80 GiB GPU; a 20 GiB slice with 8 CPUs): cpu 8/16 = 0.5,
    RAM 1, GPU (1 - 0.25) / 1 = 0.75; mean times 100 = 75 (a floor of 2 GPUs would say 62.5)."""
    state = ClusterState([make_node("c", gpus=1, cpu=16_000)])
    ctx = ScoringContext(state, REQUEST, find_options(state, REQUEST), np.random.default_rng(0))
    assert SpreadScorer().score(ctx).tolist() == pytest.approx([75.0], abs=1e-9)


def test_faithful_bestfit_of_one_option_is_zero() -> None:
    """Rule: min-max normalisation of equal scores gives 0 (nothing to rescale), not a
    division by zero."""
    state = ClusterState([make_node("a", gpus=1)])
    ctx = ScoringContext(state, REQUEST, find_options(state, REQUEST), np.random.default_rng(0))
    assert BestFitScorer(faithful=True).score(ctx).tolist() == [0.0]


BIG = SliceRequest(gpu_count=8, cpu_milli=120_000)


def scarce_context(request: SliceRequest, big_cpu_used: int) -> ScoringContext:
    """Eleven 96-CPU nodes and one 128-CPU node ("big", row 11), eight GPUs each; the mix has a
    rare 8-GPU, 120-CPU server only "big" can host.  ``big_cpu_used`` CPUs are taken on it."""
    nodes = [make_node(f"n{i}", gpus=8, cpu=96_000) for i in range(11)]
    nodes.append(make_node("big", gpus=8, cpu=128_000))
    state = ClusterState(nodes)
    state.commit(Assignment("big", (), (), cpu_milli=big_cpu_used))
    ctx = ScoringContext(state, request, find_options(state, request), np.random.default_rng(0))
    return ctx


WORKLOAD = Workload.from_requests(
    [SliceRequest(gpu_memory_mib=40 * GIB, cpu_milli=11_000)] * 300 + [BIG])


@pytest.mark.parametrize(
    ("request_", "big_cpu_used", "big_score"),
    [
        (SliceRequest(gpu_memory_mib=40 * GIB, cpu_milli=11_000), 8_000, -1.0),  # exactly 120 free
        (SliceRequest(gpu_memory_mib=40 * GIB, cpu_milli=11_000), 8_001, 0.0),   # one milli short
        (SliceRequest(gpu_count=8, cpu_milli=1000), 0, -1.0),  # as many GPUs, far less CPU
        (SliceRequest(gpu_count=8, cpu_milli=120_000), 0, 0.0),  # the scarce server itself
    ],
)
def test_scarce_host_marks_a_node_that_can_host_the_rare_server_right_now(
    request_: SliceRequest, big_cpu_used: int, big_score: float
) -> None:
    """Rule: a node that could host a scarce server type now (its GPUs idle, exactly enough CPU
    and RAM counts) scores -1 for any other request; a request at least as big in GPUs *and*
    CPU is that server (or bigger) and is not held back."""
    ctx = scarce_context(request_, big_cpu_used)
    out = ScarceHostScorer(WORKLOAD).score(ctx)
    big = ctx.options.node == 11
    assert out[big].tolist() == [big_score]
    assert not out[~big].any()  # the other nodes (none can host the 120-CPU server itself)


@pytest.mark.parametrize(("ram_used", "big_score"), [
    (112 * GIB, -1.0),      # exactly the rare server's 400 GiB of RAM free: it could start there
    (112 * GIB + 1, 0.0),   # one MiB short: it could not, nothing to hold back
])
def test_scarce_host_needs_the_rare_servers_ram_free_too(ram_used: int, big_score: float) -> None:
    """Rule: "can host the scarce server right now" includes its RAM, exactly: the rare 8-GPU,
    120-CPU server asking 400 GiB fits "big" (512 GiB) with exactly 400 GiB free, not with one
    MiB less."""
    big_ram = SliceRequest(gpu_count=8, cpu_milli=120_000, memory_mib=400 * GIB)
    workload = Workload.from_requests(
        [SliceRequest(gpu_memory_mib=40 * GIB, cpu_milli=11_000)] * 300 + [big_ram])
    nodes = [make_node(f"n{i}", gpus=8, cpu=96_000) for i in range(11)]
    nodes.append(make_node("big", gpus=8, cpu=128_000))
    state = ClusterState(nodes)
    state.commit(Assignment("big", (), (), memory_mib=ram_used))
    request = SliceRequest(gpu_memory_mib=40 * GIB, cpu_milli=11_000)
    ctx = ScoringContext(state, request, find_options(state, request), np.random.default_rng(0))
    out = ScarceHostScorer(workload).score(ctx)
    assert out[ctx.options.node == 11].tolist() == [big_score]
    assert not out[ctx.options.node != 11].any()


CPU_MIX = Workload.from_requests(
    [SliceRequest(gpu_count=2, cpu_milli=16_000), SliceRequest(gpu_share_milli=500, cpu_milli=4000)]
    + [SliceRequest(gpu_memory_mib=20 * GIB, cpu_milli=2000)] * 2
    + [SliceRequest(gpu_count=0, cpu_milli=50_000)] * 4  # CPU-only: not part of rho
)


def test_cpu_balance_prices_cpu_per_gpu_of_demand_and_scores_the_stranded_change() -> None:
    """Rule: rho is the mix's CPU per GPU of demand over its GPU types (two whole GPUs count 2,
    a half share 0.5, a 20 GiB slice 20/80 of the typical GPU; CPU-only servers are left out):
    (16000 + 4000 + 2 * 2000) / (2 + 0.5 + 2 * 0.25) = 8000.  The score is minus the change of
    stranded GPUs max(0, free GPUs - free CPU / rho): on a node with 2 idle GPUs and 8 CPUs
    free, a 20 GiB slice with 4 CPUs goes from 1 stranded GPU to 2 - 0.25 - 0.5 = 1.25."""
    state = ClusterState([make_node("a", gpus=2, cpu=8000)])
    request = SliceRequest(gpu_memory_mib=20 * GIB, cpu_milli=4000)
    ctx = ScoringContext(state, request, find_options(state, request), np.random.default_rng(0))
    scorer = CpuBalanceScorer(CPU_MIX)
    assert scorer.rho(state) == 8000.0
    assert scorer.score(ctx).tolist() == [-0.25]


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        # image 5 GB on "img" and "both", dataset 150 GB on "data" and "both": shares of 155 GB
        (SliceRequest(gpu_memory_mib=GIB, image="lab:1", datasets=("imagenet",)),
         [5 / 155, 150 / 155, 1.0, 0.0]),
        # cached nowhere: size 0 everywhere, no share (and no division by zero)
        (SliceRequest(gpu_memory_mib=GIB, datasets=("nowhere",)), [0.0, 0.0, 0.0, 0.0]),
        (SliceRequest(gpu_memory_mib=GIB), [0.0, 0.0, 0.0, 0.0]),  # nothing to pull
    ],
)
def test_locality_is_the_share_of_the_request_bytes_already_cached(
    request_: SliceRequest, expected: list[float]
) -> None:
    """Rule: a node scores the share of the request's bytes (image plus datasets, each weighted
    by its largest cached size) it already holds; an item cached nowhere weighs 0."""
    state = ClusterState([
        make_node("img", gpus=1, images={"lab:1": 5 * 10**9}),
        make_node("data", gpus=1, datasets={"imagenet": 150 * 10**9}),
        make_node("both", gpus=1, images={"lab:1": 5 * 10**9},
                  datasets={"imagenet": 150 * 10**9}),
        make_node("none", gpus=1),
    ])
    ctx = ScoringContext(state, request_, find_options(state, request_), np.random.default_rng(0))
    assert ctx.options.node.tolist() == [0, 1, 2, 3]
    assert LocalityScorer().score(ctx).tolist() == pytest.approx(expected, abs=1e-12)
