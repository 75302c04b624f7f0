"""GPUs held outside AISpike on the same nodes: what each pod and foreign claim takes (pure).

A cluster rarely runs AISpike alone.  Pods of NVIDIA's device plugin (``nvidia.com/gpu``), MIG
instances (``nvidia.com/mig-<profile>``), HAMi pods (``nvidia.com/gpumem``/``gpucores``) and
claims of another DRA driver (NVIDIA's ``gpu.nvidia.com``) hold GPUs that our ResourceSlices also
publish.  The inventory counts them as taken, by one rule per source:

- **a HAMi pod with its allocation annotation** (``hami.io/vgpu-devices-allocated``:
  ``<uuid>,<type>,<MiB>,<cores>`` per device, ``:`` between devices, ``;`` between containers):
  the named MiB on the GPU with that uuid, exactly;
- **a foreign DRA claim** whose allocated device carries a ``uuid`` (a MIG device its
  ``parentUUID``) that one of our devices also carries: that whole GPU;
- **everything else** (``nvidia.com/gpu`` and the device-plugin memory resources, MIG instances,
  a HAMi pod not yet annotated, a foreign GPU device without a known uuid): the holder does not
  say which GPU, so each GPU (each MIG instance, each foreign device) is an *anonymous* GPU on its
  node: placement keeps that many of the node's GPUs idle (docs/placement.md).  Counting a MIG
  instance as a whole GPU over-counts when several share one GPU; it never under-counts.

Nothing here does I/O: the inventory (:mod:`aispike_hub.kube.inventory`) parses each object with
these functions and the ledger (:mod:`aispike_hub.kube.ledger`) counts the result.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aispike_hub.contract import (
    GPUSHARE_MEMORY_RESOURCE,
    HAMI_ALLOCATED_ANNOTATION,
    HAMI_MEMORY_RESOURCE,
    MEMORY_CAPACITY,
    MIG_RESOURCE_PREFIX,
    NVIDIA_DRIVER,
    NVIDIA_GPU_RESOURCE,
)
from aispike_hub.kube.dra_models import device_attribute, device_model
from aispike_hub.kube.nodespec import quantity_mib
from aispike_hub.model import Assignment

__all__ = [
    "DEFAULT_RULES",
    "NO_GPUS",
    "ForeignDevice",
    "ForeignResult",
    "ForeignSlice",
    "OutsideRules",
    "PodGpus",
    "foreign_claim_results",
    "foreign_device_index",
    "outside_claim_usage",
    "outside_pod_usage",
    "parse_foreign_slice",
    "parse_hami_allocation",
    "pod_gpus",
]

MAX_GPUS_PER_POD = 1024
"""More GPUs than any node has: a larger count is a damaged object, clamped here."""


@dataclass(frozen=True, slots=True)
class OutsideRules:
    """Which resources and drivers hold GPUs outside AISpike (the inventory's settings)."""

    gpu_resources: tuple[str, ...] = (NVIDIA_GPU_RESOURCE,)
    """Extended resources counting whole GPUs (one anonymous GPU each)."""
    mig_prefixes: tuple[str, ...] = (MIG_RESOURCE_PREFIX,)
    """Prefixes of MIG instance resources (one anonymous GPU per instance)."""
    memory_resources: tuple[str, ...] = (HAMI_MEMORY_RESOURCE, f"{HAMI_MEMORY_RESOURCE}-percentage",
                                         GPUSHARE_MEMORY_RESOURCE)
    """Device-plugin GPU-memory resources: a pod asking only for these holds one GPU."""
    drivers: tuple[str, ...] = (NVIDIA_DRIVER,)
    """Other DRA drivers whose devices are GPUs (their claims count as taken)."""


DEFAULT_RULES = OutsideRules()
"""The inventory's defaults: NVIDIA's device plugin, MIG, HAMi and gpushare, NVIDIA's driver."""


@dataclass(frozen=True, slots=True)
class PodGpus:
    """What a pod holds through device plugins: anonymous GPUs, and exact (uuid, MiB) shares."""

    anonymous: int = 0
    exact: tuple[tuple[str, int], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.anonymous or self.exact)


@dataclass(frozen=True, slots=True)
class ForeignDevice:
    """A device of another GPU driver: the GPU uuid it sits on ('' when not published)."""

    uuid: str
    memory_mib: int | None = None
    model: str = ""
    """The model its attributes name (NVIDIA's ``productName``): :mod:`.dra_models`."""


@dataclass(frozen=True, slots=True)
class ForeignSlice:
    """The part of another GPU driver's ResourceSlice the inventory needs."""

    name: str
    driver: str
    node: str
    pool: str
    generation: int
    devices: Mapping[str, ForeignDevice] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ForeignResult:
    """One allocation result of a claim on another driver's device."""

    driver: str
    pool: str
    device: str


def _count(value: Any) -> int:
    """A whole count from a resource quantity ('2', 2); 0 when it is not one."""
    try:
        n = int(str(value))
    except (TypeError, ValueError):
        return 0
    return max(0, min(n, MAX_GPUS_PER_POD))


def _container_amounts(container: Mapping[str, Any], names: Sequence[str],
                       prefixes: Sequence[str]) -> dict[str, int]:
    resources = container.get("resources") or {}
    # Extended resources: requests default to limits, and must equal them when both are set.
    merged = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
    out: dict[str, int] = {}
    for name, value in merged.items():
        if name in names or any(str(name).startswith(p) for p in prefixes):
            out[str(name)] = _count(value)
    return out


def pod_gpus(obj: Mapping[str, Any], rules: OutsideRules = DEFAULT_RULES) -> PodGpus:
    """The GPUs a pod holds through device plugins (its effective requests, as the scheduler
    counts them: the sum over containers, or the largest init container if larger)."""
    spec = obj.get("spec") or {}
    names = (*rules.gpu_resources, *rules.memory_resources)
    totals: dict[str, int] = {}
    for c in spec.get("containers") or []:
        if isinstance(c, Mapping):
            for k, v in _container_amounts(c, names, rules.mig_prefixes).items():
                totals[k] = totals.get(k, 0) + v
    for c in spec.get("initContainers") or []:
        if isinstance(c, Mapping):
            for k, v in _container_amounts(c, names, rules.mig_prefixes).items():
                totals[k] = max(totals.get(k, 0), v)
    whole = sum(totals.get(r, 0) for r in rules.gpu_resources)
    mig = sum(v for k, v in totals.items() if any(k.startswith(p) for p in rules.mig_prefixes))
    if not whole and any(totals.get(r, 0) for r in rules.memory_resources):
        whole = 1  # a memory share alone still sits on one GPU
    if not whole and not mig:
        return PodGpus()
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    exact = parse_hami_allocation(annotations.get(HAMI_ALLOCATED_ANNOTATION))
    if exact and len(exact) >= whole and not mig:
        return PodGpus(0, exact)
    return PodGpus(min(whole + mig, MAX_GPUS_PER_POD), ())


def parse_hami_allocation(value: Any) -> tuple[tuple[str, int], ...]:
    """(uuid, MiB) per device of HAMi's ``hami.io/vgpu-devices-allocated`` annotation
    (``()`` when absent or not in its format: the pod then counts anonymously)."""
    if not isinstance(value, str) or len(value) > 65536:
        return ()
    out: dict[str, int] = {}
    for container in value.split(";"):
        for device in container.split(":"):
            fields = device.split(",")
            if len(fields) < 3 or not fields[0].strip():
                continue
            try:
                mib = int(fields[2])
            except ValueError:
                return ()
            if not 0 <= mib < 1 << 21:
                return ()
            uuid = fields[0].strip()
            out[uuid] = out.get(uuid, 0) + mib
    return tuple(sorted(out.items()))


def parse_foreign_slice(obj: Mapping[str, Any], rules: OutsideRules = DEFAULT_RULES
                        ) -> ForeignSlice | None:
    """Another GPU driver's slice (``None`` for ours, for drivers not in ``rules.drivers``, and
    for slices not bound to one node).  A device's uuid is its ``uuid`` attribute, a MIG
    device's its ``parentUUID``; its memory the ``memory`` capacity when published."""
    spec = obj.get("spec") or {}
    driver = spec.get("driver")
    node = spec.get("nodeName")
    if driver not in rules.drivers or not isinstance(node, str) or not node:
        return None
    meta = obj.get("metadata") or {}
    pool = spec.get("pool") or {}
    try:
        generation = int(pool.get("generation", 0))
    except (TypeError, ValueError):
        generation = 0
    devices: dict[str, ForeignDevice] = {}
    for dev in spec.get("devices") or []:
        if not isinstance(dev, Mapping) or not dev.get("name"):
            continue
        attributes = dev.get("attributes") or {}
        if not isinstance(attributes, Mapping):
            attributes = {}
        uuid = (device_attribute(attributes, str(driver), "parentUUID")
                or device_attribute(attributes, str(driver), "uuid"))
        memory: int | None = None
        capacity = ((dev.get("capacity") or {}).get(MEMORY_CAPACITY) or {})
        if isinstance(capacity, Mapping) and "value" in capacity:
            try:
                memory = quantity_mib(str(capacity["value"]))
            except ValueError:
                memory = None
        devices[str(dev["name"])] = ForeignDevice(uuid if isinstance(uuid, str) else "", memory,
                                                  device_model(attributes, str(driver)))
    return ForeignSlice(str(meta.get("name", "")), str(driver), node,
                        str(pool.get("name") or node), generation, devices)


def foreign_claim_results(obj: Mapping[str, Any], rules: OutsideRules = DEFAULT_RULES
                          ) -> tuple[ForeignResult, ...]:
    """The allocation results of a claim on other GPU drivers' devices."""
    allocation = (obj.get("status") or {}).get("allocation") or {}
    results = (allocation.get("devices") or {}).get("results") or []
    out = []
    for r in results:
        if isinstance(r, Mapping) and r.get("driver") in rules.drivers:
            out.append(ForeignResult(str(r["driver"]), str(r.get("pool", "")),
                                     str(r.get("device", ""))))
    return tuple(out)


def foreign_device_index(slices: Iterable[ForeignSlice]
                         ) -> dict[tuple[str, str, str], tuple[str, ForeignDevice]]:
    """(driver, pool, device) -> (node, device) over the newest generation of each pool."""
    slices = list(slices)
    newest: dict[tuple[str, str], int] = {}
    for f in slices:
        k = (f.driver, f.pool)
        newest[k] = max(newest.get(k, f.generation), f.generation)
    out: dict[tuple[str, str, str], tuple[str, ForeignDevice]] = {}
    for f in slices:
        if f.generation == newest[(f.driver, f.pool)]:
            for name, dev in f.devices.items():
                out[(f.driver, f.pool, name)] = (f.node, dev)
    return out


NO_GPUS = PodGpus()
"""A pod that holds no GPU through device plugins."""

Locate = Mapping[str, tuple[str, int, int]]
"""uuid -> (node, GPU index, MiB) of our published GPUs (the ledger's device index)."""


def outside_pod_usage(node: str, owner: str, gpus: PodGpus, by_uuid: Locate
                      ) -> tuple[tuple[Assignment, ...], tuple[str, ...]]:
    """What a bound pod's device-plugin GPUs take on ``node``: exact shares on our GPUs by
    uuid, anonymous GPUs for the rest (a uuid we do not publish there counts as one)."""
    problems: list[str] = []
    anonymous = gpus.anonymous
    indices: list[int] = []
    memory: list[int] = []
    for uuid, mib in gpus.exact:
        where = by_uuid.get(uuid)
        if where is None or where[0] != node:
            anonymous += 1
            continue
        indices.append(where[1])
        memory.append(min(mib, where[2]))
    out: list[Assignment] = []
    if indices:
        out.append(Assignment(node, tuple(indices), tuple(memory), owner=owner))
    if anonymous:
        out.append(Assignment(node, (), (), owner=owner, anonymous_gpus=anonymous))
    return tuple(out), tuple(problems)


def outside_claim_usage(owner: str, results: Sequence[ForeignResult],
                        devices: Mapping[tuple[str, str, str], tuple[str, ForeignDevice]],
                        by_uuid: Locate) -> tuple[tuple[Assignment, ...], tuple[str, ...]]:
    """What a claim's results on other GPU drivers' devices take: the whole GPU when the device
    names one of ours by uuid, an anonymous GPU on the device's node otherwise.

    ``devices`` maps (driver, pool, device) -> (node, device) for the other drivers' slices.
    """
    problems: list[str] = []
    whole: dict[str, dict[int, int]] = {}
    anonymous: dict[str, int] = {}
    for r in results:
        found = devices.get((r.driver, r.pool, r.device))
        if found is None:
            problems.append(f"claim {owner}: allocated {r.driver} device {r.pool}/{r.device} "
                            "is not published")
            continue
        node, dev = found
        where = by_uuid.get(dev.uuid) if dev.uuid else None
        if where is not None and where[0] == node:
            whole.setdefault(node, {})[where[1]] = where[2]
        else:
            anonymous[node] = anonymous.get(node, 0) + 1
    out = [Assignment(node, tuple(g), tuple(g.values()), owner=owner)
           for node, g in sorted(whole.items())]
    out += [Assignment(node, (), (), owner=owner, anonymous_gpus=k)
            for node, k in sorted(anonymous.items())]
    return tuple(out), tuple(problems)
