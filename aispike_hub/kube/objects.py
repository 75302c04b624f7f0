"""The cluster objects placement reads, parsed from plain API ``dict`` objects (pure, no I/O).

Four kinds matter to placement, each reduced to a frozen record of what placement needs:

- ResourceSlices of our driver ``gpu.aispike.io`` (:func:`parse_slice` → :class:`SliceInfo`): one
  device per GPU with its ``memory`` capacity and the attributes ``uuid``, ``model``, ``index``,
  ``nvlinkDomain``, ``pcieSwitch``, ``numaNode``, ``mig`` → :class:`aispike_hub.model.Gpu`;
- Nodes (:func:`parse_node` → :class:`NodeInfo`): allocatable CPU and RAM, labels,
  ``status.images``, the ``aispike.io/datasets`` annotation, and why pods cannot go there
  (cordoned, not Ready, an untolerated taint);
- ResourceClaims (:func:`parse_claim` → :class:`ClaimInfo`): the allocation on our devices, and
  for our own pinned claims the placement and request they carry;
- Pods (:func:`parse_pod` → :class:`PodInfo`): node, effective CPU/RAM requests as the scheduler
  counts them, the claims they use.

Objects that do not follow the contract (a slice of another driver, a device without uuid, a
damaged pin annotation) are reported, never raised past the parser: a slice's bad devices come
back as problems, a claim's damaged pin as :attr:`ClaimInfo.problem`.  The inventory
(:mod:`aispike_hub.kube.inventory`) and the spawner's node watcher
(:mod:`aispike_hub.spawner.nodes`) share these parsers, so both read a Node the same way.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aispike_hub import sanity
from aispike_hub.kube import rejections
from aispike_hub.kube.claims import (
    HUB_SERVER_ANNOTATION,
    PLACEMENT_ANNOTATION,
    REQUEST_ANNOTATION,
    SERVER_LABEL,
    Placement,
    is_ours,
    placement_from_claim,
    request_from_json,
)
from aispike_hub.kube.nodespec import cpu_milli as parse_cpu_milli
from aispike_hub.kube.nodespec import quantity_mib
from aispike_hub.kube.slices import DATASETS_ANNOTATION, DRIVER, MEMORY_CAPACITY
from aispike_hub.kube.slices import parse_datasets_annotation as _parse_datasets
from aispike_hub.model import Gpu, SliceRequest
from aispike_hub.sanity import Rejected, loads_json, shorten, shorten_text
from aispike_hub.units import QuantityError

log = logging.getLogger(__name__)

CLAIM_FINALIZER = "resource.kubernetes.io/delete-protection"
"""Finalizer kube-scheduler adds to a claim before it writes the allocation (and keeps while
the claim is allocated): a claim carrying it must not be deleted to re-pin."""


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


def meta_of(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """An API object's ``metadata`` (empty when absent or not an object)."""
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    return meta if isinstance(meta, Mapping) else {}


def object_key(obj: Mapping[str, Any]) -> str:
    """``namespace/name`` of a namespaced object, ``name`` of a cluster-scoped one."""
    meta = meta_of(obj)
    namespace = meta.get("namespace")
    name = _shown(meta.get("name"))
    return f"{_shown(namespace)}/{name}" if namespace else name


def _shown(value: object) -> str:
    """A name for a message or a key: the string itself (cut), or a short repr of anything else
    (``str`` of a 5,000-digit int raises)."""
    return shorten_text(value) if isinstance(value, str) else shorten(value)


_MALFORMED = (ValueError, TypeError, KeyError, AttributeError, IndexError, RecursionError,
              OverflowError)
"""What reading a hostile object can raise; every parser turns these into :class:`Rejected`."""


def _rejected(what: str, e: BaseException) -> Rejected:
    """``e`` (raised while reading ``what``) as a :class:`Rejected` with a short reason."""
    if isinstance(e, Rejected):
        return Rejected(e.reason, f"{what}: {e.message}")
    if isinstance(e, QuantityError):
        return Rejected("bad_quantity", f"{what}: {shorten_text(str(e), 200)}")
    if isinstance(e, RecursionError):
        return Rejected("too_large", f"{what}: nested too deeply")
    return Rejected("malformed", f"{what}: {shorten_text(str(e) or type(e).__name__, 200)}")


def _label_pairs(meta: Mapping[str, Any], what: str) -> tuple[tuple[str, str], ...]:
    labels = sanity.mapping(meta.get("labels"), f"{what} labels")
    return tuple(sorted((str(k), str(v)) for k, v in labels.items()
                        if isinstance(v, str | int | float)))


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
    breaks the contract or leaves the sane ranges (:mod:`aispike_hub.sanity`: memory, index,
    a uuid already published by this slice, past 128 devices) is skipped, the slice's other
    devices are kept.  A slice that cannot be read at all gives ``None`` and one problem.
    """
    try:
        return _parse_slice(obj)
    except _MALFORMED as e:
        name = _shown(meta_of(obj).get("name", "?"))
        return None, [str(_rejected(f"slice {name}", e))]


def _parse_slice(obj: Mapping[str, Any]) -> tuple[SliceInfo | None, list[str]]:
    name = _shown(meta_of(obj).get("name", "?"))
    spec = sanity.mapping(obj.get("spec"), f"slice {name} spec")
    if spec.get("driver") != DRIVER:
        return None, [f"slice {name}: driver {shorten(spec.get('driver'))} is not {DRIVER}"]
    node = spec.get("nodeName")
    if not node or not isinstance(node, str):
        return None, [f"slice {name}: not bound to one node (nodeName missing)"]
    sanity.name(node, f"slice {name} nodeName")
    pool = sanity.mapping(spec.get("pool"), f"slice {name} pool")
    generation = pool.get("generation", 0)
    if isinstance(generation, bool) or not isinstance(generation, int) or not (
            0 <= generation <= sanity.MAX_BYTES):
        return None, [f"slice {name}: bad pool generation {shorten(generation)}"]
    problems: list[str] = []
    gpus: list[Gpu] = []
    devices: dict[str, int] = {}
    uuids: set[str] = set()
    raw_devices = spec.get("devices")
    if not isinstance(raw_devices, list):
        return None, [f"slice {name}: devices is not a list"]
    for n, dev in enumerate(raw_devices):
        dname = _shown(dev.get("name", "?")) if isinstance(dev, Mapping) else "?"
        if n >= sanity.MAX_DEVICES_PER_SLICE:
            problems.append(f"slice {name}: devices past the first "
                            f"{sanity.MAX_DEVICES_PER_SLICE} are refused")
            break
        try:
            gpu = _parse_device(dev)
        except _MALFORMED as e:
            problems.append(_rejected(f"slice {name} device {dname}", e).message)
            continue
        if gpu.index in devices.values():
            problems.append(f"slice {name} device {dname}: duplicate index {gpu.index}")
            continue
        if gpu.uuid in uuids:
            problems.append(f"slice {name} device {dname}: duplicate uuid "
                            f"{shorten(gpu.uuid)}")
            continue
        uuids.add(gpu.uuid)
        gpus.append(gpu)
        devices[str(dev["name"])] = gpu.index
    pool_name = pool.get("name") or node
    info = SliceInfo(name, node, sanity.name(pool_name, f"slice {name} pool name"), generation,
                     tuple(gpus), devices)
    return info, problems


def _parse_device(dev: Mapping[str, Any]) -> Gpu:
    if not isinstance(dev, Mapping):
        raise Rejected("malformed", f"expected an object, got {shorten(dev)}")
    if not dev.get("name"):
        raise ValueError("no name")
    sanity.name(dev["name"], "name")
    attributes = sanity.mapping(dev.get("attributes"), "attributes")
    gpu_uuid = _attr(attributes, "uuid")
    if not gpu_uuid or not isinstance(gpu_uuid, str):
        raise ValueError("no uuid attribute (placement pins by uuid)")
    sanity.name(gpu_uuid, "uuid attribute")
    model = _attr(attributes, "model")
    if not model or not isinstance(model, str):
        raise ValueError("no model attribute")
    sanity.name(model, "model attribute")
    index = _attr(attributes, "index")
    if not isinstance(index, int) or isinstance(index, bool):
        raise ValueError(f"index attribute {shorten(index)} is not an int")
    sanity.bounded_int(index, 0, sanity.MAX_GPU_INDEX, "index attribute")
    capacity = sanity.mapping(sanity.mapping(dev.get("capacity"), "capacity").get(
        MEMORY_CAPACITY), MEMORY_CAPACITY)
    if "value" not in capacity:
        raise ValueError(f"no {MEMORY_CAPACITY} capacity")
    memory = quantity_mib(_quantity_text(capacity["value"]))
    sanity.bounded_int(memory, sanity.MIN_GPU_MEMORY_MIB, sanity.MAX_GPU_MEMORY_MIB,
                       f"{MEMORY_CAPACITY} capacity (MiB)")
    numa = _attr(attributes, "numaNode")
    if not isinstance(numa, int) or isinstance(numa, bool) or not (
            -1 <= numa <= sanity.MAX_NUMA_NODE):
        numa = -1
    return Gpu(
        index=index,
        model=model,
        memory_mib=memory,
        uuid=gpu_uuid,
        nvlink_domain=_short_attr(attributes, "nvlinkDomain"),
        pcie_switch=_short_attr(attributes, "pcieSwitch"),
        numa_node=numa,
        mig_profile=_short_attr(attributes, "mig"),
    )


def _short_attr(attributes: Mapping[str, Any], name: str) -> str:
    """A string attribute ('' when absent); a value that is no sane name is refused."""
    value = _attr(attributes, name)
    if value is None or value == "":
        return ""
    return sanity.name(str(value) if isinstance(value, int | str) else value,
                       f"{name} attribute")


def _quantity_text(value: object) -> str | int:
    """A quantity as the API sends it (a string; an int from a hand-written object)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise Rejected("bad_quantity", f"expected a quantity, got {shorten(value)}")
    return value


def _cpu(value: object, what: str, hi: int = sanity.MAX_NODE_CPU_MILLI) -> int:
    return sanity.bounded_int(parse_cpu_milli(_quantity_text(value)), 0, hi, f"{what} (milli)")


def _memory(value: object, what: str, hi: int = sanity.MAX_NODE_MEMORY_MIB) -> int:
    return sanity.bounded_int(quantity_mib(_quantity_text(value)), 0, hi, f"{what} (MiB)")


def parse_node(obj: Mapping[str, Any], tolerated_taints: Iterable[str] = ()) -> NodeInfo:
    """A Node's placement facts.

    Raises :class:`~aispike_hub.sanity.Rejected` (a ``ValueError``) when its name or
    allocatable cannot be read or leave the sane ranges (CPU above 65,536 cores, RAM above
    256 TiB).  Parts that are only hints are cut, never fatal: a bad ``aispike.io/datasets``
    annotation reads as no datasets, a bad image entry is left out.
    """
    try:
        return _parse_node(obj, tolerated_taints)
    except _MALFORMED as e:
        raise _rejected(f"node {_shown(meta_of(obj).get('name', '?'))}", e) from None


def _parse_node(obj: Mapping[str, Any], tolerated_taints: Iterable[str]) -> NodeInfo:
    if not isinstance(obj, Mapping):
        raise Rejected("malformed", f"expected an object, got {shorten(obj)}")
    meta = meta_of(obj)
    name = meta.get("name", "")
    if not name:
        raise ValueError("node without a name")
    sanity.name(name, "name")
    status = sanity.mapping(obj.get("status"), "status")
    spec = sanity.mapping(obj.get("spec"), "spec")
    alloc = sanity.mapping(status.get("allocatable") or status.get("capacity"), "allocatable")
    cpu = _cpu(alloc.get("cpu", "0"), "allocatable cpu")
    memory = _memory(alloc.get("memory", "0"), "allocatable memory")
    images = _images(name, status.get("images"))
    datasets = _datasets(name, sanity.mapping(meta.get("annotations"), "annotations").get(
        DATASETS_ANNOTATION))
    why = ""
    tolerated = set(tolerated_taints)
    conditions = [c for c in sanity.entries(status.get("conditions"), "conditions")
                  if isinstance(c, Mapping)]
    ready = [c for c in conditions if c.get("type") == "Ready"]
    if spec.get("unschedulable"):
        why = "cordoned"
    elif not ready or ready[0].get("status") != "True":
        why = "not Ready"
    else:
        for taint in sanity.entries(spec.get("taints"), "taints"):
            if not isinstance(taint, Mapping):
                why = f"taint {shorten(taint)} (unreadable)"
                break
            if taint.get("effect") in ("NoSchedule", "NoExecute") and (
                taint.get("key") not in tolerated
            ):
                why = f"taint {_shown(taint.get('key'))}"
                break
    return NodeInfo(
        name=name,
        cpu_milli=cpu,
        memory_mib=memory,
        labels=_label_pairs(meta, "node"),
        images=tuple(sorted(images.items())),
        datasets=tuple(sorted(datasets.items())),
        unschedulable=why,
    )


def _images(node: str, value: object) -> dict[str, int]:
    """``status.images`` as name -> bytes; an entry that cannot be read is left out (logged)."""
    images: dict[str, int] = {}
    try:
        listed = sanity.entries(value, "status.images")
    except Rejected as e:
        _partly(node, "images", e)
        return images
    for image in listed:
        try:
            entry = sanity.mapping(image, "image entry")
            size = entry.get("sizeBytes") or 0
            sanity.bounded_int(size, 0, sanity.MAX_BYTES, "image sizeBytes")
            for image_name in sanity.entries(entry.get("names"), "image names"):
                images[sanity.name(image_name, "image name", 4096)] = size
        except Rejected as e:
            _partly(node, "images", e)
    return images


def _datasets(node: str, value: object) -> dict[str, int]:
    """The ``aispike.io/datasets`` annotation; unreadable reads as none (logged)."""
    try:
        return _parse_datasets(value)
    except _MALFORMED as e:
        _partly(node, DATASETS_ANNOTATION, _rejected(DATASETS_ANNOTATION, e))
        return {}


def _partly(node: str, part: str, e: Rejected) -> None:
    """A part of node ``node`` was left out: a log line and the rejection metric."""
    rejections.record("nodes", e.reason, node, f"node {node}: ignoring part of its {part}: "
                      f"{e.message}")


def parse_claim(obj: Mapping[str, Any]) -> ClaimInfo:
    """A claim's allocation on our devices and, for our own claims, the pin it carries.

    Damaged parts are contained: an allocation result whose ``consumedCapacity`` cannot be read
    counts as the whole device (never as nothing), a damaged pin annotation is
    :attr:`ClaimInfo.problem`.  A claim without a readable name raises
    :class:`~aispike_hub.sanity.Rejected`.
    """
    try:
        return _parse_claim(obj)
    except _MALFORMED as e:
        key = object_key(obj) if isinstance(obj, Mapping) else "?"
        raise _rejected(f"claim {shorten_text(key)}", e) from None


def _parse_claim(obj: Mapping[str, Any]) -> ClaimInfo:
    if not isinstance(obj, Mapping):
        raise Rejected("malformed", f"expected an object, got {shorten(obj)}")
    meta = meta_of(obj)
    sanity.name(meta.get("name"), "name")
    if meta.get("namespace") is not None:
        sanity.name(meta.get("namespace"), "namespace")
    status = sanity.mapping(obj.get("status"), "status")
    allocation = sanity.mapping(status.get("allocation"), "status.allocation") or None
    allocated: list[AllocatedDevice] = []
    foreign = 0
    problems: list[str] = []
    if allocation:
        devices = sanity.mapping(allocation.get("devices"), "allocation.devices")
        for result in sanity.entries(devices.get("results"), "allocation results"):
            if not isinstance(result, Mapping):
                raise Rejected("malformed", f"allocation result {shorten(result)} is not an "
                               "object")
            if result.get("driver") != DRIVER:
                foreign += 1
                continue
            consumed = sanity.mapping(result.get("consumedCapacity"),
                                      "consumedCapacity").get(MEMORY_CAPACITY)
            memory: int | None = None
            if consumed is not None:
                try:
                    memory = _memory(consumed, "consumedCapacity memory",
                                     sanity.MAX_GPU_MEMORY_MIB)
                except _MALFORMED as e:  # counted as the whole device: never as nothing
                    problems.append(_rejected("consumedCapacity", e).message)
            allocated.append(AllocatedDevice(_text(result.get("pool")),
                                             _text(result.get("device")), memory))
    owner = next(
        (o.get("name", "") for o in sanity.entries(meta.get("ownerReferences"),
                                                   "ownerReferences")
         if isinstance(o, Mapping) and o.get("kind") == "Pod"),
        "",
    )
    reserved = tuple(
        _shown(r.get("name", "")) for r in sanity.entries(status.get("reservedFor"), "reservedFor")
        if isinstance(r, Mapping) and r.get("resource") == "pods"
    )
    finalizers = sanity.entries(meta.get("finalizers"), "finalizers")
    info = ClaimInfo(
        namespace=_shown(meta.get("namespace", "")),
        name=_shown(meta.get("name", "")),
        uid=_shown(meta.get("uid", "")),
        resource_version=_shown(meta.get("resourceVersion", "")),
        created=_shown(meta.get("creationTimestamp", "")),
        allocated=tuple(allocated),
        is_allocated=bool(allocation),
        foreign_results=foreign,
        owner_pod=_shown(owner),
        reserved_for=reserved,
        deleting=bool(meta.get("deletionTimestamp")),
        allocating=not allocation and CLAIM_FINALIZER in finalizers,
        hub_server=_hub_server(meta),
        problem="; ".join(problems),
    )
    labels = sanity.mapping(meta.get("labels"), "labels")
    if not is_ours(obj):
        return info
    server = str(labels.get(SERVER_LABEL, ""))
    try:
        annotations = sanity.mapping(meta.get("annotations"), "annotations")
        for key in (PLACEMENT_ANNOTATION, REQUEST_ANNOTATION):
            text = annotations.get(key)
            if text is not None:
                if not isinstance(text, str):
                    raise Rejected("malformed", f"{key} is not a string")
                if text:
                    loads_json(text, what=key)  # bounded: depth, size, NaN, huge numbers
        placement = placement_from_claim(obj)
        text = annotations.get(REQUEST_ANNOTATION)
        request = request_from_json(text) if text else None
    except _MALFORMED as e:
        why = str(e) if isinstance(e, ValueError) and not isinstance(e, Rejected) else (
            _rejected("pin", e).message)
        problem = "; ".join([*problems, why])
        return dataclasses.replace(info, ours=True, server=server, problem=problem)
    return dataclasses.replace(info, ours=True, server=server, placement=placement, request=request)


def _text(value: object) -> str:
    """A short string field ('' when absent, not a string or longer than a name)."""
    if isinstance(value, str) and len(value) <= sanity.MAX_NAME_LENGTH:
        return value
    return ""


def _hub_server(meta: Mapping[str, Any]) -> str:
    """The ``user/server`` key of :data:`HUB_SERVER_ANNOTATION` ('' when absent or malformed)."""
    annotations = meta.get("annotations")
    value = annotations.get(HUB_SERVER_ANNOTATION) if isinstance(annotations, Mapping) else None
    return value if isinstance(value, str) and "/" in value and len(value) < 1024 else ""


def _container_requests(container: object) -> tuple[int, int]:
    if not isinstance(container, Mapping):
        raise Rejected("malformed", f"container {shorten(container)} is not an object")
    resources = sanity.mapping(container.get("resources"), "resources")
    requests = sanity.mapping(resources.get("requests"), "requests")
    return (_cpu(requests.get("cpu", "0"), "cpu request"),
            _memory(requests.get("memory", "0"), "memory request"))


def parse_pod(obj: Mapping[str, Any]) -> PodInfo:
    """A pod's node, effective CPU/RAM requests (as the scheduler counts them) and claims.

    Raises :class:`~aispike_hub.sanity.Rejected` (a ``ValueError``) for a pod that cannot be
    read or whose requests leave the sane ranges (more than any node can hold).
    """
    try:
        return _parse_pod(obj)
    except _MALFORMED as e:
        key = object_key(obj) if isinstance(obj, Mapping) else "?"
        raise _rejected(f"pod {shorten_text(key)}", e) from None


def _parse_pod(obj: Mapping[str, Any]) -> PodInfo:
    if not isinstance(obj, Mapping):
        raise Rejected("malformed", f"expected an object, got {shorten(obj)}")
    meta = meta_of(obj)
    spec = sanity.mapping(obj.get("spec"), "spec")
    status = sanity.mapping(obj.get("status"), "status")
    cpu = mem = 0
    for c in sanity.entries(spec.get("containers"), "containers"):
        c_cpu, c_mem = _container_requests(c)
        cpu += c_cpu
        mem += c_mem
    for c in sanity.entries(spec.get("initContainers"), "initContainers"):
        c_cpu, c_mem = _container_requests(c)
        cpu, mem = max(cpu, c_cpu), max(mem, c_mem)
    overhead = sanity.mapping(spec.get("overhead"), "overhead")
    cpu += _cpu(overhead.get("cpu", "0"), "overhead cpu")
    mem += _memory(overhead.get("memory", "0"), "overhead memory")
    sanity.bounded_int(cpu, 0, sanity.MAX_NODE_CPU_MILLI, "cpu requests (milli)")
    sanity.bounded_int(mem, 0, sanity.MAX_NODE_MEMORY_MIB, "memory requests (MiB)")
    claims = tuple(
        _shown(c["resourceClaimName"])
        for c in sanity.entries(spec.get("resourceClaims"), "resourceClaims")
        if isinstance(c, Mapping) and c.get("resourceClaimName")
    )
    unschedulable = ""
    for cond in sanity.entries(status.get("conditions"), "conditions"):
        if (
            isinstance(cond, Mapping)
            and cond.get("type") == "PodScheduled"
            and cond.get("status") == "False"
            and cond.get("reason") == "Unschedulable"
        ):
            unschedulable = shorten_text(str(cond.get("message") or "unschedulable"), 2000)
    labels = sanity.mapping(meta.get("labels"), "labels")
    return PodInfo(
        namespace=_shown(meta.get("namespace", "")),
        name=_shown(meta.get("name", "")),
        uid=_shown(meta.get("uid", "")),
        node=_shown(spec.get("nodeName") or ""),
        cpu_milli=cpu,
        memory_mib=mem,
        phase=_shown(status.get("phase") or "Pending"),
        claim_names=claims,
        server=_shown(labels.get(SERVER_LABEL, "")),
        unschedulable=unschedulable,
        deleting=bool(meta.get("deletionTimestamp")),
        created=_shown(meta.get("creationTimestamp", "")),
        hub_server=_hub_server(meta),
    )
