"""Trace replay by the published method ("workload inflation"), and its metrics.

Sample pods from the trace with replacement until their GPU demand reaches ``inflate`` times the
cluster's GPU capacity; place them one by one in that (random) order with no departures; a pod
that does not fit fails and is skipped.  Record the allocation ratio against the arrived workload.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from aispike_hub.model import Node
from aispike_hub.placement.engine import Affinity, PlacementEngine
from aispike_hub.placement.fragmentation import Workload
from aispike_hub.placement.state import ClusterState
from aispike_hub.sim.trace import TracePod

CURVE_POINTS = 131  # arrived workload 0..130 % of GPU capacity


@dataclass(slots=True)
class SeedResult:
    """One replay: the allocation curve, failures, served demand and decision times."""

    seed: int
    curve: list[float]
    """Allocation (% of GPU capacity) when the arrived workload first reached 0, 1, ... 130 %."""
    failed_pods: int
    failed_gpu_pods: int
    placed_pods: int
    served_demand: float
    """GPUs the placed pods' users asked for (before any rounding), in % of capacity."""
    decision_seconds: list[float] = field(repr=False)

    @property
    def allocation_at_100(self) -> float:
        return self.curve[100]


def sample_arrivals(pods: Sequence[TracePod], capacity_gpus: float, inflate: float,
                    rng: np.random.Generator) -> list[TracePod]:
    """Pods drawn with replacement until their GPU demand reaches ``inflate`` x capacity."""
    demand = np.array([p.gpu_demand for p in pods])
    if demand.sum() <= 0:
        raise ValueError("the trace has no GPU demand to replay")
    target = inflate * capacity_gpus
    picked: list[int] = []
    total = 0.0
    batch = max(64, int(target / max(demand.mean(), 1e-9) * 0.1))
    while total < target:
        for i in rng.integers(0, len(pods), size=batch):
            picked.append(int(i))
            total += demand[i]
            if total >= target:
                break
    order = rng.permutation(len(picked))
    return [pods[picked[i]] for i in order]


def replay(nodes: Sequence[Node], pods: Sequence[TracePod], policy: str, seed: int,
           inflate: float = 1.3, workload: Workload | None = None,
           affinity: Affinity | None = None,
           progress: Callable[[int, int], None] | None = None) -> SeedResult:
    """Replay one seed: sample, place in order, measure."""
    rng = np.random.default_rng(seed)
    state = ClusterState(nodes)
    capacity = float(state.total_gpus())
    if capacity == 0:
        raise ValueError("the cluster has no GPUs")
    arrivals = sample_arrivals(pods, capacity, inflate, rng)
    if workload is None:
        workload = Workload.from_requests(p.request for p in pods)
    engine = PlacementEngine(policy, workload=workload, seed=seed,
                             affinity=affinity or Affinity())
    curve: list[float] = []
    arrived = allocated = served = 0.0
    failed = failed_gpu = placed = 0
    times: list[float] = []
    clock = time.perf_counter
    for i, pod in enumerate(arrivals):
        start = clock()
        decision = engine.place(state, pod.request, owner=pod.name)
        times.append(clock() - start)
        arrived += pod.gpu_demand
        if decision.assignment is not None:
            state.commit(decision.assignment)
            placed += 1
            served += pod.served_gpus
            a = decision.assignment
            allocated += sum(
                m / state.gpu_cap[state.node_index[a.node], state.slot_of(
                    state.node_index[a.node], g)]
                for g, m in zip(a.gpu_indices, a.gpu_memory_mib, strict=True)
            )
        else:
            failed += 1
            failed_gpu += pod.request.gpu_count > 0
        pct = arrived / capacity * 100
        while len(curve) < CURVE_POINTS and pct >= len(curve):
            curve.append(round(allocated / capacity * 100, 4))
        if progress is not None and i % 500 == 0:
            progress(i, len(arrivals))
    while len(curve) < CURVE_POINTS:
        curve.append(round(allocated / capacity * 100, 4))
    return SeedResult(seed, curve, failed, failed_gpu, placed,
                      round(served / capacity * 100, 4), times)


def parse_seeds(text: str) -> list[int]:
    """``42-51`` or ``42,43,50`` or ``42``."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                seeds.extend(range(lo, hi + 1))
            elif part:
                seeds.append(int(part))
    except ValueError:
        raise ValueError(f"--seeds: expected e.g. 42-51 or 42,43; got {text!r}") from None
    if not seeds:
        raise ValueError(f"--seeds: no seed in {text!r}")
    return seeds


@dataclass(frozen=True, slots=True)
class Summary:
    """What ``aispike-hub simulate`` reports for one policy over several seeds."""

    policy: str
    seeds: list[int]
    allocation_at_100: float
    unallocated_at_100: float
    allocation_curve: dict[int, float]
    failed_pods: float
    served_demand_at_end: float
    decision_ms_p50: float
    decision_ms_p99: float

    def as_json(self) -> dict[str, object]:
        return {
            "policy": self.policy,
            "seeds": self.seeds,
            "allocation_at_100": self.allocation_at_100,
            "unallocated_at_100": self.unallocated_at_100,
            "allocation_curve": {str(k): v for k, v in self.allocation_curve.items()},
            "failed_pods": self.failed_pods,
            "served_demand_at_end": self.served_demand_at_end,
            "decision_ms_p50": self.decision_ms_p50,
            "decision_ms_p99": self.decision_ms_p99,
        }


def summarise(policy: str, results: Sequence[SeedResult]) -> Summary:
    """Median allocation over seeds per point, mean unallocated at 100 %, decision percentiles."""
    curves = np.array([r.curve for r in results])
    median = np.median(curves, axis=0)
    times = np.concatenate([np.asarray(r.decision_seconds) for r in results]) * 1000
    return Summary(
        policy=policy,
        seeds=[r.seed for r in results],
        allocation_at_100=round(float(median[100]), 2),
        unallocated_at_100=round(float(np.mean([100 - r.curve[100] for r in results])), 2),
        allocation_curve={i: round(float(v), 2) for i, v in enumerate(median)},
        failed_pods=float(np.mean([r.failed_pods for r in results])),
        served_demand_at_end=round(float(np.median([r.served_demand for r in results])), 2),
        decision_ms_p50=round(float(np.percentile(times, 50)), 3),
        decision_ms_p99=round(float(np.percentile(times, 99)), 3),
    )
