"""The cluster as the placement core sees it, read from the Kubernetes API (list + watch).

Four kinds are watched, each by its own thread with a periodic full re-list (resync):

- ResourceSlices of our driver ``gpu.aispike.io``: one device per GPU with its ``memory``
  capacity and the attributes ``uuid``, ``model``, ``index``, ``nvlinkDomain``, ``pcieSwitch``,
  ``numaNode``, ``mig`` → :class:`aispike_hub.model.Gpu`;
- Nodes: allocatable CPU and RAM, labels, ``status.images`` and the ``aispike.io/datasets``
  annotation → :class:`aispike_hub.model.Node` (unschedulable or NotReady nodes are left out);
- ResourceClaims: every allocation on one of our devices (``consumedCapacity.memory``, or the whole
  device when none is recorded) counts as used, whoever made the claim; our own pinned claims that
  are not allocated yet count as used too (from their placement annotation), so two placements
  never pin the same room while the scheduler has not caught up;
- Pods that are bound to a node and not finished: their CPU and RAM requests.

GPUs held outside AISpike count as taken too (:mod:`aispike_hub.kube.coexist`): pods asking for
``nvidia.com/gpu``, MIG or HAMi resources, and claims of another GPU driver (``gpu.nvidia.com``,
whose slices are read for their devices' uuids).  Which resources and drivers count is set by
:attr:`Inventory.outside_gpu_resources` and its siblings.

All of it is rebuilt from the API at start, so a restarted service loses nothing.  Objects that do
not follow the contract (a slice of another driver, a device without uuid, a uuid published
twice, a claim result on a device that vanished, a claim of another driver) are skipped with one
logged warning each; they never crash the watch and nothing is pinned to a device we cannot see.

The work is split along its seams, each part testable alone:

- :mod:`aispike_hub.kube.watch`: the list + watch loop (one thread per kind);
- :mod:`aispike_hub.kube.objects`: the parsed objects and their pure parsers (``parse_*``);
- :mod:`aispike_hub.kube.usage`: what each claim and pod holds (:func:`claim_usage`,
  :func:`pod_usage`);
- :mod:`aispike_hub.kube.ledger`: the thread-free book that keeps one :class:`ClusterState` up to
  date incrementally through its ``commit``/``release``, so a placement at 1,000 nodes does not
  rebuild arrays.

:class:`Inventory` here is the glue: settings, the threads, the lock, parsing each event into the
ledger, the query API placement and the service read, and waiting for changes.  Every name this
module exported before the split is still importable from it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from traitlets import (
    Bool,
    Dict,
    Float,
    Integer,
    List,
    TraitError,
    Unicode,
    default,
    observe,
    validate,
)
from traitlets.config import LoggingConfigurable

from aispike_hub.contract import (
    GPUSHARE_MEMORY_RESOURCE,
    HAMI_MEMORY_RESOURCE,
    MIG_RESOURCE_PREFIX,
    NVIDIA_DRIVER,
    NVIDIA_GPU_RESOURCE,
)
from aispike_hub.kube.api import KubeJson
from aispike_hub.kube.coexist import (
    OutsideRules,
    foreign_claim_results,
    parse_foreign_slice,
    pod_gpus,
)
from aispike_hub.kube.identity import (
    belongs,
    hub_id_from_env,
    owns_unnamed_from_env,
    refuse_bad_hub_id,
)
from aispike_hub.kube.ledger import Ledger
from aispike_hub.kube.objects import (
    CLAIM_FINALIZER,
    AllocatedDevice,
    ClaimInfo,
    NodeInfo,
    PodInfo,
    SliceInfo,
    meta_of,
    object_key,
    parse_claim,
    parse_node,
    parse_pod,
    parse_slice,
)
from aispike_hub.kube.usage import DeviceIndex, Usage, claim_usage, pod_usage
from aispike_hub.kube.watch import ListWatch
from aispike_hub.model import Assignment
from aispike_hub.placement.state import ClusterState

__all__ = [
    "CLAIM_FINALIZER",
    "KINDS",
    "AllocatedDevice",
    "ClaimInfo",
    "DeviceIndex",
    "Inventory",
    "NodeInfo",
    "PodInfo",
    "SliceInfo",
    "Usage",
    "claim_usage",
    "parse_claim",
    "parse_node",
    "parse_pod",
    "parse_slice",
    "pod_usage",
]

log = logging.getLogger(__name__)

KINDS = ("resourceslices", "nodes", "resourceclaims", "pods")


class Inventory(LoggingConfigurable):
    """Cluster inventory kept current by list + watch; the placement state derived from it.

    Use :meth:`start` (lists everything, then watches), :meth:`stop`; read under
    ``with inventory.lock:`` via :meth:`state`, :meth:`claim`, :meth:`pod`.  Placement code calls
    :meth:`hold` to count a pin before its claim exists, so concurrent placements never pick the
    same room.
    """

    resync_seconds = Float(
        300.0,
        help="""Seconds between full re-lists of each kind.  A watch can miss nothing in
        principle, but a re-list repairs any drift (a dropped connection, a compacted history)
        and bounds the age of the inventory's view.""",
    ).tag(config=True)
    watch_timeout_seconds = Integer(
        240, help="Server-side timeout of one watch request; it is then resumed."
    ).tag(config=True)
    tolerated_taints = List(
        Unicode(),
        default_value=[],
        help="""Taint keys (NoSchedule/NoExecute) that notebook pods tolerate: nodes with other
        such taints are left out of placement.""",
    ).tag(config=True)
    node_selector = Dict(
        value_trait=Unicode(),
        default_value={},
        help="""Labels a node must carry to host notebook servers (e.g. a notebook node pool:
        {"aispike.io/pool": "notebooks"}); other nodes are left out of placement, the fit
        preview and admission. Set the same for the hub (placer) and the AISpike service, and
        match KubeSpawner.node_selector. Empty: every schedulable node.""",
    ).tag(config=True)
    outside_gpu_resources = List(
        Unicode(), default_value=[NVIDIA_GPU_RESOURCE],
        help="""Extended resources that hold whole GPUs outside AISpike (NVIDIA's device
        plugin, the GPU operator; add a renamed resource, e.g. HAMi's configured name): each one
        a pod asks for counts as one of its node's GPUs taken, which GPU unknown (placement
        keeps that many idle).""",
    ).tag(config=True)
    outside_mig_prefixes = List(
        Unicode(), default_value=[MIG_RESOURCE_PREFIX],
        help="""Prefixes of MIG instance resources (mixed strategy): each instance a pod asks
        for counts as one GPU taken (which GPU unknown; never under-counted).""",
    ).tag(config=True)
    outside_memory_resources = List(
        Unicode(), default_value=[HAMI_MEMORY_RESOURCE, f"{HAMI_MEMORY_RESOURCE}-percentage",
                                  GPUSHARE_MEMORY_RESOURCE],
        help="""Device-plugin GPU-memory resources: a pod asking only for these holds one GPU.
        A HAMi pod with its hami.io/vgpu-devices-allocated annotation counts exactly (its MiB
        on the GPU with that uuid).""",
    ).tag(config=True)
    outside_gpu_drivers = List(
        Unicode(), default_value=[NVIDIA_DRIVER],
        help="""Other DRA drivers whose devices are GPUs: their allocated claims count as
        taken (the whole GPU when the device's uuid is one of ours, else one GPU of its
        node).  Devices of drivers not listed (NICs, ...) are not GPUs and never count.""",
    ).tag(config=True)
    hub_id = Unicode(
        help="""This hub's id when several hubs share the cluster (kube/identity.py): its
        servers' claims and pods carry "<hub id>:<user>/<server>" in aispike.io/hub-server.
        Servers of other hubs count as other workloads' (taken).  Default: $AISPIKE_HUB_ID,
        else <$POD_NAMESPACE>.<$AISPIKE_HELM_RELEASE> when both are set (the Helm chart sets
        them), else empty: the default hub, which also owns values written without a hub
        id.""",
    ).tag(config=True)

    @default("hub_id")
    def _hub_id_default(self) -> str:
        return hub_id_from_env()

    @validate("hub_id")
    def _hub_id_valid(self, proposal: Mapping[str, Any]) -> str:
        try:
            return refuse_bad_hub_id("Inventory.hub_id", proposal["value"])
        except ValueError as e:
            raise TraitError(str(e)) from None

    owns_unnamed = Bool(
        help="""Whether this hub also owns aispike.io/hub-server values without a hub id
        (claims and pods written before hub ids).  Set it on the one hub upgraded in place
        from such a version, never on a second hub.  Always true for the default hub (empty
        hub_id).  Default: $AISPIKE_HUB_OWNS_UNNAMED.""",
    ).tag(config=True)

    @default("owns_unnamed")
    def _owns_unnamed_default(self) -> bool:
        return owns_unnamed_from_env()

    def belongs(self, hub_server: str) -> bool:
        """Whether an object with this aispike.io/hub-server value is this hub's."""
        return belongs(hub_server, self.hub_id, self.owns_unnamed)

    pod_field_selector = Unicode(
        "status.phase!=Succeeded,status.phase!=Failed",
        help="Field selector for the pod watch: only pods that can hold CPU and RAM.",
    ).tag(config=True)

    def __init__(self, api_client: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.api = KubeJson(api_client)
        self.lock = threading.RLock()
        self._ledger = Ledger(self.node_selector, on_change=self._notify, logger=log)
        self.outside = OutsideRules(
            tuple(self.outside_gpu_resources), tuple(self.outside_mig_prefixes),
            tuple(self.outside_memory_resources), tuple(self.outside_gpu_drivers))
        """What holds GPUs outside AISpike (from the ``outside_*`` settings)."""
        self._waiters: dict[str, list[threading.Event]] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._watches: dict[str, ListWatch] = {}
        self.events_seen = 0
        self.relists = 0

    @observe("node_selector")
    def _node_selector_changed(self, change: Mapping[str, Any]) -> None:
        # Config is loaded inside LoggingConfigurable.__init__, before the ledger exists: the
        # ledger then starts from the configured value.  Later changes apply from the next
        # rebuild on, as they always did.
        ledger: Ledger | None = self.__dict__.get("_ledger")
        if ledger is not None:
            with self.lock:
                ledger.node_selector = dict(change["new"])

    @property
    def ledger(self) -> Ledger:
        """The book behind this inventory; hold :attr:`lock` while using it."""
        return self._ledger

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self, timeout: float = 120) -> Inventory:
        """Start one list+watch thread per kind and wait until each has listed once."""
        for kind in KINDS:
            watch = ListWatch(
                self.api, kind,
                on_list=functools.partial(self._replace_all, kind),
                on_event=functools.partial(self._apply, kind),
                stop=self._stop,
                query={"fieldSelector": self.pod_field_selector} if kind == "pods" else None,
                resync_seconds=self.resync_seconds,
                watch_timeout_seconds=self.watch_timeout_seconds,
                name="inventory",
                logger=log,
            )
            self._watches[kind] = watch
            self._threads.append(watch.start())
        deadline = time.monotonic() + timeout
        for kind, watch in self._watches.items():
            if not watch.synced.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"inventory: could not list {kind} within {timeout} s")
        return self

    def stop(self) -> None:
        """Stop watching (threads end at their next event or watch timeout)."""
        self._stop.set()
        with self.lock:
            for events in self._waiters.values():
                for e in events:
                    e.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    # -- events --------------------------------------------------------------------------------
    def _replace_all(self, kind: str, items: list[dict[str, Any]]) -> None:
        """A full list of ``kind``: apply each object, delete what the list no longer has."""
        with self.lock:
            self.relists += 1
            seen: set[str] = set()
            for obj in items:
                seen.add(object_key(obj))
                self._apply(kind, "ADDED", obj)
            book = self._ledger
            if kind == "resourceslices":
                for name in [n for n in book.foreign_slices if n not in seen]:
                    book.remove_foreign_slice(name)
            stores: dict[str, Mapping[str, Any]] = {
                "resourceslices": book.slices, "nodes": book.nodes,
                "resourceclaims": book.claims, "pods": book.pods,
            }
            for key in [k for k in stores[kind] if k not in seen]:
                ns, _, name = key.rpartition("/")
                self._apply(kind, "DELETED", {"metadata": {"namespace": ns, "name": name}})
            if kind in ("nodes", "resourceslices"):
                book.invalidate()  # a full re-list also resets the change journal

    def _apply(self, kind: str, etype: str, obj: Mapping[str, Any]) -> None:
        """One watch event (or listed object) of ``kind``, parsed into the ledger."""
        with self.lock:
            self.events_seen += 1
            if kind == "resourceslices":
                self._on_slice(etype, obj)
            elif kind == "nodes":
                self._on_node(etype, obj)
            elif kind == "resourceclaims":
                self._on_claim(etype, obj)
            elif kind == "pods":
                self._on_pod(etype, obj)

    def _on_slice(self, etype: str, obj: Mapping[str, Any]) -> None:
        name = str(meta_of(obj).get("name", ""))
        if etype == "DELETED":
            self._ledger.remove_slice(name)
            self._ledger.remove_foreign_slice(name)
            return
        foreign = parse_foreign_slice(obj, self.outside)
        if foreign is not None:
            self._ledger.remove_slice(name)
            self._ledger.put_foreign_slice(foreign)
            return
        self._ledger.remove_foreign_slice(name)
        info, problems = parse_slice(obj)
        rv = str(meta_of(obj).get("resourceVersion", ""))
        for p in problems:
            self._ledger.warn_once(f"slice/{name}/{rv}/{p}", p)
        if info is None:
            self._ledger.remove_slice(name)
        else:
            self._ledger.put_slice(info)

    def _on_node(self, etype: str, obj: Mapping[str, Any]) -> None:
        name = str(meta_of(obj).get("name", ""))
        if etype == "DELETED":
            self._ledger.remove_node(name)
            return
        try:
            info = parse_node(obj, self.tolerated_taints)
        except (ValueError, TypeError) as e:
            self._ledger.warn_once(f"node/{name}/{e}", f"node {name}: {e}")
            return
        self._ledger.put_node(info)

    def _on_claim(self, etype: str, obj: Mapping[str, Any]) -> None:
        meta = meta_of(obj)
        key = f"{meta.get('namespace')}/{meta.get('name')}"
        uid = str(meta.get("uid", ""))
        if etype == "DELETED":
            self._ledger.remove_claim(key, uid)
            return
        if self._ledger.is_gone(uid):
            return  # an event of a claim we already deleted to re-pin: its successor counts
        info = parse_claim(obj)
        if info.problem:
            self._ledger.warn_once(f"claim/{key}/{info.resource_version}",
                                   f"pin of claim {key}: {info.problem}")
        if info.foreign_results and not info.allocated:
            self._ledger.warn_once(f"claim-foreign/{key}/{uid}",
                                   f"claim {key}: allocated by another driver only")
        self._ledger.put_claim(info, foreign_claim_results(obj, self.outside))

    def _on_pod(self, etype: str, obj: Mapping[str, Any]) -> None:
        meta = meta_of(obj)
        key = f"{meta.get('namespace')}/{meta.get('name')}"
        if etype == "DELETED":
            self._ledger.remove_pod(key, str(meta.get("uid", "")))
            return
        try:
            info = parse_pod(obj)
        except (ValueError, TypeError) as e:
            self._ledger.warn_once(f"pod/{key}/{e}", f"pod {key}: {e}")
            return
        self._ledger.put_pod(info, pod_gpus(obj, self.outside))

    # -- reading -------------------------------------------------------------------------------
    def state(self) -> ClusterState | None:
        """The current placement state (``None`` when no node is schedulable).  Hold the lock."""
        with self.lock:
            return self._ledger.state()

    def devices(self) -> DeviceIndex:
        with self.lock:
            return self._ledger.devices()

    def claim(self, namespace: str, name: str) -> ClaimInfo | None:
        with self.lock:
            return self._ledger.claims.get(f"{namespace}/{name}")

    def pod(self, namespace: str, name: str) -> PodInfo | None:
        with self.lock:
            return self._ledger.pods.get(f"{namespace}/{name}")

    def claims(self) -> list[ClaimInfo]:
        with self.lock:
            return list(self._ledger.claims.values())

    def pods(self) -> list[PodInfo]:
        with self.lock:
            return list(self._ledger.pods.values())

    def nodes(self) -> list[NodeInfo]:
        with self.lock:
            return list(self._ledger.nodes.values())

    def stale_reason(self, namespace: str, claim: str) -> str:
        """Why our pin in claim ``namespace/claim`` cannot be counted ('' when it is fine)."""
        with self.lock:
            return self._ledger.stale_reason(f"{namespace}/{claim}")

    def usage_of(self, namespace: str, claim: str) -> tuple[Assignment, ...]:
        """What our view counts for claim ``namespace/claim`` right now (hold or claim)."""
        with self.lock:
            return self._ledger.usage_of(f"{namespace}/{claim}")

    def usage_by_server(self) -> tuple[dict[str, list[Assignment]], list[Assignment]]:
        """What the view counts, split: per hub server (``user/server``) and everything else.

        The AISpike service counts its admitted servers from this (their real pins and pods,
        not its own promise) and the rest as other workloads'.
        """
        with self.lock:
            return self._ledger.usage_by_server(self.hub_id, self.owns_unnamed)

    # -- placement support ---------------------------------------------------------------------
    def hold(self, namespace: str, claim: str, assignment: Assignment) -> None:
        """Count ``assignment`` for the claim about to be created (replaces what it counted)."""
        with self.lock:
            self._ledger.hold(f"{namespace}/{claim}", assignment)

    def drop(self, namespace: str, claim: str, uid: str = "") -> None:
        """Stop counting claim ``namespace/claim`` (deleted by us; ``uid`` ignores its echoes)."""
        with self.lock:
            self._ledger.drop(f"{namespace}/{claim}", uid)

    def drop_hold(self, namespace: str, claim: str) -> None:
        """Forget the hold for claim ``namespace/claim`` only (its creation did not happen)."""
        with self.lock:
            self._ledger.drop_hold(f"{namespace}/{claim}")

    # -- waiting -------------------------------------------------------------------------------
    def _notify(self, key: str) -> None:
        for event in self._waiters.pop(key, []):
            event.set()

    @contextlib.contextmanager
    def changes(self, *keys: str) -> Iterator[threading.Event]:
        """An event set when any of ``keys`` ("<ns>/<name>" of a pod or claim) changes."""
        event = threading.Event()
        with self.lock:
            for k in keys:
                self._waiters.setdefault(k, []).append(event)
        try:
            yield event
        finally:
            with self.lock:
                for k in keys:
                    lst = self._waiters.get(k)
                    if lst and event in lst:
                        lst.remove(event)
                        if not lst:
                            del self._waiters[k]

    def wait_for(self, check: Callable[[], Any], keys: Iterable[str], timeout: float) -> Any:
        """Re-run ``check`` whenever one of ``keys`` changes, until truthy or ``timeout``."""
        deadline = time.monotonic() + timeout
        keys = tuple(keys)
        while True:
            with self.changes(*keys) as changed:
                result = check()
                if result or self.stopped:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return result
                changed.wait(min(remaining, 2.0))
