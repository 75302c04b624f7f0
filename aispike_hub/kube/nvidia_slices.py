"""NVIDIA's DRA driver (k8s-dra-driver-gpu, ``gpu.nvidia.com``) as our placement sees it; pure.

NVIDIA's kubelet plugin publishes one ResourceSlice per node and pool with one device per whole
GPU (``gpu-<minor>``) and, with MIG enabled, devices of type ``mig``.  A GPU device carries the
attributes ``type`` (``gpu``), ``uuid``, ``productName``, ``brand``, ``architecture``,
``cudaComputeCapability`` and ``driverVersion`` (versions), ``index``, ``minor``, and the
standard ``resource.kubernetes.io/pciBusID`` and ``resource.kubernetes.io/pcieRoot``; its
capacity is ``memory``.  Its devices are not shareable by memory: a claim gets whole devices
(sharing is by MPS or time-slicing config on the claim, which does not bound memory per claim).

This module turns those slices into our :class:`~aispike_hub.model.Gpu` list per node (so the
placement core packs and fits whole GPUs there, topology by PCIe root), and builds the
ResourceClaim that pins exactly the GPUs placement chose, through NVIDIA's DeviceClass with a
CEL selector on ``uuid`` (so kube-scheduler can only allocate those).  It also writes slices and
the DeviceClass the way the driver does, for simulated (kwok) nodes in tests and benchmarks.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aispike_hub.contract import (
    MEMORY_CAPACITY,
    NVIDIA_DEVICE_CLASS,
    NVIDIA_DRIVER,
    PCI_BUS_ID_ATTRIBUTE,
    PCIE_ROOT_ATTRIBUTE,
    RESOURCE_API_VERSION,
)
from aispike_hub.kube.slices import memory_quantity
from aispike_hub.model import Gpu
from aispike_hub.units import MIB, parse_quantity

CLAIM_REQUEST = "gpu"
"""Name of the one request in a claim this module pins."""
GPU_TYPE = "gpu"
"""Value of NVIDIA's ``type`` attribute on a whole-GPU device (``mig`` on MIG devices)."""


@dataclass(frozen=True, slots=True)
class NvidiaGpuInfo:
    """What NVIDIA's driver tells about one GPU, beyond what placement needs."""

    device: str
    """The device name in the slice (``gpu-<minor>``): the allocation result names it."""
    gpu: Gpu
    architecture: str = ""
    compute_capability: str = ""
    driver_version: str = ""
    pci_bus_id: str = ""


def _attr(attributes: Mapping[str, Any], name: str) -> Any:
    """An attribute's value whatever its type (``string``/``int``/``bool``/``version``);
    unqualified names may also be written with the driver's domain, as the API allows."""
    value = attributes.get(name)
    if value is None and "/" not in name:
        value = attributes.get(f"{NVIDIA_DRIVER}/{name}")
    if not isinstance(value, Mapping):
        return None
    for key in ("string", "int", "version", "bool"):
        if key in value:
            return value[key]
    return None


def _memory_mib(device: Mapping[str, Any]) -> int:
    capacity = (device.get("capacity") or {}).get(MEMORY_CAPACITY) or {}
    value = capacity.get("value") if isinstance(capacity, Mapping) else None
    if value is None:
        return 0
    return int(parse_quantity(value)) // MIB


def parse_nvidia_slice(obj: Mapping[str, Any]) -> tuple[str, list[NvidiaGpuInfo], list[str]]:
    """(node name, its whole GPUs, problems) of one ResourceSlice of NVIDIA's driver.

    Devices that are not whole GPUs (``type`` ``mig``, or anything else) are left out and named
    in the problems, as are GPUs without a uuid or memory (placement pins by uuid and fits by
    memory, so such a GPU cannot be offered).  A slice of another driver raises ``ValueError``.
    """
    spec = obj.get("spec") or {}
    if spec.get("driver") != NVIDIA_DRIVER:
        raise ValueError(f"not a slice of {NVIDIA_DRIVER}: driver {spec.get('driver')!r}")
    node = str(spec.get("nodeName") or "")
    gpus: list[NvidiaGpuInfo] = []
    problems: list[str] = []
    if not node:
        return node, gpus, [f"slice {obj.get('metadata', {}).get('name')!r} has no nodeName"]
    for device in spec.get("devices") or []:
        name = str(device.get("name") or "")
        attributes = device.get("attributes") or {}
        kind = _attr(attributes, "type")
        if kind not in (None, GPU_TYPE):
            problems.append(f"{node}/{name}: a {kind} device, not a whole GPU (left out)")
            continue
        uuid = _attr(attributes, "uuid")
        model = _attr(attributes, "productName")
        try:
            memory = _memory_mib(device)
        except ValueError as e:
            problems.append(f"{node}/{name}: bad memory capacity ({e})")
            continue
        index = _attr(attributes, "index")
        if index is None and name.startswith("gpu-") and name[4:].isdigit():
            index = int(name[4:])
        if not uuid or not model or memory <= 0 or not isinstance(index, int):
            problems.append(f"{node}/{name}: needs uuid, productName, index and memory "
                            "capacity (left out)")
            continue
        root = _attr(attributes, PCIE_ROOT_ATTRIBUTE) or ""
        gpus.append(NvidiaGpuInfo(
            device=name,
            gpu=Gpu(index=index, model=str(model), memory_mib=memory, uuid=str(uuid),
                    pcie_switch=str(root)),
            architecture=str(_attr(attributes, "architecture") or ""),
            compute_capability=str(_attr(attributes, "cudaComputeCapability") or ""),
            driver_version=str(_attr(attributes, "driverVersion") or ""),
            pci_bus_id=str(_attr(attributes, PCI_BUS_ID_ATTRIBUTE) or ""),
        ))
    return node, gpus, problems


def nvidia_gpus_by_node(slices: Iterable[Mapping[str, Any]]
                        ) -> tuple[dict[str, list[NvidiaGpuInfo]], list[str]]:
    """Whole GPUs per node from all ResourceSlices (other drivers' slices are skipped), and
    the problems found.  A GPU published twice (two slices of one pool) counts once."""
    out: dict[str, list[NvidiaGpuInfo]] = {}
    problems: list[str] = []
    for obj in slices:
        if (obj.get("spec") or {}).get("driver") != NVIDIA_DRIVER:
            continue
        node, gpus, found = parse_nvidia_slice(obj)
        problems += found
        if not node:
            continue
        have = out.setdefault(node, [])
        seen = {g.gpu.uuid for g in have}
        have += [g for g in gpus if g.gpu.uuid not in seen]
    for gpus in out.values():
        gpus.sort(key=lambda g: g.gpu.index)
    return out, problems


def uuid_selector(uuids: Sequence[str]) -> str:
    """CEL that matches exactly the NVIDIA devices of these GPU uuids (one or several)."""
    attr = f'device.attributes["{NVIDIA_DRIVER}"].uuid'
    if len(uuids) == 1:
        return f"{attr} == {json.dumps(uuids[0])}"
    return f"{attr} in [{', '.join(json.dumps(u) for u in uuids)}]"


def pinned_claim(name: str, gpus: Sequence[Gpu], *,
                 labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A ResourceClaim of NVIDIA's DeviceClass that kube-scheduler can satisfy only with
    ``gpus`` (whole GPUs, pinned by uuid; the node follows, since a device belongs to one node).

    Several GPUs that share a PCIe root get a ``matchAttribute`` constraint on
    ``resource.kubernetes.io/pcieRoot`` too, so the topology placement chose is also what the
    scheduler checks.
    """
    if not gpus:
        raise ValueError("a claim pins at least one GPU")
    uuids = [g.uuid for g in gpus]
    if not all(uuids) or len(set(uuids)) != len(uuids):
        raise ValueError(f"every pinned GPU needs its own uuid, got {uuids}")
    devices: dict[str, Any] = {"requests": [{"name": CLAIM_REQUEST, "exactly": {
        "deviceClassName": NVIDIA_DEVICE_CLASS,
        "allocationMode": "ExactCount",
        "count": len(uuids),
        "selectors": [{"cel": {"expression": uuid_selector(uuids)}}],
    }}]}
    roots = {g.pcie_switch for g in gpus}
    if len(gpus) > 1 and len(roots) == 1 and "" not in roots:
        devices["constraints"] = [
            {"requests": [CLAIM_REQUEST], "matchAttribute": PCIE_ROOT_ATTRIBUTE}]
    return {
        "apiVersion": RESOURCE_API_VERSION,
        "kind": "ResourceClaim",
        "metadata": {"name": name, "labels": dict(labels or {})},
        "spec": {"devices": devices},
    }


# --- what the driver publishes, for simulated nodes ---------------------------------------------


def nvidia_device(gpu: Gpu, *, architecture: str = "Hopper", compute_capability: str = "9.0.0",
                  driver_version: str = "570.124.6", pci_bus_id: str = "") -> dict[str, Any]:
    """One whole-GPU device as NVIDIA's driver publishes it (``pcie_switch`` is the PCIe root)."""
    attributes: dict[str, Any] = {
        "type": {"string": GPU_TYPE},
        "uuid": {"string": gpu.uuid},
        "productName": {"string": gpu.model},
        "brand": {"string": "Nvidia"},
        "architecture": {"string": architecture},
        "cudaComputeCapability": {"version": compute_capability},
        "driverVersion": {"version": driver_version},
        "cudaDriverVersion": {"version": "12.8.0"},
        "index": {"int": gpu.index},
        "minor": {"int": gpu.index},
        PCI_BUS_ID_ATTRIBUTE: {"string": pci_bus_id or f"0000:{0x10 + gpu.index:02x}:00.0"},
    }
    if gpu.pcie_switch:
        attributes[PCIE_ROOT_ATTRIBUTE] = {"string": gpu.pcie_switch}
    return {"name": f"gpu-{gpu.index}", "attributes": attributes,
            "capacity": {MEMORY_CAPACITY: {"value": memory_quantity(gpu.memory_mib)}}}


def nvidia_resource_slice(node_name: str, gpus: Sequence[Gpu], *,
                          generation: int = 1) -> dict[str, Any]:
    """The ResourceSlice NVIDIA's driver publishes for ``node_name`` (one pool per node)."""
    return {
        "apiVersion": RESOURCE_API_VERSION,
        "kind": "ResourceSlice",
        "metadata": {"name": f"{node_name}-{NVIDIA_DRIVER}"},
        "spec": {
            "driver": NVIDIA_DRIVER,
            "nodeName": node_name,
            "pool": {"name": node_name, "generation": generation, "resourceSliceCount": 1},
            "devices": [nvidia_device(g) for g in sorted(gpus, key=lambda g: g.index)],
        },
    }


def nvidia_device_class() -> dict[str, Any]:
    """NVIDIA's DeviceClass ``gpu.nvidia.com``: the driver's whole-GPU devices."""
    return {
        "apiVersion": RESOURCE_API_VERSION,
        "kind": "DeviceClass",
        "metadata": {"name": NVIDIA_DEVICE_CLASS},
        "spec": {"selectors": [{"cel": {"expression": (
            f'device.driver == "{NVIDIA_DRIVER}" && '
            f'device.attributes["{NVIDIA_DRIVER}"].type == "{GPU_TYPE}"')}}]},
    }
