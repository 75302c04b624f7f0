"""The admin panel's GPU map: who holds which slice of which GPU, as plain data.

Pure functions of the service's view (nodes, the slices it admitted, what other workloads hold,
the idle monitor's verdicts and live readings); no I/O, no clock.  The panel's handlers serve
the result as JSON and its small script draws it.

Two levels keep a 1,500-node cluster readable and fast:

- **pools**: one row per node pool (a node label, see :func:`pool_of`) with capacity split into
  busy, idle, unknown, other workloads, free and fragmented memory;
- **nodes**: the nodes of one pool (or those matching a filter), each GPU a bar split into slices.

Fragmentation is the placement core's (:class:`~aispike_hub.placement.fragmentation.
FragmentationModel`): a node's fragmented GPUs are its ``frag``; a GPU's free memory is drawn as
*fragmented* when none of the workload's GPU request types fits in it (its per-GPU ``demand``
on that node is larger than the free memory, or the type may not use that model).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aispike_hub.model import Assignment, Node
from aispike_hub.placement.fragmentation import FragmentationModel, Workload
from aispike_hub.placement.state import ClusterState

STATES = ("busy", "idle", "unknown", "other", "free", "fragmented")
"""What a piece of a GPU bar can be: held by a server that computes or is used (busy), held by
an idle or abandoned server (idle), held by a server without a verdict yet (unknown), held by
something the service did not admit (other), free, or free but too small for any request type
(fragmented)."""

VERDICT_STATE = {"busy": "busy", "active": "busy", "idle": "idle", "abandoned": "idle"}
"""Idle monitor verdict -> map state (anything else is ``unknown``)."""


@dataclass(frozen=True, slots=True)
class Holding:
    """One server's slice on one GPU (an admitted assignment, split per GPU)."""

    node: str
    gpu_index: int
    memory_mib: int
    user: str = ""
    server: str = ""
    groups: tuple[str, ...] = ()
    tier: str = ""
    """Empty user: held by another workload (capacity the service did not admit)."""


@dataclass(frozen=True, slots=True)
class Live:
    """What the idle monitor knows of one server now."""

    verdict: str = "unknown"
    memory_used_mib: int = 0
    utilization_percent: float | None = None
    evidence: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MapFilter:
    """Filters of the map: GPU model, node name (substring), pool, group and user of holders."""

    model: str = ""
    node: str = ""
    pool: str = ""
    group: str = ""
    user: str = ""

    @property
    def empty(self) -> bool:
        return not (self.model or self.node or self.pool or self.group or self.user)


def holdings_of(assignment: Assignment, user: str = "", server: str = "",
                groups: Iterable[str] = (), tier: str = "") -> list[Holding]:
    """An assignment as one holding per GPU."""
    return [Holding(assignment.node, idx, mib, user, server, tuple(sorted(groups)), tier)
            for idx, mib in zip(assignment.gpu_indices, assignment.gpu_memory_mib, strict=True)]


def pool_of(node: Node, labels: Sequence[str]) -> str:
    """The node's pool: the first of ``labels`` it carries, else its first GPU's model."""
    for key in labels:
        value = node.labels.get(key)
        if value:
            return str(value)
    if node.gpus:
        return min(node.gpus, key=lambda g: g.index).model
    return "no GPUs"


HELD_STATES = ("busy", "idle", "unknown", "other")
"""States of held memory (the rest of a GPU is free or fragmented)."""


@dataclass
class ClusterMap:
    """The map data of one moment: build once, answer many filtered views.

    Everything that does not depend on the idle monitor's verdicts is computed once when the
    map is built, per node: GPUs, memory, free and fragmented memory (vectorised over the
    placement state), fragmented GPUs, models, holders.  Memory held by state (busy, idle, ...)
    is computed once per set of verdicts (``live``; assign a new mapping to change it).  A view
    then only sums per-node rows, so the pool overview of 1,500 nodes costs a few milliseconds.
    """

    nodes: Sequence[Node]
    holdings: Sequence[Holding]
    live: Mapping[tuple[str, str], Live]
    workload: Workload
    pool_labels: Sequence[str] = ()
    pools: dict[str, str] = field(init=False)
    node_by_name: dict[str, Node] = field(init=False)
    by_gpu: dict[tuple[str, int], list[Holding]] = field(init=False)
    state: ClusterState | None = field(init=False)
    frag: FragmentationModel | None = field(init=False)
    stale: list[str] = field(init=False)
    """Holdings that do not fit the nodes any more (a node left, a GPU shrank)."""

    def __post_init__(self) -> None:
        self.pools = {n.name: pool_of(n, self.pool_labels) for n in self.nodes}
        self.node_by_name = {n.name: n for n in self.nodes}
        self.by_gpu = {}
        self.stale = []
        self.state = ClusterState(list(self.nodes)) if self.nodes else None
        row_of = {n.name: i for i, n in enumerate(self.nodes)}
        self._row_holdings: list[list[Holding]] = [[] for _ in self.nodes]
        st = self.state
        # The state's GPU memory taken holding by holding, as ClusterState.commit would (same
        # checks, same words), on a plain table: 10,000s of holdings in a blink.
        slot: dict[tuple[int, int], int] = {}
        free: dict[tuple[int, int], int] = {}
        if st is not None:
            rows, slots = np.nonzero(st.gpu_exists)
            for r, sl, idx, mib in zip(rows.tolist(), slots.tolist(),
                                       st.gpu_index[rows, slots].tolist(),
                                       st.gpu_free[rows, slots].tolist(), strict=True):
                slot.setdefault((r, idx), sl)
                free.setdefault((r, idx), mib)
        for h in self.holdings:
            if st is not None:
                row = row_of.get(h.node)
                key = (row, h.gpu_index) if row is not None else None
                problem = ""
                if row is None:
                    problem = f"unknown node {h.node!r}"
                elif key not in free:
                    problem = f"node {h.node} has no GPU {h.gpu_index}"
                elif h.memory_mib < 0 or free[key] - h.memory_mib < 0:
                    problem = (f"node {h.node} GPU {h.gpu_index}: free memory would be "
                               f"{free[key] - h.memory_mib} of {st.gpu_cap[row, slot[key]]} MiB")
                if problem:
                    self.stale.append(f"{h.user or 'other'}/{h.server}: {problem}")
                    continue
                free[key] -= h.memory_mib  # type: ignore[index]
            self.by_gpu.setdefault((h.node, h.gpu_index), []).append(h)
            self._row_holdings[row_of[h.node]].append(h)
        if st is not None:
            for (r, idx), left in free.items():
                if st.gpu_free[r, slot[(r, idx)]] != left:
                    st.gpu_free[r, slot[(r, idx)]] = left
                    st.changed_nodes.append(r)
            st.version += 1
        self.frag = (FragmentationModel(self.state, self.workload)
                     if self.state is not None and self.state.total_gpus() else None)
        if self.frag is not None:
            self.frag.sync()
        self._precompute()

    def _precompute(self) -> None:
        """Per node and per GPU: what does not depend on the idle monitor's verdicts."""
        n = len(self.nodes)
        self._gpus = np.zeros(n, dtype=np.int64)
        self._total = np.zeros(n, dtype=np.int64)
        self._free = np.zeros(n, dtype=np.int64)
        self._fragmented = np.zeros(n, dtype=np.int64)
        self._frag_gpus = (self.frag.frag.astype(np.float64).copy() if self.frag is not None
                           else np.zeros(n, dtype=np.float64))
        self._gpu_left: dict[tuple[int, int], int] = {}
        self._gpu_fragmented: dict[tuple[int, int], bool] = {}
        self._row_models: list[dict[str, int]] = []
        st = self.state
        if st is not None and n:
            # A GPU's free memory is fragmented when the smallest request type allowed on its
            # node needs more (no type allowed: all of it is).
            if self.frag is not None:
                smallest = np.where(self.frag.allow, self.frag.demand,
                                    np.iinfo(np.int64).max).min(axis=1, initial=np.iinfo(
                                        np.int64).max)
            else:
                smallest = np.zeros(n, dtype=np.int64)
            free = np.where(st.gpu_exists, st.gpu_free, 0)
            fragmented = st.gpu_exists & (free > 0) & (free < smallest[:, None])
            self._fragmented = np.where(fragmented, free, 0).sum(axis=1)
            self._free = free.sum(axis=1) - self._fragmented
            self._gpus = st.gpu_exists.sum(axis=1)
            self._total = np.where(st.gpu_exists, st.gpu_cap, 0).sum(axis=1)
            rows, slots = np.nonzero(st.gpu_exists)
            for r, slot, idx, left, fr in zip(rows.tolist(), slots.tolist(),
                                              st.gpu_index[rows, slots].tolist(),
                                              free[rows, slots].tolist(),
                                              fragmented[rows, slots].tolist(), strict=True):
                del slot
                self._gpu_left[(r, idx)] = left
                self._gpu_fragmented[(r, idx)] = fr
        for node in self.nodes:
            models: dict[str, int] = {}
            for g in node.gpus:
                models[g.model] = models.get(g.model, 0) + 1
            self._row_models.append(models)
        self._rows_of_pool: dict[str, list[int]] = {}
        for i, node in enumerate(self.nodes):
            self._rows_of_pool.setdefault(self.pools[node.name], []).append(i)
        self._models_all = sorted({g.model for node in self.nodes for g in node.gpus})
        self._groups_all = sorted({g for h in self.holdings for g in h.groups})
        self._held_for: tuple[Mapping[tuple[str, str], Live], Any] | None = None

    # -- classification ----------------------------------------------------------------------
    def holding_state(self, h: Holding) -> str:
        if not h.user:
            return "other"
        live = self.live.get((h.user, h.server))
        return VERDICT_STATE.get(live.verdict, "unknown") if live is not None else "unknown"

    def held_by_state(self) -> Any:
        """``[node, state]`` memory held (MiB) by :data:`HELD_STATES`, for the current ``live``."""
        if self._held_for is not None and self._held_for[0] is self.live:
            return self._held_for[1]
        held = np.zeros((len(self.nodes), len(HELD_STATES)), dtype=np.int64)
        column = {s: i for i, s in enumerate(HELD_STATES)}
        for row, hs in enumerate(self._row_holdings):
            for h in hs:
                held[row, column[self.holding_state(h)]] += h.memory_mib
        self._held_for = (self.live, held)  # the mapping itself: its id stays unique
        return held

    def free_is_fragmented(self, row: int, free_mib: int) -> bool:
        """True when no GPU request type of the workload fits in ``free_mib`` on this node."""
        if self.frag is None or free_mib <= 0:
            return False
        allowed = self.frag.allow[row]
        if not allowed.any():
            return True
        return bool((self.frag.demand[row][allowed] > free_mib).all())

    def gpu_free(self, row: int) -> dict[int, int]:
        assert self.state is not None
        st = self.state
        return {int(st.gpu_index[row, s]): int(st.gpu_free[row, s])
                for s in range(st.width) if st.gpu_exists[row, s]}

    # -- selection ---------------------------------------------------------------------------
    def matches(self, node: Node, f: MapFilter) -> bool:
        if f.pool and self.pools[node.name] != f.pool:
            return False
        if f.node and f.node.lower() not in node.name.lower():
            return False
        if f.model and not any(g.model == f.model for g in node.gpus):
            return False
        if f.group or f.user:
            held = [h for g in node.gpus for h in self.by_gpu.get((node.name, g.index), ())]
            if f.group and not any(f.group in h.groups for h in held):
                return False
            if f.user and not any(h.user == f.user for h in held):
                return False
        return True

    def rows(self, f: MapFilter) -> list[int]:
        """The nodes (rows) that match the filter."""
        if f.empty:
            return list(range(len(self.nodes)))
        candidates = self._rows_of_pool.get(f.pool, []) if f.pool else range(len(self.nodes))
        return [i for i in candidates if self.matches(self.nodes[i], f)]

    # -- views -------------------------------------------------------------------------------
    def node_view(self, row: int, node: Node) -> dict[str, Any]:
        gpus = []
        for g in sorted(node.gpus, key=lambda g: g.index):
            segments = []
            for h in sorted(self.by_gpu.get((node.name, g.index), ()),
                            key=lambda h: (not h.user, h.user, h.server)):
                seg: dict[str, Any] = {"mib": h.memory_mib, "state": self.holding_state(h)}
                if h.user:
                    live = self.live.get((h.user, h.server), Live())
                    seg.update(user=h.user, server=h.server, groups=list(h.groups),
                               tier=h.tier, verdict=live.verdict,
                               used_mib=live.memory_used_mib, util=live.utilization_percent,
                               evidence=list(live.evidence[:3]))
                segments.append(seg)
            left = self._gpu_left.get((row, g.index), g.memory_mib)
            gpus.append({
                "index": g.index, "model": g.model, "memory_mib": g.memory_mib,
                "nvlink": g.nvlink_domain, "pcie": g.pcie_switch, "numa": g.numa_node,
                "mig": g.mig_profile, "segments": segments, "free_mib": left,
                "fragmented": self._gpu_fragmented.get((row, g.index), False),
            })
        return {"name": node.name, "pool": self.pools[node.name],
                "cpu_milli": node.cpu_milli, "memory_mib": node.memory_mib,
                "fragmented_gpus": round(float(self._frag_gpus[row]), 3), "gpus": gpus}

    def totals(self, rows: Iterable[int]) -> dict[str, Any]:
        """Memory by state over some nodes, plus counts (sums of the per-node rows)."""
        idx = np.fromiter(rows, dtype=np.int64)
        held = self.held_by_state()[idx].sum(axis=0) if len(idx) else np.zeros(
            len(HELD_STATES), dtype=np.int64)
        out: dict[str, Any] = {s: int(v) for s, v in zip(HELD_STATES, held.tolist(), strict=True)}
        out["free"] = int(self._free[idx].sum())
        out["fragmented"] = int(self._fragmented[idx].sum())
        out.update(nodes=len(idx), gpus=int(self._gpus[idx].sum()),
                   total_mib=int(self._total[idx].sum()),
                   fragmented_gpus=round(float(self._frag_gpus[idx].sum()), 3))
        models: dict[str, int] = {}
        for row in idx.tolist():
            for m, k in self._row_models[row].items():
                models[m] = models.get(m, 0) + k
        out["models"] = dict(sorted(models.items()))
        held_mib = int(held.sum())
        out["allocation"] = round(held_mib / out["total_mib"], 4) if out["total_mib"] else 0.0
        return out

    def view(self, f: MapFilter, level: str = "auto", offset: int = 0, limit: int = 300,
             auto_nodes: int = 60) -> dict[str, Any]:
        """The map as JSON: ``pools`` (aggregated) or ``nodes`` (bars), filtered.

        ``auto`` shows nodes when at most ``auto_nodes`` match (or a pool or node is chosen),
        else pools.
        """
        rows = self.rows(f)
        if level == "auto":
            level = "nodes" if (len(rows) <= auto_nodes or f.pool or f.node) else "pools"
        out: dict[str, Any] = {"level": level, "filter": _filter_dict(f),
                               "totals": self.totals(rows), "matched_nodes": len(rows),
                               "models": self._models_all,
                               "pools_all": sorted(self._rows_of_pool),
                               "groups": self._groups_all,
                               "stale": self.stale[:20]}
        if level == "pools":
            by_pool: dict[str, list[int]] = {}
            for r in rows:
                by_pool.setdefault(self.pools[self.nodes[r].name], []).append(r)
            out["pools"] = [{"pool": p, **self.totals(rs)} for p, rs in sorted(by_pool.items())]
        else:
            page = rows[max(offset, 0):max(offset, 0) + max(limit, 1)]
            out["offset"], out["limit"] = offset, limit
            out["nodes"] = [self.node_view(r, self.nodes[r]) for r in page]
        return out

    def sample(self) -> dict[str, float]:
        """One point of the panel's history: allocation, fragmentation, GPU shares by state."""
        t = self.totals(range(len(self.nodes)))
        gpus = t["gpus"]
        share: dict[str, float] = {"busy": 0.0, "idle": 0.0, "unknown": 0.0, "other": 0.0}
        for (node, index), hs in self.by_gpu.items():
            cap = next((g.memory_mib for g in self.node_by_name[node].gpus
                        if g.index == index), 0)
            for h in hs:
                if cap:
                    share[self.holding_state(h)] += h.memory_mib / cap
        return {"gpus": float(gpus), "allocation": t["allocation"],
                "fragmented_gpus": t["fragmented_gpus"],
                "free_gpus": round((t["free"] + t["fragmented"]) / max(t["total_mib"], 1)
                                   * gpus, 4),
                **{f"{k}_gpus": round(v, 4) for k, v in share.items()}}


def _filter_dict(f: MapFilter) -> dict[str, str]:
    return {"model": f.model, "node": f.node, "pool": f.pool, "group": f.group, "user": f.user}
