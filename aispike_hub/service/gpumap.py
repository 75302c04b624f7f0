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

from aispike_hub.model import Assignment, Node
from aispike_hub.placement.fragmentation import FragmentationModel, Workload
from aispike_hub.placement.state import ClusterState, OverCommitError

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


@dataclass
class ClusterMap:
    """The map data of one moment: build once, answer many filtered views."""

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
        for h in self.holdings:
            if self.state is not None:
                try:
                    self.state.commit(Assignment(h.node, (h.gpu_index,), (h.memory_mib,)))
                except OverCommitError as e:
                    self.stale.append(f"{h.user or 'other'}/{h.server}: {e}")
                    continue
            self.by_gpu.setdefault((h.node, h.gpu_index), []).append(h)
        self.frag = (FragmentationModel(self.state, self.workload)
                     if self.state is not None and self.state.total_gpus() else None)
        if self.frag is not None:
            self.frag.sync()

    # -- classification ----------------------------------------------------------------------
    def holding_state(self, h: Holding) -> str:
        if not h.user:
            return "other"
        return VERDICT_STATE.get(self.live.get((h.user, h.server), Live()).verdict, "unknown")

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

    # -- views -------------------------------------------------------------------------------
    def node_view(self, row: int, node: Node) -> dict[str, Any]:
        free = self.gpu_free(row) if self.state is not None else {}
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
            left = free.get(g.index, g.memory_mib)
            gpus.append({
                "index": g.index, "model": g.model, "memory_mib": g.memory_mib,
                "nvlink": g.nvlink_domain, "pcie": g.pcie_switch, "numa": g.numa_node,
                "mig": g.mig_profile, "segments": segments, "free_mib": left,
                "fragmented": self.free_is_fragmented(row, left),
            })
        frag = float(self.frag.frag[row]) if self.frag is not None else 0.0
        return {"name": node.name, "pool": self.pools[node.name],
                "cpu_milli": node.cpu_milli, "memory_mib": node.memory_mib,
                "fragmented_gpus": round(frag, 3), "gpus": gpus}

    def totals(self, rows: Iterable[int]) -> dict[str, Any]:
        """Memory by state over some nodes, plus counts."""
        out: dict[str, Any] = {s: 0 for s in STATES}
        out.update(nodes=0, gpus=0, total_mib=0, fragmented_gpus=0.0)
        models: dict[str, int] = {}
        for row in rows:
            node = self.nodes[row]
            out["nodes"] += 1
            free = self.gpu_free(row) if self.state is not None else {}
            for g in node.gpus:
                out["gpus"] += 1
                out["total_mib"] += g.memory_mib
                models[g.model] = models.get(g.model, 0) + 1
                for h in self.by_gpu.get((node.name, g.index), ()):
                    out[self.holding_state(h)] += h.memory_mib
                left = free.get(g.index, 0)
                out["fragmented" if self.free_is_fragmented(row, left) else "free"] += left
            if self.frag is not None:
                out["fragmented_gpus"] += float(self.frag.frag[row])
        out["fragmented_gpus"] = round(out["fragmented_gpus"], 3)
        out["models"] = dict(sorted(models.items()))
        held = out["busy"] + out["idle"] + out["unknown"] + out["other"]
        out["allocation"] = round(held / out["total_mib"], 4) if out["total_mib"] else 0.0
        return out

    def view(self, f: MapFilter, level: str = "auto", offset: int = 0, limit: int = 300,
             auto_nodes: int = 60) -> dict[str, Any]:
        """The map as JSON: ``pools`` (aggregated) or ``nodes`` (bars), filtered.

        ``auto`` shows nodes when at most ``auto_nodes`` match (or a pool or node is chosen),
        else pools.
        """
        rows = [i for i, n in enumerate(self.nodes) if self.matches(n, f)]
        if level == "auto":
            level = "nodes" if (len(rows) <= auto_nodes or f.pool or f.node) else "pools"
        out: dict[str, Any] = {"level": level, "filter": _filter_dict(f),
                               "totals": self.totals(rows), "matched_nodes": len(rows),
                               "models": sorted({g.model for n in self.nodes for g in n.gpus}),
                               "pools_all": sorted(set(self.pools.values())),
                               "groups": sorted({g for h in self.holdings for g in h.groups}),
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
