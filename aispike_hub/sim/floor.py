"""The fluid floor: unallocated GPU capacity that no placement, online or offline, can avoid.

Relax placement to a fluid over the pods that arrived: a pod above half a GPU (and every
whole-GPU pod) needs GPUs of its own, so two of them never share one; a smaller pod may be split
across any free spaces that are each at least its size.  CPU, RAM and GPU models are ignored,
which only makes the floor lower.  What stays unallocated in this relaxation is a lower bound for
every policy; a policy's gap to it is what placement can still win.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from aispike_hub.model import FULL_GPU_MILLI
from aispike_hub.sim.trace import TracePod


def fluid_floor_unallocated(arrived: Sequence[TracePod], total_gpus: int) -> float:
    """Unallocated share (% of capacity) of the fluid relaxation over ``arrived``."""
    big: list[int] = []  # milli per GPU for pods that need GPUs of their own
    small: list[int] = []
    for pod in arrived:
        r = pod.request
        if r.gpu_count == 0:
            continue
        share = FULL_GPU_MILLI if r.whole_gpus else r.gpu_share_milli
        if r.gpu_count > 1 or share > FULL_GPU_MILLI // 2:
            big.extend([share] * r.gpu_count)
        else:
            small.append(share)
    big.sort(reverse=True)
    # More big GPU demands than GPUs: keep the largest (they allocate the most).
    placed_big = big[:total_gpus]
    spaces = [FULL_GPU_MILLI - s for s in placed_big if s < FULL_GPU_MILLI]
    spaces += [FULL_GPU_MILLI] * (total_gpus - len(placed_big))
    allocated = float(sum(placed_big))
    if small:
        space = np.sort(np.array(spaces, dtype=np.int64))
        # capacity in spaces of size >= s, for every s (suffix sums over sorted spaces)
        suffix = np.concatenate([np.cumsum(space[::-1])[::-1], [0]])
        used = 0.0
        for s in sorted(small, reverse=True):
            eligible = float(suffix[np.searchsorted(space, s, side="left")]) - used
            take = min(float(s), max(eligible, 0.0))
            used += take
        allocated += used
    return round(100.0 - allocated / (total_gpus * FULL_GPU_MILLI) * 100.0, 3)


def arrived_until(arrivals: Sequence[TracePod], total_gpus: int,
                  percent: float = 100.0) -> list[TracePod]:
    """The prefix of ``arrivals`` whose GPU demand first reaches ``percent`` of capacity."""
    out: list[TracePod] = []
    demand = 0.0
    for pod in arrivals:
        out.append(pod)
        demand += pod.gpu_demand
        if demand >= total_gpus * percent / 100:
            break
    return out
