"""The cluster as the placement core sees it: free capacity in dense arrays.

Placement runs once per spawn on a live hub and ten thousand times per second in the simulator,
so the state is held column-wise in numpy arrays (one row per node, one column per GPU slot)
instead of as objects.  It is built from the frozen :mod:`aispike_hub.model` types and changed
only through :meth:`ClusterState.commit` and :meth:`ClusterState.release`, which check every
invariant (no GPU, CPU or RAM ever goes below zero or above capacity).

GPUs held by something that does not say which GPU it holds (a pod of NVIDIA's device plugin
asking for ``nvidia.com/gpu``: the plugin picks the GPU, nobody tells the API) are counted per
node in :attr:`ClusterState.anon_gpus` (an :class:`~aispike_hub.model.Assignment`'s
``anonymous_gpus``).  The rule: *a node keeps at least that many GPUs idle*.  Whatever GPUs those
pods really hold, the sum of the GPUs our placements touch and the anonymous ones then never
exceeds the node's GPUs.  Commit counts them as facts (they are never refused: the cluster
already runs them); the filter (:mod:`aispike_hub.placement.filter`) offers no option that would
leave fewer idle GPUs than are held anonymously (:meth:`ClusterState.anonymous_room`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from aispike_hub.model import Assignment, Node

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]

NO_GPU = -1
"""Capacity of a padding GPU slot on a node with fewer GPUs than the widest node."""


MAX_NODES = 1 << 21
MAX_GPU_MIB = 1 << 21
"""Limits that let the filter pack (node, free, capacity) into one integer key (2 TiB GPUs)."""


class OverCommitError(ValueError):
    """An assignment would take more than a node or GPU has: a bug in the caller, never ignored."""


@dataclass(frozen=True, slots=True)
class GroupIds:
    """Topology group ids per GPU slot, interned to small integers (-1: no group)."""

    nvlink: IntArray
    pcie: IntArray
    numa: IntArray


class ClusterState:
    """Free and total capacity of every node and GPU, as arrays.

    ``gpu_cap[n, g]`` is the memory of GPU slot ``g`` on node ``n`` in MiB (``NO_GPU`` for an
    empty slot); ``gpu_free`` is what is still unallocated.  ``gpu_model[n, g]`` indexes
    ``models``.  Everything else is per node.
    """

    def __init__(self, nodes: Sequence[Node]) -> None:
        if not nodes:
            raise ValueError("a cluster needs at least one node")
        names = [n.name for n in nodes]
        if len(set(names)) != len(names):
            dup = sorted({x for x in names if names.count(x) > 1})
            raise ValueError(f"duplicate node names: {', '.join(dup[:5])}")
        if len(nodes) >= MAX_NODES:
            raise ValueError(f"at most {MAX_NODES - 1} nodes, got {len(nodes)}")
        too_big = [(n.name, g.index) for n in nodes for g in n.gpus if g.memory_mib >= MAX_GPU_MIB]
        if too_big:
            raise ValueError(f"GPU memory must be below {MAX_GPU_MIB} MiB: {too_big[:3]}")
        self.nodes: tuple[Node, ...] = tuple(nodes)
        self.node_index: dict[str, int] = {n.name: i for i, n in enumerate(nodes)}
        width = max((len(n.gpus) for n in nodes), default=0)
        self.width = max(width, 1)
        n_nodes = len(nodes)
        self.models: list[str] = sorted({g.model for n in nodes for g in n.gpus})
        model_id = {m: i for i, m in enumerate(self.models)}

        self.gpu_cap: IntArray = np.full((n_nodes, self.width), NO_GPU, dtype=np.int64)
        self.gpu_model: IntArray = np.full((n_nodes, self.width), -1, dtype=np.int64)
        self.gpu_index: IntArray = np.full((n_nodes, self.width), -1, dtype=np.int64)
        nvlink = np.full((n_nodes, self.width), -1, dtype=np.int64)
        pcie = np.full((n_nodes, self.width), -1, dtype=np.int64)
        numa = np.full((n_nodes, self.width), -1, dtype=np.int64)
        interned: dict[tuple[str, str], int] = {}

        def intern(kind: str, key: str) -> int:
            if not key:
                return -1
            return interned.setdefault((kind, key), len(interned))

        for i, node in enumerate(nodes):
            for slot, gpu in enumerate(sorted(node.gpus, key=lambda g: g.index)):
                self.gpu_cap[i, slot] = gpu.memory_mib
                self.gpu_model[i, slot] = model_id[gpu.model]
                self.gpu_index[i, slot] = gpu.index
                nvlink[i, slot] = intern("nvlink", f"{node.name}/{gpu.nvlink_domain}"
                                         if gpu.nvlink_domain else "")
                pcie[i, slot] = intern("pcie", f"{node.name}/{gpu.pcie_switch}"
                                       if gpu.pcie_switch else "")
                numa[i, slot] = intern("numa", f"{node.name}/{gpu.numa_node}"
                                       if gpu.numa_node >= 0 else "")
        self.groups = GroupIds(nvlink=nvlink, pcie=pcie, numa=numa)
        self.gpu_exists: BoolArray = self.gpu_cap > 0
        self.gpu_free: IntArray = np.where(self.gpu_exists, self.gpu_cap, 0)
        self.cpu_cap: IntArray = np.array([n.cpu_milli for n in nodes], dtype=np.int64)
        self.mem_cap: IntArray = np.array([n.memory_mib for n in nodes], dtype=np.int64)
        self.cpu_free: IntArray = self.cpu_cap.copy()
        self.mem_free: IntArray = self.mem_cap.copy()
        self.gpu_count: IntArray = self.gpu_exists.sum(axis=1).astype(np.int64)
        self.anon_gpus: IntArray = np.zeros(n_nodes, dtype=np.int64)
        """Whole GPUs per node held anonymously (which GPU is unknown): kept idle by placement."""
        # A node's "model" for policies that think per node (a node with mixed models is rare;
        # its first GPU's model stands for it there, while fit checks stay per GPU).
        self.node_model: IntArray = self.gpu_model[:, 0].copy()
        self.node_gpu_cap: IntArray = np.where(self.gpu_cap[:, 0] > 0, self.gpu_cap[:, 0], 1)
        self.version = 0
        """Bumped on every change, so caches keyed on it know when to recompute."""
        self.capacity_version = 0
        """Bumped when a node's capacity changes in place (:meth:`update_node`): caches of what
        depends on capacities only (scarce server types, CPU per GPU) recompute then."""
        self.changed_nodes: list[int] = []
        """Every node change in order; incremental readers keep their own cursor into it."""
        self._signature: IntArray = np.zeros(n_nodes, dtype=np.int64)
        self._signature_seen = -1

    # -- changes ---------------------------------------------------------------------------
    def commit(self, assignment: Assignment) -> None:
        """Take the assignment's resources; raise :class:`OverCommitError` if they are not free."""
        self._apply(assignment, sign=-1)

    def release(self, assignment: Assignment) -> None:
        """Give the assignment's resources back (a server stopped)."""
        self._apply(assignment, sign=+1)

    def update_node(self, node: Node) -> bool:
        """Replace a node's facts other than its GPUs (labels, cached images and datasets,
        allocatable CPU and RAM) in place; False when that cannot be done (unknown node, other
        GPUs, or less CPU/RAM than is in use): the caller then builds a new state.

        Why: a live cluster changes such facts often (every image pull changes a node's image
        list), and rebuilding the whole state for each costs far more than a decision.
        """
        i = self.node_index.get(node.name)
        if i is None or self.nodes[i].gpus != node.gpus:
            return False
        old = self.nodes[i]
        d_cpu, d_mem = node.cpu_milli - old.cpu_milli, node.memory_mib - old.memory_mib
        if self.cpu_free[i] + d_cpu < 0 or self.mem_free[i] + d_mem < 0:
            return False
        self.nodes = (*self.nodes[:i], node, *self.nodes[i + 1:])
        self.cpu_cap[i] += d_cpu
        self.cpu_free[i] += d_cpu
        self.mem_cap[i] += d_mem
        self.mem_free[i] += d_mem
        self.version += 1
        if d_cpu or d_mem:
            self.capacity_version += 1
        self.changed_nodes.append(i)
        return True

    def _apply(self, a: Assignment, sign: int) -> None:
        try:
            n = self.node_index[a.node]
        except KeyError:
            raise OverCommitError(f"unknown node {a.node!r}") from None
        slots = [self.slot_of(n, idx) for idx in a.gpu_indices]
        anon = int(self.anon_gpus[n]) - sign * a.anonymous_gpus
        if anon < 0:
            raise OverCommitError(f"node {a.node}: anonymous GPUs would be {anon}")
        cpu = self.cpu_free[n] + sign * a.cpu_milli
        mem = self.mem_free[n] + sign * a.memory_mib
        if not 0 <= cpu <= self.cpu_cap[n]:
            raise OverCommitError(f"node {a.node}: CPU would be {cpu} of {self.cpu_cap[n]} milli")
        if not 0 <= mem <= self.mem_cap[n]:
            raise OverCommitError(f"node {a.node}: RAM would be {mem} of {self.mem_cap[n]} MiB")
        new_free = []
        for slot, amount in zip(slots, a.gpu_memory_mib, strict=True):
            free = self.gpu_free[n, slot] + sign * amount
            if amount < 0 or not 0 <= free <= self.gpu_cap[n, slot]:
                raise OverCommitError(
                    f"node {a.node} GPU {self.gpu_index[n, slot]}: free memory would be {free} "
                    f"of {self.gpu_cap[n, slot]} MiB"
                )
            new_free.append(free)
        self.cpu_free[n] = cpu
        self.mem_free[n] = mem
        self.anon_gpus[n] = anon
        for slot, free in zip(slots, new_free, strict=True):
            self.gpu_free[n, slot] = free
        self.version += 1
        self.changed_nodes.append(n)

    def slot_of(self, node: int, gpu_index: int) -> int:
        """The array column of GPU ``gpu_index`` on node row ``node``."""
        hits = np.nonzero(self.gpu_index[node] == gpu_index)[0]
        if hits.size == 0:
            raise OverCommitError(f"node {self.nodes[node].name} has no GPU {gpu_index}")
        return int(hits[0])

    def idle_gpus(self) -> IntArray:
        """Per node, GPUs nothing of ours uses (free memory equals capacity)."""
        out: IntArray = ((self.gpu_free == self.gpu_cap) & self.gpu_exists).sum(axis=1)
        return out

    def anonymous_room(self) -> IntArray:
        """Per node, idle GPUs beyond those held anonymously: how many more idle GPUs placement
        may start using there (negative when others already hold more than is idle)."""
        out: IntArray = self.idle_gpus() - self.anon_gpus
        return out

    def node_anonymous_room(self, node: int) -> int:
        """:meth:`anonymous_room` of one node row (cheap: one row)."""
        idle = (self.gpu_free[node] == self.gpu_cap[node]) & self.gpu_exists[node]
        return int(idle.sum()) - int(self.anon_gpus[node])

    def commit_all(self, assignments: Iterable[Assignment]) -> None:
        for a in assignments:
            self.commit(a)

    # -- views -----------------------------------------------------------------------------
    def node_signature(self) -> IntArray:
        """A hash per node of everything placement scores look at (model, free CPU and RAM,
        free and total memory of its GPUs as a multiset).  Nodes with equal signatures are
        interchangeable for every scorer that does not look at a node's name or topology, so
        the engine scores one of them: on a cluster of 15,000 nodes, most are twins."""
        if self._signature_seen < 0:
            rows: list[int] = list(range(len(self.nodes)))
        else:
            rows = sorted(set(self.changed_nodes[self._signature_seen:]))
        for n in rows:
            gpus = sorted(zip(self.gpu_free[n].tolist(), self.gpu_cap[n].tolist(), strict=True))
            self._signature[n] = hash((int(self.node_model[n]), int(self.cpu_free[n]),
                                       int(self.mem_free[n]), int(self.anon_gpus[n]),
                                       tuple(gpus)))
        self._signature_seen = len(self.changed_nodes)
        return self._signature

    def allocation_share(self) -> float:
        """Allocated share of all GPU capacity, each GPU weighted as one (0..1)."""
        used = (self.gpu_cap - self.gpu_free)[self.gpu_exists] / self.gpu_cap[self.gpu_exists]
        total = int(self.gpu_exists.sum())
        return float(used.sum() / total) if total else 0.0

    def total_gpus(self) -> int:
        return int(self.gpu_exists.sum())
