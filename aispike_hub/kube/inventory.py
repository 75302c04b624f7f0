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

All of it is rebuilt from the API at start, so a restarted service loses nothing.  Objects that do
not follow the contract (a slice of another driver, a device without uuid, a uuid published
twice, a claim result on a device that vanished, a claim of another driver) are skipped with one
logged warning each; they never crash the watch and nothing is pinned to a device we cannot see.

The parsers (``parse_*``) and the usage rules (:func:`claim_usage`, :func:`pod_usage`) are pure
functions of plain ``dict`` API objects; :class:`Inventory` adds the threads and keeps one
:class:`ClusterState` up to date incrementally through its ``commit``/``release`` (the placement
core's own invariant checks), so a placement at 1,000 nodes does not rebuild arrays.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from traitlets import Dict, Float, Integer, List, Unicode
from traitlets.config import LoggingConfigurable

from aispike_hub.kube.api import KubeJson
from aispike_hub.kube.claims import (
    HUB_SERVER_ANNOTATION,
    SERVER_LABEL,
    Placement,
    is_ours,
    placement_from_claim,
    request_from_json,
)
from aispike_hub.kube.claims import REQUEST_ANNOTATION as _REQUEST_ANNOTATION
from aispike_hub.kube.nodespec import cpu_milli as parse_cpu_milli
from aispike_hub.kube.nodespec import quantity_mib
from aispike_hub.kube.slices import DATASETS_ANNOTATION, DRIVER, MEMORY_CAPACITY
from aispike_hub.kube.slices import parse_datasets_annotation as _parse_datasets
from aispike_hub.model import Assignment, Gpu, Node, SliceRequest
from aispike_hub.placement.state import ClusterState, OverCommitError

log = logging.getLogger(__name__)

KINDS = ("resourceslices", "nodes", "resourceclaims", "pods")

CLAIM_FINALIZER = "resource.kubernetes.io/delete-protection"
"""Finalizer kube-scheduler adds to a claim before it writes the allocation (and keeps while
the claim is allocated): a claim carrying it must not be deleted to re-pin."""


# --- parsed objects ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SliceInfo:
    """The part of one of our ResourceSlices that placement needs."""

    name: str
    node: str
    pool: str
    generation: int
    gpus: tuple[Gpu, ...]
    devices: Mapping[str, int]
    """Device name -> GPU index."""


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A Node's allocatable CPU/RAM, labels, cached images and datasets; schedulable or why not."""

    name: str
    cpu_milli: int
    memory_mib: int
    labels: tuple[tuple[str, str], ...]
    images: tuple[tuple[str, int], ...]
    datasets: tuple[tuple[str, int], ...]
    unschedulable: str = ""
    """Why pods cannot go there now ('' when they can)."""


@dataclass(frozen=True, slots=True)
class AllocatedDevice:
    pool: str
    device: str
    memory_mib: int | None
    """``consumedCapacity.memory`` in MiB; None when not recorded (the whole device)."""


@dataclass(frozen=True, slots=True)
class ClaimInfo:
    """What placement needs of one ResourceClaim (ours or anyone's)."""

    namespace: str
    name: str
    uid: str
    resource_version: str
    created: str
    allocated: tuple[AllocatedDevice, ...] = ()
    is_allocated: bool = False
    foreign_results: int = 0
    """Allocation results of other drivers (ignored)."""
    ours: bool = False
    server: str = ""
    placement: Placement | None = None
    request: SliceRequest | None = None
    owner_pod: str = ""
    reserved_for: tuple[str, ...] = ()
    deleting: bool = False
    allocating: bool = False
    """kube-scheduler put its delete-protection finalizer on and is writing the allocation."""
    problem: str = ""
    """Why our annotations could not be read (the claim then counts only through allocation)."""
    hub_server: str = ""
    """``user/server`` of the hub server this claim belongs to ('' for other workloads)."""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class PodInfo:
    """What placement needs of one Pod: where it runs, what it requests, which claims it uses."""

    namespace: str
    name: str
    uid: str
    node: str
    cpu_milli: int
    memory_mib: int
    phase: str
    claim_names: tuple[str, ...] = ()
    server: str = ""
    unschedulable: str = ""
    """Message of ``PodScheduled=False`` (reason Unschedulable), '' otherwise."""
    deleting: bool = False
    created: str = ""
    hub_server: str = ""
    """``user/server`` of the hub server this pod runs ('' for other workloads)."""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def counts(self) -> bool:
        """True when the pod holds CPU and RAM on its node (bound, not finished)."""
        return bool(self.node) and self.phase not in ("Succeeded", "Failed")

    @property
    def running(self) -> bool:
        return self.phase == "Running" and bool(self.node) and not self.deleting


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _attr(attributes: Mapping[str, Any], name: str) -> Any:
    value = attributes.get(name)
    if value is None:
        value = attributes.get(f"{DRIVER}/{name}")
    if not isinstance(value, Mapping) or len(value) != 1:
        return None
    return next(iter(value.values()))


def parse_slice(obj: Mapping[str, Any]) -> tuple[SliceInfo | None, list[str]]:
    """Our slice's GPUs, plus a problem per device (or for the slice) that had to be skipped.

    A slice of another driver, or one not bound to a single node, gives ``None``.  A device that
    breaks the contract is skipped, the slice's other devices are kept.
    """
    name = str(_meta(obj).get("name", "?"))
    spec = obj.get("spec") or {}
    if spec.get("driver") != DRIVER:
        return None, [f"slice {name}: driver {spec.get('driver')!r} is not {DRIVER}"]
    node = spec.get("nodeName")
    if not node or not isinstance(node, str):
        return None, [f"slice {name}: not bound to one node (nodeName missing)"]
    pool = spec.get("pool") or {}
    try:
        generation = int(pool.get("generation", 0))
    except (TypeError, ValueError):
        return None, [f"slice {name}: bad pool generation {pool.get('generation')!r}"]
    problems: list[str] = []
    gpus: list[Gpu] = []
    devices: dict[str, int] = {}
    raw_devices = spec.get("devices")
    if not isinstance(raw_devices, list):
        return None, [f"slice {name}: devices is not a list"]
    for dev in raw_devices:
        try:
            gpu = _parse_device(dev)
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            dname = dev.get("name", "?") if isinstance(dev, Mapping) else "?"
            problems.append(f"slice {name} device {dname}: {e}")
            continue
        if gpu.index in devices.values():
            problems.append(f"slice {name} device {dev['name']}: duplicate index {gpu.index}")
            continue
        gpus.append(gpu)
        devices[str(dev["name"])] = gpu.index
    info = SliceInfo(name, node, str(pool.get("name") or node), generation, tuple(gpus), devices)
    return info, problems


def _parse_device(dev: Mapping[str, Any]) -> Gpu:
    if not dev.get("name"):
        raise ValueError("no name")
    attributes = dev.get("attributes") or {}
    gpu_uuid = _attr(attributes, "uuid")
    if not gpu_uuid or not isinstance(gpu_uuid, str):
        raise ValueError("no uuid attribute (placement pins by uuid)")
    model = _attr(attributes, "model")
    if not model or not isinstance(model, str):
        raise ValueError("no model attribute")
    index = _attr(attributes, "index")
    if not isinstance(index, int) or isinstance(index, bool):
        raise ValueError(f"index attribute {index!r} is not an int")
    capacity = (dev.get("capacity") or {}).get(MEMORY_CAPACITY) or {}
    if "value" not in capacity:
        raise ValueError(f"no {MEMORY_CAPACITY} capacity")
    memory = quantity_mib(str(capacity["value"]))
    numa = _attr(attributes, "numaNode")
    return Gpu(
        index=index,
        model=model,
        memory_mib=memory,
        uuid=gpu_uuid,
        nvlink_domain=str(_attr(attributes, "nvlinkDomain") or ""),
        pcie_switch=str(_attr(attributes, "pcieSwitch") or ""),
        numa_node=numa if isinstance(numa, int) and not isinstance(numa, bool) else -1,
        mig_profile=str(_attr(attributes, "mig") or ""),
    )


def parse_node(obj: Mapping[str, Any], tolerated_taints: Iterable[str] = ()) -> NodeInfo:
    """A Node's placement facts.  Raises ``ValueError`` when its allocatable cannot be read."""
    meta = _meta(obj)
    name = str(meta.get("name", ""))
    if not name:
        raise ValueError("node without a name")
    status = obj.get("status") or {}
    spec = obj.get("spec") or {}
    alloc = status.get("allocatable") or status.get("capacity") or {}
    cpu = parse_cpu_milli(alloc.get("cpu", "0"))
    memory = quantity_mib(alloc.get("memory", "0"))
    images: dict[str, int] = {}
    for image in status.get("images") or []:
        for image_name in image.get("names") or []:
            images[str(image_name)] = int(image.get("sizeBytes") or 0)
    try:
        datasets = _parse_datasets((meta.get("annotations") or {}).get(DATASETS_ANNOTATION))
    except (ValueError, KeyError, TypeError) as e:
        log.warning("node %s: ignoring its %s annotation: %s", name, DATASETS_ANNOTATION, e)
        datasets = {}
    why = ""
    tolerated = set(tolerated_taints)
    ready = [c for c in status.get("conditions") or [] if c.get("type") == "Ready"]
    if spec.get("unschedulable"):
        why = "cordoned"
    elif not ready or ready[0].get("status") != "True":
        why = "not Ready"
    else:
        for taint in spec.get("taints") or []:
            if taint.get("effect") in ("NoSchedule", "NoExecute") and (
                taint.get("key") not in tolerated
            ):
                why = f"taint {taint.get('key')}"
                break
    return NodeInfo(
        name=name,
        cpu_milli=cpu,
        memory_mib=memory,
        labels=tuple(sorted((str(k), str(v)) for k, v in (meta.get("labels") or {}).items())),
        images=tuple(sorted(images.items())),
        datasets=tuple(sorted(datasets.items())),
        unschedulable=why,
    )


def parse_claim(obj: Mapping[str, Any]) -> ClaimInfo:
    """A claim's allocation on our devices and, for our own claims, the pin it carries."""
    meta = _meta(obj)
    status = obj.get("status") or {}
    allocation = status.get("allocation") or None
    allocated: list[AllocatedDevice] = []
    foreign = 0
    if allocation:
        for result in (allocation.get("devices") or {}).get("results") or []:
            if result.get("driver") != DRIVER:
                foreign += 1
                continue
            consumed = (result.get("consumedCapacity") or {}).get(MEMORY_CAPACITY)
            allocated.append(
                AllocatedDevice(
                    str(result.get("pool", "")),
                    str(result.get("device", "")),
                    quantity_mib(str(consumed)) if consumed is not None else None,
                )
            )
    owner = next(
        (o.get("name", "") for o in meta.get("ownerReferences") or [] if o.get("kind") == "Pod"),
        "",
    )
    reserved = tuple(
        str(r.get("name", "")) for r in status.get("reservedFor") or [] if r.get("resource")
        == "pods"
    )
    info = ClaimInfo(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        resource_version=str(meta.get("resourceVersion", "")),
        created=str(meta.get("creationTimestamp", "")),
        allocated=tuple(allocated),
        is_allocated=bool(allocation),
        foreign_results=foreign,
        owner_pod=str(owner),
        reserved_for=reserved,
        deleting=bool(meta.get("deletionTimestamp")),
        allocating=not allocation and CLAIM_FINALIZER in (meta.get("finalizers") or []),
        hub_server=_hub_server(meta),
    )
    if not is_ours(obj):
        return info
    server = str((meta.get("labels") or {}).get(SERVER_LABEL, ""))
    try:
        placement = placement_from_claim(obj)
        text = (meta.get("annotations") or {}).get(_REQUEST_ANNOTATION)
        request = request_from_json(text) if text else None
    except ValueError as e:
        return _replace(info, ours=True, server=server, problem=str(e))
    return _replace(info, ours=True, server=server, placement=placement, request=request)


def _hub_server(meta: Mapping[str, Any]) -> str:
    """The ``user/server`` key of :data:`HUB_SERVER_ANNOTATION` ('' when absent or malformed)."""
    value = (meta.get("annotations") or {}).get(HUB_SERVER_ANNOTATION)
    return value if isinstance(value, str) and "/" in value and len(value) < 1024 else ""


def _desc(text: str) -> tuple[int, ...]:
    """Sort key that orders strings (RFC 3339 times) newest first."""
    return tuple(-ord(c) for c in text)


def _replace(info: ClaimInfo, **changes: Any) -> ClaimInfo:
    from dataclasses import replace

    return replace(info, **changes)


def _container_requests(container: Mapping[str, Any]) -> tuple[int, int]:
    requests = (container.get("resources") or {}).get("requests") or {}
    return parse_cpu_milli(requests.get("cpu", "0")), quantity_mib(requests.get("memory", "0"))


def parse_pod(obj: Mapping[str, Any]) -> PodInfo:
    """A pod's node, effective CPU/RAM requests (as the scheduler counts them) and claims."""
    meta = _meta(obj)
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    cpu = mem = 0
    for c in spec.get("containers") or []:
        c_cpu, c_mem = _container_requests(c)
        cpu += c_cpu
        mem += c_mem
    for c in spec.get("initContainers") or []:
        c_cpu, c_mem = _container_requests(c)
        cpu, mem = max(cpu, c_cpu), max(mem, c_mem)
    overhead = spec.get("overhead") or {}
    cpu += parse_cpu_milli(overhead.get("cpu", "0"))
    mem += quantity_mib(overhead.get("memory", "0"))
    claims = tuple(
        str(c["resourceClaimName"])
        for c in spec.get("resourceClaims") or []
        if c.get("resourceClaimName")
    )
    unschedulable = ""
    for cond in status.get("conditions") or []:
        if (
            cond.get("type") == "PodScheduled"
            and cond.get("status") == "False"
            and cond.get("reason") == "Unschedulable"
        ):
            unschedulable = str(cond.get("message") or "unschedulable")
    return PodInfo(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        node=str(spec.get("nodeName") or ""),
        cpu_milli=cpu,
        memory_mib=mem,
        phase=str(status.get("phase") or "Pending"),
        claim_names=claims,
        server=str((meta.get("labels") or {}).get(SERVER_LABEL, "")),
        unschedulable=unschedulable,
        deleting=bool(meta.get("deletionTimestamp")),
        created=str(meta.get("creationTimestamp", "")),
        hub_server=_hub_server(meta),
    )


# --- usage rules ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceIndex:
    """Where each published device is: (pool, device) and uuid -> (node, GPU index, MiB)."""

    by_device: Mapping[tuple[str, str], tuple[str, int, int]]
    by_uuid: Mapping[str, tuple[str, int, int]]


@dataclass(frozen=True, slots=True)
class Usage:
    """What one claim or pod takes: assignments, and whether the scheduler already decided it.

    ``hard`` usage (an allocation, a bound pod) is the scheduler's fact; ``soft`` usage (our pin
    not yet allocated) is our promise, and gives way when a fact contradicts it (the pin is stale).
    """

    assignments: tuple[Assignment, ...]
    hard: bool
    problems: tuple[str, ...] = ()


def claim_usage(claim: ClaimInfo, devices: DeviceIndex, bound_pod: bool) -> Usage:
    """GPU memory (and, before its pod is bound, CPU/RAM) that ``claim`` takes.

    Allocated: each result on one of our devices takes its ``consumedCapacity.memory`` (the whole
    device when none is recorded).  Ours and not allocated: the pinned GPUs take the pinned MiB.
    CPU and RAM of our placement count until a bound pod uses the claim (then the pod counts).
    """
    problems: list[str] = []
    cpu = mem = 0
    if claim.ours and claim.placement is not None and not bound_pod:
        cpu, mem = claim.placement.cpu_milli, claim.placement.memory_mib
    if claim.is_allocated:
        per_node: dict[str, dict[int, int]] = {}
        for dev in claim.allocated:
            where = devices.by_device.get((dev.pool, dev.device))
            if where is None:
                problems.append(
                    f"claim {claim.key}: allocated device {dev.pool}/{dev.device} is not published"
                )
                continue
            node, index, cap = where
            gpus = per_node.setdefault(node, {})
            gpus[index] = gpus.get(index, 0) + (cap if dev.memory_mib is None else dev.memory_mib)
        if claim.ours and claim.placement is not None and claim.placement.node not in per_node:
            per_node.setdefault(claim.placement.node, {})
        out = tuple(
            Assignment(node, tuple(g), tuple(g.values()),
                       cpu if claim.placement and node == claim.placement.node else 0,
                       mem if claim.placement and node == claim.placement.node else 0,
                       claim.key)
            for node, g in per_node.items()
        )
        return Usage(out, True, tuple(problems))
    if not claim.ours or claim.placement is None or claim.deleting:
        return Usage((), False, tuple(problems))
    p = claim.placement
    for g in p.gpus:
        where = devices.by_uuid.get(g.uuid)
        if where is None or where[0] != p.node or where[1] != g.index:
            problems.append(f"claim {claim.key}: pinned GPU {g.uuid} is no longer published"
                            f" on {p.node}")
    if problems:
        return Usage((), False, tuple(problems))
    pinned = p.assignment(claim.key)
    return Usage((Assignment(pinned.node, pinned.gpu_indices, pinned.gpu_memory_mib, cpu, mem,
                             claim.key),), False)


def pod_usage(pod: PodInfo) -> Usage:
    """CPU and RAM a bound, unfinished pod takes on its node."""
    if not pod.counts or (pod.cpu_milli == 0 and pod.memory_mib == 0):
        return Usage((), True)
    return Usage((Assignment(pod.node, (), (), pod.cpu_milli, pod.memory_mib, pod.key),), True)


# --- the live inventory ------------------------------------------------------------------------


@dataclass
class _Entry:
    usage: Usage
    committed: list[Assignment] = field(default_factory=list)
    stale: str = ""
    """Why a soft usage could not be committed (its pin is stale)."""


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
    pod_field_selector = Unicode(
        "status.phase!=Succeeded,status.phase!=Failed",
        help="Field selector for the pod watch: only pods that can hold CPU and RAM.",
    ).tag(config=True)

    def __init__(self, api_client: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.api = KubeJson(api_client)
        self.lock = threading.RLock()
        self._slices: dict[str, SliceInfo] = {}
        self._nodes: dict[str, NodeInfo] = {}
        self._claims: dict[str, ClaimInfo] = {}
        self._pods: dict[str, PodInfo] = {}
        self._bound_refs: dict[str, set[str]] = {}
        """claim key -> keys of bound pods that use it."""
        self._entries: dict[str, _Entry] = {}
        """usage key ("claim:<ns>/<name>", "pod:<ns>/<name>", "hold:<ns>/<name>") -> entry."""
        self._gone: deque[str] = deque(maxlen=50_000)
        self._gone_set: set[str] = set()
        self._state: ClusterState | None = None
        self._devices = DeviceIndex({}, {})
        self._topology_dirty = True
        self._warned: set[str] = set()
        self._waiters: dict[str, list[threading.Event]] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._synced: dict[str, threading.Event] = {k: threading.Event() for k in KINDS}
        self.events_seen = 0
        self.relists = 0

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self, timeout: float = 120) -> Inventory:
        """Start one list+watch thread per kind and wait until each has listed once."""
        for kind in KINDS:
            t = threading.Thread(target=self._run, args=(kind,), name=f"inventory-{kind}",
                                 daemon=True)
            t.start()
            self._threads.append(t)
        deadline = time.monotonic() + timeout
        for kind, synced in self._synced.items():
            if not synced.wait(max(0.0, deadline - time.monotonic())):
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

    def _run(self, kind: str) -> None:
        query = {"fieldSelector": self.pod_field_selector} if kind == "pods" else None
        backoff = 0.5
        while not self._stop.is_set():
            try:
                items, rv = self.api.list(kind, query=query)
                self._replace_all(kind, items)
                self._synced[kind].set()
                backoff = 0.5
                listed = time.monotonic()
                while not self._stop.is_set():
                    remaining = self.resync_seconds - (time.monotonic() - listed)
                    if remaining <= 0:
                        break
                    timeout = int(max(1, min(self.watch_timeout_seconds, remaining)))
                    gone = False
                    for etype, obj in self.api.watch(kind, rv, timeout_seconds=timeout,
                                                     query=query):
                        if self._stop.is_set():
                            return
                        if etype == "ERROR":
                            gone = True
                            break
                        rv = str(_meta(obj).get("resourceVersion") or rv)
                        if etype != "BOOKMARK":
                            self._apply(kind, etype, obj)
                    if gone:
                        break
            except Exception as e:
                if self._stop.is_set():
                    return
                log.warning("inventory: %s list/watch failed (%s); retrying in %.1f s",
                            kind, e, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30)

    # -- events --------------------------------------------------------------------------------
    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            if len(self._warned) > 100_000:
                self._warned.clear()
            self._warned.add(key)
            log.warning("inventory: skipping %s", message)

    def _replace_all(self, kind: str, items: list[dict[str, Any]]) -> None:
        with self.lock:
            self.relists += 1
            seen: set[str] = set()
            for obj in items:
                meta = _meta(obj)
                key = (f"{meta.get('namespace')}/{meta.get('name')}" if meta.get("namespace")
                       else str(meta.get("name")))
                seen.add(key)
                self._apply(kind, "ADDED", obj)
            stores: dict[str, Mapping[str, Any]] = {
                "resourceslices": self._slices, "nodes": self._nodes,
                "resourceclaims": self._claims, "pods": self._pods,
            }
            store = stores[kind]
            for key in [k for k in store if k not in seen]:
                ns, _, name = key.rpartition("/")
                self._apply(kind, "DELETED", {"metadata": {"namespace": ns, "name": name}})
            if kind in ("nodes", "resourceslices"):
                self._topology_dirty = True  # a full re-list also resets the change journal

    def _apply(self, kind: str, etype: str, obj: Mapping[str, Any]) -> None:
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
        name = str(_meta(obj).get("name", ""))
        old = self._slices.get(name)
        if etype == "DELETED":
            if old is not None:
                del self._slices[name]
                self._topology_dirty = True
            return
        info, problems = parse_slice(obj)
        rv = str(_meta(obj).get("resourceVersion", ""))
        for p in problems:
            self._warn_once(f"slice/{name}/{rv}/{p}", p)
        if info is None:
            if old is not None:
                del self._slices[name]
                self._topology_dirty = True
            return
        if info != old:
            self._slices[name] = info
            self._topology_dirty = True

    def _on_node(self, etype: str, obj: Mapping[str, Any]) -> None:
        name = str(_meta(obj).get("name", ""))
        old = self._nodes.get(name)
        if etype == "DELETED":
            if old is not None:
                del self._nodes[name]
                self._topology_dirty = True
            return
        try:
            info = parse_node(obj, self.tolerated_taints)
        except (ValueError, TypeError) as e:
            self._warn_once(f"node/{name}/{e}", f"node {name}: {e}")
            return
        if info == old:
            return
        self._nodes[name] = info
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

    def _on_claim(self, etype: str, obj: Mapping[str, Any]) -> None:
        meta = _meta(obj)
        key = f"{meta.get('namespace')}/{meta.get('name')}"
        uid = str(meta.get("uid", ""))
        old = self._claims.get(key)
        if etype == "DELETED":
            if old is not None and (not uid or old.uid == uid):
                del self._claims[key]
                self._set_usage(f"claim:{key}", None)
                self._notify(key)
            return
        if uid and uid in self._gone_set:
            return  # an event of a claim we already deleted to re-pin: its successor counts
        info = parse_claim(obj)
        if info.problem:
            self._warn_once(f"claim/{key}/{info.resource_version}",
                            f"pin of claim {key}: {info.problem}")
        if info.foreign_results and not info.allocated:
            self._warn_once(f"claim-foreign/{key}/{uid}",
                            f"claim {key}: allocated by another driver only")
        if old == info:
            return
        self._claims[key] = info
        self._set_usage(f"hold:{key}", None)
        self._refresh_claim(key)
        self._notify(key)

    def _refresh_claim(self, key: str) -> None:
        info = self._claims.get(key)
        if info is None:
            return
        if self._topology_dirty or self._state is None:
            # The device index is about to be rebuilt; the rebuild recomputes every claim.
            self._set_usage(f"claim:{key}", None)
            self._entries[f"claim:{key}"] = _Entry(Usage((), info.is_allocated))
            return
        usage = claim_usage(info, self._devices, bool(self._bound_refs.get(key)))
        for p in usage.problems:
            self._warn_once(f"claim-usage/{key}/{info.resource_version}/{p}", p)
        self._set_usage(f"claim:{key}", usage)

    def _on_pod(self, etype: str, obj: Mapping[str, Any]) -> None:
        meta = _meta(obj)
        key = f"{meta.get('namespace')}/{meta.get('name')}"
        uid = str(meta.get("uid", ""))
        old = self._pods.get(key)
        if etype == "DELETED":
            if old is None or (uid and old.uid != uid):
                return
            del self._pods[key]
            new: PodInfo | None = None
        else:
            try:
                new = parse_pod(obj)
            except (ValueError, TypeError) as e:
                self._warn_once(f"pod/{key}/{e}", f"pod {key}: {e}")
                return
            if new == old:
                return
            self._pods[key] = new
        self._set_usage(f"pod:{key}", pod_usage(new) if new is not None else None)
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
        self._notify(key)

    # -- usage bookkeeping ---------------------------------------------------------------------
    def _set_usage(self, ukey: str, usage: Usage | None) -> None:
        old = self._entries.pop(ukey, None)
        if self._state is not None and not self._topology_dirty and old is not None:
            for a in old.committed:
                self._state.release(a)
        if usage is None or not usage.assignments:
            return
        entry = _Entry(usage)
        self._entries[ukey] = entry
        if self._state is not None and not self._topology_dirty:
            self._commit(ukey, entry)

    def _commit(self, ukey: str, entry: _Entry) -> None:
        state = self._state
        assert state is not None
        entry.committed = []
        entry.stale = ""
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
                    self._notify(ukey.partition(":")[2])
                    return
                if not self._evict_soft_for(a):
                    self._warn_once(f"overcommit/{ukey}/{e}",
                                    f"part of {ukey}: the scheduler's facts exceed our view "
                                    f"({e}); counting what fits")
                    clamped = self._clamp(a)
                    if clamped is not None:
                        state.commit(clamped)
                        entry.committed.append(clamped)
                    continue
            entry.committed.append(a)

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
        candidates = []
        for ukey, entry in self._entries.items():
            if entry.usage.hard or not entry.committed:
                continue
            on_node = [c for c in entry.committed if c.node == a.node]
            if not on_node:
                continue
            overlap = any(set(c.gpu_indices) & wanted for c in on_node)
            claim = self._claims.get(ukey.partition(":")[2])
            # The newest pin is the least likely to be in the scheduler's hands already.
            created = claim.created if claim is not None and ukey.startswith("claim:") else "~"
            candidates.append((not overlap, created, ukey, entry))
        candidates.sort(key=lambda c: (c[0], _desc(c[1]), c[2]))
        for _, _, ukey, entry in candidates:
            for c in entry.committed:
                self._state.release(c)
            entry.committed = []
            entry.stale = f"room on {a.node} was taken by an allocation ({a.owner})"
            self._notify(ukey.partition(":")[2])
            if self._try_commit(a):
                return True
        return False

    def _clamp(self, a: Assignment) -> Assignment | None:
        state = self._state
        assert state is not None
        n = state.node_index[a.node]
        idx, mem = [], []
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
        for s in self._slices.values():
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
                        self._warn_once(f"dupindex/{node}/{index}",
                                        f"GPU index {index} published twice on node {node}")
                        continue
                    seen_index.add(index)
                    if gpu.uuid in by_uuid:
                        dup_uuids.add(gpu.uuid)
                    by_uuid[gpu.uuid] = (node, index, gpu.memory_mib)
                    by_device[(s.pool, dname)] = (node, index, gpu.memory_mib)
                    node_gpus.setdefault(node, []).append(gpu)
        for u in dup_uuids:
            self._warn_once(f"dupuuid/{u}", f"GPU uuid {u}: published more than once, so a "
                            "pin on it would be ambiguous; not placing on it")
            del by_uuid[u]
        self._devices = DeviceIndex(by_device, by_uuid)
        nodes: list[Node] = []
        for name in sorted(self._nodes):
            info = self._nodes[name]
            if info.unschedulable or not self._selected(info):
                continue
            gpus = tuple(g for g in node_gpus.get(name, []) if g.uuid not in dup_uuids)
            nodes.append(Node(name=name, cpu_milli=info.cpu_milli, memory_mib=info.memory_mib,
                              gpus=gpus, labels=dict(info.labels), images=dict(info.images),
                              datasets=dict(info.datasets)))
        # Usage depends on the device index: recompute every claim's, facts first, pins after.
        for key in list(self._claims):
            claim = self._claims[key]
            usage = claim_usage(claim, self._devices, bool(self._bound_refs.get(key)))
            for p in usage.problems:
                self._warn_once(f"claim-usage/{key}/{claim.resource_version}/{p}", p)
            self._entries[f"claim:{key}"] = _Entry(usage)
            if not usage.assignments:
                del self._entries[f"claim:{key}"]
        self._state = ClusterState(nodes) if nodes else None
        self._topology_dirty = False
        if self._state is None:
            return
        order = sorted(self._entries.items(),
                       key=lambda kv: (not kv[1].usage.hard, kv[0].startswith("hold:"), kv[0]))
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
        """The current placement state (``None`` when no node is schedulable).  Hold the lock."""
        with self.lock:
            if self._topology_dirty or self._state is None:
                self._rebuild()
            return self._state

    def devices(self) -> DeviceIndex:
        with self.lock:
            self.state()
            return self._devices

    def claim(self, namespace: str, name: str) -> ClaimInfo | None:
        with self.lock:
            return self._claims.get(f"{namespace}/{name}")

    def pod(self, namespace: str, name: str) -> PodInfo | None:
        with self.lock:
            return self._pods.get(f"{namespace}/{name}")

    def claims(self) -> list[ClaimInfo]:
        with self.lock:
            return list(self._claims.values())

    def pods(self) -> list[PodInfo]:
        with self.lock:
            return list(self._pods.values())

    def nodes(self) -> list[NodeInfo]:
        with self.lock:
            return list(self._nodes.values())

    def stale_reason(self, namespace: str, claim: str) -> str:
        """Why our pin in claim ``namespace/claim`` cannot be counted ('' when it is fine)."""
        with self.lock:
            self.state()
            key = f"{namespace}/{claim}"
            info = self._claims.get(key)
            if info is not None and (info.allocating or info.is_allocated):
                return ""  # the scheduler is allocating it: whatever we think, it won
            entry = self._entries.get(f"claim:{key}") or self._entries.get(f"hold:{key}")
            if entry is not None:
                return entry.stale
            if info is not None and info.ours and not info.is_allocated:
                usage = claim_usage(info, self._devices, False)
                return "; ".join(usage.problems)
            return ""

    def usage_of(self, namespace: str, claim: str) -> tuple[Assignment, ...]:
        """What our view counts for claim ``namespace/claim`` right now (hold or claim)."""
        with self.lock:
            key = f"{namespace}/{claim}"
            entry = self._entries.get(f"claim:{key}") or self._entries.get(f"hold:{key}")
            return tuple(entry.committed) if entry else ()

    def usage_by_server(self) -> tuple[dict[str, list[Assignment]], list[Assignment]]:
        """What the view counts, split: per hub server (``user/server``) and everything else.

        The AISpike service counts its admitted servers from this (their real pins and pods,
        not its own promise) and the rest as other workloads'.
        """
        with self.lock:
            self.state()
            ours: dict[str, list[Assignment]] = {}
            other: list[Assignment] = []
            for ukey, entry in self._entries.items():
                if not entry.committed:
                    continue
                kind, _, key = ukey.partition(":")
                info: ClaimInfo | PodInfo | None = (
                    self._pods.get(key) if kind == "pod" else self._claims.get(key))
                hub = info.hub_server if info is not None else ""
                if hub:
                    ours.setdefault(hub, []).extend(entry.committed)
                else:
                    other.extend(entry.committed)
            return ours, other

    # -- placement support ---------------------------------------------------------------------
    def hold(self, namespace: str, claim: str, assignment: Assignment) -> None:
        """Count ``assignment`` for the claim about to be created (replaces what it counted)."""
        with self.lock:
            key = f"{namespace}/{claim}"
            self._set_usage(f"claim:{key}", None)
            self._set_usage(f"hold:{key}", Usage((assignment,), False))

    def drop(self, namespace: str, claim: str, uid: str = "") -> None:
        """Stop counting claim ``namespace/claim`` (deleted by us; ``uid`` ignores its echoes)."""
        with self.lock:
            key = f"{namespace}/{claim}"
            if uid:
                if len(self._gone) == self._gone.maxlen:
                    self._gone_set.discard(self._gone[0])
                self._gone.append(uid)
                self._gone_set.add(uid)
            info = self._claims.get(key)
            if info is not None and (not uid or info.uid == uid):
                del self._claims[key]
                self._set_usage(f"claim:{key}", None)
            self._set_usage(f"hold:{key}", None)

    def drop_hold(self, namespace: str, claim: str) -> None:
        """Forget the hold for claim ``namespace/claim`` only (its creation did not happen)."""
        with self.lock:
            self._set_usage(f"hold:{namespace}/{claim}", None)

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
