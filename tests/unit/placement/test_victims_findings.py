"""Preemption's victim order and answer, pinned where mutation testing found them unchecked
(issue 26 item 7).  The cases are built so that the orders *disagree*: a borrowed server of a
higher tier against a lower-tier one on nominal quota, and a put-back phase where keeping one
victim or another both make room.
"""

from __future__ import annotations

from placement_clusters import GIB, make_node

from aispike_hub.model import Assignment, SliceRequest
from aispike_hub.placement.preemption import RunningServer, preemption_candidates
from aispike_hub.placement.state import ClusterState


def lower_tier(server: RunningServer, tier: int) -> bool:
    """The simplest eligibility rule: only servers of a lower tier than the request."""
    return server.tier < tier


def running(state: ClusterState, key: str, node: str, gib: int, tier: int, work: float = 0.0,
            borrowed: bool = False) -> RunningServer:
    """A server holding ``gib`` GiB of GPU 0 on ``node``, committed to ``state``."""
    a = Assignment(node, (0,), (gib * GIB,), owner=key)
    state.commit(a)
    return RunningServer(key, a, tier, work, borrowed)


def test_borrowed_servers_go_first_even_of_a_higher_tier() -> None:
    """Rule: on a node, a server on borrowed capacity is stopped before one on its group's
    nominal quota, even when the borrowed one's tier is higher; the answer counts the victims
    not on borrowed capacity (0) and sums their work lost."""
    state = ClusterState([make_node("a", gpus=1)])
    nominal = running(state, "nominal", "a", 40, tier=1, work=1.0)
    borrowed = running(state, "borrowed", "a", 40, tier=2, work=7.5, borrowed=True)
    [option] = preemption_candidates(state, SliceRequest(gpu_memory_mib=40 * GIB),
                                     [nominal, borrowed], 3, may_preempt=lower_tier)
    assert (option.node, option.victims, option.highest_tier, option.not_borrowed,
            option.work_lost) == ("a", ("borrowed",), 2, 0, 7.5)


def test_the_answer_counts_victims_not_on_borrowed_capacity() -> None:
    """Rule: ``not_borrowed`` counts the victims on nominal quota (here 1 of 2) and
    ``work_lost`` is the sum of both."""
    state = ClusterState([make_node("a", gpus=1)])
    servers = [running(state, "b", "a", 40, tier=1, work=2.0, borrowed=True),
               running(state, "n", "a", 40, tier=1, work=3.0)]
    [option] = preemption_candidates(state, SliceRequest(gpu_memory_mib=80 * GIB), servers, 2,
                                     may_preempt=lower_tier)
    assert (option.victims, option.not_borrowed, option.work_lost) == (("b", "n"), 1, 5.0)


def put_back_case(tiers: tuple[int, int, int], works: tuple[float, float, float]) -> list[str]:
    """GPU 0 of node a full with x (20 GiB), y (10 GiB) and z (30 GiB), taken in that order; a
    40 GiB request then fits with y back (50 GiB free) or with x back (40), not with both."""
    state = ClusterState([make_node("a", gpus=1, gib=60)])
    servers = [running(state, k, "a", gib, tier=t, work=w)
               for k, gib, t, w in zip("xyz", (20, 10, 30), tiers, works, strict=True)]
    [option] = preemption_candidates(state, SliceRequest(gpu_memory_mib=40 * GIB), servers, 9,
                                     may_preempt=lower_tier)
    return sorted(option.victims)


def test_unneeded_victims_are_put_back_most_expensive_first() -> None:
    """Rule: after taking victims until the request fits, the ones it does not need are put
    back, the most expensive first (higher tier, then more work lost): y, dearer than x, keeps
    running and x stops, not the other way round."""
    assert put_back_case(tiers=(1, 2, 3), works=(0.0, 0.0, 0.0)) == ["x", "z"]
    assert put_back_case(tiers=(1, 1, 1), works=(1.0, 2.0, 3.0)) == ["x", "z"]


def test_a_node_without_a_victim_set_does_not_hide_the_next() -> None:
    """Rule: a node where no allowed set of victims makes room is skipped, and later nodes are
    still considered (its server is first in the victim order, being borrowed)."""
    state = ClusterState([make_node("a", gpus=1), make_node("b", gpus=1)])
    state.commit(Assignment("a", (0,), (40 * GIB,)))  # not preemptible: a stays short
    servers = [running(state, "small", "a", 10, tier=1, borrowed=True),
               running(state, "big", "b", 60, tier=1)]
    options = preemption_candidates(state, SliceRequest(gpu_memory_mib=60 * GIB), servers, 2,
                                    may_preempt=lower_tier)
    assert [(o.node, o.victims) for o in options] == [("b", ("big",))]


def test_the_rule_is_asked_with_the_request_tier_and_five_options_by_default() -> None:
    """Rule: ``may_preempt`` is asked for each server with the request's tier; at most five
    options come back unless ``limit`` says otherwise."""
    state = ClusterState([make_node(f"n{i}", gpus=1) for i in range(7)])
    servers = [running(state, f"s{i}", f"n{i}", 80, tier=1, work=float(i)) for i in range(7)]
    asked: list[int] = []

    def rule(server: RunningServer, tier: int) -> bool:
        asked.append(tier)
        return True

    options = preemption_candidates(state, SliceRequest(gpu_memory_mib=GIB), servers, 4,
                                    may_preempt=rule)
    assert asked == [4] * 7
    assert [o.victims for o in options] == [("s0",), ("s1",), ("s2",), ("s3",), ("s4",)]
