"""The filter's exact boundaries and reasons, pinned where mutation testing found them unchecked
(issue 26 item 7).

Every expected value is written out by hand: a request for exactly the free CPU or RAM fits, a
slice that exactly fills a GPU fits, the tightest topology group wins when a larger one has lower
indices, and each reason a person reads is asserted whole.
"""

from __future__ import annotations

import numpy as np
import pytest
from placement_clusters import GIB, make_node

from aispike_hub.model import Assignment, Gpu, Node, SliceRequest
from aispike_hub.placement.filter import (
    NodeFit,
    choose_whole_gpus,
    find_options,
    topology_group_fit,
    why_nothing_fits,
)
from aispike_hub.placement.state import ClusterState


def state_of(*nodes: Node, commits: tuple[Assignment, ...] = ()) -> ClusterState:
    state = ClusterState(list(nodes))
    state.commit_all(commits)
    return state


# -- find_options -----------------------------------------------------------------------------

def test_a_request_for_exactly_the_free_cpu_and_ram_fits() -> None:
    """Rule: free CPU and RAM equal to the request are enough (>=, not >)."""
    state = state_of(make_node("a", gpus=1, cpu=4000, ram=16 * GIB))
    opts = find_options(state, SliceRequest(gpu_memory_mib=GIB, cpu_milli=4000,
                                            memory_mib=16 * GIB))
    assert opts.node.tolist() == [0]


def test_a_slice_that_exactly_fills_a_gpu_fits_and_one_mib_more_does_not() -> None:
    """Rule: a GPU with exactly the slice's memory free hosts it; one MiB more does not fit."""
    state = state_of(make_node("a", gpus=1), commits=(Assignment("a", (0,), (60 * GIB,)),))
    fits = find_options(state, SliceRequest(gpu_memory_mib=20 * GIB))
    assert (fits.node.tolist(), fits.slot.tolist(), fits.demand.tolist()) == ([0], [0], [20 * GIB])
    assert len(find_options(state, SliceRequest(gpu_memory_mib=20 * GIB + 1))) == 0


@pytest.mark.parametrize(
    ("request_", "slot", "demand", "gpu_count", "is_slice"),
    [
        (SliceRequest(gpu_count=0, cpu_milli=1000), [-1, -1], [0, 0], 0, False),
        (SliceRequest(gpu_count=2), [-1, -1], [80 * GIB, 80 * GIB], 2, False),
        (SliceRequest(gpu_memory_mib=8 * GIB), [0, 0], [8 * GIB, 8 * GIB], 1, True),
    ],
)
def test_the_fields_of_each_kind_of_option(request_: SliceRequest, slot: list[int],
                                           demand: list[int], gpu_count: int,
                                           is_slice: bool) -> None:
    """Rule: CPU-only and whole-GPU options are per node (slot -1, not slices; demand 0 or each
    GPU's memory, the request's GPU count); a slice option is a GPU slot taking one GPU."""
    opts = find_options(state_of(make_node("a", gpus=2), make_node("b", gpus=2)), request_)
    assert (opts.node.tolist(), opts.slot.tolist(), opts.demand.tolist(), opts.gpu_count,
            opts.slice) == ([0, 1], slot, demand, gpu_count, is_slice)


def test_a_single_slice_option_demands_the_slice_memory() -> None:
    """Rule: the demand of the only option is the slice's memory (not its node row), also when
    the option is on the second node."""
    state = state_of(make_node("a", gpus=1, cpu=500), make_node("b", gpus=1))
    opts = find_options(state, SliceRequest(gpu_memory_mib=8 * GIB, cpu_milli=1000))
    assert (opts.node.tolist(), opts.demand.tolist()) == ([1], [8 * GIB])


def test_whole_gpus_only_count_idle_gpus_of_an_allowed_model() -> None:
    """Rule: a whole-GPU request limited to H100 has no option on a node of idle A100s."""
    state = state_of(make_node("a", gpus=4), make_node("b", gpus=2, model="H100"))
    opts = find_options(state, SliceRequest(gpu_count=2, allowed_models=frozenset({"H100"})))
    assert opts.node.tolist() == [1]


# -- choose_whole_gpus ------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("nvlink", "busy", "k", "expected"),
    [
        (["x", "x", "x", "y", "y"], (), 2, [3, 4]),      # the smallest domain that fits, not slot 0
        (["x", "y", "y", "x"], (), 2, [0, 3]),           # equal sizes: the lowest first index
        (["x", "x", ""], (), 1, [2]),                    # one GPU: from the smallest group
        (["x", "x", "y"], (), 1, [2]),                   # ... a lone GPU before breaking a pair
        (["x", "x", "y", "y"], (2,), 1, [3]),            # ... the pair already broken
        (["", "", ""], (0,), 1, [1]),                    # no topology: the lowest idle index
    ],
)
def test_which_whole_gpus_a_request_takes(nvlink: list[str], busy: tuple[int, ...], k: int,
                                          expected: list[int]) -> None:
    """Rule: whole GPUs come from the smallest NVLink domain that holds them (ties: the lowest
    first index); one GPU from the group with the fewest idle GPUs, keeping pairs whole."""
    state = state_of(make_node("a", gpus=len(nvlink), nvlink=nvlink),
                     commits=tuple(Assignment("a", (b,), (GIB,)) for b in busy))
    assert choose_whole_gpus(state, 0, SliceRequest(gpu_count=k)) == expected


def test_asking_for_more_whole_gpus_than_are_idle_names_the_node() -> None:
    """Rule: choosing GPUs on a node without enough idle ones is a caller bug, named."""
    state = state_of(make_node("a", gpus=1))
    with pytest.raises(ValueError, match=r"^node a has fewer than 2 idle GPUs$"):
        choose_whole_gpus(state, 0, SliceRequest(gpu_count=2))


# -- topology_group_fit ------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("nvlink", "pcie", "busy", "k", "expected"),
    [
        (["x", "x"], ["p", "p"], (), 1, 3),      # one GPU: nothing to keep together
        (["x", "x"], ["p", "p"], (), 2, 3),      # the node's first domain (group id 0) holds it
        (["x", "y"], ["p", "p"], (), 2, 2),      # one PCIe switch
        (["x", "y"], ["p", "q"], (), 2, 0),      # spread across
        (["x", "x", "y"], ["p", "p", "q"], (0,), 2, 0),  # a busy GPU does not count in its group
    ],
)
def test_topology_level_of_a_node(nvlink: list[str], pcie: list[str], busy: tuple[int, ...],
                                  k: int, expected: int) -> None:
    """Rule: 3 when one NVLink domain's idle GPUs hold the request, 2 for one PCIe switch, 1 for
    one NUMA node, 0 otherwise; busy GPUs are in no group; fewer than two GPUs score 3."""
    state = state_of(make_node("a", gpus=len(nvlink), nvlink=nvlink, pcie=pcie),
                     commits=tuple(Assignment("a", (b,), (GIB,)) for b in busy))
    assert topology_group_fit(state, np.array([0]), SliceRequest(gpu_count=k)).tolist() == [
        expected]


# -- why_nothing_fits --------------------------------------------------------------------------

CPU_SHORT = make_node("a", gpus=1, cpu=1000)
REASONS = [
    ("no GPU at all", state_of(make_node("a", gpus=0)), SliceRequest(gpu_memory_mib=GIB),
     ["no node has a GPU (this cluster has none)"]),
    ("models missing", state_of(make_node("a"), make_node("b", model="H100")),
     SliceRequest(gpu_memory_mib=GIB, allowed_models=frozenset({"T4", "L4"})),
     ["no node has a GPU of model L4, T4 (this cluster has: A100, H100)"]),
    ("cpu-only, cpu short", state_of(make_node("a", cpu=4000), make_node("b", cpu=2500)),
     SliceRequest(gpu_count=0, cpu_milli=8000), ["no node has 8 CPUs free (most free: 4)"]),
    ("cpu-only, never both at once",
     state_of(make_node("a", cpu=4000, ram=8 * GIB), make_node("b", cpu=2000, ram=16 * GIB)),
     SliceRequest(gpu_count=0, cpu_milli=3000, memory_mib=12 * GIB),
     ["no node has both the CPUs and the RAM free at once"]),
    ("whole GPUs, most idle elsewhere",
     state_of(make_node("a", gpus=4, cpu=4000), make_node("b", gpus=2)),
     SliceRequest(gpu_count=3, cpu_milli=8000),
     ["no node has 3 idle GPUs of an allowed model (most idle on one node: 4; 2 on a node with"
      " the CPUs and RAM free)"]),
    ("one whole GPU, none idle where CPU is",
     state_of(make_node("a", gpus=1, cpu=4000), make_node("b", gpus=1, cpu=8000),
              commits=(Assignment("b", (0,), (GIB,)),)),
     SliceRequest(gpu_count=1, cpu_milli=8000),
     ["no node has 1 idle GPU of an allowed model (most idle on one node: 1; 0 on a node with"
      " the CPUs and RAM free)"]),
    # One idle A100 on each node (a's other GPU is an idle H100): counted per node, never the
    # cluster's sum capped by a node's idle GPUs of any model (that would say 2 for node a).
    ("whole GPUs, one idle of the model on each of two nodes",
     state_of(Node(name="a", cpu_milli=64000, memory_mib=512 * GIB, gpus=(
                  Gpu(index=0, model="A100", memory_mib=80 * GIB, uuid="GPU-a-0"),
                  Gpu(index=1, model="H100", memory_mib=80 * GIB, uuid="GPU-a-1"))),
              make_node("b", gpus=2), commits=(Assignment("b", (1,), (GIB,)),)),
     SliceRequest(gpu_count=2, allowed_models=frozenset({"A100"})),
     ["no node has 2 idle GPUs of an allowed model (most idle on one node: 1)"]),
    ("whole GPUs, the idle ones are held", state_of(make_node("a", gpus=2),
                                                    commits=(Assignment("a", (), (),
                                                                        anonymous_gpus=1),)),
     SliceRequest(gpu_count=2),
     ["no node has 2 idle GPUs of an allowed model (most idle on one node: 1)",
      "1 GPU on 1 node is held by workloads outside AISpike (nvidia.com/gpu pods, other drivers'"
      " claims) and kept idle for them"]),
    ("exact CPU, GPU too small", state_of(make_node("a", gpus=1, cpu=4000)),
     SliceRequest(gpu_memory_mib=81 * GIB, cpu_milli=4000),
     ["no A100 has 81 GiB free (largest free: 80 GiB)"]),
    ("each model short",
     state_of(make_node("a", gpus=1, gib=40), make_node("b", gpus=1, model="H100"),
              commits=(Assignment("b", (0,), (70 * GIB,)),)),
     SliceRequest(gpu_memory_mib=50 * GIB),
     ["no A100 has 50 GiB free (largest free: 40 GiB)",
      "no H100 has 50 GiB free (largest free: 10 GiB)"]),
    ("only the allowed model is named",
     state_of(make_node("a", gpus=1, gib=40), make_node("b", gpus=1, model="H100")),
     SliceRequest(gpu_memory_mib=50 * GIB, allowed_models=frozenset({"A100"})),
     ["no A100 has 50 GiB free (largest free: 40 GiB)"]),
    ("exact fill, CPU short on 1 node",
     state_of(CPU_SHORT, commits=(Assignment("a", (0,), (60 * GIB,)),)),
     SliceRequest(gpu_memory_mib=20 * GIB, cpu_milli=2000),
     ["no node has 2 CPUs free (most free: 1)",
      "1 node has the GPU memory but not the CPUs and RAM too"]),
    ("CPU short on 2 nodes",
     state_of(CPU_SHORT, make_node("b", gpus=1, cpu=1000), make_node("c", gpus=1, gib=16)),
     SliceRequest(gpu_memory_mib=20 * GIB, cpu_milli=2000),
     ["2 nodes have the GPU memory but not the CPUs and RAM too"]),
    ("idle GPUs all held",
     state_of(make_node("a", gpus=2), make_node("b", gpus=2), make_node("c", gpus=0),
              commits=(Assignment("a", (), (), anonymous_gpus=2),
                       Assignment("b", (0,), (GIB,), anonymous_gpus=1))),
     SliceRequest(gpu_memory_mib=80 * GIB),
     ["3 GPUs on 2 nodes are held by workloads outside AISpike (nvidia.com/gpu pods, other"
      " drivers' claims) and kept idle for them"]),
    ("a model asked of a cluster without GPUs", state_of(make_node("a", gpus=0)),
     SliceRequest(gpu_memory_mib=GIB, allowed_models=frozenset({"T4"})),
     ["no node has a GPU of model T4 (this cluster has: none)"]),
    ("cpu-only, exact RAM, CPU short", state_of(make_node("a", gpus=0, cpu=1000, ram=16 * GIB)),
     SliceRequest(gpu_count=0, cpu_milli=2000, memory_mib=16 * GIB),
     ["no node has 2 CPUs free (most free: 1)"]),
    ("whole GPUs of the allowed model only",
     state_of(make_node("a", gpus=4), make_node("b", gpus=2, model="H100"),
              commits=(Assignment("b", (0,), (GIB,)),)),
     SliceRequest(gpu_count=2, allowed_models=frozenset({"H100"})),
     ["no node has 2 idle GPUs of an allowed model (most idle on one node: 1)"]),
    ("whole GPU, every idle GPU held",
     state_of(make_node("a", gpus=2), commits=(Assignment("a", (), (), anonymous_gpus=2),)),
     SliceRequest(gpu_count=1),
     ["no node has 1 idle GPU of an allowed model (most idle on one node: 0)",
      "2 GPUs on 1 node are held by workloads outside AISpike (nvidia.com/gpu pods, other"
      " drivers' claims) and kept idle for them"]),
    ("whole GPU, no node with the CPUs", state_of(make_node("a", gpus=2, cpu=1000)),
     SliceRequest(gpu_count=1, cpu_milli=2000),
     ["no node has 2 CPUs free (most free: 1)",
      "no node has 1 idle GPU of an allowed model (most idle on one node: 2; 0 on a node with"
      " the CPUs and RAM free)"]),
    ("the second model alone allowed",
     state_of(make_node("a", gpus=1, gib=40), make_node("b", gpus=1, model="H100"),
              commits=(Assignment("b", (0,), (70 * GIB,)),)),
     SliceRequest(gpu_memory_mib=50 * GIB, allowed_models=frozenset({"H100"})),
     ["no H100 has 50 GiB free (largest free: 10 GiB)"]),
    ("an idle GPU that must stay idle is not GPU memory to offer",
     state_of(make_node("a", gpus=1), make_node("b", gpus=1, cpu=1000),
              commits=(Assignment("a", (), (), anonymous_gpus=1),)),
     SliceRequest(gpu_memory_mib=10 * GIB, cpu_milli=2000),
     ["1 node has the GPU memory but not the CPUs and RAM too",
      "1 GPU on 1 node is held by workloads outside AISpike (nvidia.com/gpu pods, other drivers'"
      " claims) and kept idle for them"]),
]


@pytest.mark.parametrize(("state", "request_", "reasons"), [r[1:] for r in REASONS],
                         ids=[r[0] for r in REASONS])
def test_the_reasons_nothing_fits(state: ClusterState, request_: SliceRequest,
                                  reasons: list[str]) -> None:
    """Rule: each reason names what is missing and the best there is, whole; a request for
    exactly the free CPU or a slice exactly the free memory of a GPU is not short of it."""
    assert len(find_options(state, request_)) == 0
    assert why_nothing_fits(state, request_) == reasons


# -- NodeFit -----------------------------------------------------------------------------------

def node_fit() -> NodeFit:
    """Node b: 4 CPUs, 16 GiB RAM, GPU 0 (A100 80 GiB) with 20 GiB free, GPU 1 an idle H100 of
    40 GiB that must stay idle (one GPU held anonymously: no idle GPU may start)."""
    b = Node("b", 4000, 16 * GIB, (Gpu(0, "A100", 80 * GIB, uuid="b0"),
                                   Gpu(1, "H100", 40 * GIB, uuid="b1")))
    state = state_of(make_node("a", gpus=1), b,
                     commits=(Assignment("b", (0,), (60 * GIB,), anonymous_gpus=1),))
    return NodeFit(state, 1)


H100 = frozenset({"H100"})
NODE_FIT = [
    ("exact CPU and RAM", SliceRequest(gpu_count=0, cpu_milli=4000, memory_mib=16 * GIB), True),
    ("CPU short", SliceRequest(gpu_count=0, cpu_milli=4001), False),
    ("RAM short", SliceRequest(gpu_count=0, memory_mib=16 * GIB + 1), False),
    ("exact fill of GPU 0 (the only way)", SliceRequest(gpu_memory_mib=20 * GIB), True),
    ("one MiB more", SliceRequest(gpu_memory_mib=20 * GIB + 1), False),
    ("a quarter of an 80 GiB GPU is exactly 20 GiB", SliceRequest(gpu_share_milli=250), True),
    ("three tenths is 24 GiB (after the quarter: not its remembered answer)",
     SliceRequest(gpu_share_milli=300), False),
    ("the idle H100 must stay idle", SliceRequest(gpu_memory_mib=GIB, allowed_models=H100),
     False),
    ("one whole GPU: none may start", SliceRequest(gpu_count=1), False),
]


def test_node_fit_answers_each_request_exactly() -> None:
    """Rule: NodeFit (the simulator's queue check) says a node could host a request exactly when
    its CPU, RAM and GPUs suffice, with the filter's boundaries (exact fits fit; a share rounds
    up on the GPU it lands on) and the anonymous-GPU rule; answers are remembered per request
    shape, never mixed between shapes (one NodeFit answers the whole table in order)."""
    fit = node_fit()
    got = [(name, fit.could_host(req)) for name, req, _ in NODE_FIT]
    assert got == [(name, want) for name, _, want in NODE_FIT]


def test_node_fit_counts_idle_gpus_of_the_allowed_model_only() -> None:
    """Rule: two whole A100s need two idle A100s; an idle H100 beside one idle A100 does not
    make two (though the node's anonymous room is 2)."""
    c = Node("c", 64_000, 512 * GIB, (Gpu(0, "A100", 80 * GIB, uuid="c0"),
                                      Gpu(1, "H100", 80 * GIB, uuid="c1")))
    fit = NodeFit(state_of(c), 0)
    assert fit.could_host(SliceRequest(gpu_count=2)) is True
    assert fit.could_host(SliceRequest(gpu_count=2, allowed_models=frozenset({"A100"}))) is False
