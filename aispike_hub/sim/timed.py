"""Time-driven replay: pods arrive, run for their duration, leave, and wait when nothing fits.

The published method has no departures, so it measures packing at saturation only.  Notebooks
come and go; what a hub admin feels is how full the GPUs are over time and how long users wait.
A pod that does not fit on arrival joins a FIFO queue; whenever capacity frees, the queue is
retried in order (a pod that still does not fit does not block smaller ones behind it).  A pod
starts its life when placed and runs for its original duration.

Two ways to feed it:

* **trace times** (``load=None``): every pod at its own ``creation_time``, measured from the first
  to the last arrival.  The public trace spreads 8,000 pods over five months with about 14 GPUs
  busy on average on a 6,212-GPU cluster, so this says little about a busy hub.
* **offered load** (``load=rho``): a stationary workload whose offered GPU demand is ``rho``
  times the cluster's GPU capacity.  Pods are drawn from the trace with replacement (request and
  duration together, as the published method samples), arrive as a Poisson process of rate
  ``lambda = rho x capacity / E[GPUs x duration]`` (Little's law: the GPUs busy on average if
  nothing ever waited), and the replay starts from the steady state of that process instead of
  from an empty cluster: the pods running at time 0 are drawn length-biased (probability
  proportional to duration, as an observer arriving at a random time sees them) with a residual
  life uniform over their duration, placed in random order (those that do not fit wait from time
  0).  The trace's durations are heavy-tailed (median 9 minutes, longest 145 days; 96 % of its
  GPU-time is in pods longer than an hour), so a replay that starts empty never reaches steady
  state: this is what broke the earlier time-compression model.  Measurement runs over a window
  after a warm-up (which lets the batch-placed start settle into churn) and stops at the window's
  end, so the drain after the last arrival never counts.  The offered load actually realised in
  the window (GPUs that would be busy if nothing waited, averaged over it, over capacity) is
  reported beside it.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from aispike_hub.model import Assignment, Node, SliceRequest
from aispike_hub.placement.engine import PlacementEngine
from aispike_hub.placement.filter import NodeFit
from aispike_hub.placement.fragmentation import Workload
from aispike_hub.placement.state import ClusterState
from aispike_hub.sim.trace import TracePod

HOUR = 3600
DEFAULT_WINDOW_S = 12 * HOUR
DEFAULT_WARMUP_S = 3 * HOUR


@dataclass(frozen=True, slots=True)
class TimedResult:
    policy: str
    pods: int
    """Pods that arrived inside the measurement window, plus pods of the steady-state start
    still waiting when it opened."""
    load: float | None
    """The offered load asked for (None: the trace's own times)."""
    offered_load: float
    """Offered load realised in the window: GPUs that would be busy if nothing ever waited,
    averaged over the window, over capacity."""
    time_avg_allocation: float
    """Time-averaged share of GPU capacity allocated over the window, in %."""
    waited_pods: int
    """Pods of the window that did not start on arrival (including those still waiting;
    a pod of the start still waiting when the window opens counts from time 0)."""
    mean_wait_s: float
    p95_wait_s: float
    still_waiting: int
    """Pods of the window still in the queue at its end (their wait is counted up to the end)."""
    window_s: int
    warmup_s: int

    @property
    def never_placed(self) -> int:
        return self.still_waiting

    def as_json(self) -> dict[str, object]:
        return {
            "policy": self.policy, "pods": self.pods, "load": self.load,
            "offered_load": self.offered_load,
            "time_avg_allocation": self.time_avg_allocation, "waited_pods": self.waited_pods,
            "mean_wait_s": self.mean_wait_s, "p95_wait_s": self.p95_wait_s,
            "still_waiting": self.still_waiting, "window_s": self.window_s,
            "warmup_s": self.warmup_s,
        }


def _gpu_share(state: ClusterState, a: Assignment) -> float:
    n = state.node_index[a.node]
    return float(sum(m / state.gpu_cap[n, state.slot_of(n, g)]
                     for g, m in zip(a.gpu_indices, a.gpu_memory_mib, strict=True)))


@dataclass(frozen=True, slots=True)
class TimedWorkload:
    """What a timed replay is fed: pods running at the start, arrivals, and the window."""

    initial: list[TracePod]
    """Running at ``start`` (their ``deletion_time`` is when they leave)."""
    arrivals: list[TracePod]
    start: int
    measure_from: int
    """End of the warm-up: the window is ``[measure_from, end)``."""
    end: int


class _Replay:
    """The replay's mutable state: cluster, queue, running pods, and the running integral.

    The queue is kept *stable*: after every event nothing in it fits anywhere.  Then, after a
    departure, a queued pod can only fit on the node that was freed, so only the shapes that
    fit there are retried (exactly the decisions of retrying every queued pod, far cheaper
    with thousands waiting); after an arrival, only the newcomer can fit.
    """

    def __init__(self, nodes: Sequence[Node], engine: PlacementEngine, work: TimedWorkload):
        self.state = ClusterState(nodes)
        self.capacity = float(self.state.total_gpus())
        self.engine = engine
        self.work = work
        self.pods: list[TracePod] = [*work.initial, *work.arrivals]
        self.events: list[tuple[int, int, int]] = []
        shape_ids: dict[SliceRequest, int] = {}
        self.shape: list[int] = [shape_ids.setdefault(p.request, len(shape_ids))
                                 for p in self.pods]
        self.requests: list[SliceRequest] = list(shape_ids)
        self.queue: list[int] = []
        self.queued_shapes: Counter[int] = Counter()
        self.running: dict[int, Assignment] = {}
        self.waits: dict[int, int] = {}
        self.allocated = 0.0

    def try_place(self, i: int, now: int) -> bool:
        pod = self.pods[i]
        decision = self.engine.place(self.state, pod.request, owner=pod.name, explain=False)
        if decision.assignment is None:
            return False
        self.state.commit(decision.assignment)
        self.running[i] = decision.assignment
        self.allocated += _gpu_share(self.state, decision.assignment)
        self.waits[i] = now - pod.creation_time
        heapq.heappush(self.events, (now + pod.deletion_time - pod.creation_time, 0, i))
        return True

    def enqueue(self, i: int) -> None:
        self.queue.append(i)
        self.queued_shapes[self.shape[i]] += 1

    def arrive(self, i: int, now: int) -> None:
        # a queued pod of the same shape did not fit and nothing was freed since: neither does this
        if self.queued_shapes[self.shape[i]] or not self.try_place(i, now):
            self.enqueue(i)

    def drain(self, node: int, now: int) -> None:
        """Retry the queue in order after ``node`` freed capacity; a shape that failed in this
        pass is not tried again."""
        if not self.queue:
            return
        candidates = self._fitting_shapes(node)
        if not candidates:
            return
        keep: list[int] = []
        for i in self.queue:
            shape = self.shape[i]
            if shape in candidates and self.try_place(i, now):
                self.queued_shapes[shape] -= 1
                if not self.queued_shapes[shape]:
                    del self.queued_shapes[shape]
                # the stable queue can only have used ``node``: what fits there now?
                candidates = self._fitting_shapes(node)
            else:
                keep.append(i)
                candidates.discard(shape)
        self.queue = keep

    def _fitting_shapes(self, node: int) -> set[int]:
        fit = NodeFit(self.state, node)
        return {s for s in self.queued_shapes if fit.could_host(self.requests[s])}

    def run(self) -> float:
        """Process every event up to the window's end; return the allocation integral over the
        window ``[measure_from, end)`` (in GPU-seconds)."""
        w = self.work
        n0 = len(w.initial)
        for i in range(n0):
            if not self.try_place(i, w.start):
                self.enqueue(i)
        for k in range(n0, len(self.pods)):
            heapq.heappush(self.events, (self.pods[k].creation_time, 1, k))
        area = 0.0
        last = w.start
        while self.events and self.events[0][0] < w.end:
            now, kind, i = heapq.heappop(self.events)
            if now > w.measure_from:
                area += self.allocated * (now - max(last, w.measure_from))
            last = now
            if kind == 1:
                self.arrive(i, now)
                continue
            a = self.running.pop(i)
            self.state.release(a)
            self.allocated -= _gpu_share(self.state, a)
            self.drain(self.state.node_index[a.node], now)
        area += self.allocated * (w.end - max(last, w.measure_from))
        return area


def _durations(pods: Sequence[TracePod]) -> tuple[np.ndarray, np.ndarray]:
    d = np.array([p.deletion_time - p.creation_time for p in pods], dtype=np.float64)
    g = np.array([p.gpu_demand for p in pods], dtype=np.float64)
    return d, g


def arrival_rate(pods: Sequence[TracePod], capacity_gpus: float, load: float) -> float:
    """Pods per second whose offered GPU demand is ``load`` x ``capacity_gpus`` (Little's law:
    rate x mean GPU-seconds per pod = GPUs busy on average if nothing waited)."""
    if load <= 0:
        raise ValueError(f"load must be > 0, got {load}")
    d, g = _durations(pods)
    work = float((d * g).mean()) if len(pods) else 0.0
    if work <= 0:
        raise ValueError("the trace has no GPU work over time (GPUs x duration) to replay")
    return load * capacity_gpus / work


def stationary_workload(pods: Sequence[TracePod], capacity_gpus: float, load: float,
                        rng: np.random.Generator, window_s: int = DEFAULT_WINDOW_S,
                        warmup_s: int = DEFAULT_WARMUP_S) -> TimedWorkload:
    """A stationary workload of offered load ``load``, drawn from ``pods`` (see module doc)."""
    if window_s <= 0 or warmup_s < 0:
        raise ValueError(f"window must be > 0 and warm-up >= 0 s, got {window_s}, {warmup_s}")
    rate = arrival_rate(pods, capacity_gpus, load)
    d, _ = _durations(pods)
    # M/G/inf in steady state: Poisson(rate x E[d]) pods running, length-biased, uniform residual
    running = int(rng.poisson(rate * float(d.mean())))
    picks = rng.choice(len(pods), size=running, p=d / d.sum())
    initial = []
    for k, i in enumerate(picks):
        left = max(1, math.ceil(float(rng.uniform(0.0, d[i]))))
        initial.append(TracePod(f"{pods[i].name}~r{k}", pods[i].request, 0, left))
    horizon = warmup_s + window_s
    count = int(rng.poisson(rate * horizon))
    times = np.sort(rng.uniform(0.0, horizon, size=count)).astype(np.int64)
    arrivals = []
    for k, (t, i) in enumerate(zip(times.tolist(), rng.integers(0, len(pods), size=count).tolist(),
                                   strict=True)):
        p = pods[i]
        arrivals.append(TracePod(f"{p.name}~a{k}", p.request, t,
                                 t + p.deletion_time - p.creation_time))
    return TimedWorkload(initial, arrivals, 0, warmup_s, horizon)


def trace_time_workload(pods: Sequence[TracePod]) -> TimedWorkload:
    """Every pod at its own trace time, measured from the first to the last arrival."""
    ordered = sorted(pods, key=lambda p: p.creation_time)
    start, last = ordered[0].creation_time, ordered[-1].creation_time
    return TimedWorkload([], ordered, start, start, last + 1)


def timed_replay(nodes: Sequence[Node], pods: Sequence[TracePod], policy: str, seed: int = 42,
                 workload: Workload | None = None, load: float | None = None,
                 window_s: int = DEFAULT_WINDOW_S,
                 warmup_s: int = DEFAULT_WARMUP_S,
                 transform: Callable[[TracePod], TracePod] | None = None) -> TimedResult:
    """Replay ``pods`` in time on ``nodes`` with ``policy``: at the trace's own times, or (with
    ``load``) as a stationary workload of that offered load, measured over ``window_s`` after
    ``warmup_s``.

    ``transform`` rewrites each pod's request *after* the workload is drawn (e.g.
    ``sim.trace.whole_gpu_version``), so configurations compared at one load and seed get the
    very same arrivals and the offered load stays the users' demand (``served_gpus``)."""
    usable = [p for p in pods if 0 <= p.creation_time < p.deletion_time]
    if not usable:
        raise ValueError("no pod of the trace has both creation_time and a later deletion_time")
    capacity = float(sum(len(n.gpus) for n in nodes))
    if capacity <= 0:
        raise ValueError("the cluster has no GPUs")
    if load is None:
        work = trace_time_workload(usable)
    else:
        work = stationary_workload(usable, capacity, load, np.random.default_rng(seed),
                                   window_s, warmup_s)
    if transform is not None:
        work = TimedWorkload([transform(p) for p in work.initial],
                             [transform(p) for p in work.arrivals],
                             work.start, work.measure_from, work.end)
        pods = [transform(p) for p in pods]
    engine = PlacementEngine(policy, workload=workload or Workload.from_requests(
        p.request for p in pods), seed=seed)
    replay = _Replay(nodes, engine, work)
    area = replay.run()
    span = work.end - work.measure_from
    n0 = len(work.initial)
    window = [k for k, p in enumerate(work.arrivals, start=n0)
              if work.measure_from <= p.creation_time < work.end]
    # pods of the steady-state start that did not fit and were still waiting when the window
    # opened wait in it too (from time 0): leaving them out would flatter a policy that packs
    # the start badly
    window += [k for k in range(n0)
               if replay.waits.get(k, work.end) > work.measure_from - work.start]
    waits = [replay.waits.get(k, work.end - replay.pods[k].creation_time) for k in window]
    waited = [w for w in waits if w > 0]
    queued = set(replay.queue)
    # GPUs that would be busy in the window if nothing ever waited, averaged over it
    offered = sum(p.served_gpus * max(0, min(p.deletion_time, work.end)
                                     - max(p.creation_time, work.measure_from))
                  for p in replay.pods)
    return TimedResult(
        policy=policy, pods=len(window), load=load,
        offered_load=round(offered / (capacity * span), 3),
        time_avg_allocation=round(area / span / replay.capacity * 100, 2),
        waited_pods=len(waited),
        mean_wait_s=round(float(np.mean(waited)), 1) if waited else 0.0,
        p95_wait_s=round(float(np.percentile(waited, 95)), 1) if waited else 0.0,
        still_waiting=sum(1 for k in window if k in queued),
        window_s=span, warmup_s=work.measure_from - work.start,
    )
