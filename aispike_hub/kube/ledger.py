"""The inventory's book: parsed cluster objects, what each holds, and the placement state.

:class:`Ledger` is plain, single-threaded bookkeeping (the :class:`~aispike_hub.kube.inventory.
Inventory` calls it under its lock; tests call it directly).  It keeps

- the parsed objects by key (:attr:`Ledger.slices`, :attr:`~Ledger.nodes`, :attr:`~Ledger.claims`,
  :attr:`~Ledger.pods`);
- one :class:`Entry` per usage key (``claim:<ns>/<name>``, ``pod:<ns>/<name>``,
  ``hold:<ns>/<name>``, and for GPUs held outside AISpike ``outside-pod:<ns>/<name>`` and
  ``outside-claim:<ns>/<name>``, see :mod:`aispike_hub.kube.coexist`): the
  :class:`~aispike_hub.kube.usage.Usage` it takes and the part of it committed into the state;
- one :class:`~aispike_hub.placement.state.ClusterState`, kept current incrementally through its
  ``commit``/``release`` (the placement core's own invariant checks), so a placement at 1,000
  nodes does not rebuild arrays.  Only a change of topology (a slice, a node coming or going,
  becoming schedulable or not) marks it dirty; the next :meth:`Ledger.state` rebuilds it.  Node
  facts (labels, images, datasets, CPU/RAM) are updated in place.

Facts win over promises: hard usage (an allocation, a bound pod) is committed first; a soft pin in
its way is evicted (un-counted, with a stale reason); a fact that still does not fit is clamped to
what fits, with one warning (the scheduler knows better than our view).  GPUs held anonymously
(device-plugin pods) are facts too: when they leave a node fewer idle GPUs than they hold, our pins
that started idle GPUs there are evicted, newest first; a pin that would do so is stale.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from aispike_hub.kube.coexist import (
    NO_GPUS,
    ForeignDevice,
    ForeignResult,
    ForeignSlice,
    PodGpus,
    foreign_device_index,
    outside_claim_usage,
    outside_pod_usage,
)
from aispike_hub.kube.identity import DEFAULT_HUB, belongs, split_hub_server
from aispike_hub.kube.objects import ClaimInfo, NodeInfo, PodInfo, SliceInfo
from aispike_hub.kube.usage import DeviceIndex, Usage, claim_usage, pod_usage
from aispike_hub.model import Assignment, Gpu, Node
from aispike_hub.placement.state import ClusterState, OverCommitError

log = logging.getLogger(__name__)


@dataclass
class Entry:
    """One usage key's share: what it takes, and what of it is counted in the state."""

    usage: Usage
    committed: list[Assignment] = field(default_factory=list)
    stale: str = ""
    """Why a soft usage could not be committed (its pin is stale)."""


def _desc(text: str) -> tuple[int, ...]:
    """Sort key that orders strings (RFC 3339 times) newest first."""
    return tuple(-ord(c) for c in text)


def _ignore(key: str) -> None:
    return None


class Ledger:
    """Parsed cluster objects, their usage, and the placement state derived from them.

    Keys are ``<namespace>/<name>`` for claims and pods, the name for slices and nodes.  Change
    the book through ``put_*``/``remove_*`` and :meth:`hold`/:meth:`drop`/:meth:`drop_hold`;
    ``on_change(key)`` is called with a claim's or pod's key whenever what it holds (or why it
    cannot) changed, so waiters can look again.  Not thread-safe: one caller at a time.
    """

    def __init__(
        self,
        node_selector: Mapping[str, str] | None = None,
        *,
        on_change: Callable[[str], None] | None = None,
        logger: logging.Logger | None = None,
        remember_deleted: int = 50_000,
    ) -> None:
        self.node_selector: dict[str, str] = dict(node_selector or {})
        """Labels a node must carry to be placed on (empty: every schedulable node)."""
        self.slices: dict[str, SliceInfo] = {}
        self.nodes: dict[str, NodeInfo] = {}
        self.claims: dict[str, ClaimInfo] = {}
        self.pods: dict[str, PodInfo] = {}
        self.foreign_slices: dict[str, ForeignSlice] = {}
        """Slices of other GPU drivers (their devices' uuids locate foreign claims)."""
        self._pod_gpus: dict[str, PodGpus] = {}
        """pod key -> GPUs it holds through device plugins (only pods that hold some)."""
        self._claim_foreign: dict[str, tuple[ForeignResult, ...]] = {}
        """claim key -> its allocation results on other GPU drivers' devices (when any)."""
        self._foreign_devices: dict[tuple[str, str, str], tuple[str, ForeignDevice]] = {}
        self._bound_refs: dict[str, set[str]] = {}
        """claim key -> keys of bound pods that use it."""
        self._entries: dict[str, Entry] = {}
        """usage key ("claim:<ns>/<name>", "pod:<ns>/<name>", "hold:<ns>/<name>") -> entry."""
        self._gone: deque[str] = deque(maxlen=remember_deleted)
        self._gone_set: set[str] = set()
        self._state: ClusterState | None = None
        self._devices = DeviceIndex({}, {})
        self._topology_dirty = True
        self._warned: set[str] = set()
        self._on_change = on_change or _ignore
        self._log = logger or log

    # -- warnings ------------------------------------------------------------------------------
    def warn_once(self, key: str, message: str) -> None:
        """Log ``message`` once per ``key`` (a skipped object is reported, not on every event)."""
        if key not in self._warned:
            if len(self._warned) > 100_000:
                self._warned.clear()
            self._warned.add(key)
            self._log.warning("inventory: skipping %s", message)

    # -- topology: slices and nodes ------------------------------------------------------------
    def invalidate(self) -> None:
        """Rebuild the state at the next :meth:`state` (after a full re-list of a topology kind)."""
        self._topology_dirty = True

    def put_slice(self, info: SliceInfo) -> None:
        """One of our slices was added or changed."""
        if info != self.slices.get(info.name):
            self.slices[info.name] = info
            self._topology_dirty = True

    def remove_slice(self, name: str) -> None:
        """Slice ``name`` is gone (or no longer ours to read)."""
        if self.slices.pop(name, None) is not None:
            self._topology_dirty = True

    def put_foreign_slice(self, info: ForeignSlice) -> None:
        """A slice of another GPU driver was added or changed."""
        if info != self.foreign_slices.get(info.name):
            self.foreign_slices[info.name] = info
            self._topology_dirty = True

    def remove_foreign_slice(self, name: str) -> None:
        if self.foreign_slices.pop(name, None) is not None:
            self._topology_dirty = True

    def put_node(self, info: NodeInfo) -> None:
        """A node was added or changed: its facts change in place when placement keeps it."""
        name = info.name
        old = self.nodes.get(name)
        if info == old:
            return
        self.nodes[name] = info
        if old is None or self._topology_dirty or self._state is None:
            self._topology_dirty = True
            return
        placed_before = not old.unschedulable and self._selected(old)
        placed_now = not info.unschedulable and self._selected(info)
        if not placed_before and not placed_now:
            return  # a node we do not place on changed: nothing placement sees
        if placed_before and placed_now:
            state = self._state
            i = state.node_index.get(name)
            if i is not None and state.update_node(Node(
                    name=name, cpu_milli=info.cpu_milli, memory_mib=info.memory_mib,
                    gpus=state.nodes[i].gpus, labels=dict(info.labels),
                    images=dict(info.images), datasets=dict(info.datasets))):
                return  # labels, images, datasets or CPU/RAM: changed in place
        self._topology_dirty = True

    def remove_node(self, name: str) -> None:
        if self.nodes.pop(name, None) is not None:
            self._topology_dirty = True

    # -- claims and pods -----------------------------------------------------------------------
    def is_gone(self, uid: str) -> bool:
        """True for the uid of a claim we deleted ourselves (its late events are echoes)."""
        return bool(uid) and uid in self._gone_set

    def put_claim(self, info: ClaimInfo, foreign: tuple[ForeignResult, ...] = ()) -> None:
        """A claim was added or changed: it replaces any hold under its key.  ``foreign``: its
        allocation results on other GPU drivers' devices (:func:`~aispike_hub.kube.coexist.
        foreign_claim_results`)."""
        key = info.key
        if self.is_gone(info.uid):
            return  # an event of a claim we already deleted to re-pin: its successor counts
        if self.claims.get(key) == info and self._claim_foreign.get(key, ()) == foreign:
            return
        self.claims[key] = info
        if foreign:
            self._claim_foreign[key] = foreign
        else:
            self._claim_foreign.pop(key, None)
        self.set_usage(f"hold:{key}", None)
        self._refresh_claim(key)
        self._refresh_outside_claim(key)
        self._on_change(key)

    def remove_claim(self, key: str, uid: str = "") -> None:
        """Claim ``key`` was deleted (``uid``: only that incarnation of it)."""
        old = self.claims.get(key)
        if old is not None and (not uid or old.uid == uid):
            del self.claims[key]
            self._claim_foreign.pop(key, None)
            self.set_usage(f"claim:{key}", None)
            self.set_usage(f"outside-claim:{key}", None)
            self._on_change(key)

    def put_pod(self, info: PodInfo, gpus: PodGpus = NO_GPUS) -> None:
        """A pod was added or changed.  ``gpus``: what it holds through device plugins
        (:func:`~aispike_hub.kube.coexist.pod_gpus`)."""
        old = self.pods.get(info.key)
        if info == old and self._pod_gpus.get(info.key, NO_GPUS) == gpus:
            return
        self.pods[info.key] = info
        if gpus:
            self._pod_gpus[info.key] = gpus
        else:
            self._pod_gpus.pop(info.key, None)
        self._pod_changed(info.key, old, info)

    def remove_pod(self, key: str, uid: str = "") -> None:
        """Pod ``key`` was deleted (``uid``: only that incarnation of it)."""
        old = self.pods.get(key)
        if old is None or (uid and old.uid != uid):
            return
        del self.pods[key]
        self._pod_gpus.pop(key, None)
        self._pod_changed(key, old, None)

    def _pod_changed(self, key: str, old: PodInfo | None, new: PodInfo | None) -> None:
        self.set_usage(f"pod:{key}", pod_usage(new) if new is not None else None)
        self._refresh_outside_pod(key)
        # Which claims are used by a bound pod changed: their CPU/RAM moves to the pod.
        touched: set[str] = set()
        for info, add in ((old, False), (new, True)):
            if info is None:
                continue
            for claim in info.claim_names:
                ckey = f"{info.namespace}/{claim}"
                refs = self._bound_refs.setdefault(ckey, set())
                if add and info.counts:
                    refs.add(key)
                else:
                    refs.discard(key)
                if not refs:
                    del self._bound_refs[ckey]
                touched.add(ckey)
        for ckey in touched:
            self._refresh_claim(ckey)
        self._on_change(key)

    def _refresh_claim(self, key: str) -> None:
        info = self.claims.get(key)
        if info is None:
            return
        if self._topology_dirty or self._state is None:
            # The device index is about to be rebuilt; the rebuild recomputes every claim.
            self.set_usage(f"claim:{key}", None)
            self._entries[f"claim:{key}"] = Entry(Usage((), info.is_allocated))
            return
        usage = claim_usage(info, self._devices, bool(self._bound_refs.get(key)))
        for p in usage.problems:
            self.warn_once(f"claim-usage/{key}/{info.resource_version}/{p}", p)
        self.set_usage(f"claim:{key}", usage)

    def _outside_pod(self, key: str) -> Usage | None:
        pod = self.pods.get(key)
        gpus = self._pod_gpus.get(key)
        if pod is None or gpus is None or not pod.counts:
            return None
        assignments, problems = outside_pod_usage(pod.node, key, gpus, self._devices.by_uuid)
        for p in problems:
            self.warn_once(f"outside-pod/{key}/{p}", p)
        return Usage(assignments, True)

    def _outside_claim(self, key: str) -> Usage | None:
        results = self._claim_foreign.get(key)
        info = self.claims.get(key)
        if not results or info is None or not info.is_allocated:
            return None
        assignments, problems = outside_claim_usage(key, results, self._foreign_devices,
                                                    self._devices.by_uuid)
        for p in problems:
            self.warn_once(f"outside-claim/{key}/{info.resource_version}/{p}", p)
        return Usage(assignments, True)

    def _refresh_outside_pod(self, key: str) -> None:
        if self._topology_dirty or self._state is None:
            self._entries.pop(f"outside-pod:{key}", None)  # the rebuild recomputes it
            return
        self.set_usage(f"outside-pod:{key}", self._outside_pod(key))

    def _refresh_outside_claim(self, key: str) -> None:
        if self._topology_dirty or self._state is None:
            self._entries.pop(f"outside-claim:{key}", None)
            return
        self.set_usage(f"outside-claim:{key}", self._outside_claim(key))

    # -- placement support ---------------------------------------------------------------------
    def hold(self, key: str, assignment: Assignment) -> None:
        """Count ``assignment`` for claim ``key`` about to be created (replaces what it counted)."""
        self.set_usage(f"claim:{key}", None)
        self.set_usage(f"hold:{key}", Usage((assignment,), False))

    def drop(self, key: str, uid: str = "") -> None:
        """Stop counting claim ``key`` (deleted by us; ``uid`` ignores its echoes)."""
        if uid:
            if len(self._gone) == self._gone.maxlen:
                self._gone_set.discard(self._gone[0])
            self._gone.append(uid)
            self._gone_set.add(uid)
        info = self.claims.get(key)
        if info is not None and (not uid or info.uid == uid):
            del self.claims[key]
            self._claim_foreign.pop(key, None)
            self.set_usage(f"claim:{key}", None)
            self.set_usage(f"outside-claim:{key}", None)
        self.set_usage(f"hold:{key}", None)

    def drop_hold(self, key: str) -> None:
        """Forget the hold for claim ``key`` only (its creation did not happen)."""
        self.set_usage(f"hold:{key}", None)

    # -- usage bookkeeping ---------------------------------------------------------------------
    def set_usage(self, ukey: str, usage: Usage | None) -> None:
        """Replace what usage key ``ukey`` counts (``None``: nothing)."""
        old = self._entries.pop(ukey, None)
        if self._state is not None and not self._topology_dirty and old is not None:
            for a in old.committed:
                self._state.release(a)
        if usage is None or not usage.assignments:
            return
        entry = Entry(usage)
        self._entries[ukey] = entry
        if self._state is not None and not self._topology_dirty:
            self._commit(ukey, entry)

    def _commit(self, ukey: str, entry: Entry) -> None:
        state = self._state
        assert state is not None
        entry.committed = []
        entry.stale = ""
        rooms = {a.node: state.node_anonymous_room(state.node_index[a.node])
                 for a in entry.usage.assignments if a.node in state.node_index}
        for a in entry.usage.assignments:
            if a.node not in state.node_index:
                # A node we do not place on (cordoned, not Ready, no Node object): a fact there
                # does not matter here, a pin there cannot be honoured.
                if not entry.usage.hard:
                    entry.stale = f"node {a.node} is not available for placement"
                continue
            try:
                state.commit(a)
            except OverCommitError as e:
                if not entry.usage.hard:
                    entry.stale = str(e)
                    for done in entry.committed:
                        state.release(done)
                    entry.committed = []
                    self._on_change(ukey.partition(":")[2])
                    return
                if not self._evict_soft_for(a):
                    self.warn_once(f"overcommit/{ukey}/{e}",
                                   f"part of {ukey}: the scheduler's facts exceed our view "
                                   f"({e}); counting what fits")
                    clamped = self._clamp(a)
                    if clamped is not None:
                        state.commit(clamped)
                        entry.committed.append(clamped)
                    continue
            entry.committed.append(a)
        self._keep_anonymous_room(ukey, entry, rooms)

    def _keep_anonymous_room(self, ukey: str, entry: Entry, rooms: Mapping[str, int]) -> None:
        """The anonymous-GPU rule after ``entry`` was committed: a node keeps as many GPUs idle
        as others hold without naming which (docs/placement.md).  A pin of ours that breaks it
        is stale; a fact that breaks it evicts our pins that started idle GPUs there."""
        state = self._state
        assert state is not None
        for node, before in rooms.items():
            n = state.node_index[node]
            if state.node_anonymous_room(n) >= 0:
                continue
            if not entry.usage.hard:
                if state.node_anonymous_room(n) < before:
                    for done in entry.committed:
                        state.release(done)
                    entry.committed = []
                    entry.stale = (f"the GPUs left on {node} are held by workloads outside "
                                   "AISpike (nvidia.com/gpu pods, other drivers' claims)")
                    self._on_change(ukey.partition(":")[2])
                    return
                continue
            self._evict_soft_for_room(node, ukey)

    def _evict_soft_for_room(self, node: str, cause: str) -> None:
        """Un-count our pins on ``node`` that use GPUs, newest first, until it keeps as many
        idle GPUs as are held anonymously (or none is left)."""
        state = self._state
        assert state is not None
        n = state.node_index[node]
        candidates: list[tuple[str, str, Entry]] = []
        for ukey, entry in self._entries.items():
            if entry.usage.hard or not any(c.node == node and c.gpu_indices
                                           for c in entry.committed):
                continue
            claim = self.claims.get(ukey.partition(":")[2])
            created = claim.created if claim is not None and ukey.startswith("claim:") else "~"
            candidates.append((created, ukey, entry))
        candidates.sort(key=lambda c: (_desc(c[0]), c[1]))
        for _, ukey, entry in candidates:
            if state.node_anonymous_room(n) >= 0:
                return
            for c in entry.committed:
                state.release(c)
            entry.committed = []
            entry.stale = f"room on {node} was taken by a workload outside AISpike ({cause})"
            self._on_change(ukey.partition(":")[2])

    def _try_commit(self, a: Assignment) -> bool:
        assert self._state is not None
        try:
            self._state.commit(a)
        except OverCommitError:
            return False
        return True

    def _evict_soft_for(self, a: Assignment) -> bool:
        """Un-count our pins (soft usage) in ``a``'s way until ``a`` fits; True when it does.

        A fact (an allocation, a bound pod) contradicts them, so those pins are stale: pins on the
        same GPUs go first, then other pins on the node (for CPU and RAM).
        """
        assert self._state is not None
        wanted = set(a.gpu_indices)
        candidates: list[tuple[bool, str, str, Entry]] = []
        for ukey, entry in self._entries.items():
            if entry.usage.hard or not entry.committed:
                continue
            on_node = [c for c in entry.committed if c.node == a.node]
            if not on_node:
                continue
            overlap = any(set(c.gpu_indices) & wanted for c in on_node)
            claim = self.claims.get(ukey.partition(":")[2])
            # The newest pin is the least likely to be in the scheduler's hands already.
            created = claim.created if claim is not None and ukey.startswith("claim:") else "~"
            candidates.append((not overlap, created, ukey, entry))
        candidates.sort(key=lambda c: (c[0], _desc(c[1]), c[2]))
        for _, _, ukey, entry in candidates:
            for c in entry.committed:
                self._state.release(c)
            entry.committed = []
            entry.stale = f"room on {a.node} was taken by an allocation ({a.owner})"
            self._on_change(ukey.partition(":")[2])
            if self._try_commit(a):
                return True
        return False

    def _clamp(self, a: Assignment) -> Assignment | None:
        state = self._state
        assert state is not None
        n = state.node_index[a.node]
        idx: list[int] = []
        mem: list[int] = []
        for gi, amount in zip(a.gpu_indices, a.gpu_memory_mib, strict=True):
            try:
                slot = state.slot_of(n, gi)
            except OverCommitError:
                continue
            take = min(amount, int(state.gpu_free[n, slot]))
            if take > 0:
                idx.append(gi)
                mem.append(take)
        cpu = min(a.cpu_milli, int(state.cpu_free[n]))
        ram = min(a.memory_mib, int(state.mem_free[n]))
        if not idx and not cpu and not ram:
            return None
        return Assignment(a.node, tuple(idx), tuple(mem), cpu, ram, a.owner)

    def _rebuild(self) -> None:
        by_node: dict[str, list[SliceInfo]] = {}
        for s in self.slices.values():
            by_node.setdefault(s.node, []).append(s)
        by_device: dict[tuple[str, str], tuple[str, int, int]] = {}
        by_uuid: dict[str, tuple[str, int, int]] = {}
        dup_uuids: set[str] = set()
        node_gpus: dict[str, list[Gpu]] = {}
        for node, slices in by_node.items():
            newest: dict[str, int] = {}
            for s in slices:
                newest[s.pool] = max(newest.get(s.pool, s.generation), s.generation)
            seen_index: set[int] = set()
            for s in sorted(slices, key=lambda s: s.name):
                if s.generation != newest[s.pool]:
                    continue
                for dname, index in s.devices.items():
                    gpu = next(g for g in s.gpus if g.index == index)
                    if index in seen_index:
                        self.warn_once(f"dupindex/{node}/{index}",
                                       f"GPU index {index} published twice on node {node}")
                        continue
                    seen_index.add(index)
                    if gpu.uuid in by_uuid:
                        dup_uuids.add(gpu.uuid)
                    by_uuid[gpu.uuid] = (node, index, gpu.memory_mib)
                    by_device[(s.pool, dname)] = (node, index, gpu.memory_mib)
                    node_gpus.setdefault(node, []).append(gpu)
        for u in dup_uuids:
            self.warn_once(f"dupuuid/{u}", f"GPU uuid {u}: published more than once, so a "
                           "pin on it would be ambiguous; not placing on it")
            del by_uuid[u]
        self._devices = DeviceIndex(by_device, by_uuid)
        self._foreign_devices = foreign_device_index(self.foreign_slices.values())
        nodes: list[Node] = []
        for name in sorted(self.nodes):
            info = self.nodes[name]
            if info.unschedulable or not self._selected(info):
                continue
            gpus = tuple(g for g in node_gpus.get(name, []) if g.uuid not in dup_uuids)
            nodes.append(Node(name=name, cpu_milli=info.cpu_milli, memory_mib=info.memory_mib,
                              gpus=gpus, labels=dict(info.labels), images=dict(info.images),
                              datasets=dict(info.datasets)))
        # Usage depends on the device index: recompute every claim's, facts first, pins after.
        for key in list(self.claims):
            claim = self.claims[key]
            usage = claim_usage(claim, self._devices, bool(self._bound_refs.get(key)))
            for p in usage.problems:
                self.warn_once(f"claim-usage/{key}/{claim.resource_version}/{p}", p)
            self._entries[f"claim:{key}"] = Entry(usage)
            if not usage.assignments:
                del self._entries[f"claim:{key}"]
        for keys, kind, outside in ((self._pod_gpus, "outside-pod", self._outside_pod),
                                    (self._claim_foreign, "outside-claim", self._outside_claim)):
            for key in list(keys):
                found = outside(key)
                if found is not None and found.assignments:
                    self._entries[f"{kind}:{key}"] = Entry(found)
                else:
                    self._entries.pop(f"{kind}:{key}", None)
        self._state = ClusterState(nodes) if nodes else None
        self._topology_dirty = False
        if self._state is None:
            return
        # Facts first (exact ones before anonymous GPUs), then our pins, holds last.
        order = sorted(self._entries.items(),
                       key=lambda kv: (not kv[1].usage.hard,
                                       any(a.anonymous_gpus for a in kv[1].usage.assignments),
                                       kv[0].startswith("hold:"), kv[0]))
        for ukey, entry in order:
            self._commit(ukey, entry)

    def _selected(self, info: NodeInfo) -> bool:
        """True when the node carries every label of :attr:`node_selector`."""
        if not self.node_selector:
            return True
        labels = dict(info.labels)
        return all(labels.get(k) == v for k, v in self.node_selector.items())

    # -- reading -------------------------------------------------------------------------------
    def state(self) -> ClusterState | None:
        """The current placement state, rebuilt first when the topology changed (``None`` when
        no node is schedulable)."""
        if self._topology_dirty or self._state is None:
            self._rebuild()
        return self._state

    def devices(self) -> DeviceIndex:
        """Where each published device is (current as of :meth:`state`)."""
        self.state()
        return self._devices

    def stale_reason(self, key: str) -> str:
        """Why our pin in claim ``key`` cannot be counted ('' when it is fine)."""
        self.state()
        info = self.claims.get(key)
        if info is not None and (info.allocating or info.is_allocated):
            return ""  # the scheduler is allocating it: whatever we think, it won
        entry = self._entries.get(f"claim:{key}") or self._entries.get(f"hold:{key}")
        if entry is not None:
            return entry.stale
        if info is not None and info.ours and not info.is_allocated:
            usage = claim_usage(info, self._devices, False)
            return "; ".join(usage.problems)
        return ""

    def usage_of(self, key: str) -> tuple[Assignment, ...]:
        """What the state counts for claim ``key`` right now (its hold or the claim)."""
        entry = self._entries.get(f"claim:{key}") or self._entries.get(f"hold:{key}")
        return tuple(entry.committed) if entry else ()

    def usage_by_server(self, hub_id: str = DEFAULT_HUB, owns_unnamed: bool = False
                        ) -> tuple[dict[str, list[Assignment]], list[Assignment]]:
        """What the state counts, split: per server (``user/server``) of hub ``hub_id`` and
        everything else (other workloads, other hubs' servers: kube/identity.py).
        ``owns_unnamed``: values without a hub id are this hub's too (:func:`belongs`)."""
        self.state()
        ours: dict[str, list[Assignment]] = {}
        other: list[Assignment] = []
        for ukey, entry in self._entries.items():
            if not entry.committed:
                continue
            kind, _, key = ukey.partition(":")
            info: ClaimInfo | PodInfo | None = (
                self.pods.get(key) if kind in ("pod", "outside-pod") else self.claims.get(key))
            value = info.hub_server if info is not None else ""
            _, server = split_hub_server(value)
            if value and belongs(value, hub_id, owns_unnamed):
                ours.setdefault(server, []).extend(entry.committed)
            else:
                other.extend(entry.committed)
        return ours, other
