"""Invariants of placement, whatever the request sequence (hypothesis)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from placement_clusters import GIB, make_node

from aispike_hub.model import SliceRequest
from aispike_hub.placement.engine import POLICY_NAMES, PlacementEngine
from aispike_hub.placement.filter import demand_matrix, find_options, host_mask, model_mask
from aispike_hub.placement.fragmentation import Workload
from aispike_hub.placement.state import ClusterState

requests = st.builds(
    lambda kind, gib, share, count, cpu, ram, model: (
        SliceRequest(gpu_count=0, cpu_milli=cpu, memory_mib=ram) if kind == 0 else
        SliceRequest(gpu_memory_mib=gib * GIB, cpu_milli=cpu, memory_mib=ram,
                     allowed_models=model) if kind == 1 else
        SliceRequest(gpu_share_milli=share, cpu_milli=cpu, memory_mib=ram) if kind == 2 else
        SliceRequest(gpu_count=count, cpu_milli=cpu, memory_mib=ram, allowed_models=model)
    ),
    st.integers(0, 3), st.integers(1, 40), st.integers(1, 1000), st.integers(1, 4),
    st.integers(0, 20000), st.integers(0, 64 * GIB),
    st.sampled_from([frozenset(), frozenset({"A100"}), frozenset({"T4", "L4"})]),
)

CLUSTER = [
    make_node("a", gpus=4, gib=40, cpu=32000, ram=128 * GIB, nvlink=["x", "x", "y", "y"]),
    make_node("b", gpus=2, model="T4", gib=16, cpu=16000, ram=64 * GIB),
    make_node("c", gpus=8, gib=80, cpu=96000, ram=512 * GIB),
    make_node("cpu", gpus=0, cpu=64000, ram=256 * GIB),
]


@settings(max_examples=60, deadline=None)
@given(st.lists(requests, min_size=1, max_size=80), st.sampled_from(POLICY_NAMES),
       st.integers(0, 3))
def test_nothing_is_ever_over_committed(reqs: list[SliceRequest], policy: str,
                                        seed: int) -> None:
    state = ClusterState(CLUSTER)
    eng = PlacementEngine(policy, workload=Workload.from_requests(reqs), seed=seed)
    for r in reqs:
        d = eng.place(state, r)
        if d.assignment is not None:
            state.commit(d.assignment)  # raises on any over-commit
        assert (state.gpu_free >= 0).all() and (state.gpu_free <= state.gpu_cap.clip(0)).all()
        assert (state.cpu_free >= 0).all() and (state.mem_free >= 0).all()


@settings(max_examples=150, deadline=None)
@given(st.lists(requests, max_size=30), requests)
def test_a_request_that_fits_somewhere_is_never_filtered_out(prefix: list[SliceRequest],
                                                             req: SliceRequest) -> None:
    state = ClusterState(CLUSTER)
    eng = PlacementEngine("bestfit", seed=0)
    for r in prefix:
        d = eng.place(state, r)
        if d.assignment is not None:
            state.commit(d.assignment)
    # Brute force over every node and GPU, independent of the filter's vector code.
    fits = False
    models = model_mask(state, req)
    hosts = host_mask(state, req)
    demand = demand_matrix(state, req)
    for n in range(len(state.nodes)):
        if not hosts[n]:
            continue
        if req.gpu_count == 0:
            fits = True
        elif req.whole_gpus:
            idle = sum(1 for g in range(state.width)
                       if models[n, g] and state.gpu_free[n, g] == state.gpu_cap[n, g])
            fits |= idle >= req.gpu_count
        else:
            fits |= any(models[n, g] and state.gpu_free[n, g] >= demand[n, g]
                        for g in range(state.width))
    assert (len(find_options(state, req)) > 0) == fits
    assert eng.place(state, req).placed == fits


@settings(max_examples=25, deadline=None)
@given(st.lists(requests, min_size=1, max_size=40), st.sampled_from(POLICY_NAMES),
       st.integers(0, 1000))
def test_decisions_are_deterministic_for_a_seed(reqs: list[SliceRequest], policy: str,
                                                seed: int) -> None:
    def run() -> list[object]:
        state = ClusterState(CLUSTER)
        eng = PlacementEngine(policy, workload=Workload.from_requests(reqs), seed=seed)
        out = []
        for r in reqs:
            a = eng.place(state, r).assignment
            if a is not None:
                state.commit(a)
            out.append(a)
        return out

    assert run() == run()


@settings(max_examples=40, deadline=None)
@given(st.lists(requests, min_size=1, max_size=40))
def test_incremental_fragmentation_matches_a_fresh_computation(reqs: list[SliceRequest]) -> None:
    from aispike_hub.placement.fragmentation import FragmentationModel

    workload = Workload.from_requests(reqs)
    for measure in ("fgd", "capacity"):
        state = ClusterState(CLUSTER)
        live = FragmentationModel(state, workload, measure)
        eng = PlacementEngine("random", seed=1)
        for r in reqs:
            d = eng.place(state, r)
            if d.assignment is None:
                continue
            opts = find_options(state, r)
            n = state.node_index[d.assignment.node]
            predicted = live.delta(opts.node, opts.slot, opts.demand, opts.gpu_count,
                                   r.cpu_milli)
            before = live.cluster_fragmentation()
            state.commit(d.assignment)
            after = FragmentationModel(state, workload, measure).cluster_fragmentation()
            assert np.isclose(live.cluster_fragmentation(), after)
            # the priced delta of the chosen option equals the real change
            if opts.slice:
                slot = state.slot_of(n, d.assignment.gpu_indices[0])
                i = np.nonzero((opts.node == n) & (state.gpu_free[n, opts.slot] + 0 >= 0))[0]
                same = [j for j in i if state.gpu_cap[n, opts.slot[j]] == state.gpu_cap[n, slot]
                        and opts.slot[j] == slot]
                if same:
                    assert np.isclose(predicted[same[0]], after - before)
