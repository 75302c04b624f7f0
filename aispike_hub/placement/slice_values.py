"""What a GPU slice is worth, and what a placement destroys: prices from the workload's packing LP.

Why: online, a slice that lands beside the wrong neighbour strands the rest of its GPU for good.
Two 470-thousandth slices leave 60 that nothing uses; a 470 beside a 320 leaves 210 that only the
rare small slices can use, while that 320 would have closed a GPU with a 650 (970) and the 470
another 470.  Which neighbours are *right* depends on how many slices of each size arrive, not
only on their sizes: if 320s are scarce next to the 650s that need them, a 320 should not go
where a 230 would do.  The fragmentation measures look one task ahead and cannot see this.

The linear relaxation of packing the workload's slice mix into GPUs (the cutting-stock LP:
choose how many GPUs to fill with each combination of slice sizes so that every size's share is
covered with as few GPUs as possible) sees it.  Its dual prices ``y_s`` say what share of a GPU
a slice of size ``s`` is worth in the best packing (every best combination is worth exactly one
GPU; no combination more).  With ``V(f)`` the most that free space ``f`` can still be worth (an
unbounded knapsack over the prices), putting a slice of size ``s`` into free space ``f`` loses

    loss(f, s) = V(f) - y_s - V(f - s)   >= 0

of a GPU: zero when the slice continues one of the best combinations, positive by as much as the
GPU's best completion shrinks.  Summed over a run these losses are the waste the placement adds
beyond the LP's own, which is why the ``aispike`` policy weighs them heavily.

The LP is solved by column generation (the knapsack finds the combination the current prices
undervalue most) with HiGHS, once per GPU capacity and workload; tables are cached.  Sizes are
counted in grid units: the greatest common divisor of the GPU's memory and the slice sizes
(160 MiB on the Alibaba trace's 16 GiB GPUs: 100 units), or a thousandth of the GPU when that
divisor is finer.  GPU model restrictions of the workload's types are not modelled (every size
is priced on every capacity it fits).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from aispike_hub.model import SliceRequest
from aispike_hub.placement.filter import slice_demand
from aispike_hub.placement.state import FloatArray, IntArray

MAX_UNITS = 200
"""The finest grid a GPU is divided into (half a percent of its memory): it bounds the LP to 200
sizes, whatever the workload asks."""
MAX_COLUMNS = 2000
"""Column generation stops after this many combinations (never reached on real mixes)."""
COLUMNS_PER_SOLVE = 20
"""Combinations added to the LP between two solves."""
_TOLERANCE = 1e-9


@dataclass(frozen=True, slots=True)
class SliceValueTable:
    """Prices and completion values of slices on GPUs of one memory size."""

    capacity_mib: int
    unit_mib: float
    """MiB per grid unit."""
    units: int
    """Grid units per GPU."""
    price: FloatArray
    """Dual price of a slice of each size in units (index = size); V(size) for sizes the
    workload never asks for, so that an unforeseen size is worth the best it displaces."""
    value: FloatArray
    """V(f): the most free space of f units can still be worth, f = 0..units."""

    def loss(self, free_mib: IntArray, demand_mib: IntArray) -> FloatArray:
        """Share of a GPU lost by putting a slice of ``demand_mib`` into ``free_mib`` (>= 0)."""
        free = np.minimum(np.floor(free_mib / self.unit_mib).astype(np.int64), self.units)
        size = np.minimum(np.ceil(demand_mib / self.unit_mib).astype(np.int64), self.units)
        rest = np.maximum(free - size, 0)
        out: FloatArray = np.maximum(self.value[free] - self.price[size] - self.value[rest], 0.0)
        return out


def slice_mix(types: Iterable[tuple[SliceRequest, float]], capacity_mib: int
              ) -> tuple[tuple[int, float], ...]:
    """The one-GPU slices of a workload on a GPU of ``capacity_mib``: (MiB, probability) pairs.

    Whole-GPU and CPU-only types are left out: a whole GPU is worth one GPU in any packing.
    """
    mix: dict[int, float] = {}
    for request, p in types:
        if request.gpu_count != 1 or request.whole_gpus or p <= 0:
            continue
        mib = int(slice_demand(request, np.array([capacity_mib], dtype=np.int64))[0])
        if 0 < mib <= capacity_mib:
            mix[mib] = mix.get(mib, 0.0) + p
    return tuple(sorted(mix.items()))


@lru_cache(maxsize=64)
def slice_value_table(capacity_mib: int, mix: tuple[tuple[int, float], ...]) -> SliceValueTable:
    """Prices and values for slices of ``mix`` (MiB, weight) on a GPU of ``capacity_mib``."""
    if capacity_mib <= 0:
        raise ValueError(f"capacity_mib must be positive, got {capacity_mib}")
    divisor = math.gcd(capacity_mib, *(mib for mib, _ in mix)) if mix else capacity_mib
    units = capacity_mib // divisor
    unit_mib = float(divisor)
    if units > MAX_UNITS:
        units, unit_mib = MAX_UNITS, capacity_mib / MAX_UNITS
    merged: dict[int, float] = {}
    for mib, weight in mix:
        size = min(units, max(1, math.ceil(mib / unit_mib - 1e-9)))
        merged[size] = merged.get(size, 0.0) + weight
    sizes = sorted(merged)
    prices = lp_prices(sizes, [merged[s] for s in sizes], units) if sizes else []
    value, _ = knapsack(sizes, prices, units)
    price = value.copy()  # unforeseen sizes: worth the best they displace
    for s, y in zip(sizes, prices, strict=True):
        price[s] = y
    return SliceValueTable(capacity_mib, unit_mib, units, price, value)


def knapsack(sizes: list[int], prices: list[float], units: int
             ) -> tuple[FloatArray, IntArray]:
    """Unbounded knapsack: V(f) for f = 0..units, and the size last added at each f (-1: none)."""
    value = np.zeros(units + 1, dtype=np.float64)
    last = np.full(units + 1, -1, dtype=np.int64)
    if not sizes:
        return value, last
    s_arr = np.array(sizes, dtype=np.int64)
    y_arr = np.array(prices, dtype=np.float64)
    for f in range(1, units + 1):
        best, pick = float(value[f - 1]), -1  # -1: f - 1 is as good
        fits = s_arr <= f
        if fits.any():
            cand = value[f - s_arr[fits]] + y_arr[fits]
            i = int(np.argmax(cand))
            if cand[i] > best + _TOLERANCE:
                best, pick = float(cand[i]), int(s_arr[fits][i])
        value[f], last[f] = best, pick
    return value, last


def _combination(last: IntArray, f: int) -> list[int]:
    """The sizes of the best combination in free space ``f`` (from :func:`knapsack`)."""
    out: list[int] = []
    while f > 0:
        s = int(last[f])
        if s <= 0:
            f -= 1
            continue
        out.append(s)
        f -= s
    return out


def lp_prices(sizes: list[int], demand: list[float], units: int) -> list[float]:
    """Dual prices of the cutting-stock LP ``min sum x_c  s.t.  A x >= demand, x >= 0``.

    Columns are combinations of sizes that fit ``units``; they are generated by the knapsack
    until none is worth more than one GPU at the current prices (then the prices are optimal).
    """
    from scipy.optimize import linprog  # imported on first use: placement without it stays light

    index = {s: i for i, s in enumerate(sizes)}
    b = np.array(demand, dtype=np.float64)
    scale = 1.0 / float(b.max())
    columns: list[list[int]] = [[s] * (units // s) for s in sizes]
    prices = [0.0] * len(sizes)
    for _ in range(MAX_COLUMNS):
        a = np.zeros((len(sizes), len(columns)), dtype=np.float64)
        for j, combo in enumerate(columns):
            for s in combo:
                a[index[s], j] += 1
        res = linprog(np.ones(len(columns)), A_ub=-a, b_ub=-b * scale, bounds=(0, None),
                      method="highs")
        if res.status != 0:  # pragma: no cover - every size fits alone, so it is feasible
            raise RuntimeError(f"slice packing LP failed: {res.message}")
        prices = [max(0.0, float(-m)) for m in res.ineqlin.marginals]
        value, last = knapsack(sizes, prices, units)
        if value[units] <= 1.0 + 1e-7:
            break
        # The best combination around each size, most undervalued first: many columns per
        # LP solve (one per solve needs hundreds of solves when the workload has many sizes).
        worth = sorted(((y + value[units - s], s) for s, y in zip(sizes, prices, strict=True)),
                       reverse=True)
        added = 0
        for total, s in worth[:COLUMNS_PER_SOLVE]:
            combo = sorted([s, *_combination(last, units - s)], reverse=True)
            if total > 1.0 + 1e-7 and combo not in columns:
                columns.append(combo)
                added += 1
        if not added:  # numerical stall: the prices are as good as they get
            break
    return prices
