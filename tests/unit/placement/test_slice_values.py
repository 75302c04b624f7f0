"""Slice values: the packing LP's prices, the completion values, and the loss of a placement."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from placement_clusters import make_node

from aispike_hub.model import Assignment, SliceRequest
from aispike_hub.placement import engine as engine_module
from aispike_hub.placement.engine import PlacementEngine
from aispike_hub.placement.fragmentation import Workload
from aispike_hub.placement.slice_values import knapsack, lp_prices, slice_mix, slice_value_table
from aispike_hub.placement.state import ClusterState


def share(milli: int, cpu: int = 4000) -> SliceRequest:
    return SliceRequest(gpu_share_milli=milli, cpu_milli=cpu)


def test_prices_of_halves_and_thirds() -> None:
    # Only halves: two fill a GPU, so each is worth half of one.
    assert lp_prices([50], [1.0], 100) == pytest.approx([0.5])
    # Only 0.34s: two per GPU (three do not fit), so each is worth half a GPU, not a third.
    assert lp_prices([34], [1.0], 100) == pytest.approx([0.5])


def test_lp_value_is_the_fewest_gpus_of_the_mix() -> None:
    """470s pair up (two per GPU), every 650 needs a 320: 2 + 1 GPUs for 4 + 1 + 1 slices."""
    sizes, demand = [47, 32, 65], [4.0, 1.0, 1.0]
    y = lp_prices(sizes, demand, 100)
    scale = 1.0 / max(demand)  # prices are of the normalised LP; its value scales the same way
    assert sum(b * p for b, p in zip(demand, y, strict=True)) * scale == pytest.approx(3 * scale)
    assert y[0] == pytest.approx(0.5)
    assert y[1] + y[2] == pytest.approx(1.0)


def test_best_combination_is_worth_one_gpu_and_no_more() -> None:
    table = slice_value_table(16000, ((470 * 16, 0.5), (320 * 16, 0.2), (650 * 16, 0.2),
                                      (160 * 16, 0.1)))
    assert table.units == 100 and table.unit_mib == 160.0
    assert table.value[table.units] == pytest.approx(1.0)
    assert np.all(np.diff(table.value) >= -1e-12)  # more room is never worth less


def test_knapsack_values() -> None:
    value, last = knapsack([3, 5], [0.3, 0.6], 10)
    assert value[10] == pytest.approx(1.2)  # 5 + 5
    assert value[8] == pytest.approx(0.9)  # 5 + 3
    assert value[2] == 0.0 and last[2] == -1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(5, 95), st.floats(0.01, 1.0)), min_size=1, max_size=6),
       st.integers(1, 100), st.integers(1, 100))
def test_loss_is_never_negative(mix: list[tuple[int, float]], free: int, size: int) -> None:
    merged: dict[int, float] = {}
    for s, w in mix:
        merged[s * 100] = merged.get(s * 100, 0.0) + w
    table = slice_value_table(10_000, tuple(sorted(merged.items())))
    if size > free:
        free, size = size, free
    loss = table.loss(np.array([free * 100]), np.array([size * 100]))
    assert loss[0] >= 0.0


def test_a_slice_that_continues_a_best_combination_loses_nothing() -> None:
    table = slice_value_table(1000, ((470, 0.5), (320, 0.25), (650, 0.25)))
    unit = table.unit_mib
    free = np.array([1000, 530, 680, 350])
    assert unit == 10.0
    # a 470 on an idle GPU or on a lone 470: nothing lost; on a lone 320: its 650 is gone
    assert table.loss(free[:3], np.full(3, 470)).tolist() == pytest.approx(
        [0.0, 0.0, table.value[68] - table.price[47] - table.value[21]])
    assert table.loss(free[2:3], np.array([470]))[0] > 0.1
    # a 320 beside a lone 650 closes the best combination
    assert table.loss(free[3:], np.array([320]))[0] == pytest.approx(0.0)


def test_mix_counts_one_gpu_slices_only_and_prices_memory_on_each_capacity() -> None:
    gib = 1024
    types = [(SliceRequest(gpu_memory_mib=10 * gib), 0.5), (SliceRequest(gpu_count=1), 0.3),
             (SliceRequest(gpu_count=2), 0.1), (SliceRequest(gpu_memory_mib=40 * gib), 0.1)]
    assert slice_mix(types, 24 * gib) == ((10 * gib, 0.5),)  # 40 GiB does not fit a 24 GiB GPU
    assert slice_mix(types, 80 * gib) == ((10 * gib, 0.5), (40 * gib, 0.1))
    table = slice_value_table(80 * gib, slice_mix(types, 80 * gib))
    assert table.unit_mib == 10 * gib and table.units == 8
    assert table.price[1] == pytest.approx(1 / 8)


def test_aispike_starts_a_pair_instead_of_stranding_a_lone_slice() -> None:
    """A 470 beside a lone 320 leaves 210 that this mix never fills, and costs the 320 its 650;
    an idle GPU starts a 470 pair.  The fragmentation terms alone keep the idle GPU for the
    whole-GPU tasks and pick the 320's GPU (checked by switching the slice values off)."""
    workload = Workload.from_requests([SliceRequest(gpu_count=1, cpu_milli=8000)] * 10
                                      + [share(470)] * 4 + [share(320)] * 2 + [share(650)] * 2)

    def place_470(weight: float) -> Assignment | None:
        nodes = [make_node("a", gpus=4, gib=16), make_node("b", gpus=4, gib=16)]
        state = ClusterState(nodes)
        state.commit(Assignment(node="a", gpu_indices=(0,), gpu_memory_mib=(320 * 16,),
                                cpu_milli=4000))
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(engine_module, "SLICE_VALUE_WEIGHT", weight)
            return PlacementEngine("aispike", workload=workload, seed=1).place(
                state, share(470)).assignment

    chosen = place_470(engine_module.SLICE_VALUE_WEIGHT)
    assert chosen is not None and chosen.gpu_indices != (0,)
    without = place_470(0.0)
    assert without is not None and without.gpu_indices == (0,)


def test_bad_capacity_is_named() -> None:
    with pytest.raises(ValueError, match="capacity_mib"):
        slice_value_table(0, ())


def test_prepare_prices_every_gpu_size_before_the_first_decision() -> None:
    workload = Workload.from_requests([share(470)] * 3 + [share(320)])
    nodes = [make_node("a", gpus=2, gib=16), make_node("b", gpus=2, gib=24)]
    state = ClusterState(nodes)
    slice_value_table.cache_clear()
    PlacementEngine("aispike", workload=workload).prepare(state)
    assert slice_value_table.cache_info().currsize == 2  # 16 and 24 GiB GPUs
    misses = slice_value_table.cache_info().misses
    PlacementEngine("aispike", workload=workload).place(state, share(470))
    assert slice_value_table.cache_info().misses == misses  # nothing solved at decision time
