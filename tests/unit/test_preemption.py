"""Preemption candidates: the fewest, cheapest, lowest-tier servers whose stop makes room.

Who may be preempted at all is the quota core's rule (:func:`aispike_hub.quota.preemptible_by`);
the placement core takes it as a predicate (:func:`aispike_hub.quota.victim_filter`) and has no
rule of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from aispike_hub.model import Assignment, Gpu, Node, SliceRequest
from aispike_hub.placement.preemption import (
    MayPreempt,
    PreemptionOption,
    RunningServer,
    preemption_candidates,
)
from aispike_hub.placement.state import ClusterState
from aispike_hub.quota import Amounts, Server, Tier, User, victim_filter

GIB = 1024
REQUESTER = User("requester")


def as_quota_server(r: RunningServer) -> Server:
    """The quota core's view of a running server (its key is the user here)."""
    return Server(r.key, "", Amounts(), f"t{r.tier}", r.tier, r.borrowed)


def rule(servers: Sequence[RunningServer], tier: int, *, preempts: bool = True,
         borrowing: bool = False, requester: User = REQUESTER) -> MayPreempt:
    """The quota core's eligibility rule for a request of ``tier``, as placement takes it."""
    return victim_filter(requester, Tier(f"t{tier}", tier, preempts), borrowing,
                         [as_quota_server(r) for r in servers], key=lambda s: s.user)


def candidates(state: ClusterState, request: SliceRequest, servers: Sequence[RunningServer],
               tier: int, limit: int = 5, **kw: Any) -> list[PreemptionOption]:
    return preemption_candidates(state, request, servers, tier,
                                 may_preempt=rule(servers, tier, **kw), limit=limit)


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
    (best,) = candidates(state, SliceRequest(gpu_memory_mib=30 * GIB), servers, 2)
    assert best.victims == ("low-new",)
    assert best.highest_tier == 0


def test_same_tier_is_safe_unless_borrowed() -> None:
    state = cluster(1)
    servers = [run(state, "peer", "n0", 0, 80, tier=1), run(state, "peer2", "n0", 1, 80, tier=1)]
    request = SliceRequest(gpu_memory_mib=8 * GIB)
    assert candidates(state, request, servers, 1) == []
    borrowed = [servers[0], RunningServer("peer2", servers[1].assignment, 1, borrowed=True)]
    (best,) = candidates(state, request, borrowed, 1)
    assert best.victims == ("peer2",)


def test_nodes_are_ranked_by_tier_then_borrowed_then_work() -> None:
    state = cluster(2)
    servers = [
        run(state, "a", "n0", 0, 80, tier=1, work=1),
        run(state, "a2", "n0", 1, 80, tier=1, work=1),
        run(state, "b", "n1", 0, 80, tier=0, work=900),
        run(state, "b2", "n1", 1, 80, tier=0, work=900),
    ]
    options = candidates(state, SliceRequest(gpu_memory_mib=GIB), servers, 5)
    assert [o.node for o in options] == ["n1", "n0"]
    assert len(options[0].victims) == 1


def test_a_multi_gpu_request_needs_every_gpu_freed() -> None:
    state = cluster(1)
    servers = [run(state, "x", "n0", 0, 10, tier=0), run(state, "y", "n0", 1, 10, tier=0)]
    (best,) = candidates(state, SliceRequest(gpu_count=2), servers, 1)
    assert set(best.victims) == {"x", "y"}


def test_nothing_helps_when_the_blocker_is_not_preemptible() -> None:
    state = cluster(1)
    state.commit(Assignment("n0", (0, 1), (80 * GIB, 80 * GIB), 0, 0, "system"))
    assert candidates(state, SliceRequest(gpu_memory_mib=GIB), [], 3) == []


def test_a_borrowing_request_does_not_preempt_borrowed_servers_of_its_tier() -> None:
    state = cluster(1)
    servers = [run(state, "peer", "n0", 0, 80, tier=1, borrowed=True),
               run(state, "peer2", "n0", 1, 80, tier=1, borrowed=True)]
    request = SliceRequest(gpu_memory_mib=8 * GIB)
    assert candidates(state, request, servers, 1, borrowing=True) == []
    assert candidates(state, request, servers, 1)


def test_a_tier_that_does_not_preempt_gets_no_candidates() -> None:
    state = cluster(1)
    servers = [run(state, "low", "n0", 0, 80, tier=0), run(state, "low2", "n0", 1, 80, tier=0)]
    assert candidates(state, SliceRequest(gpu_memory_mib=GIB), servers, 1, preempts=False) == []


def test_never_the_requesters_own_server() -> None:
    state = cluster(1)
    servers = [run(state, "me", "n0", 0, 80, tier=0), run(state, "me2", "n0", 1, 80, tier=0)]
    request = SliceRequest(gpu_memory_mib=GIB)
    assert candidates(state, request, servers[:1], 1, requester=User("me")) == []
    (best,) = candidates(state, request, servers, 1, requester=User("me"))
    assert best.victims == ("me2",)


@pytest.mark.parametrize("tier", [0, 1])
def test_the_caller_supplies_eligibility_and_placement_adds_no_rule(tier: int) -> None:
    """A predicate that allows everyone (as the service passes after filtering with the quota
    rule) makes even a higher tier a candidate: placement only chooses among what it is given."""
    state = cluster(1)
    servers = [run(state, "high", "n0", 0, 80, tier=2), run(state, "high2", "n0", 1, 80, tier=2)]
    (best,) = preemption_candidates(state, SliceRequest(gpu_memory_mib=GIB), servers, tier,
                                    may_preempt=lambda _server, _tier: True, limit=1)
    assert len(best.victims) == 1
