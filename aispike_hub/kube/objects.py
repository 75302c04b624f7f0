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

from aispike_hub.kube.claims import (
    HUB_SERVER_ANNOTATION,
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
    """An API object's ``metadata`` (empty when absent)."""
    meta: Mapping[str, Any] = obj.get("metadata") or {}
    return meta


def object_key(obj: Mapping[str, Any]) -> str:
    """``namespace/name`` of a namespaced object, ``name`` of a cluster-scoped one."""
    meta = meta_of(obj)
    namespace = meta.get("namespace")
    return f"{namespace}/{meta.get('name')}" if namespace else str(meta.get("name"))


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
    name = str(meta_of(obj).get("name", "?"))
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
    meta = meta_of(obj)
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
    meta = meta_of(obj)
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
        text = (meta.get("annotations") or {}).get(REQUEST_ANNOTATION)
        request = request_from_json(text) if text else None
    except ValueError as e:
        return dataclasses.replace(info, ours=True, server=server, problem=str(e))
    return dataclasses.replace(info, ours=True, server=server, placement=placement, request=request)


def _hub_server(meta: Mapping[str, Any]) -> str:
    """The ``user/server`` key of :data:`HUB_SERVER_ANNOTATION` ('' when absent or malformed)."""
    value = (meta.get("annotations") or {}).get(HUB_SERVER_ANNOTATION)
    return value if isinstance(value, str) and "/" in value and len(value) < 1024 else ""


def _container_requests(container: Mapping[str, Any]) -> tuple[int, int]:
    requests = (container.get("resources") or {}).get("requests") or {}
    return parse_cpu_milli(requests.get("cpu", "0")), quantity_mib(requests.get("memory", "0"))


def parse_pod(obj: Mapping[str, Any]) -> PodInfo:
    """A pod's node, effective CPU/RAM requests (as the scheduler counts them) and claims."""
    meta = meta_of(obj)
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

