"""Fragmentation of GPU capacity measured against the workload that actually arrives.

FGD ("Beware of Fragmentation", ATC'23) calls free GPU capacity on a node *fragmented for a task*
when that task could not use it: the node cannot host the task at all (model, CPU or GPU count),
or the capacity sits on GPUs with less free than the task needs per GPU.  The node's
fragmentation is the expectation over the workload mix; a good placement is one that grows it the
least.  CPU-only tasks never use GPUs, so for them all free GPU capacity counts as fragmented.

Written as one sum::

    F(n) = T(n) - sum_j  W_j(cpu_free(n)) * allow(n, j) * [C(n, j) >= k_j] * S(n, j) / cap(n)

with ``T`` the node's free GPU capacity in GPUs, and per *GPU class* ``j`` of the workload (the
GPU part of a request: count ``k_j`` and per-GPU demand ``D(n, j)``): ``S`` the free memory on
GPUs with at least ``D`` free, ``C`` the number of such GPUs, ``W_j(c)`` the probability of a task
of that class needing at most ``c`` CPU.  Keeping ``S`` and ``C`` per node makes the change from
one more slice an O(classes) update, which is what lets the simulator score every node for every
pod in well under a millisecond.

The *capacity* measure (``measure="capacity"``, used by the ``aispike`` policy beside FGD's)
counts instead how much of the free GPU memory each task type could really consume: whole slices
per GPU (``floor(free / demand)``, so two 470-thousandth slices leave 60 that no such slice uses)
and no more slices than the node's free CPU allows.  FGD counts a node as wholly usable by a type
as soon as one task of it fits, which misses both.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from aispike_hub.model import FULL_GPU_MILLI, SliceRequest
from aispike_hub.placement.state import BoolArray, ClusterState, FloatArray, IntArray

SCARCE_HOSTS_SHARE = 0.1
"""A task type that fewer than this share of the GPU nodes can host is protected (capacity
measure): its weight is multiplied by GPU nodes / hosts, at most :data:`SCARCE_BOOST_MAX`."""
SCARCE_BOOST_MAX = 50.0


def is_scarce(hosts: int, gpu_nodes: int) -> bool:
    """True for a task type that fewer than :data:`SCARCE_HOSTS_SHARE` of the GPU nodes can host."""
    return gpu_nodes > 0 and hosts < SCARCE_HOSTS_SHARE * gpu_nodes


def scarce_server_types(state: ClusterState, workload: Workload) -> list[SliceRequest]:
    """The workload's multi-GPU server types that few nodes can ever host (GPU count and model,
    CPU and RAM capacity): on the Alibaba trace the 8-GPU, 120-core server (39 of 1,213 nodes).

    One-GPU types are left out: any idle GPU of their model serves them, so a slice beside it
    does not take their host away (reserving every node of a rare model for them cost 0.4
    points of allocation on the trace's `gpuspec10`)."""
    gpu_nodes = state.gpu_count > 0
    out: list[SliceRequest] = []
    for request, _ in workload.types:
        if request.gpu_count < 2:
            continue
        hosts = (gpu_nodes & (state.gpu_count >= request.gpu_count)
                 & (state.cpu_cap >= request.cpu_milli) & (state.mem_cap >= request.memory_mib))
        if request.allowed_models:
            allowed = [i for i, m in enumerate(state.models) if m in request.allowed_models]
            hosts &= (np.isin(state.gpu_model, allowed) & state.gpu_exists).sum(axis=1) \
                >= request.gpu_count
        if is_scarce(int(np.count_nonzero(hosts)), int(np.count_nonzero(gpu_nodes))):
            out.append(request)
    return out


@dataclass(frozen=True, slots=True)
class GpuClass:
    """The GPU part of a request type: how many GPUs, and how much of each."""

    gpu_count: int
    whole: bool
    share_milli: int
    memory_mib: int
    models: frozenset[str]


@dataclass(frozen=True, slots=True)
class Workload:
    """The expected request mix: request types with their probabilities (summing to 1)."""

    types: tuple[tuple[SliceRequest, float], ...]

    @classmethod
    def from_requests(cls, requests: Iterable[SliceRequest]) -> Workload:
        """The empirical mix of observed requests (CPU, RAM and GPU shape; names ignored)."""
        counts: Counter[tuple[int, int, int, int, frozenset[str], int]] = Counter()
        for r in requests:
            counts[
                (r.gpu_count, r.gpu_memory_mib, r.gpu_share_milli, r.cpu_milli,
                 r.allowed_models, r.memory_mib)
            ] += 1
        total = sum(counts.values())
        if not total:
            raise ValueError("a workload needs at least one request")
        types = tuple(
            (
                SliceRequest(gpu_count=k, gpu_memory_mib=mem, gpu_share_milli=share,
                             cpu_milli=cpu, allowed_models=models, memory_mib=ram),
                n / total,
            )
            for (k, mem, share, cpu, models, ram), n in sorted(
                counts.items(), key=lambda kv: (-kv[1], repr(kv[0]))
            )
        )
        return cls(types)


def default_notebook_workload() -> Workload:
    """A notebook-hub mix to use until a hub has history of its own.

    Mostly small and medium memory slices, some whole GPUs, a few multi-GPU servers; CPU grows
    with the slice.  The service replaces it with the mix of recent spawns.
    """
    gib = 1024
    mix: list[tuple[SliceRequest, float]] = [
        (SliceRequest(gpu_memory_mib=4 * gib, cpu_milli=2000, memory_mib=8 * gib), 0.20),
        (SliceRequest(gpu_memory_mib=8 * gib, cpu_milli=4000, memory_mib=16 * gib), 0.22),
        (SliceRequest(gpu_memory_mib=16 * gib, cpu_milli=4000, memory_mib=32 * gib), 0.18),
        (SliceRequest(gpu_memory_mib=24 * gib, cpu_milli=8000, memory_mib=48 * gib), 0.10),
        (SliceRequest(gpu_memory_mib=40 * gib, cpu_milli=8000, memory_mib=64 * gib), 0.08),
        (SliceRequest(gpu_count=1, cpu_milli=8000, memory_mib=64 * gib), 0.12),
        (SliceRequest(gpu_count=2, cpu_milli=16000, memory_mib=128 * gib), 0.04),
        (SliceRequest(gpu_count=4, cpu_milli=32000, memory_mib=256 * gib), 0.02),
        (SliceRequest(gpu_count=0, cpu_milli=2000, memory_mib=8 * gib), 0.04),
    ]
    return Workload(tuple(mix))


def gpu_class_of(request: SliceRequest) -> GpuClass:
    return GpuClass(
        gpu_count=request.gpu_count,
        whole=request.whole_gpus,
        share_milli=0 if request.whole_gpus else request.gpu_share_milli,
        memory_mib=0 if request.whole_gpus else request.gpu_memory_mib,
        models=request.allowed_models,
    )


class FragmentationModel:
    """Per-node fragmentation of one :class:`ClusterState` under one :class:`Workload`.

    It follows the state's changes incrementally (``state.changed_nodes``) and can price any set
    of candidate options without touching the state.
    """

    def __init__(self, state: ClusterState, workload: Workload, measure: str = "fgd") -> None:
        if measure not in ("fgd", "capacity"):
            raise ValueError(f"unknown fragmentation measure {measure!r}")
        self.state = state
        self.measure = measure
        classes: dict[GpuClass, list[tuple[int, float]]] = {}
        for req, p in workload.types:
            if req.gpu_count == 0:
                continue  # CPU-only: all free GPU counts as fragmented, already in T(n)
            classes.setdefault(gpu_class_of(req), []).append((req.cpu_milli, p))
        self.classes = list(classes)
        n_cls = len(self.classes)
        cpus = sorted({cpu for entries in classes.values() for cpu, _ in entries})
        self.cpu_steps: IntArray = np.array(cpus, dtype=np.int64)
        # weight[j, u]: probability of class j with cpu <= cpu_steps[u-1]; column 0 is "none".
        weight = np.zeros((n_cls, len(cpus) + 1), dtype=np.float64)
        for j, cls in enumerate(self.classes):
            for cpu, p in classes[cls]:
                weight[j, 1 + cpus.index(cpu):] += p
        self.weight_t: FloatArray = np.ascontiguousarray(weight.T)  # [u, j]
        self.k: IntArray = np.array([c.gpu_count for c in self.classes], dtype=np.int64)
        # The capacity measure needs each type's GPU class and CPU; RAM is left out (measured:
        # capping by RAM as well did not place better on the trace), so merge types on those.
        merged: dict[tuple[int, int], float] = {}
        for r, p in workload.types:
            if r.gpu_count:
                key = (self.classes.index(gpu_class_of(r)), r.cpu_milli)
                merged[key] = merged.get(key, 0.0) + p
        self.type_class: IntArray = np.array([k[0] for k in merged], dtype=np.int64)
        self.type_cpu: FloatArray = np.array([k[1] for k in merged], dtype=np.float64)
        self.type_p: FloatArray = np.array(list(merged.values()), dtype=np.float64)
        n = len(state.nodes)
        cap = state.node_gpu_cap
        demand = np.zeros((n, n_cls), dtype=np.int64)
        allow = np.zeros((n, n_cls), dtype=bool)
        for j, c in enumerate(self.classes):
            if c.whole:
                demand[:, j] = cap
            elif c.memory_mib:
                demand[:, j] = c.memory_mib
            else:
                demand[:, j] = -(-c.share_milli * cap // FULL_GPU_MILLI)
            if c.models:
                ok = [i for i, m in enumerate(state.models) if m in c.models]
                allow[:, j] = np.isin(state.node_model, ok)
            else:
                allow[:, j] = True
        allow &= (state.gpu_count > 0)[:, None]
        self.demand: IntArray = demand
        self.allow: BoolArray = allow
        if measure == "capacity":
            self.type_p = self.type_p * self._scarcity(state)
        self.inv_cap: FloatArray = 1.0 / cap.astype(np.float64)
        self.usable: IntArray = np.zeros((n, n_cls), dtype=np.int64)  # S(n, j) in MiB
        self.count: IntArray = np.zeros((n, n_cls), dtype=np.int64)  # C(n, j)
        self.free_total: FloatArray = np.zeros(n, dtype=np.float64)  # T(n) in GPUs
        self.frag: FloatArray = np.zeros(n, dtype=np.float64)  # F(n) in GPUs
        self._seen = len(state.changed_nodes)
        self._refresh(np.arange(n))

    def _scarcity(self, state: ClusterState) -> FloatArray:
        """Weight multiplier of each task type that few nodes can host at all.

        A type that only a small minority of the GPU nodes can ever host (by model, GPU count
        and CPU; on the Alibaba trace the 8-GPU, 120-core servers fit 39 of 1,213 GPU nodes)
        loses its last hosts to small slices long before the cluster is full, because its
        arrival share is tiny: in the time-driven replay it then waited for ever at 80 % load.
        Such a type (hosts below ``SCARCE_HOSTS_SHARE`` of the GPU nodes) weighs
        ``GPU nodes / hosts`` times its share (at most ``SCARCE_BOOST_MAX``); the rest keep 1.
        """
        gpu_nodes = int(np.count_nonzero(state.gpu_count > 0))
        boost = np.ones(self.type_p.size, dtype=np.float64)
        for i, j in enumerate(self.type_class.tolist()):
            hosts = int(np.count_nonzero(self.allow[:, j] & (state.gpu_count >= self.k[j])
                                         & (state.cpu_cap >= self.type_cpu[i])))
            if is_scarce(hosts, gpu_nodes):
                boost[i] = min(gpu_nodes / max(hosts, 1), SCARCE_BOOST_MAX)
        return boost

    # -- bookkeeping -----------------------------------------------------------------------
    def sync(self) -> None:
        """Recompute the nodes the state changed since the last call."""
        changed = self.state.changed_nodes
        if len(changed) > self._seen:
            rows = np.array(sorted(set(changed[self._seen:])), dtype=np.int64)
            self._seen = len(changed)
            self._refresh(rows)

    def _refresh(self, rows: IntArray) -> None:
        st = self.state
        free = st.gpu_free[rows]
        exists = st.gpu_exists[rows]
        ge = (free[:, :, None] >= self.demand[rows][:, None, :]) & exists[:, :, None]
        if self.measure == "capacity":
            d = np.maximum(self.demand[rows][:, None, :], 1)
            self.usable[rows] = ((free[:, :, None] // d) * exists[:, :, None]).sum(axis=1)
        else:
            self.usable[rows] = (ge * free[:, :, None]).sum(axis=1)
        self.count[rows] = ge.sum(axis=1)
        self.free_total[rows] = (free * exists).sum(axis=1) * self.inv_cap[rows]
        self.frag[rows] = self._frag(
            rows, st.cpu_free[rows], self.free_total[rows], self.usable[rows], self.count[rows]
        )

    def _frag(self, rows: IntArray, cpu_free: IntArray, total: FloatArray,
              usable: IntArray, count: IntArray) -> FloatArray:
        if self.measure == "capacity":
            tc = self.type_class
            pods = usable[:, tc]  # slices of each type the GPUs could still take
            k = self.k[tc]
            pods = np.where(k > 1, count[:, tc] // np.maximum(k, 1), pods)
            by_cpu = np.where(self.type_cpu > 0,  # a type asking no CPU is not limited by it
                              np.floor(cpu_free[:, None] / np.maximum(self.type_cpu, 1)), np.inf)
            n = np.minimum(pods, by_cpu) * self.allow[rows][:, tc]
            amount = n * self.demand[rows][:, tc] * k
            return total - (amount * self.type_p).sum(axis=1) * self.inv_cap[rows]  # type: ignore[no-any-return]
        w = self.weight_t[np.searchsorted(self.cpu_steps, cpu_free, side="right")]
        hosted = self.allow[rows] & (count >= self.k)
        used = (w * hosted * usable).sum(axis=1) * self.inv_cap[rows]
        return total - used  # type: ignore[no-any-return]

    def cluster_fragmentation(self) -> float:
        """Fragmented GPU capacity of the whole cluster, in GPUs."""
        self.sync()
        return float(self.frag.sum())

    # -- pricing ---------------------------------------------------------------------------
    def delta(self, node: IntArray, slot: IntArray, demand: IntArray, gpu_count: int,
              cpu_milli: int) -> FloatArray:
        """Change of node fragmentation (in GPUs) if each option were taken.

        ``slot >= 0``: a slice of ``demand`` MiB on that GPU; ``slot == -1``: ``gpu_count``
        whole idle GPUs (or none for CPU-only).
        """
        self.sync()
        st = self.state
        usable = self.usable[node].copy()
        count = self.count[node].copy()
        total = self.free_total[node].copy()
        d = self.demand[node]
        if gpu_count:
            sliced = slot >= 0
            if sliced.any():
                f = st.gpu_free[node[sliced], slot[sliced]][:, None]
                f2 = f - demand[sliced][:, None]
                ge1 = f >= d[sliced]
                ge2 = f2 >= d[sliced]
                if self.measure == "capacity":
                    dd = np.maximum(d[sliced], 1)
                    usable[sliced] += f2 // dd - f // dd
                else:
                    usable[sliced] += f2 * ge2 - f * ge1
                count[sliced] += ge2.astype(np.int64) - ge1
                total[sliced] -= demand[sliced] * self.inv_cap[node[sliced]]
            whole = ~sliced
            if whole.any():
                capw = st.node_gpu_cap[node[whole]][:, None]
                takes = (capw >= d[whole]) & (d[whole] > 0)
                if self.measure == "capacity":
                    usable[whole] -= gpu_count * (capw // np.maximum(d[whole], 1)) * takes
                else:
                    usable[whole] -= gpu_count * capw * takes
                count[whole] -= gpu_count * takes
                total[whole] -= gpu_count
        after = self._frag(node, st.cpu_free[node] - cpu_milli, total, usable, count)
        return after - self.frag[node]

