"""Preemption candidates: the fewest, cheapest, lowest-tier servers whose stop makes room."""

from __future__ import annotations

from aispike_hub.model import Assignment, Gpu, Node, SliceRequest
from aispike_hub.placement.preemption import RunningServer, preemption_candidates
from aispike_hub.placement.state import ClusterState

GIB = 1024


def cluster(nodes: int = 2) -> ClusterState:
    return ClusterState(
        [
            Node(f"n{i}", 32000, 256 * GIB,
                 tuple(Gpu(g, "A100", 80 * GIB, uuid=f"u{i}{g}") for g in range(2)))
            for i in range(nodes)
        ]
    )


def run(state: ClusterState, key: str, node: str, gpu: int, gib: int, tier: int,
        work: float = 0.0, borrowed: bool = False) -> RunningServer:
    a = Assignment(node, (gpu,), (gib * GIB,), 1000, GIB, key)
    state.commit(a)
    return RunningServer(key, a, tier, work, borrowed)


def test_lower_tier_least_work_lost_is_chosen_and_nothing_extra_stops() -> None:
    state = cluster(1)
    servers = [
        run(state, "low-old", "n0", 0, 40, tier=0, work=500),
        run(state, "low-new", "n0", 0, 40, tier=0, work=10),
        run(state, "mid", "n0", 1, 80, tier=1, work=1),
    ]
    (best,) = preemption_candidates(state, SliceRequest(gpu_memory_mib=30 * GIB), servers, 2)
    assert best.victims == ("low-new",)
    assert best.highest_tier == 0


def test_same_tier_is_safe_unless_borrowed() -> None:
    state = cluster(1)
    servers = [run(state, "peer", "n0", 0, 80, tier=1), run(state, "peer2", "n0", 1, 80, tier=1)]
    request = SliceRequest(gpu_memory_mib=8 * GIB)
    assert preemption_candidates(state, request, servers, 1) == []
    borrowed = [servers[0], RunningServer("peer2", servers[1].assignment, 1, borrowed=True)]
    (best,) = preemption_candidates(state, request, borrowed, 1)
    assert best.victims == ("peer2",)


def test_nodes_are_ranked_by_tier_then_borrowed_then_work() -> None:
    state = cluster(2)
    servers = [
        run(state, "a", "n0", 0, 80, tier=1, work=1),
        run(state, "a2", "n0", 1, 80, tier=1, work=1),
        run(state, "b", "n1", 0, 80, tier=0, work=900),
        run(state, "b2", "n1", 1, 80, tier=0, work=900),
    ]
    options = preemption_candidates(state, SliceRequest(gpu_memory_mib=GIB), servers, 5)
    assert [o.node for o in options] == ["n1", "n0"]
    assert len(options[0].victims) == 1


def test_a_multi_gpu_request_needs_every_gpu_freed() -> None:
    state = cluster(1)
    servers = [run(state, "x", "n0", 0, 10, tier=0), run(state, "y", "n0", 1, 10, tier=0)]
    (best,) = preemption_candidates(state, SliceRequest(gpu_count=2), servers, 1)
    assert set(best.victims) == {"x", "y"}


def test_nothing_helps_when_the_blocker_is_not_preemptible() -> None:
    state = cluster(1)
    state.commit(Assignment("n0", (0, 1), (80 * GIB, 80 * GIB), 0, 0, "system"))
    assert preemption_candidates(state, SliceRequest(gpu_memory_mib=GIB), [], 3) == []
