"""Slice values' rules, pinned where mutation testing found them unchecked (issue 26 item 7).
Every expected value is worked out by hand in the test's docstring or comment; none is computed
by the code under test.
"""

from __future__ import annotations

import numpy as np
import pytest

from aispike_hub.model import SliceRequest
from aispike_hub.placement.slice_values import (
    SliceValueTable,
    _combination,
    knapsack,
    lp_prices,
    slice_mix,
    slice_value_table,
)

# V(f) and prices of slices of 3 and 4 units on a 10-unit GPU, priced 0.25 and 0.5 (the LP's
# prices for that mix, test_lp_prices_need_generated_columns): V(f) = the best sum of prices of
# 3s and 4s fitting f.
#   f:    0  1  2  3     4    5    6    7     8    9    10
V_34 = [0, 0, 0, 0.25, 0.5, 0.5, 0.5, 0.75, 1.0, 1.0, 1.0]
#                 (4+3)     (4+4)


def test_lp_prices_need_generated_columns() -> None:
    """Rule: column generation runs until no combination is worth more than one GPU.  Sizes 3
    and 4 units on 10, equal demand.  The starting columns (3+3+3, 4+4) give prices 1/3 and 1/2,
    at which 4+3+3 is worth 7/6 > 1, so it must be generated.  With it the LP is
    min x1 + x2 + x3 s.t. 3 x1 + 2 x3 >= 1, 2 x2 + x3 >= 1: x2 = 0.25, x3 = 0.5, value 0.75;
    x2, x3 > 0 make 2 y4 = 1 and y4 + 2 y3 = 1 tight: y4 = 0.5, y3 = 0.25 (y3 + y4 = 0.75)."""
    assert lp_prices([3, 4], [0.5, 0.5], 10) == pytest.approx([0.25, 0.5])


def test_a_size_the_gaps_cover_for_free_is_worth_nothing() -> None:
    """Rule: a size whose demand the best combinations cover anyway is priced 0 (never below).
    Sizes 1 and 4 on 5 units, demand 0.1 and 1.  The starting columns (1 x 5, 4) price them 0.2
    and 1, at which 4 + 1 is worth 1.2, so it is generated.  Then the dual is max 0.1 y1 + y4
    s.t. 5 y1 <= 1, y4 <= 1, y1 + y4 <= 1: with y4 = 1 - y1 the objective is 1 - 0.9 y1, so
    y1 = 0, y4 = 1."""
    assert lp_prices([1, 4], [0.1, 1.0], 5) == pytest.approx([0.0, 1.0], abs=1e-9)


def test_slice_value_table_of_the_three_and_four_tenths_mix() -> None:
    """Rule: the grid is the gcd of the capacity and the slice sizes (gcd(100, 30, 40) = 10 MiB,
    10 units; a slice of exactly 3 units is 3, not 4); V is the knapsack over the LP prices;
    price is the LP price for sizes in the mix and V(size) for the others."""
    table = slice_value_table(100, ((30, 0.5), (40, 0.5)))
    assert (table.capacity_mib, table.unit_mib, table.units) == (100, 10.0, 10)
    assert table.value.tolist() == pytest.approx(V_34)
    assert table.price.tolist() == pytest.approx(
        [0, 0, 0, 0.25, 0.5, 0.5, 0.5, 0.75, 1.0, 1.0, 1.0])


def test_an_empty_mix_is_one_unit_worth_nothing() -> None:
    """Rule: without slices the grid is the whole GPU (1 unit) and nothing has a value."""
    table = slice_value_table(16384, ())
    assert (table.unit_mib, table.units) == (16384.0, 1)
    assert table.value.tolist() == [0.0, 0.0]
    assert table.price.tolist() == [0.0, 0.0]


def test_a_fine_grid_is_capped_at_two_hundred_units() -> None:
    """Rule: at most MAX_UNITS = 200 units.  gcd(10007, 1000) = 1 (10007 is prime): 10007 units,
    so 200 units of 10007 / 200 = 50.035 MiB; the 1000 MiB slice is ceil(1000 / 50.035) =
    ceil(19.986) = 20 units; alone it fills floor(200 / 20) = 10 per GPU: price 0.1, and V(20)
    = 0.1, V(200) = 1."""
    table = slice_value_table(10007, ((1000, 1.0),))
    assert (table.unit_mib, table.units) == (50.035, 200)
    assert table.price[20] == pytest.approx(0.1)
    assert table.value[[19, 20, 200]].tolist() == pytest.approx([0.0, 0.1, 1.0])


def test_a_slice_smaller_than_a_unit_takes_one_unit() -> None:
    """Rule: every slice takes at least one unit.  10007 MiB (200 units of 50.035) and a 10 MiB
    slice: 1 unit, 200 per GPU: price 1 / 200 = 0.005."""
    table = slice_value_table(10007, ((10, 1.0),))
    assert table.price[1] == pytest.approx(0.005)
    assert table.value[200] == pytest.approx(1.0)


@pytest.mark.parametrize("capacity", [0, -5])
def test_a_capacity_below_one_mib_is_refused_by_name(capacity: int) -> None:
    with pytest.raises(ValueError) as err:
        slice_value_table(capacity, ())
    assert str(err.value) == f"capacity_mib must be positive, got {capacity}"


# -- loss ------------------------------------------------------------------------------------------
# A hand-made table (10 MiB units, 10 units), so that loss is checked apart from the LP.
TABLE = SliceValueTable(
    capacity_mib=100, unit_mib=10.0, units=10,
    price=np.array([0, 0.05, 0.12, 0.25, 0.3, 0.5, 0.5, 0.75, 0.9, 1.0, 1.0]),
    value=np.array([0, 0.01, 0.1, 0.3, 0.35, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]),
)


@pytest.mark.parametrize(
    ("free", "demand", "expected"),
    [
        # free 55 MiB: floor(5.5) = 5 units; 25 MiB: ceil(2.5) = 3 units; rest 2:
        # V5 - p3 - V2 = 0.5 - 0.25 - 0.1 = 0.15
        (55, 25, 0.15),
        # free 59: still 5 units; 21: still 3 units
        (59, 21, 0.15),
        # free 60: 6 units; 30: exactly 3: V6 - p3 - V3 = 0.6 - 0.25 - 0.3 = 0.05
        (60, 30, 0.05),
        # free beyond the GPU counts as the GPU (10 units); a demand of 200 MiB as 10 units:
        # V10 - p10 - V0 = 0
        (500, 200, 0.0),
        # free 500 (10 units), 40 MiB (4): V10 - p4 - V6 = 1 - 0.3 - 0.6 = 0.1
        (500, 40, 0.1),
        # a demand larger than the free space: rest 0, V2 - p5 - V0 = 0.1 - 0.5 < 0: 0
        (20, 50, 0.0),
        # free 10 (1 unit), 10 MiB (1): V1 - p1 - V0 = 0.01 - 0.05 < 0: clipped at 0
        (10, 10, 0.0),
        # free 20 (2), 10 (1): V2 - p1 - V1 = 0.1 - 0.05 - 0.01 = 0.04
        (20, 10, 0.04),
    ],
)
def test_loss_is_value_of_free_minus_price_minus_value_of_the_rest(free: int, demand: int,
                                                                   expected: float) -> None:
    """Rule: loss(f, s) = max(0, V(f) - y_s - V(f - s)), the free space rounded down and the
    demand up to whole units, both at most the GPU."""
    got = TABLE.loss(np.array([free]), np.array([demand]))
    assert got.tolist() == pytest.approx([expected])


def test_loss_on_the_lp_table_is_zero_only_inside_a_best_combination() -> None:
    """The 30/40 mix (V_34 above, y3 = 0.25, y4 = 0.5): a 30 into 100 free: 1 - 0.25 - V7 =
    1 - 0.25 - 0.75 = 0 (4+3+3 goes on); a 30 into 50 free: V5 - 0.25 - V2 = 0.5 - 0.25 - 0 =
    0.25 (the 50 could have held a 40); a 40 into 70 free: V7 - 0.5 - V3 = 0."""
    table = slice_value_table(100, ((30, 0.5), (40, 0.5)))
    got = table.loss(np.array([100, 50, 70]), np.array([30, 30, 40]))
    assert got.tolist() == pytest.approx([0.0, 0.25, 0.0])


# -- the mix ---------------------------------------------------------------------------------------
def test_slice_mix_keeps_one_gpu_slices_that_fit_merged_by_size() -> None:
    """Rule: only one-GPU, non-whole types with a positive share, whose demand on this capacity
    is at most the GPU; equal demands merged (a 250-thousandth share of 10000 MiB is 2500 MiB,
    like the 2500 MiB slice); sorted by MiB.  The skipped types come first: skipping one must not
    end the list."""
    types = [
        (SliceRequest(gpu_count=2), 0.0625),
        (SliceRequest(gpu_count=1), 0.0625),  # whole GPU
        (SliceRequest(gpu_count=0, cpu_milli=1000), 0.0625),
        (SliceRequest(gpu_memory_mib=1000), 0.0),  # never asked for
        (SliceRequest(gpu_memory_mib=10001), 0.0625),  # larger than the GPU
        (SliceRequest(gpu_memory_mib=10000), 0.125),  # exactly the GPU
        (SliceRequest(gpu_share_milli=250), 0.25),
        (SliceRequest(gpu_memory_mib=2500), 0.125),
        (SliceRequest(gpu_memory_mib=500), 0.25),
    ]
    assert slice_mix(types, 10000) == ((500, 0.25), (2500, 0.375), (10000, 0.125))


# -- knapsack and combinations -------------------------------------------------------------------
def test_knapsack_records_a_new_slice_only_where_it_is_worth_more() -> None:
    """Rule: V(f) is the best sum of prices fitting f; last[f] is the size added at f, or -1
    where f - 1 is worth as much.  Sizes 3 (0.25) and 5 (0.5) on 10:
    f:    0    1    2    3     4     5    6    7    8            9     10
    V:    0    0    0    0.25  0.25  0.5  0.5  0.5  0.75 (5+3)   0.75  1.0 (5+5)
    last: -1   -1   -1   3     -1    5    -1   -1   3 or 5 (tie) -1    5
    """
    value, last = knapsack([3, 5], [0.25, 0.5], 10)
    assert value.tolist() == pytest.approx([0, 0, 0, 0.25, 0.25, 0.5, 0.5, 0.5, 0.75, 0.75, 1.0])
    got = last.tolist()
    assert got[:8] + got[9:] == [-1, -1, -1, 3, -1, 5, -1, -1, -1, 5]
    assert got[8] in (3, 5)


def test_knapsack_keeps_the_smaller_space_when_a_slice_adds_nothing() -> None:
    """Rule: a size is recorded only if it adds more than the tolerance.  One size 4 at 0.5 on 6:
    V(5) = V(4) = 0.5 and V(1) + 0.5 = 0.5 is no better: last = [-1, -1, -1, -1, 4, -1, -1]."""
    value, last = knapsack([4], [0.5], 6)
    assert value.tolist() == [0, 0, 0, 0, 0.5, 0.5, 0.5]
    assert last.tolist() == [-1, -1, -1, -1, 4, -1, -1]


def test_combination_follows_the_recorded_sizes() -> None:
    """Rule: from f, take last[f] and continue at f - last[f], or step to f - 1 where nothing was
    recorded.  With the 3/5 table: 10 -> 5 + 5; 7 -> 6 -> 5 -> [5]; 4 -> 3 -> [3]; 2 -> []."""
    _, last = knapsack([3, 5], [0.25, 0.5], 10)
    assert _combination(last, 10) == [5, 5]
    assert _combination(last, 7) == [5]
    assert _combination(last, 4) == [3]
    assert _combination(last, 2) == []


def test_combination_and_knapsack_count_slices_of_one_unit() -> None:
    """Rule: a size of one unit is a slice like any other, from f = 1 on.  Sizes 1 (0.25) and 3
    (0.5) on 4: V(1) = 0.25, V(2) = 0.5 (1+1), V(3) = max(0.5 + 0.25, 0 + 0.5) = 0.75 (1+1+1),
    V(4) = max(0.75 + 0.25, 0.25 + 0.5) = 1.0; four slices of 1 fill it."""
    value, last = knapsack([1, 3], [0.25, 0.5], 4)
    assert value.tolist() == [0, 0.25, 0.5, 0.75, 1.0]
    assert last.tolist() == [-1, 1, 1, 1, 1]
    assert _combination(last, 4) == [1, 1, 1, 1]


# -- found by the mutation run's survivors -----------------------------------------------------
def test_loss_of_a_slice_that_fills_the_free_space_leaves_v_of_nothing() -> None:
    """Rule: the rest is free - size, 0 when the slice fills the space (V(0) = 0).  TABLE: a
    40 MiB slice into 40 MiB free: V4 - p4 - V0 = 0.35 - 0.3 - 0 = 0.05 (with V1 = 0.01 for the
    rest it would be 0.04)."""
    assert TABLE.loss(np.array([40]), np.array([40])).tolist() == pytest.approx([0.05])


def test_slice_mix_leaves_out_a_whole_gpu_share_and_keeps_a_one_mib_slice() -> None:
    """Rule: a share of 1000 is a whole GPU (left out, though its demand would be the GPU's
    10000 MiB); the smallest slice, 1 MiB, is a slice."""
    types = [(SliceRequest(gpu_share_milli=1000), 0.5), (SliceRequest(gpu_memory_mib=1), 0.5)]
    assert slice_mix(types, 10000) == ((1, 0.5),)
