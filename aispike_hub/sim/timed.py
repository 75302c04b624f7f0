"""Time-driven replay: pods arrive at ``creation_time``, leave at ``deletion_time``, and wait.

The published method has no departures, so it measures packing at saturation only.  Notebooks
come and go; what a hub admin feels is how full the GPUs are over time and how long users wait.
A pod that does not fit on arrival joins a FIFO queue; whenever capacity frees, the queue is
retried in order (a pod that still does not fit does not block smaller ones behind it).  A pod
starts its life when placed and runs for its original duration.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from aispike_hub.model import Assignment, Node, SliceRequest
from aispike_hub.placement.engine import PlacementEngine
from aispike_hub.placement.fragmentation import Workload
from aispike_hub.placement.state import ClusterState
from aispike_hub.sim.trace import TracePod


@dataclass(frozen=True, slots=True)
class TimedResult:
    policy: str
    pods: int
    load: float | None
    time_avg_allocation: float
    """Time-averaged share of GPU capacity allocated, in % (from first to last arrival)."""
    waited_pods: int
    mean_wait_s: float
    p95_wait_s: float
    never_placed: int

    def as_json(self) -> dict[str, object]:
        return {
            "policy": self.policy, "pods": self.pods, "load": self.load,
            "time_avg_allocation": self.time_avg_allocation, "waited_pods": self.waited_pods,
            "mean_wait_s": self.mean_wait_s, "p95_wait_s": self.p95_wait_s,
            "never_placed": self.never_placed,
        }


def _gpu_share(state: ClusterState, a: Assignment) -> float:
    n = state.node_index[a.node]
    return float(sum(m / state.gpu_cap[n, state.slot_of(n, g)]
                     for g, m in zip(a.gpu_indices, a.gpu_memory_mib, strict=True)))


class _Replay:
    """The replay's mutable state: cluster, queue, running pods, and the running integral."""

    def __init__(self, nodes: Sequence[Node], pods: Sequence[TracePod], engine: PlacementEngine):
        self.state = ClusterState(nodes)
        self.capacity = float(self.state.total_gpus())
        self.pods = pods
        self.engine = engine
        self.events: list[tuple[int, int, int]] = [(p.creation_time, 1, i)
                                                   for i, p in enumerate(pods)]
        heapq.heapify(self.events)
        self.queue: list[int] = []
        self.running: dict[int, Assignment] = {}
        self.waits: list[float] = []
        self.allocated = 0.0

    def try_place(self, i: int, now: int) -> bool:
        pod = self.pods[i]
        decision = self.engine.place(self.state, pod.request, owner=pod.name)
        if decision.assignment is None:
            return False
        self.state.commit(decision.assignment)
        self.running[i] = decision.assignment
        self.allocated += _gpu_share(self.state, decision.assignment)
        self.waits.append(now - pod.creation_time)
        heapq.heappush(self.events, (now + pod.deletion_time - pod.creation_time, 0, i))
        return True

    def drain(self, now: int) -> None:
        """Retry the queue in order; a shape that failed in this pass is not tried again."""
        failed: set[SliceRequest] = set()
        keep: list[int] = []
        for i in self.queue:
            req = self.pods[i].request
            if req in failed or not self.try_place(i, now):
                keep.append(i)
                failed.add(req)
        self.queue = keep

    def run(self) -> tuple[float, int]:
        """Process every event; return the allocation integral over the arrival window (first
        to last arrival: after it the cluster only drains) and that window's length."""
        start = last = self.events[0][0]
        end = max(t for t, kind, _ in self.events if kind == 1)
        area = 0.0
        while self.events:
            now, kind, i = heapq.heappop(self.events)
            if last < end:
                area += self.allocated * (min(now, end) - last)
            last = now
            if kind == 1:
                if self.queue or not self.try_place(i, now):
                    self.queue.append(i)
                    self.drain(now)
                continue
            a = self.running.pop(i)
            self.state.release(a)
            self.allocated -= _gpu_share(self.state, a)
            self.drain(now)
        return area, max(end - start, 1)


def compress_to_load(pods: Sequence[TracePod], capacity_gpus: float,
                     load: float) -> list[TracePod]:
    """Bring arrivals closer together (durations unchanged) until the offered GPU demand
    (arrival rate times GPU-seconds per pod) is ``load`` times the capacity.

    The public trace spreads 8,000 pods over five months, about 14 GPUs busy on average on a
    6,212-GPU cluster; compressing time is how a replay asks "what if this cluster were busy".
    """
    if load <= 0:
        raise ValueError(f"load must be > 0, got {load}")
    start = min(p.creation_time for p in pods)
    span = max(p.creation_time for p in pods) - start
    if span <= 0 or not any(p.gpu_demand > 0 for p in pods):
        raise ValueError("the trace has no GPU work over time to compress")
    # Busy GPUs during the compressed window ~ arrivals x GPU-seconds each, where a pod counts
    # only up to the window's length (the trace's tail runs for months): a fixed point in the
    # compression factor.
    factor = 1.0
    for _ in range(60):
        window = span / factor
        work = sum(p.gpu_demand * min(p.deletion_time - p.creation_time, window) for p in pods)
        if work <= 0:
            raise ValueError("the trace has no GPU work over time to compress")
        factor = load * capacity_gpus * window * factor / work
    out = []
    for p in pods:
        created = start + round((p.creation_time - start) / factor)
        out.append(TracePod(p.name, p.request, created,
                            created + p.deletion_time - p.creation_time))
    return out


def timed_replay(nodes: Sequence[Node], pods: Sequence[TracePod], policy: str, seed: int = 42,
                 workload: Workload | None = None, load: float | None = None) -> TimedResult:
    """Replay ``pods`` in time order on ``nodes`` with ``policy`` (optionally at ``load``)."""
    usable = [p for p in pods if 0 <= p.creation_time < p.deletion_time]
    if not usable:
        raise ValueError("no pod of the trace has both creation_time and a later deletion_time")
    if load is not None:
        usable = compress_to_load(usable, float(sum(len(n.gpus) for n in nodes)), load)
    engine = PlacementEngine(policy, workload=workload or Workload.from_requests(
        p.request for p in pods), seed=seed)
    replay = _Replay(nodes, usable, engine)
    area, span = replay.run()
    waited = [w for w in replay.waits if w > 0]
    return TimedResult(
        policy=policy, pods=len(usable), load=load,
        time_avg_allocation=round(area / span / replay.capacity * 100, 2),
        waited_pods=len(waited),
        mean_wait_s=round(float(np.mean(waited)), 1) if waited else 0.0,
        p95_wait_s=round(float(np.percentile(waited, 95)), 1) if waited else 0.0,
        never_placed=len(replay.queue),
    )
