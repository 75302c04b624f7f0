"""ClusterState's checks, in-place node updates and views, pinned where mutation testing found
them unchecked (issue 26 item 7).  Every value is written out by hand.
"""

from __future__ import annotations

import dataclasses

import pytest
from placement_clusters import GIB, make_node

from aispike_hub.model import Assignment, Gpu, Node
from aispike_hub.placement.state import MAX_GPU_MIB, ClusterState, OverCommitError


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        ([], "a cluster needs at least one node"),
        ([make_node(n, gpus=0) for n in "abbccddeeffgg"],
         "duplicate node names: b, c, d, e, f"),  # at most five, sorted
        ([Node("a", 1000, GIB, tuple(Gpu(i, "X", MAX_GPU_MIB + i, uuid=f"u{i}")
                                     for i in range(4)))],
         "GPU memory must be below 2097152 MiB: [('a', 0), ('a', 1), ('a', 2)]"),
    ],
)
def test_a_state_refuses_impossible_clusters_by_name(nodes: list[Node], message: str) -> None:
    """Rule: no nodes, duplicate names (each named once, sorted, at most five) and a GPU of
    exactly 2 TiB or more (the filter's packed key holds 21 bits of MiB; at most three named)
    are refused with a message saying which."""
    with pytest.raises(ValueError) as err:
        ClusterState(nodes)
    assert str(err.value) == message


def test_a_gpu_just_below_the_limit_is_accepted() -> None:
    """Rule: the GPU memory limit is exclusive: 2 TiB - 1 MiB is a valid GPU."""
    state = ClusterState([Node("a", 1000, GIB, (Gpu(0, "X", MAX_GPU_MIB - 1, uuid="u"),))])
    assert state.total_gpus() == 1


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        (Assignment("zz", (), ()), "unknown node 'zz'"),
        (Assignment("a", (1,), (GIB,)), "node a has no GPU 1"),  # b has a GPU 1; a does not
        (Assignment("a", (), (), memory_mib=8 * GIB + 1),
         "node a: RAM would be -1 of 8192 MiB"),
    ],
)
def test_commit_names_what_it_refuses(assignment: Assignment, message: str) -> None:
    """Rule: an impossible commit raises OverCommitError naming the node and the resource; a
    GPU index only another (wider) node has is not one of this node's padding slots."""
    state = ClusterState([make_node("a", gpus=1, ram=8 * GIB), make_node("b", gpus=2)])
    with pytest.raises(OverCommitError) as err:
        state.commit(assignment)
    assert str(err.value) == message


def test_releasing_anonymous_gpus_never_held_is_refused() -> None:
    """Rule: the anonymous GPU count of a node never goes below zero."""
    state = ClusterState([make_node("a", gpus=1)])
    with pytest.raises(OverCommitError) as err:
        state.release(Assignment("a", (), (), anonymous_gpus=1))
    assert str(err.value) == "node a: anonymous GPUs would be -1"


def test_every_change_bumps_the_version_by_one_and_records_the_node() -> None:
    """Rule: commit, release and an in-place node update each add exactly 1 to ``version`` and
    append the node's row to ``changed_nodes`` (caches key on both)."""
    state = ClusterState([make_node("a", gpus=1), make_node("b", gpus=1)])
    a = Assignment("b", (0,), (GIB,))
    state.commit_all([a, Assignment("a", (0,), (GIB,))])
    state.release(a)
    assert state.update_node(dataclasses.replace(state.nodes[0], labels={"x": "y"}))
    assert (state.version, state.changed_nodes) == (4, [1, 0, 1, 0])


@pytest.mark.parametrize(
    ("cpu", "ram", "updated"),
    [
        (6000, 48 * GIB, True),    # grows
        (2000, 16 * GIB, True),    # shrinks to exactly what is in use: still valid
        (1999, 16 * GIB, False),   # less CPU than in use
        (2000, 16 * GIB - 1, False),  # less RAM than in use
    ],
)
def test_update_node_in_place(cpu: int, ram: int, updated: bool) -> None:
    """Rule: a node's allocatable CPU and RAM change in place (capacity and free move by the
    same amount, the node's facts are replaced at its own row) unless less than is in use would
    remain; then nothing changes and False tells the caller to rebuild."""
    nodes = [make_node(n, gpus=1, cpu=4000, ram=32 * GIB) for n in "abc"]
    state = ClusterState(nodes)
    state.commit(Assignment("b", (0,), (GIB,), cpu_milli=2000, memory_mib=16 * GIB))
    new = dataclasses.replace(nodes[1], cpu_milli=cpu, memory_mib=ram)
    assert state.update_node(new) is updated
    if updated:
        assert state.nodes == (nodes[0], new, nodes[2])
        assert (int(state.cpu_cap[1]), int(state.cpu_free[1]), int(state.mem_cap[1]),
                int(state.mem_free[1])) == (cpu, cpu - 2000, ram, ram - 16 * GIB)
    else:
        assert state.nodes == tuple(nodes) and state.version == 1
        assert (int(state.cpu_cap[1]), int(state.cpu_free[1]), int(state.mem_cap[1]),
                int(state.mem_free[1])) == (4000, 2000, 32 * GIB, 16 * GIB)


def test_update_node_refuses_an_unknown_node_or_other_gpus() -> None:
    """Rule: only CPU, RAM and other facts change in place: an unknown node or one whose GPUs
    differ answers False and leaves the state as it was."""
    state = ClusterState([make_node("a", gpus=1)])
    assert state.update_node(make_node("zz", gpus=1)) is False
    assert state.update_node(make_node("a", gpus=2)) is False
    assert (state.version, state.nodes[0].name, len(state.nodes[0].gpus)) == (0, "a", 1)


def test_views_of_allocation_and_anonymous_room() -> None:
    """Rule: the allocated share weighs each GPU as one (half of one of four GPUs: 0.125); a
    cluster without GPUs has share 0; a node's anonymous room is its idle GPUs minus the held
    (three idle, one held: 2)."""
    state = ClusterState([make_node("a", gpus=4), make_node("c", gpus=0)])
    state.commit(Assignment("a", (0,), (40 * GIB,), anonymous_gpus=1))
    assert state.allocation_share() == 0.125
    assert (state.node_anonymous_room(0), state.node_anonymous_room(1)) == (2, 0)
    assert state.anonymous_room().tolist() == [2, 0]
    assert ClusterState([make_node("c", gpus=0)]).allocation_share() == 0.0


def test_node_signatures_see_free_and_total_gpu_memory() -> None:
    """Rule: nodes are twins only when their GPUs' (free, capacity) multisets match: a 40 GiB
    idle GPU is not an 80 GiB GPU with 40 GiB free, and used memory is seen after a commit."""
    small = Node("s", 64_000, 512 * GIB, (Gpu(0, "A100", 40 * GIB, uuid="s0"),))
    state = ClusterState([make_node("a", gpus=1), make_node("b", gpus=1), small])
    sig = state.node_signature().tolist()
    assert sig[0] == sig[1]
    state.commit(Assignment("a", (0,), (40 * GIB,)))
    sig = state.node_signature().tolist()
    assert len({sig[0], sig[1], sig[2]}) == 3
    state.commit(Assignment("b", (0,), (40 * GIB,)))
    sig = state.node_signature().tolist()
    assert sig[0] == sig[1] != sig[2]
