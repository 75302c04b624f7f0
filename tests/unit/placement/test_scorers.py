"""Each scorer alone, on tiny clusters where its candidate options disagree.

Every case names the option (``node`` for node-level options, ``node/gpu-index`` for slices) the
scorer must rank first, or the full order from best to worst, and a comment says why by the
scorer's own docstring.  An expected order is checked strictly (no ties), and its first option
must beat every other option, so a scorer that returns zeros, or the negation of its score,
fails every table.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import numpy as np
import pytest
from placement_clusters import GIB, make_node

from aispike_hub.model import Assignment, Node, SliceRequest
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
    RandomScorer,
    ScarceHostScorer,
    Scorer,
    ScoringContext,
    SliceValueScorer,
    SpreadScorer,
    TopologyScorer,
)
from aispike_hub.placement.state import ClusterState

GB = 10**9


def used(node: str, gpu: int, gib: int, cpu: int = 0) -> Assignment:
    """A slice of ``gib`` already running on GPU ``gpu`` of ``node``."""
    return Assignment(node, (gpu,), (gib * GIB,), cpu_milli=cpu)


def used_cpu(node: str, cpu: int) -> Assignment:
    """A CPU-only server already running on ``node``."""
    return Assignment(node, (), (), cpu_milli=cpu)


def scores(scorer: Scorer, nodes: Sequence[Node], request: SliceRequest,
           running: Sequence[Assignment] = (), seed: int = 0) -> dict[str, float]:
    """The scorer's score of every option the filter finds, by option label."""
    state = ClusterState(nodes)
    for a in running:
        state.commit(a)
    opts = find_options(state, request)
    assert len(opts) > 0, "the case must have options"
    ctx = ScoringContext(state, request, opts, np.random.default_rng(seed))
    raw = scorer.score(ctx)
    assert raw.shape == (len(opts),)
    labels = [
        state.nodes[n].name + (f"/{state.gpu_index[n, s]}" if opts.slice else "")
        for n, s in zip(opts.node.tolist(), opts.slot.tolist(), strict=True)
    ]
    assert len(set(labels)) == len(labels)
    return dict(zip(labels, raw.tolist(), strict=True))


def by_node(got: dict[str, float]) -> dict[str, float]:
    """Slice options collapsed to their node (the best slice of each node stands for it)."""
    out: dict[str, float] = {}
    for label, value in got.items():
        node = label.split("/")[0]
        out[node] = max(out.get(node, value), value)
    return out


def assert_ranked(got: dict[str, float], expected: Sequence[str]) -> None:
    """``expected[0]`` beats every other option; ``expected`` is in strictly falling order.

    Expected labels without a GPU index rank nodes (a node-level scorer's view of slices)."""
    if not any("/" in e for e in expected):
        got = by_node(got)
    assert set(expected) <= set(got), (expected, got)
    best = expected[0]
    others = {k: v for k, v in got.items() if k != best}
    assert all(got[best] > v for v in others.values()), (best, got)
    for hi, lo in pairwise(expected):
        assert got[hi] > got[lo], (hi, lo, got)


SLICE_8 = SliceRequest(gpu_memory_mib=8 * GIB)
SLICE_40 = SliceRequest(gpu_memory_mib=40 * GIB)
ONE_GPU = SliceRequest(gpu_count=1)
TWO_GPUS = SliceRequest(gpu_count=2)


# -- bestfit: least capacity left on the node after placement -------------------------------
BESTFIT_CASES = [
    # exactly fills node a's last free 8 GiB; node b would keep a 8 GiB remainder
    pytest.param([make_node("a", gpus=1), make_node("b", gpus=1)],
                 [used("a", 0, 72), used("b", 0, 64)], SLICE_8, ["a", "b"],
                 id="exact-fill-beats-remainder"),
    # same GPUs, node a has less CPU: less CPU left after placement on a
    pytest.param([make_node("a", gpus=1, cpu=8000), make_node("b", gpus=1, cpu=64000)],
                 [], SliceRequest(gpu_memory_mib=8 * GIB, cpu_milli=4000), ["a", "b"],
                 id="less-cpu-left-wins"),
    # a whole GPU: the 2-GPU node keeps 1 idle GPU, the 4-GPU node 3, the 8-GPU node 7
    pytest.param([make_node("four", gpus=4), make_node("two", gpus=2), make_node("eight", gpus=8)],
                 [], ONE_GPU, ["two", "four", "eight"], id="whole-gpu-smallest-node"),
    # a used node beats an idle one of the same shape (its capacity is partly taken)
    pytest.param([make_node("idle", gpus=2), make_node("busy", gpus=2)],
                 [used("busy", 1, 40, cpu=16000)], SLICE_8, ["busy", "idle"],
                 id="busy-node-before-idle"),
]


@pytest.mark.parametrize("faithful", [False, True], ids=["continuous", "faithful"])
@pytest.mark.parametrize(("nodes", "running", "request_", "expected"), BESTFIT_CASES)
def test_bestfit(nodes: list[Node], running: list[Assignment], request_: SliceRequest,
                 expected: list[str], faithful: bool) -> None:
    assert_ranked(scores(BestFitScorer(faithful), nodes, request_, running), expected)


# -- spread: most capacity left after placement ----------------------------------------------
SPREAD_CASES = [
    # the idle node keeps more of its GPUs, CPU and RAM free than the busy one
    pytest.param([make_node("busy", gpus=2), make_node("idle", gpus=2)],
                 [used("busy", 0, 40, cpu=16000)], SLICE_8, ["idle", "busy"],
                 id="idle-node-before-busy"),
    # leaves a remainder on b rather than exactly filling a: b keeps more GPU free
    pytest.param([make_node("a", gpus=1), make_node("b", gpus=1)],
                 [used("a", 0, 72), used("b", 0, 64)], SLICE_8, ["b", "a"],
                 id="remainder-beats-exact-fill"),
    # a CPU-only server ignores GPUs: a's GPUs are all taken but its CPU is free
    pytest.param([make_node("a", gpus=1), make_node("b", gpus=1)],
                 [used("a", 0, 80), used_cpu("b", 32000)],
                 SliceRequest(gpu_count=0, cpu_milli=1000), ["a", "b"],
                 id="cpu-only-ignores-gpus"),
    # shares of capacity: the bigger node keeps the larger share of its RAM free
    pytest.param([make_node("small", gpus=1, ram=64 * GIB), make_node("big", gpus=1)],
                 [], SliceRequest(gpu_count=0, memory_mib=32 * GIB), ["big", "small"],
                 id="ram-share-left"),
]


@pytest.mark.parametrize(("nodes", "running", "request_", "expected"), SPREAD_CASES)
def test_spread(nodes: list[Node], running: list[Assignment], request_: SliceRequest,
                expected: list[str]) -> None:
    assert_ranked(scores(SpreadScorer(), nodes, request_, running), expected)


# -- dotprod: smallest product of free (CPU, GPU) with the request: tight fits win ----------
DOTPROD_CASES = [
    # same node: the partly used GPU (40 GiB free) counts only itself, the idle one all idle GPUs
    pytest.param([make_node("a", gpus=4)], [used("a", 0, 40)], SLICE_40, ["a/0", "a/1"],
                 id="shared-gpu-before-idle"),
    # whole GPU: the node with fewer idle GPUs has the smaller GPU product
    pytest.param([make_node("a", gpus=4), make_node("b", gpus=4)],
                 [used("b", 0, 80), used("b", 1, 80), used("b", 2, 80)], ONE_GPU, ["b", "a"],
                 id="fewest-idle-gpus"),
    # same GPUs, CPU-heavy request: the node with less free CPU has the smaller CPU product
    pytest.param([make_node("a", gpus=1, cpu=64000), make_node("b", gpus=1, cpu=64000)],
                 [used_cpu("b", 48000)], SliceRequest(gpu_memory_mib=8 * GIB, cpu_milli=16000),
                 ["b", "a"], id="less-free-cpu"),
]


@pytest.mark.parametrize("faithful", [True, False], ids=["faithful", "continuous"])
@pytest.mark.parametrize(("nodes", "running", "request_", "expected"), DOTPROD_CASES)
def test_dotprod(nodes: list[Node], running: list[Assignment], request_: SliceRequest,
                 expected: list[str], faithful: bool) -> None:
    assert_ranked(scores(DotProductScorer(faithful), nodes, request_, running), expected)


# -- packing: shared GPU (fuller first) > idle GPU on a used node > idle node ----------------
PACKING_CASES = [
    # the three tiers at once: a/0 is shared, a/1 idle on a used node, b wholly idle
    pytest.param([make_node("a", gpus=2), make_node("b", gpus=2)], [used("a", 0, 40)],
                 SLICE_8, ["a/0", "a/1", "b/0"], id="three-tiers"),
    # within tier 1 the fuller GPU wins: 8 GiB free is exactly filled, 16 GiB leaves a remainder
    pytest.param([make_node("a", gpus=2)], [used("a", 0, 72), used("a", 1, 64)], SLICE_8,
                 ["a/0", "a/1"], id="exact-fill-beats-remainder"),
    # within tier 1: 20% free beats 80% free
    pytest.param([make_node("a", gpus=2)], [used("a", 0, 64), used("a", 1, 16)], SLICE_8,
                 ["a/0", "a/1"], id="fuller-shared-gpu"),
    # whole GPU: idle GPU on a used node (tier 2) before a wholly idle node (tier 3)
    pytest.param([make_node("idle", gpus=4), make_node("used", gpus=4)], [used("used", 0, 8)],
                 ONE_GPU, ["used", "idle"], id="whole-gpu-used-node-first"),
]


@pytest.mark.parametrize(("nodes", "running", "request_", "expected"), PACKING_CASES)
def test_packing(nodes: list[Node], running: list[Assignment], request_: SliceRequest,
                 expected: list[str]) -> None:
    assert_ranked(scores(GpuPackingScorer(), nodes, request_, running), expected)


# -- gpu-bestfit / gpu-worstfit: the GPU that leaves the least / most free memory -----------
GPUFIT_CASES = [
    # 8 GiB free is exactly filled (0 left) vs 16 GiB free (8 left) vs idle (72 left)
    pytest.param(True, [make_node("a", gpus=3)], [used("a", 0, 72), used("a", 1, 64)],
                 SLICE_8, ["a/0", "a/1", "a/2"], id="best-exact-fill-first"),
    # best fit across nodes too: b's GPU has 16 GiB free, a's is idle
    pytest.param(True, [make_node("a", gpus=1), make_node("b", gpus=1)], [used("b", 0, 64)],
                 SLICE_8, ["b/0", "a/0"], id="best-across-nodes"),
    # worst fit spreads: the idle GPU leaves the most, the exactly filled one the least
    pytest.param(False, [make_node("a", gpus=3)], [used("a", 0, 72), used("a", 1, 64)],
                 SLICE_8, ["a/2", "a/1", "a/0"], id="worst-idle-first"),
    # worst fit on mixed sizes: the 80 GiB GPU leaves more than the 40 GiB one
    pytest.param(False, [make_node("small", gpus=1, gib=40), make_node("big", gpus=1)], [],
                 SLICE_8, ["big/0", "small/0"], id="worst-bigger-gpu"),
]


@pytest.mark.parametrize(("best", "nodes", "running", "request_", "expected"), GPUFIT_CASES)
def test_gpu_fit(best: bool, nodes: list[Node], running: list[Assignment],
                 request_: SliceRequest, expected: list[str]) -> None:
    assert_ranked(scores(GpuFitScorer(best), nodes, request_, running), expected)


# -- fgd: the placement that grows expected fragmentation the least --------------------------
SLICES_16 = Workload.from_requests([SliceRequest(gpu_memory_mib=16 * GIB)])
SLICES_8_AND_WHOLE = Workload.from_requests(
    [SliceRequest(gpu_memory_mib=8 * GIB)] * 3 + [SliceRequest(gpu_count=1)])

FGD_CASES = [
    # 16 GiB slices only: 8 GiB into 24 free leaves 16 (still usable), into 16 free strands 8
    pytest.param(SLICES_16, [make_node("a", gpus=2)], [used("a", 0, 56), used("a", 1, 64)],
                 SLICE_8, ["a/0", "a/1"], id="usable-remainder-beats-stranded"),
    # exactly filling 8 GiB free strands nothing; 12 GiB free would strand 4 GiB
    pytest.param(SLICES_8_AND_WHOLE, [make_node("a", gpus=2)],
                 [used("a", 0, 72), used("a", 1, 68)], SLICE_8, ["a/0", "a/1"],
                 id="exact-fill-beats-remainder"),
    # whole GPUs are in the mix: a slice on a shared GPU keeps the idle GPU whole
    pytest.param(SLICES_8_AND_WHOLE, [make_node("a", gpus=2)], [used("a", 0, 40)], SLICE_8,
                 ["a/0", "a/1"], id="shared-gpu-keeps-idle-gpu-whole"),
]


@pytest.mark.parametrize("faithful", [False, True], ids=["exact", "faithful"])
@pytest.mark.parametrize(("workload", "nodes", "running", "request_", "expected"), FGD_CASES)
def test_fgd(workload: Workload, nodes: list[Node], running: list[Assignment],
             request_: SliceRequest, expected: list[str], faithful: bool) -> None:
    scorer = FragmentationScorer(workload, faithful=faithful)
    assert_ranked(scores(scorer, nodes, request_, running), expected)


# -- slice-value: minus the share of a GPU the placement destroys ----------------------------
MIX_16_40 = Workload.from_requests(
    [SliceRequest(gpu_memory_mib=16 * GIB)] * 2 + [SliceRequest(gpu_memory_mib=40 * GIB)])

SLICE_VALUE_CASES = [
    # 40 GiB into 56 free leaves a 16 GiB slice's room; into 48 free it strands 8 GiB
    pytest.param(MIX_16_40, [make_node("a", gpus=2)], [used("a", 0, 24), used("a", 1, 32)],
                 SLICE_40, ["a/0", "a/1"], id="remainder-a-slice-can-use"),
    # 16 GiB exactly filling 16 free loses nothing; into 40 free it breaks a 40 GiB slice's room
    pytest.param(MIX_16_40, [make_node("a", gpus=2)], [used("a", 0, 64), used("a", 1, 40)],
                 SliceRequest(gpu_memory_mib=16 * GIB), ["a/0", "a/1"],
                 id="exact-fill-beats-breaking-a-big-slot"),
    # 8 GiB into 24 free leaves room for one 16 GiB slice; into 16 free it strands 8 GiB
    pytest.param(MIX_16_40, [make_node("a", gpus=2)], [used("a", 0, 56), used("a", 1, 64)],
                 SLICE_8, ["a/0", "a/1"], id="remainder-fits-a-slice-beats-stranded"),
]


@pytest.mark.parametrize(("workload", "nodes", "running", "request_", "expected"),
                         SLICE_VALUE_CASES)
def test_slice_value(workload: Workload, nodes: list[Node], running: list[Assignment],
                     request_: SliceRequest, expected: list[str]) -> None:
    assert_ranked(scores(SliceValueScorer(workload), nodes, request_, running), expected)


# -- scarce-hosts: -1 on a node that can host a scarce server type right now -----------------
BIG_SERVER = SliceRequest(gpu_count=8, cpu_milli=96000)
SCARCE_MIX = Workload.from_requests([SliceRequest(gpu_memory_mib=8 * GIB)] * 9 + [BIG_SERVER])
# scarce: fewer than 10% of the GPU nodes can host it (1 or 2 big nodes among 22)
SMALL_NODES = [make_node(f"s{i}", gpus=2, cpu=32000) for i in range(20)]
BIG_NODES = [make_node("big1", gpus=8, cpu=128000), make_node("big2", gpus=8, cpu=128000)]

SCARCE_CASES = [
    # a slice goes anywhere but the big idle node, the only kind that hosts the 8-GPU server
    pytest.param(SMALL_NODES + BIG_NODES[:1], [], SLICE_8, ["s0", "big1"],
                 id="slice-avoids-the-scarce-host"),
    # of two big nodes, the one already holding a slice cannot host the server: use it
    pytest.param(BIG_NODES + SMALL_NODES, [used("big2", 0, 8)], SLICE_8, ["big2", "big1"],
                 id="slice-onto-the-big-node-already-broken"),
    # a whole GPU does not take the big node either
    pytest.param(SMALL_NODES + BIG_NODES[:1], [], ONE_GPU, ["s0", "big1"],
                 id="whole-gpu-avoids-the-scarce-host"),
]


@pytest.mark.parametrize(("nodes", "running", "request_", "expected"), SCARCE_CASES)
def test_scarce_hosts(nodes: list[Node], running: list[Assignment], request_: SliceRequest,
                      expected: list[str]) -> None:
    got = by_node(scores(ScarceHostScorer(SCARCE_MIX), nodes, request_, running))
    assert got[expected[0]] == 0.0 and got[expected[1]] == -1.0, got


def test_scarce_hosts_do_not_hold_back_the_server_itself() -> None:
    # the server (or anything at least as big) is what the big node is kept for: no penalty
    got = scores(ScarceHostScorer(SCARCE_MIX), SMALL_NODES + BIG_NODES[:1], BIG_SERVER)
    assert got == {"big1": 0.0}


# -- topology: one NVLink domain > one PCIe switch > one NUMA node > spread ------------------
def topo_node(name: str, gpus: int = 2, **groups: list[str] | list[int]) -> Node:
    return make_node(name, gpus=gpus, **groups)  # type: ignore[arg-type]


TOPOLOGY_CASES = [
    # the four levels side by side, one node each, 2 GPUs each
    pytest.param(
        [topo_node("numa", numa=[0, 0], pcie=["p0", "p1"], nvlink=["x", "y"]),
         topo_node("none"),
         topo_node("nvlink", nvlink=["x", "x"], pcie=["p0", "p1"], numa=[0, 1]),
         topo_node("pcie", pcie=["p0", "p0"], nvlink=["x", "y"], numa=[0, 1])],
        [], TWO_GPUS, ["nvlink", "pcie", "numa", "none"], id="nvlink-pcie-numa-none"),
    # only idle GPUs count: a's NVLink pair is broken by a slice, so a is down to its PCIe switch
    pytest.param(
        [topo_node("a", gpus=3, nvlink=["x", "x", "y"], pcie=["p", "p", "p"]),
         topo_node("b", gpus=3, nvlink=["x", "x", "y"])],
        [used("a", 0, 8)], TWO_GPUS, ["b", "a"], id="broken-nvlink-pair"),
    # four GPUs: one 4-GPU NVLink domain beats two NVLink pairs on one PCIe switch
    pytest.param(
        [topo_node("pairs", gpus=4, nvlink=["x", "x", "y", "y"], pcie=["p"] * 4),
         topo_node("quad", gpus=4, nvlink=["x"] * 4)],
        [], SliceRequest(gpu_count=4), ["quad", "pairs"], id="four-gpus-one-domain"),
    # PCIe switch of two vs NUMA node of four for a 2-GPU request
    pytest.param(
        [topo_node("numa4", gpus=4, numa=[0, 0, 1, 1], pcie=["a", "b", "c", "d"]),
         topo_node("pcie2", gpus=4, pcie=["a", "a", "b", "b"])],
        [], TWO_GPUS, ["pcie2", "numa4"], id="pcie-beats-numa"),
]


@pytest.mark.parametrize(("nodes", "running", "request_", "expected"), TOPOLOGY_CASES)
def test_topology(nodes: list[Node], running: list[Assignment], request_: SliceRequest,
                  expected: list[str]) -> None:
    assert_ranked(scores(TopologyScorer(), nodes, request_, running), expected)


def test_topology_levels_score_as_documented() -> None:
    got = scores(TopologyScorer(), TOPOLOGY_CASES[0].values[0], TWO_GPUS)
    assert got == pytest.approx({"nvlink": 1.0, "pcie": 2 / 3, "numa": 1 / 3, "none": 0.0})


# -- locality: share of the request's bytes already cached on the node ----------------------
LOCALITY_CASES = [
    # a 200 GB dataset outweighs a 5 GB image
    pytest.param(
        [make_node("img", images={"lab:1": 5 * GB}),
         make_node("data", datasets={"imagenet": 200 * GB}), make_node("empty")],
        SliceRequest(gpu_memory_mib=GIB, image="lab:1", datasets=("imagenet",)),
        ["data", "img", "empty"], id="big-dataset-beats-small-image"),
    # holding both beats holding the bigger one alone
    pytest.param(
        [make_node("data", datasets={"imagenet": 200 * GB}),
         make_node("both", images={"lab:1": 5 * GB}, datasets={"imagenet": 200 * GB})],
        SliceRequest(gpu_memory_mib=GIB, image="lab:1", datasets=("imagenet",)),
        ["both", "data"], id="image-and-dataset-beat-dataset"),
    # two datasets: the 100 GB one is worth more than the 10 GB one
    pytest.param(
        [make_node("small", datasets={"d1": 10 * GB}),
         make_node("large", datasets={"d2": 100 * GB})],
        SliceRequest(gpu_memory_mib=GIB, datasets=("d1", "d2")), ["large", "small"],
        id="larger-dataset-wins"),
    # the image is cached nowhere (size 0): only the dataset decides
    pytest.param(
        [make_node("a"), make_node("b", datasets={"d": GB})],
        SliceRequest(gpu_memory_mib=GIB, image="nowhere:1", datasets=("d",)), ["b", "a"],
        id="uncached-image-counts-zero"),
    # whole GPU request, image only: the node that holds it wins
    pytest.param(
        [make_node("a"), make_node("b", images={"lab:1": 5 * GB})],
        SliceRequest(gpu_count=1, image="lab:1"), ["b", "a"], id="image-only"),
]


@pytest.mark.parametrize(("nodes", "request_", "expected"), LOCALITY_CASES)
def test_locality(nodes: list[Node], request_: SliceRequest, expected: list[str]) -> None:
    assert_ranked(scores(LocalityScorer(), nodes, request_), expected)


def test_locality_scores_are_shares_of_the_bytes() -> None:
    got = scores(LocalityScorer(), LOCALITY_CASES[0].values[0], SliceRequest(
        gpu_count=1, image="lab:1", datasets=("imagenet",)))
    assert got == pytest.approx({"img": 5 / 205, "data": 200 / 205, "empty": 0.0})


# -- cpu-balance: minus the change of GPUs stranded for lack of CPU --------------------------
EIGHT_CPUS_PER_GPU = Workload.from_requests([SliceRequest(gpu_count=1, cpu_milli=8000)])

CPU_BALANCE_CASES = [
    # a CPU-heavy slice: "lean" has exactly 8 CPUs per free GPU and would strand 0.9 GPU,
    # "rich" has CPU to spare and strands nothing
    pytest.param([make_node("lean", cpu=32000), make_node("rich", cpu=64000)],
                 SliceRequest(gpu_memory_mib=8 * GIB, cpu_milli=8000), ["rich", "lean"],
                 id="cpu-heavy-slice-to-cpu-rich-node"),
    # a GPU-heavy, CPU-free slice uses GPUs "starved" strands already: its score rises
    pytest.param([make_node("rich", cpu=64000), make_node("starved", cpu=16000)],
                 SliceRequest(gpu_memory_mib=40 * GIB), ["starved", "rich"],
                 id="gpu-heavy-slice-to-cpu-starved-node"),
]


@pytest.mark.parametrize(("nodes", "request_", "expected"), CPU_BALANCE_CASES)
def test_cpu_balance(nodes: list[Node], request_: SliceRequest, expected: list[str]) -> None:
    assert_ranked(scores(CpuBalanceScorer(EIGHT_CPUS_PER_GPU), nodes, request_), expected)


# -- random: a seeded random node ------------------------------------------------------------
RANDOM_NODES = [make_node("a", gpus=2), make_node("b", gpus=2), make_node("c", gpus=2)]


def test_random_slices_on_one_node_share_its_draw() -> None:
    got = scores(RandomScorer(), RANDOM_NODES, SLICE_8, [used("a", 0, 8)])
    assert got["a/0"] == got["a/1"] and len(set(got.values())) == 3


def test_random_is_the_same_for_a_seed_and_differs_across_seeds() -> None:
    # every node wins for some seed: the draw is not a fixed order in disguise
    winners = set()
    for seed in range(20):
        got = scores(RandomScorer(), RANDOM_NODES, ONE_GPU, seed=seed)
        assert got == scores(RandomScorer(), RANDOM_NODES, ONE_GPU, seed=seed)
        assert len(set(got.values())) == 3
        winners.add(max(got, key=got.__getitem__))
    assert winners == {"a", "b", "c"}


@pytest.mark.parametrize("seed", [0, 7])
def test_random_draws_one_number_per_node_from_the_context_rng(seed: int) -> None:
    # the seeded context RNG is the only source: that is what makes a seed replay its decisions
    got = by_node(scores(RandomScorer(), RANDOM_NODES, ONE_GPU, seed=seed))
    draw = np.random.default_rng(seed).random(len(RANDOM_NODES))
    assert got == {"a": draw[0], "b": draw[1], "c": draw[2]}
