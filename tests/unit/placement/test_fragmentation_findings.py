"""The fragmentation model's rules, pinned where mutation testing found them unchecked (issue 26
item 7).  Every expected value is worked out by hand in the test's docstring or comment; none is
computed by the code under test.

GPUs are 10 GiB (10240 MiB) unless a test says otherwise, so a GPU's free memory in GPUs is its
MiB / 10240.
"""

from __future__ import annotations

import numpy as np
import pytest
from placement_clusters import GIB, make_node

from aispike_hub.model import Assignment, Gpu, Node, SliceRequest
from aispike_hub.placement.fragmentation import (
    FragmentationModel,
    GpuClass,
    Workload,
    default_notebook_workload,
    gpu_class_of,
    is_scarce,
    scarce_server_types,
)
from aispike_hub.placement.state import ClusterState

GPU = 10 * GIB  # 10240 MiB


def node(name: str, gpus: int = 2, cpu: int = 8000, **kw: object) -> Node:
    return make_node(name, gpus=gpus, gib=10, cpu=cpu, **kw)  # type: ignore[arg-type]


def take(state: ClusterState, name: str, gpu: int, mib: int, cpu: int = 0) -> None:
    state.commit(Assignment(node=name, gpu_indices=(gpu,), gpu_memory_mib=(mib,), cpu_milli=cpu))


# -- which task types are scarce ---------------------------------------------------------------
def test_scarce_means_strictly_fewer_hosts_than_a_tenth_of_the_gpu_nodes() -> None:
    """Rule: scarce when hosts < 0.1 x GPU nodes; never on a cluster without GPU nodes."""
    assert is_scarce(0, 0) is False  # no GPU node: nothing is scarce
    assert is_scarce(0, 1) is True  # 0 < 0.1
    assert is_scarce(1, 10) is False  # 1 < 1.0 is false: exactly a tenth is not scarce
    assert is_scarce(1, 11) is True  # 1 < 1.1
    assert is_scarce(5, 10) is False


BIG = SliceRequest(gpu_count=2, cpu_milli=16000, memory_mib=64 * GIB)
ONE = SliceRequest(gpu_count=1, cpu_milli=1000)
BIG_H100 = SliceRequest(gpu_count=2, cpu_milli=16000, memory_mib=64 * GIB,
                        allowed_models=frozenset({"H100"}))


def host(name: str, model: str = "A100", gpus: int = 2, cpu: int = 16000,
         ram: int = 64 * GIB) -> Node:
    """A node with exactly BIG's GPUs, CPU and RAM (by default)."""
    return make_node(name, gpus=gpus, model=model, cpu=cpu, ram=ram)


def mixed(name: str) -> Node:
    """Two GPUs, one H100 and one A100."""
    return Node(name=name, cpu_milli=16000, memory_mib=64 * GIB,
                gpus=(Gpu(0, "H100", 80 * GIB, uuid=f"{name}-0"),
                      Gpu(1, "A100", 80 * GIB, uuid=f"{name}-1")))


@pytest.mark.parametrize(
    ("nodes", "request_", "expected"),
    [
        # ten nodes with exactly BIG's 2 GPUs, 16 cores and 64 GiB: 10 hosts of 10, not scarce
        ([host(f"n{i}") for i in range(10)], BIG, []),
        # one host among 11 GPU nodes (the others have 1 GPU): 1 < 1.1, scarce
        ([host("h")] + [host(f"n{i}", gpus=1) for i in range(10)], BIG, [BIG]),
        # the others have one milli-CPU too few
        ([host("h")] + [host(f"n{i}", cpu=15999) for i in range(10)], BIG, [BIG]),
        # the others have one MiB of RAM too few
        ([host("h")] + [host(f"n{i}", ram=64 * GIB - 1) for i in range(10)], BIG, [BIG]),
        # CPU-only nodes are not GPU nodes: one GPU node, and it hosts BIG (1 < 0.1 is false)
        ([host("h")] + [host(f"c{i}", gpus=0, cpu=64000, ram=512 * GIB) for i in range(11)],
         BIG, []),
        # a model restriction: ten nodes with exactly two H100s host it
        ([host(f"n{i}", model="H100") for i in range(10)], BIG_H100, []),
        # one H100 node among eleven: scarce
        ([host("h", model="H100")] + [host(f"n{i}") for i in range(10)], BIG_H100, [BIG_H100]),
        # two H100s are not enough without the CPU: one host of eleven, scarce
        ([host("h", model="H100")] + [host(f"n{i}", model="H100", cpu=15999) for i in range(10)],
         BIG_H100, [BIG_H100]),
        # one H100 and one A100 per node: two GPUs, but only one of the allowed model; no host
        ([mixed(f"n{i}") for i in range(10)], BIG_H100, [BIG_H100]),
    ],
)
def test_scarce_server_types_count_hosts_by_gpus_model_cpu_and_ram(
        nodes: list[Node], request_: SliceRequest, expected: list[SliceRequest]) -> None:
    """Rule: a multi-GPU type is scarce when fewer than a tenth of the GPU nodes have at least its
    GPU count (of an allowed model), CPU and RAM capacity; a node with exactly that is a host.
    The one-GPU type listed first is skipped and does not end the search."""
    workload = Workload(((ONE, 0.5), (request_, 0.5)))
    assert scarce_server_types(ClusterState(nodes), workload) == expected


def test_one_gpu_types_are_never_scarce_servers() -> None:
    """Rule: one-GPU types are left out even when few nodes have their model (1 H100 node of 11
    would be scarce for a 2-GPU type)."""
    one_h100 = SliceRequest(gpu_count=1, allowed_models=frozenset({"H100"}))
    nodes = [host("h", model="H100")] + [host(f"n{i}") for i in range(10)]
    assert scarce_server_types(ClusterState(nodes), Workload(((one_h100, 1.0),))) == []


# -- the workload -------------------------------------------------------------------------------
def test_workload_from_requests_counts_shapes_most_frequent_first() -> None:
    """Rule: each distinct shape (GPU count, GPU memory, share, CPU, models, RAM; not image or
    datasets) gets count / total; most frequent first, equal counts in the order of the shape's
    repr.  5 requests: the 500-share twice (once with an image), the 300-share twice, a CPU-only
    server once: 2/5, 2/5, 1/5; "(1, 0, 300, ..." sorts before "(1, 0, 500, ..." (and the
    CPU-only shape, whose tuple sorts first, comes last by count).
    """
    half = SliceRequest(gpu_share_milli=500, cpu_milli=1000)
    third = SliceRequest(gpu_share_milli=300, cpu_milli=1000, memory_mib=2048,
                         allowed_models=frozenset({"A100"}))
    small = SliceRequest(gpu_count=0, cpu_milli=500)  # its shape would sort first
    named = SliceRequest(gpu_share_milli=500, cpu_milli=1000, image="x", datasets=("d",))
    workload = Workload.from_requests([half, third, small, named, third])
    assert workload.types == ((third, 0.4), (half, 0.4), (small, 0.2))


def test_an_empty_workload_is_refused() -> None:
    with pytest.raises(ValueError) as err:
        Workload.from_requests([])
    assert str(err.value) == "a workload needs at least one request"


def test_default_notebook_workload_is_the_documented_mix() -> None:
    """Rule: the mix a hub without history uses (docstring: mostly memory slices, some whole
    GPUs, a few multi-GPU servers, CPU growing with the slice); its shares sum to 1
    (0.20 + 0.22 + 0.18 + 0.10 + 0.08 + 0.12 + 0.04 + 0.02 + 0.04)."""
    rows = [(r.gpu_count, r.gpu_memory_mib, r.gpu_share_milli, r.cpu_milli, r.memory_mib,
             r.allowed_models, p) for r, p in default_notebook_workload().types]
    assert rows == [
        (1, 4096, 0, 2000, 8192, frozenset(), 0.20),
        (1, 8192, 0, 4000, 16384, frozenset(), 0.22),
        (1, 16384, 0, 4000, 32768, frozenset(), 0.18),
        (1, 24576, 0, 8000, 49152, frozenset(), 0.10),
        (1, 40960, 0, 8000, 65536, frozenset(), 0.08),
        (1, 0, 0, 8000, 65536, frozenset(), 0.12),
        (2, 0, 0, 16000, 131072, frozenset(), 0.04),
        (4, 0, 0, 32000, 262144, frozenset(), 0.02),
        (0, 0, 0, 2000, 8192, frozenset(), 0.04),
    ]
    assert sum(p for *_, p in rows) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (SliceRequest(gpu_count=2), GpuClass(2, True, 0, 0, frozenset())),
        # a share of 1000 is a whole GPU: the same class as gpu_count=1 without a share
        (SliceRequest(gpu_share_milli=1000), GpuClass(1, True, 0, 0, frozenset())),
        (SliceRequest(gpu_count=1), GpuClass(1, True, 0, 0, frozenset())),
        (SliceRequest(gpu_share_milli=300, allowed_models=frozenset({"A100"})),
         GpuClass(1, False, 300, 0, frozenset({"A100"}))),
        (SliceRequest(gpu_memory_mib=4096), GpuClass(1, False, 0, 4096, frozenset())),
    ],
)
def test_gpu_class_keeps_share_and_memory_only_for_slices(request_: SliceRequest,
                                                          expected: GpuClass) -> None:
    assert gpu_class_of(request_) == expected


def test_an_unknown_measure_is_refused_by_name() -> None:
    with pytest.raises(ValueError) as err:
        FragmentationModel(ClusterState([node("a")]), default_notebook_workload(), "fdg")
    assert str(err.value) == "unknown fragmentation measure 'fdg'"


# -- F(n) on one worked cluster ----------------------------------------------------------------
CPU_ONLY = SliceRequest(gpu_count=0, cpu_milli=1000)
SLICE_4G = SliceRequest(gpu_memory_mib=4096, cpu_milli=2000)
WHOLE = SliceRequest(gpu_count=1, cpu_milli=4000)
# The CPU-only type first: it is skipped (its GPU capacity is all fragmented, already in T)
# and must not end the list of classes.
MIX = Workload(((CPU_ONLY, 0.25), (SLICE_4G, 0.5), (WHOLE, 0.25)))


def worked_state() -> ClusterState:
    """a: 2 x 10 GiB, 8 cores, 6 GiB and 2 cores taken on GPU 0 (free 4096 + 10240 MiB, 6000
    milli); b: the same, idle; c: one 20 GiB GPU, idle."""
    state = ClusterState([node("a"), node("b"), make_node("c", gpus=1, gib=20, cpu=8000)])
    take(state, "a", 0, 6144, cpu=2000)
    return state


def test_fgd_fragmentation_per_node_on_the_worked_cluster() -> None:
    """Rule: F = T - sum_j W_j(cpu free) * [C >= k] * S / cap.  Classes: 4 GiB slice (W = 0.5
    once 2000 milli are free), whole GPU (W = 0.25 once 4000 are free).

    a: T = (4096 + 10240) / 10240 = 1.4; slice: both GPUs have >= 4096 (GPU 0 exactly), S =
       14336; whole: GPU 1, S = 10240; 6000 milli free: used = (0.5 x 14336 + 0.25 x 10240)
       / 10240 = 0.95; F = 0.45.
    b: T = 2; used = (0.5 + 0.25) x 20480 / 10240 = 1.5; F = 0.5.
    c: T = 1 (one 20 GiB GPU, divided by its own 20480); used = 0.5 + 0.25; F = 0.25.
    """
    model = FragmentationModel(worked_state(), MIX)
    assert model.frag.tolist() == pytest.approx([0.45, 0.5, 0.25])
    assert model.cluster_fragmentation() == pytest.approx(1.2)


def test_capacity_fragmentation_per_node_on_the_worked_cluster() -> None:
    """Rule: F = T - sum_types p x min(whole slices the GPUs take, slices the free CPU allows)
    x demand / cap.

    a: slices: floor(4096/4096) + floor(10240/4096) = 3, CPU 6000/2000 = 3: 3 x 4096 x 0.5 =
       6144; whole: 1 GPU, CPU 6000/4000 = 1: 10240 x 0.25 = 2560; F = 1.4 - 8704/10240 = 0.55.
    b: slices 2 + 2 = 4, CPU 4: 4 x 4096 x 0.5 = 8192; whole 2, CPU 2: 5120; F = 2 - 1.3 = 0.7.
    c: slices floor(20480/4096) = 5 but CPU 8000/2000 = 4: 4 x 4096 x 0.5 = 8192; whole 1, CPU
       2: 1 x 20480 x 0.25 = 5120; F = 1 - 13312/20480 = 1 - 0.65 = 0.35.
    """
    model = FragmentationModel(worked_state(), MIX, "capacity")
    assert model.frag.tolist() == pytest.approx([0.55, 0.7, 0.35])
    assert model.cluster_fragmentation() == pytest.approx(1.6)


@pytest.mark.parametrize(
    ("cpu_taken", "fgd", "capacity"),
    [
        # 2000 milli free, exactly the slice's CPU: the slice counts, the whole GPU (4000) not.
        # fgd: 1.4 - 0.5 x 14336 / 10240 = 1.4 - 0.7 = 0.7;
        # capacity: 2000 / 2000 = 1 slice: 1.4 - 4096 x 0.5 / 10240 = 1.2.
        (6000, 0.7, 1.2),
        # 1999 free: no type fits; everything free is fragmented: 1.4.
        (6001, 1.4, 1.4),
    ],
)
def test_a_type_counts_on_a_node_with_exactly_its_cpu_free(cpu_taken: int, fgd: float,
                                                           capacity: float) -> None:
    state = ClusterState([node("a")])
    take(state, "a", 0, 6144, cpu=cpu_taken)
    assert FragmentationModel(state, MIX).frag[0] == pytest.approx(fgd)
    assert FragmentationModel(state, MIX, "capacity").frag[0] == pytest.approx(capacity)


def test_the_fgd_weight_of_a_class_grows_with_each_cpu_step() -> None:
    """Rule: W_j(c) sums the shares of the class's types needing at most c CPU.  One 4 GiB
    class, types of 2000 and 4000 milli, 0.5 each; node a with 3000 milli free: W = 0.5;
    F = 1.4 - 0.5 x 14336 / 10240 = 0.7; with 4000 free: W = 1, F = 1.4 - 1.4 = 0."""
    mix = Workload(((SLICE_4G, 0.5), (SliceRequest(gpu_memory_mib=4096, cpu_milli=4000), 0.5)))
    for cpu_taken, expected in ((5000, 0.7), (4000, 0.0)):
        state = ClusterState([node("a")])
        take(state, "a", 0, 6144, cpu=cpu_taken)
        assert FragmentationModel(state, mix).frag[0] == pytest.approx(expected)


@pytest.mark.parametrize(("taken", "free_frag"), [(10240 - 3410, 0.0), (10240 - 3409, 3409)])
def test_a_share_demands_its_thousandths_of_the_gpu_rounded_up(taken: int,
                                                              free_frag: float) -> None:
    """Rule: a 333-thousandth share of a 10240 MiB GPU needs ceil(333 x 10240 / 1000) =
    ceil(3409.92) = 3410 MiB.  One GPU with 3410 free hosts it (F = 0 under both measures);
    with 3409 free it does not: F = 3409 / 10240."""
    mix = Workload(((SliceRequest(gpu_share_milli=333, cpu_milli=1000), 1.0),))
    state = ClusterState([node("a", gpus=1)])
    take(state, "a", 0, taken)
    for measure in ("fgd", "capacity"):
        got = FragmentationModel(state, mix, measure).frag[0]
        assert got == pytest.approx(free_frag / 10240), measure


def test_a_model_restriction_makes_other_models_fragmented() -> None:
    """Rule: a class limited to H100 uses nothing on an A100 node.  One 4 GiB slice type for
    H100, share 1.  A100 node (1 GPU idle): F = 1 under both.  H100 node: fgd F = 1 - 1 = 0;
    capacity: floor(10240/4096) = 2 slices, 8000/1000 CPU = 8: F = 1 - 8192/10240 = 0.2."""
    mix = Workload(((SliceRequest(gpu_memory_mib=4096, cpu_milli=1000,
                                  allowed_models=frozenset({"H100"})), 1.0),))
    state = ClusterState([node("a", gpus=1), node("b", gpus=1, model="H100")])
    assert FragmentationModel(state, mix).frag.tolist() == pytest.approx([1.0, 0.0])
    assert FragmentationModel(state, mix, "capacity").frag.tolist() == pytest.approx([1.0, 0.2])


TWO = SliceRequest(gpu_count=2, cpu_milli=1000)


@pytest.mark.parametrize(
    ("taken_on", "fgd", "capacity"),
    [
        # idle, 3 GPUs: fgd C = 3 >= 2, S = 30720: F = 3 - 3 = 0; capacity: 3 // 2 = 1 server
        # of 2 GPUs: F = 3 - 2 = 1.
        ((), 0.0, 1.0),
        # 1 GiB taken on GPU 0: T = (9216 + 20480) / 10240 = 2.9; C = 2 (exactly k): fgd
        # S = 20480, F = 2.9 - 2 = 0.9; capacity 2 // 2 = 1 server: F = 0.9.
        ((0,), 0.9, 0.9),
        # 1 GiB taken on GPUs 0 and 1: T = 2.8, C = 1 < 2: nothing usable, F = 2.8.
        ((0, 1), 2.8, 2.8),
    ],
)
def test_a_multi_gpu_class_needs_its_gpu_count_of_whole_gpus(taken_on: tuple[int, ...],
                                                             fgd: float,
                                                             capacity: float) -> None:
    """Rule: fgd counts a k-GPU class only where C >= k (then all S); the capacity measure
    counts C // k servers of k GPUs each."""
    state = ClusterState([node("a", gpus=3)])
    for g in taken_on:
        take(state, "a", g, 1024)
    mix = Workload(((TWO, 1.0),))
    assert FragmentationModel(state, mix).frag[0] == pytest.approx(fgd)
    assert FragmentationModel(state, mix, "capacity").frag[0] == pytest.approx(capacity)


# -- scarce types in the capacity measure -------------------------------------------------------
ONE_GPU = SliceRequest(gpu_count=1, cpu_milli=2000)
TWO_GPU = SliceRequest(gpu_count=2, cpu_milli=2000)
SCARCE_MIX = Workload(((ONE_GPU, 0.95), (TWO_GPU, 0.05)))


@pytest.mark.parametrize(
    ("small_nodes", "boost"),
    [
        (9, 1.0),  # 10 GPU nodes, 1 host: 1 < 1.0 is false, not scarce
        (10, 11.0),  # 11 GPU nodes, 1 host: scarce, x 11 / 1
        (50, 50.0),  # 51 GPU nodes: 51 / 1 capped at 50
    ],
)
def test_capacity_measure_boosts_a_type_few_nodes_can_host(small_nodes: int,
                                                           boost: float) -> None:
    """Rule: a type that fewer than a tenth of the GPU nodes can host weighs GPU nodes / hosts
    times its share, at most 50.  Only "big" (2 GPUs) hosts the 2-GPU type.  On big (idle, 8000
    milli): one-GPU type 2 GPUs x 0.95 = 1.9; the 2-GPU type 1 server = 2 GPUs x 0.05 x boost;
    F = 2 - 1.9 - 0.1 x boost.  fgd has no boost: F = 2 - 1.9 - 0.1 = 0."""
    nodes = [node(f"s{i}", gpus=1) for i in range(small_nodes)] + [node("big")]
    state = ClusterState(nodes)
    assert FragmentationModel(state, SCARCE_MIX, "capacity").frag[-1] == pytest.approx(
        2 - 1.9 - 0.1 * boost)
    assert FragmentationModel(state, SCARCE_MIX).frag[-1] == pytest.approx(0.0)


def test_a_host_needs_the_types_gpu_count_and_exactly_its_cpu_is_enough() -> None:
    """Rule: every node with at least the type's GPUs and CPU capacity is a host.  Eleven nodes
    of 2 GPUs and 8000 milli; the 2-GPU type asks exactly 8000: 11 hosts, not scarce.  Each node:
    one-GPU type 2 x 0.95 = 1.9 (CPU 8000/2000 = 4), 2-GPU type 1 server (CPU 8000/8000 = 1):
    2 x 0.05 = 0.1; F = 0 (a boost of 11 would make it -1)."""
    mix = Workload(((ONE_GPU, 0.95), (SliceRequest(gpu_count=2, cpu_milli=8000), 0.05)))
    state = ClusterState([node(f"n{i}") for i in range(11)])
    assert FragmentationModel(state, mix, "capacity").frag.tolist() == pytest.approx([0.0] * 11)


# -- following the state -----------------------------------------------------------------------
def test_the_model_follows_each_commit_of_the_state() -> None:
    """Rule: sync recomputes exactly the nodes changed since the last call.  One 4 GiB slice
    type; two idle 1-GPU nodes: F = 0.  8 GiB taken on a: 2048 free < 4096, F(a) = 0.2;
    then on b as well: 0.4."""
    mix = Workload(((SliceRequest(gpu_memory_mib=4096), 1.0),))
    state = ClusterState([node("a", gpus=1), node("b", gpus=1)])
    model = FragmentationModel(state, mix)
    assert model.cluster_fragmentation() == pytest.approx(0.0)
    take(state, "a", 0, 8192)
    assert model.cluster_fragmentation() == pytest.approx(0.2)
    take(state, "b", 0, 8192)
    assert model.cluster_fragmentation() == pytest.approx(0.4)
    assert model.frag.tolist() == pytest.approx([0.2, 0.2])


# -- pricing options: delta ----------------------------------------------------------------------
def options(*rows: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    arr = np.array(rows, dtype=np.int64)
    return arr[:, 0], arr[:, 1], arr[:, 2]


@pytest.mark.parametrize(
    ("measure", "expected"),
    [
        # a, GPU 1: after 4096 + 6144 free, 4000 milli. fgd: T = 1; slice S = 10240 (both
        #   >= 4096), no whole GPU: F = 1 - 0.5 = 0.5, delta 0.5 - 0.45 = 0.05.
        #   capacity: 1 + 1 slices, CPU 2: F = 1 - 2 x 4096 x 0.5 / 10240 = 0.6, delta 0.05.
        # a, GPU 0: after 0 + 10240 free. fgd: slice S = 10240, whole S = 10240: F = 1 - 0.75
        #   = 0.25, delta -0.2. capacity: 2 slices (CPU 2), 1 whole (CPU 1): F = 1 - (4096 +
        #   2560) / 10240 = 0.35, delta -0.2.
        # b, GPU 0: after 6144 + 10240, 6000 milli. fgd: T = 1.6, slice S = 16384, whole
        #   S = 10240: F = 1.6 - (8192 + 2560) / 10240 = 0.55, delta 0.05. capacity: 1 + 2
        #   slices (CPU 3), 1 whole (CPU 1): F = 1.6 - (6144 + 2560) / 10240 = 0.75, delta 0.05.
        ("fgd", [0.05, -0.2, 0.05]),
        ("capacity", [0.05, -0.2, 0.05]),
    ],
)
def test_delta_of_a_slice_is_the_change_of_f(measure: str, expected: list[float]) -> None:
    """Rule: delta = F(after taking the slice and its CPU) - F(now), without changing the state
    (worked cluster; a 4 GiB slice with 2000 milli)."""
    state = worked_state()
    model = FragmentationModel(state, MIX, measure)
    got = model.delta(*options((0, 1, 4096), (0, 0, 4096), (1, 0, 4096)), 1, 2000)
    assert got.tolist() == pytest.approx(expected)
    assert state.gpu_free[0].tolist() == [4096, 10240]  # priced, not taken


@pytest.mark.parametrize(
    ("measure", "expected"),
    [
        # a: after GPU 0 4096 free, GPU 1 taken, 2000 milli. fgd: T = 0.4, slice S = 4096 with
        #   W = 0.5 (2000 free), whole: none; F = 0.4 - 0.2 = 0.2, delta 0.2 - 0.45 = -0.25.
        #   capacity: 1 slice (CPU 1): F = 0.4 - 0.2 = 0.2, delta 0.2 - 0.55 = -0.35.
        # b: after one idle GPU, 4000 milli. fgd: F = 1 - 0.75 = 0.25, delta -0.25.
        #   capacity: 2 slices (CPU 2), 1 whole (CPU 1): F = 1 - 0.65 = 0.35, delta -0.35.
        ("fgd", [-0.25, -0.25]),
        ("capacity", [-0.35, -0.35]),
    ],
)
def test_delta_of_a_whole_gpu_is_the_change_of_f(measure: str, expected: list[float]) -> None:
    model = FragmentationModel(worked_state(), MIX, measure)
    got = model.delta(*options((0, -1, GPU), (1, -1, GPU)), 1, 4000)
    assert got.tolist() == pytest.approx(expected)


@pytest.mark.parametrize(
    ("measure", "expected"),
    [
        # a: 3000 milli left. fgd: W = 0.5 for the slice only: F = 1.4 - 0.7 = 0.7, delta 0.25.
        #   capacity: 1 slice by CPU: F = 1.4 - 0.2 = 1.2, delta 0.65.
        # b: 5000 left. fgd: W unchanged, delta 0. capacity: 2 slices, 1 whole by CPU:
        #   F = 2 - (4096 + 2560) / 10240 = 1.35, delta 0.65.
        ("fgd", [0.25, 0.0]),
        ("capacity", [0.65, 0.65]),
    ],
)
def test_delta_of_a_cpu_only_server_is_the_cpu_it_takes(measure: str,
                                                        expected: list[float]) -> None:
    model = FragmentationModel(worked_state(), MIX, measure)
    got = model.delta(*options((0, -1, 0), (1, -1, 0)), 0, 3000)
    assert got.tolist() == pytest.approx(expected)


@pytest.mark.parametrize(("measure", "expected"), [("fgd", 0.5), ("capacity", -0.2)])
def test_delta_of_two_whole_gpus_on_a_three_gpu_node(measure: str, expected: float) -> None:
    """Rule: k whole GPUs take k GPUs from every class they fit.  Mix: 2 whole GPUs 0.5, 4 GiB
    slice 0.5, both 1000 milli; an idle node of 3 GPUs and 8000 milli.
    Now: fgd F = 3 - 0.5 x 3 - 0.5 x 3 = 0; capacity: 1 server of 2 (20480 x 0.5) + 6 slices
    (6 x 4096 x 0.5): F = 3 - 1 - 1.2 = 0.8.
    After 2 GPUs and 1000 milli: one idle GPU, 7000 milli. fgd: C = 1 < 2; slice S = 10240:
    F = 1 - 0.5 = 0.5, delta 0.5. capacity: no server; 2 slices: F = 1 - 0.4 = 0.6, delta -0.2.
    """
    mix = Workload(((TWO, 0.5), (SliceRequest(gpu_memory_mib=4096, cpu_milli=1000), 0.5)))
    model = FragmentationModel(ClusterState([node("a", gpus=3)]), mix, measure)
    got = model.delta(*options((0, -1, GPU)), 2, 1000)
    assert got.tolist() == pytest.approx([expected])


# -- found by the mutation run's survivors -----------------------------------------------------
def test_types_differing_only_in_ram_are_one_type_for_the_capacity_measure() -> None:
    """Rule: the capacity measure merges types of the same GPU class and CPU (RAM is left out),
    adding their shares.  Two 4 GiB types of 1000 milli, 8 and 16 GiB of RAM, 0.5 each: one type
    of share 1.  One idle 10 GiB GPU: floor(10240 / 4096) = 2 slices: F = 1 - 8192 / 10240 = 0.2
    (with only one of the shares counted it would be 1 - 0.4 = 0.6)."""
    mix = Workload(((SliceRequest(gpu_memory_mib=4096, cpu_milli=1000, memory_mib=8 * GIB), 0.5),
                    (SliceRequest(gpu_memory_mib=4096, cpu_milli=1000, memory_mib=16 * GIB), 0.5)))
    state = ClusterState([node("a", gpus=1)])
    assert FragmentationModel(state, mix, "capacity").frag.tolist() == pytest.approx([0.2])


@pytest.mark.parametrize(
    ("small_nodes", "bigs", "cpu_only", "boost"),
    [
        # 21 GPU nodes, 2 hosts: 2 < 2.1, scarce: x 21 / 2 = 10.5
        (19, 2, 0, 10.5),
        # 10 GPU nodes and a CPU-only node: the CPU-only node is not a GPU node, 1 < 1.0 is
        # false: no boost
        (9, 1, 1, 1.0),
    ],
)
def test_the_boost_is_gpu_nodes_over_hosts(small_nodes: int, bigs: int, cpu_only: int,
                                           boost: float) -> None:
    """As test_capacity_measure_boosts_a_type_few_nodes_can_host: F(big) = 2 - 1.9 - 0.1 x
    boost, with boost = GPU nodes / hosts (CPU-only nodes not counted)."""
    nodes = ([node(f"s{i}", gpus=1) for i in range(small_nodes)]
             + [node(f"c{i}", gpus=0) for i in range(cpu_only)]
             + [node(f"big{i}") for i in range(bigs)])
    model = FragmentationModel(ClusterState(nodes), SCARCE_MIX, "capacity")
    assert model.frag[-1] == pytest.approx(2 - 1.9 - 0.1 * boost)


def test_a_one_mib_slice_type_is_counted_slice_by_slice() -> None:
    """Rule: the capacity measure counts floor(free / demand) slices, also for a demand of one
    MiB.  A 1 MiB type asking no CPU on an idle node of 2 x 10240 MiB: 20480 slices of 1 MiB,
    F = 2 - 20480 / 10240 = 0.  A 1024 MiB slice on GPU 0: 9216 + 10240 slices, T = 1.9: F = 0,
    delta 0.  A whole GPU: 10240 slices, T = 1: F = 0, delta 0."""
    mix = Workload(((SliceRequest(gpu_memory_mib=1), 1.0),))
    model = FragmentationModel(ClusterState([node("a")]), mix, "capacity")
    assert model.frag.tolist() == pytest.approx([0.0])
    assert model.delta(*options((0, 0, 1024)), 1, 0).tolist() == pytest.approx([0.0])
    assert model.delta(*options((0, -1, GPU)), 1, 0).tolist() == pytest.approx([0.0])


@pytest.mark.parametrize(
    ("node_cpu", "type_cpu", "fgd", "capacity"),
    [
        # a type asking no CPU on a node with none free: fgd counts the GPU (W = 1 once 0 milli
        # are free): F = 1 - 1 = 0; capacity: CPU does not limit it, 2 slices: 1 - 0.8 = 0.2
        (0, 0, 0.0, 0.2),
        # a type of 1 milli on a node with 1 milli: one slice by CPU: capacity 1 - 0.4 = 0.6
        (1, 1, 0.0, 0.6),
    ],
)
def test_only_the_cpu_a_type_asks_limits_its_slices(node_cpu: int, type_cpu: int, fgd: float,
                                                   capacity: float) -> None:
    """Rule: no more slices than the node's free CPU allows, counted in the type's own CPU: a
    type that asks none is not limited by CPU (the filter places it on a node without free
    CPU), so both measures count the 4 GiB type on an idle 10 GiB GPU."""
    mix = Workload(((SliceRequest(gpu_memory_mib=4096, cpu_milli=type_cpu), 1.0),))
    state = ClusterState([node("a", gpus=1, cpu=node_cpu)])
    assert FragmentationModel(state, mix).frag.tolist() == pytest.approx([fgd])
    assert FragmentationModel(state, mix, "capacity").frag.tolist() == pytest.approx([capacity])
