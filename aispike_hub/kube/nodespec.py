"""Simulated GPU nodes described as data: the spec format of the test stack and benchmarks.

A spec is a mapping (read from YAML or JSON by the caller; this module does no I/O)::

    nodes:
      - name: a100-{i}          # "{i}" is the copy number when count > 1
        count: 2
        cpu: "64"               # Kubernetes quantities
        memory: 512Gi
        labels: {topology.kubernetes.io/zone: zone-a}
        images: {quay.io/jupyter/base-notebook:2026-01-05: 1200000000}   # name -> bytes cached
        datasets: {imagenet-1k: 150000000000}                          # name -> bytes cached
        nvidiaGpu: true         # also offer whole GPUs as nvidia.com/gpu (non-DRA backends)
        gpus:                   # groups, indices are given in order
          - {model: NVIDIA A100-SXM4-80GB, memory: 80Gi, count: 4,
             nvlinkDomain: nvl0, pcieSwitch: sw0, numaNode: 0}

GPU UUIDs default to a stable value derived from node name and index, so the same spec always
publishes the same devices (placement pins claims by UUID).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aispike_hub.model import Gpu, Node
from aispike_hub.units import MIB, parse_quantity

_UUID_NAMESPACE = uuid.UUID("5f1c3f0e-5c3b-4c55-9a55-a15b1ce0a1d0")
"""Fixed namespace for synthesized GPU UUIDs: changing it would re-pin every simulated claim."""


@dataclass(frozen=True, slots=True)
class SimulatedNode:
    """A node of a spec: the model node plus what only a simulated node needs to know."""

    node: Node
    nvidia_gpu: bool = False
    """Also advertise the GPUs as ``nvidia.com/gpu`` allocatable (whole-GPU backends)."""


def quantity_bytes(value: str | int | float) -> int:
    """Bytes (or plain units) in a Kubernetes quantity such as ``80Gi``, ``512M`` or ``64``.

    A bare number counts as bytes, as in Kubernetes (:func:`aispike_hub.units.parse_quantity`);
    fractions of a byte are dropped.  Raises ``ValueError`` (a ``QuantityError``).
    """
    return int(parse_quantity(value))


def quantity_mib(value: str | int | float) -> int:
    """MiB in a memory quantity; a bare number counts as bytes, as in Kubernetes."""
    return quantity_bytes(value) // MIB


def cpu_milli(value: str | int | float) -> int:
    """Thousandths of a core in a CPU quantity such as ``64``, ``1.5`` or ``500m``."""
    return int(parse_quantity(value) * 1000)


def synthesized_uuid(node_name: str, index: int) -> str:
    """A stable NVML-style UUID for GPU ``index`` of a simulated node."""
    return f"GPU-{uuid.uuid5(_UUID_NAMESPACE, f'{node_name}/{index}')}"


def _gpus(node_name: str, groups: list[Mapping[str, Any]]) -> tuple[Gpu, ...]:
    gpus: list[Gpu] = []
    for group in groups:
        for _ in range(int(group.get("count", 1))):
            index = len(gpus)
            gpus.append(
                Gpu(
                    index=index,
                    model=str(group["model"]),
                    memory_mib=quantity_mib(group["memory"]),
                    uuid=str(group.get("uuid") or synthesized_uuid(node_name, index)),
                    nvlink_domain=str(group.get("nvlinkDomain", "")),
                    pcie_switch=str(group.get("pcieSwitch", "")),
                    numa_node=int(group.get("numaNode", -1)),
                    mig_profile=str(group.get("mig", "")),
                )
            )
    uuids = [g.uuid for g in gpus]
    if len(set(uuids)) != len(uuids):
        raise ValueError(f"node {node_name}: GPU uuids must be unique, got {uuids}")
    return tuple(gpus)


def nodes_from_spec(spec: Mapping[str, Any]) -> list[SimulatedNode]:
    """Every node of ``spec`` (see the module docstring), copies expanded, names checked unique."""
    result: list[SimulatedNode] = []
    for entry in spec.get("nodes", []):
        count = int(entry.get("count", 1))
        template = str(entry["name"])
        if count > 1 and "{i}" not in template:
            raise ValueError(f"node {template!r} has count {count}; put '{{i}}' in its name")
        for i in range(count):
            name = template.replace("{i}", str(i))
            node = Node(
                name=name,
                cpu_milli=cpu_milli(entry.get("cpu", "32")),
                memory_mib=quantity_mib(entry.get("memory", "256Gi")),
                gpus=_gpus(name, list(entry.get("gpus", []))),
                labels={str(k): str(v) for k, v in (entry.get("labels") or {}).items()},
                images={str(k): int(v) for k, v in (entry.get("images") or {}).items()},
                datasets={str(k): int(v) for k, v in (entry.get("datasets") or {}).items()},
            )
            result.append(SimulatedNode(node=node, nvidia_gpu=bool(entry.get("nvidiaGpu"))))
    names = [s.node.name for s in result]
    if len(set(names)) != len(names):
        raise ValueError(f"node names must be unique, got {names}")
    return result
