"""Filter: every place that can host a request, and why there is none when nothing can.

An *option* is one way to place the request: for a slice (part of one GPU) it is a node and a GPU
slot on it; for whole GPUs and CPU-only servers it is a node (which whole GPUs to take is decided
afterwards by topology, see :func:`choose_whole_gpus`).  GPUs on one node with the same free
memory are interchangeable for a slice, so only the first of them is kept as an option: this keeps
scoring cheap on nodes with eight GPUs without changing any decision's quality.

GPUs held anonymously (:attr:`ClusterState.anon_gpus`: device-plugin pods, whose GPU nobody
names) must stay idle: a slice may start an idle GPU only where the node has idle GPUs beyond
those, and a whole-GPU request of k needs k idle GPUs beyond them
(:meth:`ClusterState.anonymous_room`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aispike_hub.model import FULL_GPU_MILLI, GIB_IN_MIB, SliceRequest
from aispike_hub.placement.state import BoolArray, ClusterState, IntArray


@dataclass(frozen=True, slots=True)
class Options:
    """Candidate placements of one request, as parallel arrays (one entry per option)."""

    node: IntArray
    """Node row of each option."""
    slot: IntArray
    """GPU slot of a slice option; -1 for node-level options (whole GPUs, CPU-only)."""
    demand: IntArray
    """MiB the option takes on each GPU it uses (0 for CPU-only)."""
    gpu_count: int
    """GPUs the request takes (0, 1 or more)."""
    slice: bool
    """True when options are (node, GPU) slices of one GPU; False for node-level options."""

    def __len__(self) -> int:
        return int(self.node.size)


def model_mask(state: ClusterState, request: SliceRequest) -> BoolArray:
    """GPU slots whose model the request accepts (all existing GPUs when it accepts any)."""
    if not request.allowed_models:
        return state.gpu_exists
    allowed = [i for i, m in enumerate(state.models) if m in request.allowed_models]
    return np.isin(state.gpu_model, allowed) & state.gpu_exists


def demand_matrix(state: ClusterState, request: SliceRequest) -> IntArray:
    """MiB the request would take on each GPU slot (rounded up, so nothing is over-committed)."""
    cap = state.gpu_cap
    if request.whole_gpus:
        return np.where(state.gpu_exists, cap, 0)
    return slice_demand(request, cap)


def slice_demand(request: SliceRequest, cap: IntArray) -> IntArray:
    """MiB a one-GPU slice takes on GPUs of memory ``cap``: its memory, or its share rounded up."""
    if request.gpu_memory_mib:
        return np.full_like(cap, request.gpu_memory_mib)
    out: IntArray = -(-request.gpu_share_milli * np.maximum(cap, 0) // FULL_GPU_MILLI)
    return out


def host_mask(state: ClusterState, request: SliceRequest) -> BoolArray:
    """Nodes with enough free CPU and RAM."""
    return (state.cpu_free >= request.cpu_milli) & (state.mem_free >= request.memory_mib)


def find_options(state: ClusterState, request: SliceRequest) -> Options:
    """Every feasible placement of ``request`` in ``state`` (possibly none)."""
    hosts = host_mask(state, request)
    if request.gpu_count == 0:
        nodes = np.nonzero(hosts)[0]
        return Options(nodes, np.full_like(nodes, -1), np.zeros_like(nodes), 0, False)
    models = model_mask(state, request)
    room = state.anonymous_room()
    if request.whole_gpus:
        idle = (state.gpu_free == state.gpu_cap) & models
        enough = (idle.sum(axis=1) >= request.gpu_count) & (room >= request.gpu_count)
        nodes = np.nonzero(hosts & enough)[0]
        demand = state.node_gpu_cap[nodes]
        return Options(nodes, np.full_like(nodes, -1), demand, request.gpu_count, False)
    demand = demand_matrix(state, request)
    # An idle GPU may be started only where idle GPUs beyond the anonymously held ones remain.
    startable = (state.gpu_free != state.gpu_cap) | (room > 0)[:, None]
    fits = (state.gpu_free >= demand) & models & hosts[:, None] & startable
    node, slot = np.nonzero(fits)
    if node.size == 0:
        return Options(node, slot, node, 1, True)
    # Keep the first slot of each (node, free memory, capacity) group: the rest are twins.
    # One integer key per option (node, free, capacity: 21 bits each) keeps this one sort.
    key = (node << 42) | (state.gpu_free[node, slot] << 21) | state.gpu_cap[node, slot]
    _, first = np.unique(key, return_index=True)
    node, slot = node[first], slot[first]
    return Options(node, slot, demand[node, slot], 1, True)


def choose_whole_gpus(state: ClusterState, node: int, request: SliceRequest) -> list[int]:
    """Which idle GPU slots of ``node`` a whole-GPU request takes.

    The tightest topology group that can hold the request wins: one NVLink domain, else one PCIe
    switch, else one NUMA node, else the lowest indices.  Within a level the smallest group that
    fits is used, so larger groups stay whole for larger requests.
    """
    k = request.gpu_count
    idle = (state.gpu_free[node] == state.gpu_cap[node]) & model_mask(state, request)[node]
    slots = [int(s) for s in np.nonzero(idle)[0]]
    if len(slots) < k:
        raise ValueError(f"node {state.nodes[node].name} has fewer than {k} idle GPUs")
    if k == 1:
        return _one_gpu_least_disturbing(state, node, slots)
    for level in (state.groups.nvlink, state.groups.pcie, state.groups.numa):
        by_group: dict[int, list[int]] = {}
        for s in slots:
            if level[node, s] >= 0:
                by_group.setdefault(int(level[node, s]), []).append(s)
        fitting = [g for g in by_group.values() if len(g) >= k]
        if fitting:
            best = min(fitting, key=lambda g: (len(g), g[0]))
            return best[:k]
    return slots[:k]


def _one_gpu_least_disturbing(state: ClusterState, node: int, slots: list[int]) -> list[int]:
    """For one whole GPU, take it from the group with the fewest idle GPUs (keep big groups)."""
    level = state.groups.nvlink[node]
    if all(level[s] < 0 for s in slots):
        return slots[:1]
    sizes = {int(level[s]): sum(1 for t in slots if level[t] == level[s]) for s in slots}
    return [min(slots, key=lambda s: (sizes[int(level[s])], s))]


def topology_group_fit(state: ClusterState, nodes: IntArray, request: SliceRequest) -> IntArray:
    """Per node, the tightest topology level its idle GPUs offer for the request.

    3: one NVLink domain holds it, 2: one PCIe switch, 1: one NUMA node, 0: only spread across.
    A request for fewer than two GPUs always scores 3 (there is nothing to keep together).
    """
    k = request.gpu_count
    out = np.zeros(nodes.size, dtype=np.int64)
    if k < 2:
        out[:] = 3
        return out
    idle = (state.gpu_free[nodes] == state.gpu_cap[nodes]) & model_mask(state, request)[nodes]
    for score, level in ((3, state.groups.nvlink), (2, state.groups.pcie), (1, state.groups.numa)):
        groups = np.where(idle, level[nodes], -1)
        best = np.zeros(nodes.size, dtype=np.int64)
        for g in np.unique(groups[groups >= 0]):
            best = np.maximum(best, (groups == g).sum(axis=1))
        out = np.where((out == 0) & (best >= k), score, out)
    return out


def why_nothing_fits(state: ClusterState, request: SliceRequest) -> list[str]:
    """Reasons a person can act on, most specific first, when :func:`find_options` is empty."""
    reasons: list[str] = []
    models = model_mask(state, request)
    if request.gpu_count and not models.any():
        if not request.allowed_models:  # any model would do: the cluster has no GPU at all
            return ["no node has a GPU (this cluster has none)"]
        wanted = ", ".join(sorted(request.allowed_models))
        have = ", ".join(state.models) or "none"
        return [f"no node has a GPU of model {wanted} (this cluster has: {have})"]
    cpu_ok = state.cpu_free >= request.cpu_milli
    mem_ok = state.mem_free >= request.memory_mib
    if not cpu_ok.any():
        best = int(state.cpu_free.max())
        reasons.append(
            f"no node has {request.cpu_milli / 1000:g} CPUs free (most free: {best / 1000:g})"
        )
    if not mem_ok.any():
        best = int(state.mem_free.max())
        reasons.append(
            f"no node has {_gib(request.memory_mib)} of RAM free (most free: {_gib(best)})"
        )
    if request.gpu_count == 0:
        if not reasons:
            reasons.append("no node has both the CPUs and the RAM free at once")
        return reasons
    hosts = cpu_ok & mem_ok
    room = state.anonymous_room()
    outside = _held_outside(state)
    if request.whole_gpus:
        idle = np.minimum(((state.gpu_free == state.gpu_cap) & models).sum(axis=1),
                          np.maximum(room, 0))
        most = int(idle.max())
        where = int(idle[hosts].max()) if hosts.any() else 0
        reasons.append(
            f"no node has {request.gpu_count} idle GPU{'s' if request.gpu_count > 1 else ''}"
            f" of an allowed model (most idle on one node: {most}"
            + (f"; {where} on a node with the CPUs and RAM free" if where != most else "")
            + ")"
        )
        return reasons + outside
    demand = demand_matrix(state, request)
    free = np.where(models, state.gpu_free, -1)
    for mid, model in enumerate(state.models):
        on_model = models & (state.gpu_model == mid)
        if not on_model.any():
            continue
        need = int(demand[on_model].max())
        largest = int(free[on_model].max())
        if largest < need:
            reasons.append(
                f"no {model} has {_gib(need)} free (largest free: {_gib(max(largest, 0))})"
            )
    startable = (state.gpu_free != state.gpu_cap) | (room > 0)[:, None]
    fits_gpu = (state.gpu_free >= demand) & models & startable
    if fits_gpu.any() and not (fits_gpu & hosts[:, None]).any():
        n = int(fits_gpu.any(axis=1).sum())
        reasons.append(
            f"{n} node{'s have' if n != 1 else ' has'} the GPU memory but not the CPUs and RAM too"
        )
    reasons += outside
    if not reasons:
        reasons.append("nothing fits right now")
    return reasons


def _held_outside(state: ClusterState) -> list[str]:
    """The reason naming GPUs kept idle for workloads outside AISpike ([] when there are none)."""
    held = int(state.anon_gpus.sum())
    if not held:
        return []
    n = int((state.anon_gpus > 0).sum())
    return [f"{held} GPU{'s' if held != 1 else ''} on {n} node{'s' if n != 1 else ''} "
            f"{'are' if held != 1 else 'is'} held by workloads outside AISpike (nvidia.com/gpu "
            "pods, other drivers' claims) and kept idle for them"]


def _gib(mib: int) -> str:
    return f"{mib / GIB_IN_MIB:g} GiB"


class NodeFit:
    """Could one node host a request right now?  A cheap, exact check for many requests against
    one node (the simulator's wait queue asks it for every queued shape when a node frees)."""

    def __init__(self, state: ClusterState, node: int) -> None:
        self.state = state
        self.cpu = int(state.cpu_free[node])
        self.mem = int(state.mem_free[node])
        exists = state.gpu_exists[node]
        self.gpus = [
            (int(m), int(c), int(f))
            for m, c, f in zip(state.gpu_model[node][exists], state.gpu_cap[node][exists],
                               state.gpu_free[node][exists], strict=True)
        ]
        self.room = int(state.anonymous_room()[node])
        self._memo: dict[tuple[int, int, int, frozenset[str]], bool] = {}

    def could_host(self, request: SliceRequest) -> bool:
        if self.cpu < request.cpu_milli or self.mem < request.memory_mib:
            return False
        if request.gpu_count == 0:
            return True
        key = (request.gpu_count, request.gpu_memory_mib,
               FULL_GPU_MILLI if request.whole_gpus else request.gpu_share_milli,
               request.allowed_models)
        hit = self._memo.get(key)
        if hit is None:
            hit = self._gpus_fit(request)
            self._memo[key] = hit
        return hit

    def _gpus_fit(self, request: SliceRequest) -> bool:
        models = self.state.models
        allowed = request.allowed_models
        ok = [(c, f) for m, c, f in self.gpus if not allowed or models[m] in allowed]
        if request.whole_gpus:
            return (sum(1 for c, f in ok if f == c) >= request.gpu_count
                    and self.room >= request.gpu_count)
        for c, f in ok:
            need = (request.gpu_memory_mib if request.gpu_memory_mib
                    else -(-request.gpu_share_milli * c // FULL_GPU_MILLI))
            if f >= need and (f != c or self.room > 0):
                return True
        return False
