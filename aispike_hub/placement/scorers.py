"""Scorers: small, composable judges of candidate placements.

Each scorer gives every option a number, higher is better, and knows nothing of the others; the
engine adds them up with weights (as the Kubernetes scheduler framework does with score plugins).
Scorers marked *faithful* reproduce the published simulator's integer scores (0..100) so that our
baselines can be compared with the FGD paper's numbers; the rest are continuous.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import numpy as np

from aispike_hub.model import FULL_GPU_MILLI, SliceRequest
from aispike_hub.placement.filter import Options, model_mask, topology_group_fit
from aispike_hub.placement.fragmentation import FragmentationModel, Workload, scarce_server_types
from aispike_hub.placement.slice_values import SliceValueTable, slice_mix, slice_value_table
from aispike_hub.placement.state import ClusterState, FloatArray, IntArray

MAX_NODE_SCORE = 100


@dataclass(slots=True)
class ScoringContext:
    """What a scorer may look at: the state, the request, its options and the seeded RNG."""

    state: ClusterState
    request: SliceRequest
    options: Options
    rng: np.random.Generator
    cache: dict[str, object] = field(default_factory=dict)

    def gpu_free_total(self) -> FloatArray:
        """Free GPU capacity of each option's node, in GPUs."""
        st = self.state
        n = self.options.node
        out: FloatArray = (st.gpu_free[n] * st.gpu_exists[n]).sum(axis=1) / st.node_gpu_cap[n]
        return out

    def gpu_taken(self) -> FloatArray:
        """GPU capacity each option takes, in GPUs."""
        opts = self.options
        out: FloatArray = opts.gpu_count * opts.demand / self.state.node_gpu_cap[opts.node]
        return out

    def idle_gpus(self) -> IntArray:
        """Idle (wholly free) GPUs on each option's node."""
        st = self.state
        n = self.options.node
        out: IntArray = ((st.gpu_free[n] == st.gpu_cap[n]) & st.gpu_exists[n]).sum(axis=1)
        return out


class Scorer(Protocol):
    name: str

    def score(self, ctx: ScoringContext) -> FloatArray: ...


def _min_max_normalise(raw: FloatArray) -> FloatArray:
    """The published simulator's NormalizeScore: integer rescale of node scores to 0..100."""
    lo, hi = raw.min(), raw.max()
    if hi == lo:
        return np.zeros_like(raw)
    out: FloatArray = np.floor((raw - lo) * MAX_NODE_SCORE / (hi - lo))
    return out


class RandomScorer:
    """A random node: the baseline every policy must beat."""

    name = "random"

    def score(self, ctx: ScoringContext) -> FloatArray:
        return ctx.rng.random(len(ctx.state.nodes))[ctx.options.node]


class BestFitScorer:
    """Least capacity left on the node after placement (CPU and GPU, half weight each).

    ``faithful``: integer scores with min-max normalisation, as the published simulator.
    """

    name = "bestfit"

    def __init__(self, faithful: bool = False) -> None:
        self.faithful = faithful

    def score(self, ctx: ScoringContext) -> FloatArray:
        st, opts, req = ctx.state, ctx.options, ctx.request
        max_cpu = float(st.cpu_cap.max()) or 1.0
        max_gpu = float(st.gpu_count.max()) or 1.0
        cpu_left = (st.cpu_free[opts.node] - req.cpu_milli) / max_cpu
        gpu_left = (ctx.gpu_free_total() - ctx.gpu_taken()) / max_gpu
        raw = (1.0 - (0.5 * cpu_left + 0.5 * gpu_left)) * MAX_NODE_SCORE
        if self.faithful:
            return _min_max_normalise(np.floor(raw))
        return raw


class SpreadScorer:
    """Most capacity left after placement (Kubernetes' LeastAllocated): spreads load out."""

    name = "spread"

    def score(self, ctx: ScoringContext) -> FloatArray:
        st, opts, req = ctx.state, ctx.options, ctx.request
        n = opts.node
        cpu = (st.cpu_free[n] - req.cpu_milli) / np.maximum(st.cpu_cap[n], 1)
        mem = (st.mem_free[n] - req.memory_mib) / np.maximum(st.mem_cap[n], 1)
        gpus = np.maximum(st.gpu_count[n], 1)
        gpu = (ctx.gpu_free_total() - ctx.gpu_taken()) / gpus
        parts = [cpu, mem, gpu] if req.gpu_count else [cpu, mem]
        return np.mean(parts, axis=0) * MAX_NODE_SCORE  # type: ignore[no-any-return]


class DotProductScorer:
    """Tetris-style alignment of the node's free (CPU, GPU) vector with the request's.

    As in the published simulator, the GPU dimension counts the GPU the slice lands on (or all
    idle GPUs for whole-GPU use), and the smaller the product the better (tight fits win).
    """

    name = "dotprod"

    def __init__(self, faithful: bool = True) -> None:
        self.faithful = faithful

    def score(self, ctx: ScoringContext) -> FloatArray:
        st, opts, req = ctx.state, ctx.options, ctx.request
        max_cpu = float(st.cpu_cap.max()) or 1.0
        max_gpu = float(st.gpu_count.max() * FULL_GPU_MILLI) or 1.0
        cap = st.node_gpu_cap[opts.node]
        if opts.slice:
            free = st.gpu_free[opts.node, opts.slot]
            idle = free == st.gpu_cap[opts.node, opts.slot]
            gpu_left = np.where(idle, ctx.idle_gpus() * cap, free) * FULL_GPU_MILLI / cap
        else:
            gpu_left = (ctx.idle_gpus() * FULL_GPU_MILLI).astype(np.float64)
        gpu_req = ctx.gpu_taken() * FULL_GPU_MILLI
        dot = (st.cpu_free[opts.node] / max_cpu) * (req.cpu_milli / max_cpu) + (
            gpu_left / max_gpu
        ) * (gpu_req / max_gpu)
        raw = (1.0 - dot / 2.0) * MAX_NODE_SCORE
        return np.floor(raw) if self.faithful else raw


class GpuPackingScorer:
    """Fill partly used GPUs first, then idle GPUs on used nodes, then idle nodes.

    The published simulator's three tiers: shared GPU (50..100, fuller is better), idle GPUs on a
    used node (33..50), a wholly idle node (0..33).
    """

    name = "packing"

    def score(self, ctx: ScoringContext) -> FloatArray:
        st, opts, req = ctx.state, ctx.options, ctx.request
        if req.gpu_count == 0:
            return np.zeros(len(opts))
        n = opts.node
        idle = ctx.idle_gpus()
        node_idle = idle == st.gpu_count[n]
        tier3 = np.maximum(MAX_NODE_SCORE // 3 - idle, idle).astype(np.float64)
        tier2 = np.full(len(opts), float(max(MAX_NODE_SCORE // 2 - opts.gpu_count,
                                             MAX_NODE_SCORE // 3)))
        if opts.slice:
            free = st.gpu_free[n, opts.slot]
            on_idle_gpu = free == st.gpu_cap[n, opts.slot]
            pct = free * 100 // st.gpu_cap[n, opts.slot]
            tier1 = np.maximum(MAX_NODE_SCORE - pct // 10, MAX_NODE_SCORE // 2).astype(float)
            return np.where(node_idle, tier3, np.where(on_idle_gpu, tier2, tier1))
        return np.where(node_idle, tier3, tier2)


class GpuFitScorer:
    """Within a node, the GPU that leaves the least free memory (``best``: packs slices, the
    tie-breaker of most policies) or the most (``worst``: spreads slices over GPUs)."""

    def __init__(self, best: bool = True) -> None:
        self.sign = -1.0 if best else 1.0
        self.name = "gpu-bestfit" if best else "gpu-worstfit"

    def score(self, ctx: ScoringContext) -> FloatArray:
        opts = ctx.options
        if not opts.slice:
            return np.zeros(len(opts))
        left = ctx.state.gpu_free[opts.node, opts.slot] - opts.demand
        out: FloatArray = self.sign * left.astype(np.float64)
        return out


class FragmentationScorer:
    """FGD: the placement that grows expected fragmentation the least.

    ``faithful``: the published plugin's integer score ``int(sigmoid(-delta) * 100)`` (delta in
    GPUs), whose coarse steps leave many ties; otherwise the exact negative delta.
    """

    name = "fgd"

    def __init__(self, workload: Workload, faithful: bool = False, measure: str = "fgd") -> None:
        self.workload = workload
        self.measure = measure
        self.faithful = faithful
        self._model: FragmentationModel | None = None

    def model_for(self, state: ClusterState) -> FragmentationModel:
        if self._model is None or self._model.state is not state:
            self._model = FragmentationModel(state, self.workload, self.measure)
        return self._model

    def score(self, ctx: ScoringContext) -> FloatArray:
        opts = ctx.options
        model = self.model_for(ctx.state)
        delta = model.delta(opts.node, opts.slot, opts.demand, opts.gpu_count,
                            ctx.request.cpu_milli)
        ctx.cache["fgd-delta"] = delta
        if self.faithful:
            return np.floor(MAX_NODE_SCORE / (1.0 + np.exp(delta)))
        return -delta


class SliceValueScorer:
    """Minus the share of a GPU a slice's placement destroys (see :mod:`.slice_values`).

    Prices come from the packing LP of the workload's slice mix, per GPU memory size; a
    placement that continues one of the best combinations of slices on its GPU loses nothing,
    one that strands space only rare sizes could use loses that space's worth.  Whole GPUs and
    CPU-only requests score 0.
    """

    name = "slice-value"

    def __init__(self, workload: Workload) -> None:
        self.workload = workload

    def table(self, capacity_mib: int) -> SliceValueTable:
        return slice_value_table(capacity_mib, slice_mix(self.workload.types, capacity_mib))

    def prepare(self, state: ClusterState) -> None:
        """Price the slices on every GPU size of the cluster (the tables are cached)."""
        for cap in np.unique(state.gpu_cap[state.gpu_exists]).tolist():
            self.table(int(cap))

    def score(self, ctx: ScoringContext) -> FloatArray:
        opts = ctx.options
        out: FloatArray = np.zeros(len(opts))
        if not opts.slice or len(opts) == 0:
            return out
        st = ctx.state
        caps = st.gpu_cap[opts.node, opts.slot]
        free = st.gpu_free[opts.node, opts.slot]
        for cap in np.unique(caps).tolist():
            on = caps == cap
            out[on] = -self.table(int(cap)).loss(free[on], opts.demand[on])
        return out


T = TypeVar("T")


class PerCapacities(Generic[T]):
    """A value computed from a state's capacities, kept while the *same* state object (not a
    new one at a reused ``id``) with the same capacities is asked again.

    Why not ``id(state)``: states built per request and freed are often allocated at the
    address of the last one, so an ``id`` key handed one cluster's value to another."""

    def __init__(self, compute: Callable[[ClusterState], T]) -> None:
        self._compute = compute
        self._state: weakref.ReferenceType[ClusterState] | None = None
        self._version = -1
        self._value: T | None = None

    def get(self, state: ClusterState) -> T:
        if (self._state is None or self._state() is not state
                or self._version != state.capacity_version or self._value is None):
            self._value = self._compute(state)
            self._state = weakref.ref(state)
            self._version = state.capacity_version
        return self._value


class ScarceHostScorer:
    """-1 on a node that can host one of the workload's scarce server types right now.

    The capacity measure raises such a type's weight, but a strong CPU balance term outweighs
    it: a node with more CPU than its GPUs need is exactly where CPU balance sends slices, and
    exactly what an 8-GPU, 120-core server needs.  With a large weight this term makes those
    nodes the last resort for other work (the server itself, or a request at least as big in
    GPUs and CPU, is not held back), so a rare big server does not wait for ever behind slices.
    """

    name = "scarce-hosts"

    def __init__(self, workload: Workload) -> None:
        self.workload = workload
        self._scarce: PerCapacities[list[SliceRequest]] = PerCapacities(
            lambda state: scarce_server_types(state, self.workload))

    def scarce(self, state: ClusterState) -> list[SliceRequest]:
        return self._scarce.get(state)

    def score(self, ctx: ScoringContext) -> FloatArray:
        st, req, n = ctx.state, ctx.request, ctx.options.node
        out: FloatArray = np.zeros(len(n))
        for server in self.scarce(st):
            if req.gpu_count >= server.gpu_count and req.cpu_milli >= server.cpu_milli:
                continue
            idle = ((st.gpu_free[n] == st.gpu_cap[n]) & model_mask(st, server)[n]).sum(axis=1)
            out -= ((idle >= server.gpu_count) & (st.cpu_free[n] >= server.cpu_milli)
                    & (st.mem_free[n] >= server.memory_mib))
        return out


class TopologyScorer:
    """Multi-GPU requests on GPUs of one NVLink domain, else one PCIe switch, else one NUMA node.

    Scores 1.0 / 0.67 / 0.33 / 0 for those levels; a single-GPU request scores 1 everywhere.
    """

    name = "topology"

    def score(self, ctx: ScoringContext) -> FloatArray:
        level = topology_group_fit(ctx.state, ctx.options.node, ctx.request)
        return level / 3.0


class LocalityScorer:
    """Nodes that already hold the request's image and datasets, weighted by their size.

    The score is the share of the request's bytes (image plus datasets) already cached on the
    node, so a node holding a 200 GB dataset beats one holding a 5 GB image.  An item cached
    nowhere counts with size 0 (nobody can save its pull).
    """

    name = "locality"

    def score(self, ctx: ScoringContext) -> FloatArray:
        req, st = ctx.request, ctx.state
        items: list[tuple[str, str]] = []
        if req.image:
            items.append(("image", req.image))
        items += [("dataset", d) for d in req.datasets]
        if not items:
            return np.zeros(len(ctx.options))
        key = "locality:" + repr(items)
        per_node = ctx.cache.get(key)
        if not isinstance(per_node, np.ndarray):
            sizes = np.zeros((len(st.nodes), len(items)), dtype=np.float64)
            for i, node in enumerate(st.nodes):
                for j, (kind, name) in enumerate(items):
                    held = node.images if kind == "image" else node.datasets
                    sizes[i, j] = float(held.get(name, 0))
            weight = sizes.max(axis=0)
            total = weight.sum()
            per_node = (sizes > 0) @ weight / total if total else np.zeros(len(st.nodes))
            ctx.cache[key] = per_node
        return per_node[ctx.options.node]



class CpuBalanceScorer:
    """Keep enough free CPU beside free GPU capacity for the workload's typical task.

    With ``rho`` the workload's mean CPU per GPU of demand, a node strands
    ``max(0, free GPUs - free CPU / rho)`` GPUs: capacity the average task could not use for
    lack of CPU.  The score is minus the change of that.  The capacity measure sees CPU per task
    type; this term sees the mix, and on the Alibaba trace (11 cores per GPU of demand on nodes
    with 12 per GPU) it stops CPU-heavy slices from draining nodes whose GPUs are still free.
    """

    name = "cpu-balance"

    def __init__(self, workload: Workload) -> None:
        self.gpu_types = [(r, p) for r, p in workload.types if r.gpu_count]
        self._rho: PerCapacities[float] = PerCapacities(self._compute_rho)

    def rho(self, state: ClusterState) -> float:
        """CPU milli per GPU of demand (memory slices priced on the cluster's typical GPU)."""
        return self._rho.get(state)

    def _compute_rho(self, state: ClusterState) -> float:
        caps = state.node_gpu_cap[state.gpu_count > 0]
        typical = float(np.median(caps)) if caps.size else 1.0
        gpus = 0.0
        for r, p in self.gpu_types:
            if r.whole_gpus:
                per_gpu = 1.0
            elif r.gpu_share_milli:
                per_gpu = r.gpu_share_milli / FULL_GPU_MILLI
            else:
                per_gpu = min(1.0, r.gpu_memory_mib / typical)
            gpus += p * r.gpu_count * per_gpu
        cpu = sum(p * r.cpu_milli for r, p in self.gpu_types)
        return cpu / gpus if gpus > 0 else 0.0

    def score(self, ctx: ScoringContext) -> FloatArray:
        rho = self.rho(ctx.state)
        if rho <= 0:
            return np.zeros(len(ctx.options))
        st, o = ctx.state, ctx.options
        free = ctx.gpu_free_total()
        cpu = st.cpu_free[o.node].astype(np.float64)
        before = np.maximum(0.0, free - cpu / rho)
        after = np.maximum(0.0, free - ctx.gpu_taken() - (cpu - ctx.request.cpu_milli) / rho)
        out: FloatArray = before - after
        return out
