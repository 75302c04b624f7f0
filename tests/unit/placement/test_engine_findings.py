"""The engine's own rules, pinned where mutation testing found them unchecked (issue 26 item 7).

Each case is built so that the alternatives *disagree*: the tie-breaker a policy names picks a
different GPU than the other one would, a faithful (integer) score ties options that the exact
score separates, a whole GPU on a node of mixed GPU sizes is not the size of the node's first GPU.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from placement_clusters import GIB, make_node

from aispike_hub.model import Assignment, Gpu, Node, SliceRequest
from aispike_hub.placement.engine import Affinity, PlacementEngine, _best
from aispike_hub.placement.fragmentation import Workload
from aispike_hub.placement.state import ClusterState

WORKLOAD = Workload.from_requests(
    [SliceRequest(gpu_memory_mib=8 * GIB, cpu_milli=2000)] * 6
    + [SliceRequest(gpu_count=2, cpu_milli=8000)] * 2
    + [SliceRequest(gpu_memory_mib=40 * GIB, cpu_milli=4000)] * 2
)
SEEDS = range(12)


def two_used_gpus() -> ClusterState:
    """One node, two GPUs of 80 GiB in use: 30 GiB free on GPU 0, 25 GiB free on GPU 1 (the
    packing tiers see both as 30-39 % free, so only the per-GPU fit tells them apart)."""
    state = ClusterState([make_node("a", gpus=2)])
    state.commit(Assignment("a", (0, 1), (50 * GIB, 55 * GIB)))
    return state


MakeState = Callable[[], ClusterState]


def gpus_chosen(policy: str, make: MakeState,
                request: SliceRequest) -> set[tuple[str, tuple[int, ...]]]:
    """Where ``policy`` puts ``request`` on a fresh state, over several seeds."""
    out = set()
    for seed in SEEDS:
        d = PlacementEngine(policy, workload=WORKLOAD, seed=seed).place(make(), request)
        assert d.assignment is not None
        out.add((d.assignment.node, d.assignment.gpu_indices))
    return out


@pytest.mark.parametrize(
    ("policy", "gpu"),
    [
        ("random", 0),   # random node, then the emptiest GPU on it (worst fit)
        ("spread", 0),   # spreading: the emptiest GPU
        ("bestfit", 1),  # best fit: the GPU left with the least free memory
        ("packing", 1),  # packing tiers tie (both 30-39 % free): best fit decides
    ],
)
def test_the_per_gpu_tie_breaker_of_each_policy(policy: str, gpu: int) -> None:
    """Rule: within one node, ``random`` and ``spread`` put a slice on the GPU with the most
    free memory, ``bestfit`` and ``packing`` on the one with the least; for every seed (the
    tie-breaker decides before any random pick)."""
    assert gpus_chosen(policy, two_used_gpus, SliceRequest(gpu_memory_mib=10 * GIB)) == {
        ("a", (gpu,))}


def bestfit_near_tie() -> ClusterState:
    """Nodes a and b with the same free GPU total (120 GiB) and b 0.1 CPU fuller: b's exact
    best-fit score is higher by 0.08 points, the same integer.  On a, GPU 1 has 40 GiB free."""
    state = ClusterState([make_node("a", gpus=2), make_node("b", gpus=2)])
    state.commit(Assignment("a", (1,), (40 * GIB,)))
    state.commit(Assignment("b", (0, 1), (20 * GIB, 20 * GIB), cpu_milli=100))
    return state


def test_faithful_bestfit_ties_near_equal_nodes_and_the_tightest_gpu_wins() -> None:
    """Rule: the ``bestfit`` policy uses the published simulator's integer scores, so nodes
    within one point tie and the per-GPU best fit decides (a's GPU 1, 30 GiB left), not the
    exact score (which would pick b)."""
    assert gpus_chosen("bestfit", bestfit_near_tie, SliceRequest(gpu_memory_mib=10 * GIB)) == {
        ("a", (1,))}


def cpu_near_tie() -> ClusterState:
    """Two one-GPU nodes, b with 0.1 CPU less allocatable: exact dot products differ slightly."""
    return ClusterState([make_node("a", gpus=1), make_node("b", gpus=1, cpu=63_900)])


def slice_near_tie() -> ClusterState:
    """Two one-GPU nodes, 1 GiB free on a's GPU and 11 GiB on b's: a 1 GiB slice grows the
    expected fragmentation by 0.0125 GPUs on a and 0.005 on b, both the integer score 50."""
    state = ClusterState([make_node("a", gpus=1), make_node("b", gpus=1)])
    state.commit(Assignment("a", (0,), (79 * GIB,)))
    state.commit(Assignment("b", (0,), (69 * GIB,)))
    return state


@pytest.mark.parametrize(
    ("policy", "make", "request_"),
    [
        ("dotprod", cpu_near_tie, SliceRequest(gpu_count=0, cpu_milli=1000)),
        ("fgd", slice_near_tie, SliceRequest(gpu_memory_mib=GIB)),
    ],
)
def test_faithful_integer_scores_leave_near_equal_nodes_to_the_seed(
    policy: str, make: MakeState, request_: SliceRequest
) -> None:
    """Rule: ``dotprod`` and ``fgd`` keep the published simulator's integer scores (the FGD
    paper's baselines), so options within one point are ties and the seeded random pick chooses
    among them: over several seeds both nodes are chosen (exact scores would always pick one)."""
    assert {node for node, _ in gpus_chosen(policy, make, request_)} == {"a", "b"}


def identical_nodes() -> ClusterState:
    return ClusterState([make_node("a", gpus=1), make_node("b", gpus=1)])


@pytest.mark.parametrize("affinity", [Affinity(), Affinity(topology=1.0)])
def test_spread_breaks_a_tie_between_equal_nodes_at_random(affinity: Affinity) -> None:
    """Rule: policies other than ``aispike`` pick among options still tied after their
    tie-breakers with the seeded random draw (as kube-scheduler does), also with an affinity
    scorer added; two tied nodes are both chosen over several seeds."""
    nodes = set()
    for seed in SEEDS:
        d = PlacementEngine("spread", seed=seed, affinity=affinity).place(
            identical_nodes(), SliceRequest(gpu_count=0, cpu_milli=1000))
        assert d.assignment is not None
        nodes.add(d.assignment.node)
    assert nodes == {"a", "b"}


def ram_differs() -> ClusterState:
    """Two nodes that differ only in RAM (no ``aispike`` term reads RAM below what a task asks),
    so they are not twins of each other but tie on every score and tie-breaker."""
    return ClusterState([make_node("a", gpus=1), make_node("b", gpus=1, ram=511 * GIB)])


@pytest.mark.parametrize("affinity", [Affinity(), Affinity(topology=1.0)])
def test_aispike_breaks_a_full_tie_by_order_not_by_seed(affinity: Affinity) -> None:
    """Rule: ``aispike`` is deterministic (``random_ties=False``), with or without affinity:
    among options tied on everything it takes the first node, whatever the seed."""
    nodes = set()
    for seed in SEEDS:
        d = PlacementEngine("aispike", workload=WORKLOAD, seed=seed, affinity=affinity).place(
            ram_differs(), SliceRequest(gpu_memory_mib=8 * GIB, cpu_milli=1000))
        assert d.assignment is not None
        nodes.add(d.assignment.node)
    assert nodes == {"a"}


def test_aispike_tie_breakers_choose_the_tighter_node_for_a_cpu_only_server() -> None:
    """Rule: ``aispike``'s weighted terms all score 0 for a small CPU-only server on nodes with
    CPU to spare, so its tie-breakers decide: best fit puts it on the node with less free CPU
    (b, listed second), not on the first node."""
    state = ClusterState([make_node("a", gpus=1), make_node("b", gpus=1, cpu=48_000)])
    d = PlacementEngine("aispike", workload=WORKLOAD).place(
        state, SliceRequest(gpu_count=0, cpu_milli=1000))
    assert d.assignment is not None and d.assignment.node == "b"


def test_a_whole_gpu_on_a_node_of_mixed_sizes_takes_that_gpus_memory() -> None:
    """Rule: a whole GPU's assignment holds that GPU's own memory, not that of the node's first
    GPU: on a node with a 40 GiB GPU 0 (in use) and an 80 GiB GPU 1, one whole GPU is GPU 1 with
    80 GiB, and committing it leaves GPU 1 with nothing free."""
    state = ClusterState([Node("a", 64_000, 512 * GIB, (
        Gpu(0, "A100", 40 * GIB, uuid="GPU-a-0"), Gpu(1, "A100", 80 * GIB, uuid="GPU-a-1")))])
    state.commit(Assignment("a", (0,), (GIB,)))
    d = PlacementEngine("aispike", workload=WORKLOAD).place(state, SliceRequest(gpu_count=1))
    assert d.assignment is not None
    assert (d.assignment.gpu_indices, d.assignment.gpu_memory_mib) == ((1,), (80 * GIB,))
    state.commit(d.assignment)
    assert int(state.gpu_free[0, 1]) == 0


def test_the_decision_carries_owner_ram_and_the_candidate_count() -> None:
    """Rule: a placed decision has no reasons, counts the options that passed the filter, and
    its assignment carries the request's CPU and RAM and the owner given (none: "")."""
    state = ClusterState([make_node("a", gpus=2), make_node("b", gpus=1)])
    req = SliceRequest(gpu_memory_mib=8 * GIB, cpu_milli=1500, memory_mib=3 * GIB)
    eng = PlacementEngine("aispike", workload=WORKLOAD)
    d = eng.place(state, req, owner="alice/lab")
    assert d.assignment is not None
    assert (d.reasons, d.candidates) == ((), 2)  # a's two idle GPUs are twins: one option each
    assert (d.assignment.cpu_milli, d.assignment.memory_mib, d.assignment.owner) == (
        1500, 3 * GIB, "alice/lab")
    anonymous = eng.place(state, req).assignment
    assert anonymous is not None and anonymous.owner == ""


def test_nothing_fits_counts_no_candidate_and_explains_only_when_asked() -> None:
    """Rule: when nothing fits, ``candidates`` is 0 and reasons are given, except with
    ``explain=False`` (the simulator's fast path), which gives none."""
    state = ClusterState([make_node("a", gpus=1)])
    req = SliceRequest(gpu_memory_mib=81 * GIB)
    d = PlacementEngine("aispike", workload=WORKLOAD).place(state, req)
    assert (d.assignment, d.candidates) == (None, 0) and d.reasons
    quiet = PlacementEngine("aispike", workload=WORKLOAD).place(state, req, explain=False)
    assert (quiet.assignment, quiet.reasons, quiet.candidates) == (None, (), 0)


@pytest.mark.parametrize(
    ("values", "tied"),
    [
        ([100.0, 100.0 - 5e-8], [0, 1]),      # 1e-9 relative to a score of 100: a tie
        ([100.0, 100.0 - 5e-7], [0]),         # beyond it: no tie
        ([0.5, 0.5 - 0.5e-9], [0, 1]),        # small scores: 1e-9 absolute
        ([0.5, 0.5 - 1.5e-9], [0]),           # ... and not 2e-9
        ([-3.0, -1.0, -1.0], [1, 2]),
    ],
)
def test_scores_tie_within_a_relative_tolerance(values: list[float], tied: list[int]) -> None:
    """Rule: options whose weighted score is within 1e-9 of the best, relative to the best's
    size (at least 1), are ties (float rounding of sums must not decide a placement)."""
    arr = np.array(values)
    assert _best(arr, np.arange(arr.size)).tolist() == tied
