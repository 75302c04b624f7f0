"""GPUs held outside AISpike whose GPU nobody names (device-plugin pods): the anonymous-GPU rule.

A node with G GPUs of which A are held anonymously keeps A GPUs idle: our placements never touch
more than G - A of its GPUs.  The property tests check that with an oracle of their own (the set
of GPUs our live assignments touch, kept in plain Python), never with the filter they test.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from placement_clusters import GIB, make_node

from aispike_hub.model import Assignment, SliceRequest
from aispike_hub.placement.engine import POLICY_NAMES, PlacementEngine
from aispike_hub.placement.filter import NodeFit, find_options, why_nothing_fits
from aispike_hub.placement.fit import misfit
from aispike_hub.placement.preemption import _one_node
from aispike_hub.placement.state import ClusterState, OverCommitError

CLUSTER = [
    make_node("a", gpus=4, gib=40, cpu=64000, ram=256 * GIB, nvlink=["x", "x", "y", "y"]),
    make_node("b", gpus=2, model="T4", gib=16, cpu=64000, ram=256 * GIB),
    make_node("c", gpus=8, gib=80, cpu=96000, ram=512 * GIB),
]
GPUS = {n.name: len(n.gpus) for n in CLUSTER}
CAP = {(n.name, g.index): g.memory_mib for n in CLUSTER for g in n.gpus}

requests = st.builds(
    lambda kind, gib, share, count, model: (
        SliceRequest(gpu_memory_mib=gib * GIB, cpu_milli=100, memory_mib=GIB,
                     allowed_models=model) if kind == 0 else
        SliceRequest(gpu_share_milli=share, cpu_milli=100, memory_mib=GIB) if kind == 1 else
        SliceRequest(gpu_count=count, cpu_milli=100, memory_mib=GIB, allowed_models=model)
    ),
    st.integers(0, 2), st.integers(1, 40), st.integers(1, 1000), st.integers(1, 4),
    st.sampled_from([frozenset(), frozenset({"A100"}), frozenset({"T4"})]),
)
# An event: ("place", request) | ("anon", node, k) a device-plugin pod of k GPUs arrives |
# ("leave", i) the i-th live thing (ours or anonymous, modulo) goes away.
events = st.one_of(
    st.tuples(st.just("place"), requests),
    st.tuples(st.just("anon"), st.sampled_from(sorted(GPUS)), st.integers(1, 3)),
    st.tuples(st.just("leave"), st.integers(0, 1000)),
)


def _touched(ours: list[Assignment]) -> dict[str, set[int]]:
    """Oracle: per node, the GPUs any of our live assignments uses."""
    out: dict[str, set[int]] = {}
    for a in ours:
        out.setdefault(a.node, set()).update(i for i, m in zip(a.gpu_indices, a.gpu_memory_mib,
                                                               strict=True) if m > 0)
    return out


def _memory(ours: list[Assignment]) -> dict[tuple[str, int], int]:
    used: dict[tuple[str, int], int] = {}
    for a in ours:
        for i, m in zip(a.gpu_indices, a.gpu_memory_mib, strict=True):
            used[(a.node, i)] = used.get((a.node, i), 0) + m
    return used


def _run(evs: list[tuple], policy: str, seed: int, *, scheduler_only: bool) -> None:
    """Replay ``evs``; device-plugin pods arrive as kube-scheduler admits them: within the node's
    ``nvidia.com/gpu`` count (``scheduler_only``: it does not see our slices) or only where the
    GPUs are really idle (a consistent world)."""
    state = ClusterState(CLUSTER)
    engine = PlacementEngine(policy, seed=seed)
    ours: list[Assignment] = []
    anon: list[Assignment] = []
    for ev in evs:
        touched_before = _touched(ours)
        held_before = {n: sum(a.anonymous_gpus for a in anon if a.node == n) for n in GPUS}
        if ev[0] == "place":
            d = engine.place(state, ev[1])
            if d.assignment is None:
                continue
            state.commit(d.assignment)
            ours.append(d.assignment)
            # Our placement never makes any node worse than it was: where touched + held was
            # within the node's GPUs it stays within; where others overbooked it, ours adds no
            # GPU to the excess.
            node = d.assignment.node
            before = len(touched_before.get(node, set())) + held_before[node]
            after = len(_touched(ours).get(node, set())) + held_before[node]
            assert after <= max(GPUS[node], before), (node, before, after)
        elif ev[0] == "anon":
            _, node, k = ev
            if held_before[node] + k > GPUS[node]:
                continue  # the scheduler's nvidia.com/gpu count refuses it
            if not scheduler_only and (
                    len(touched_before.get(node, set())) + held_before[node] + k > GPUS[node]):
                continue
            a = Assignment(node, (), (), anonymous_gpus=k, owner="device-plugin")
            state.commit(a)  # a fact: never refused
            anon.append(a)
        else:
            live = ours + anon
            if not live:
                continue
            gone = live[ev[1] % len(live)]
            state.release(gone)
            (ours if gone in ours else anon).remove(gone)
        for (node, index), used in _memory(ours).items():
            assert used <= CAP[(node, index)]
        if not scheduler_only:
            touched = _touched(ours)
            for node, total in GPUS.items():
                held = sum(a.anonymous_gpus for a in anon if a.node == node)
                assert len(touched.get(node, set())) + held <= total, (node, touched, held)


@settings(max_examples=80, deadline=None)
@given(st.lists(events, min_size=1, max_size=60), st.sampled_from(POLICY_NAMES),
       st.integers(0, 3))
def test_placement_never_double_books_a_node_shared_with_nvidia_gpu_pods(
        evs: list[tuple], policy: str, seed: int) -> None:
    _run(evs, policy, seed, scheduler_only=False)


@settings(max_examples=60, deadline=None)
@given(st.lists(events, min_size=1, max_size=60), st.sampled_from(POLICY_NAMES),
       st.integers(0, 3))
def test_where_others_overbooked_a_node_placement_adds_no_gpu_to_the_excess(
        evs: list[tuple], policy: str, seed: int) -> None:
    _run(evs, policy, seed, scheduler_only=True)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=3, max_size=3),
       st.lists(st.integers(0, 40), min_size=8, max_size=8), requests)
def test_an_option_exists_exactly_when_the_oracle_finds_room(
        held: list[int], used_gib: list[int], req: SliceRequest) -> None:
    """Brute force over each node and GPU, written without the filter's arrays."""
    state = ClusterState(CLUSTER)
    for node, k in zip(GPUS, held, strict=True):
        state.commit(Assignment(node, (), (), anonymous_gpus=min(k, GPUS[node])))
    used: dict[tuple[str, int], int] = {}
    for i, gib in enumerate(used_gib):
        if gib:
            key = ("c", i)
            used[key] = min(gib * GIB, CAP[key])
            state.commit(Assignment("c", (i,), (used[key],)))
    fits = False
    for n in CLUSTER:
        k_held = min(held[list(GPUS).index(n.name)], GPUS[n.name])
        idle = [g for g in n.gpus if used.get((n.name, g.index), 0) == 0]
        room = len(idle) - k_held
        allowed = [g for g in n.gpus if req.allows_model(g.model)]
        if req.whole_gpus:
            fits |= (len([g for g in idle if req.allows_model(g.model)]) >= req.gpu_count
                     and room >= req.gpu_count)
            continue
        for g in allowed:
            free = g.memory_mib - used.get((n.name, g.index), 0)
            if free >= req.gpu_demand_mib(g) and (g not in idle or room > 0):
                fits = True
    assert (len(find_options(state, req)) > 0) == fits
    assert any(NodeFit(state, i).could_host(req) for i in range(len(CLUSTER))) == fits


def _four(held: int) -> ClusterState:
    state = ClusterState([make_node("n", gpus=4, gib=80)])
    if held:
        state.commit(Assignment("n", (), (), anonymous_gpus=held))
    return state


def test_exact_boundaries_on_a_four_gpu_node() -> None:
    one = SliceRequest(gpu_count=1)
    two = SliceRequest(gpu_count=2)
    slice8 = SliceRequest(gpu_memory_mib=8 * GIB)
    assert len(find_options(_four(2), two)) == 1       # 4 idle - 2 held = exactly 2
    assert len(find_options(_four(3), two)) == 0
    assert len(find_options(_four(3), one)) == 1
    assert len(find_options(_four(4), slice8)) == 0    # every GPU is held
    state = _four(3)
    first = PlacementEngine("bestfit").place(state, slice8).assignment
    assert first is not None
    state.commit(first)
    # The one GPU left for us is now in use: the next slice joins it, never an idle one.
    opts = find_options(state, slice8)
    assert len(opts) == 1 and int(state.gpu_index[0, opts.slot[0]]) == first.gpu_indices[0]
    assert len(find_options(state, one)) == 0


def test_the_reason_names_the_gpus_held_outside_aispike() -> None:
    reasons = why_nothing_fits(_four(4), SliceRequest(gpu_memory_mib=8 * GIB))
    assert any("4 GPUs on 1 node are held by workloads outside AISpike" in r for r in reasons)
    reasons = why_nothing_fits(_four(3), SliceRequest(gpu_count=2))
    assert any("most idle on one node: 1" in r for r in reasons), reasons
    assert why_nothing_fits(_four(0), SliceRequest(gpu_count=8))[-1].startswith("no node has")


def test_commit_and_release_count_anonymous_gpus() -> None:
    state = _four(0)
    a = Assignment("n", (), (), anonymous_gpus=3)
    state.commit(a)
    assert int(state.anon_gpus[0]) == 3 and int(state.anonymous_room()[0]) == 1
    state.commit(Assignment("n", (0, 1), (80 * GIB, 80 * GIB)))  # a fact: counted, not refused
    assert int(state.anonymous_room()[0]) == -1
    state.release(a)
    assert int(state.anon_gpus[0]) == 0
    with pytest.raises(OverCommitError):
        state.release(a)
    with pytest.raises(ValueError):
        Assignment("n", (), (), anonymous_gpus=-1)


def test_a_decision_that_would_start_a_gpu_kept_for_others_no_longer_fits() -> None:
    req = SliceRequest(gpu_memory_mib=8 * GIB)
    decided = Assignment("n", (0,), (8 * GIB,), req.cpu_milli, req.memory_mib)
    assert misfit(_four(3), decided, req) == ""
    assert "keep 4 idle GPUs" in misfit(_four(4), decided, req)


def test_preemption_sees_the_anonymous_gpus_of_its_node() -> None:
    state = _four(2)
    assert int(_one_node(state, "n").anon_gpus[0]) == 2


def test_twins_differ_by_anonymous_gpus() -> None:
    state = ClusterState([make_node("x"), make_node("y")])
    sig = state.node_signature().copy()
    assert sig[0] == sig[1]
    state.commit(Assignment("y", (), (), anonymous_gpus=1))
    assert state.node_signature()[0] != state.node_signature()[1]
