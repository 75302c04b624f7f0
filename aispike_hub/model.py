"""Value types shared by every layer of AISpike Hub.

These are the words the core speaks: adapters (Kubernetes inventory, NVML, the hub) translate the
world into them, the core (placement, quota, idle policy, simulator) decides with them, and the
adapters write the decisions back.  They are frozen so that a decision can never be changed behind
the back of the code that made it.

Units are explicit in every field name: ``_mib`` is mebibytes (2**20 bytes), ``_milli`` is
thousandths (of a CPU core or of one GPU), ``_bytes`` is bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

GIB_IN_MIB = 1024
"""One GiB in MiB: the step of a GPU-memory slice in the options form."""

FULL_GPU_MILLI = 1000
"""A GPU share of 1000 milli is the whole GPU."""


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


@dataclass(frozen=True, slots=True)
class Gpu:
    """One physical GPU (or one MIG instance) on a node.

    ``nvlink_domain``, ``pcie_switch`` and ``numa_node`` are topology groups: two GPUs with the same
    non-empty value share an NVLink domain, a PCIe switch or a NUMA node.  Topology affinity puts a
    multi-GPU request inside the tightest group that can hold it.
    """

    index: int
    model: str
    memory_mib: int
    uuid: str = ""
    nvlink_domain: str = ""
    pcie_switch: str = ""
    numa_node: int = -1
    mig_profile: str = ""

    def __post_init__(self) -> None:
        if self.index < 0:
            raise ValueError(f"Gpu.index must be >= 0, got {self.index}")
        if self.memory_mib <= 0:
            raise ValueError(
                f"Gpu.memory_mib must be > 0, got {self.memory_mib} (GPU {self.index})"
            )
        if not self.model:
            raise ValueError(f"Gpu.model must not be empty (GPU {self.index})")


@dataclass(frozen=True, slots=True)
class Node:
    """A machine that can host notebook servers: CPU, RAM, GPUs and what it already caches.

    ``images`` and ``datasets`` map a name to its size in bytes; locality affinity prefers nodes
    that already hold a request's image and datasets, weighted by what would otherwise be pulled.
    """

    name: str
    cpu_milli: int
    memory_mib: int
    gpus: tuple[Gpu, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    images: Mapping[str, int] = field(default_factory=dict)
    datasets: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("Node.name must not be empty")
        if self.cpu_milli < 0:
            raise ValueError(
                f"Node.cpu_milli must be >= 0, got {self.cpu_milli} (node {self.name})"
            )
        if self.memory_mib < 0:
            raise ValueError(
                f"Node.memory_mib must be >= 0, got {self.memory_mib} (node {self.name})"
            )
        indices = [g.index for g in self.gpus]
        if len(set(indices)) != len(indices):
            raise ValueError(f"Node.gpus has duplicate indices {indices} (node {self.name})")
        object.__setattr__(self, "labels", _frozen_mapping(self.labels))
        object.__setattr__(self, "images", _frozen_mapping(self.images))
        object.__setattr__(self, "datasets", _frozen_mapping(self.datasets))

    def __hash__(self) -> int:
        return hash(self.name)


@dataclass(frozen=True, slots=True)
class SliceRequest:
    """What one notebook server asks for.

    GPU demand is either absolute (``gpu_memory_mib`` per GPU: "8 GiB") or a share of a GPU
    (``gpu_share_milli``: 500 = half of whichever GPU it lands on, as in the Alibaba trace).  A
    request for more than one GPU takes whole GPUs (``gpu_count`` > 1), as the Kubernetes contract
    allocates multi-GPU claims by device.  ``gpu_count == 0`` is a CPU-only server.
    ``allowed_models`` empty means any model.
    """

    gpu_count: int = 1
    gpu_memory_mib: int = 0
    gpu_share_milli: int = 0
    allowed_models: frozenset[str] = frozenset()
    cpu_milli: int = 0
    memory_mib: int = 0
    image: str = ""
    datasets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.gpu_count < 0:
            raise ValueError(f"gpu_count must be >= 0, got {self.gpu_count}")
        if self.gpu_memory_mib < 0:
            raise ValueError(f"gpu_memory_mib must be >= 0, got {self.gpu_memory_mib}")
        if not 0 <= self.gpu_share_milli <= FULL_GPU_MILLI:
            raise ValueError(f"gpu_share_milli must be in 0..1000, got {self.gpu_share_milli}")
        if self.gpu_memory_mib and self.gpu_share_milli:
            raise ValueError("give gpu_memory_mib or gpu_share_milli, not both")
        if self.cpu_milli < 0:
            raise ValueError(f"cpu_milli must be >= 0, got {self.cpu_milli}")
        if self.memory_mib < 0:
            raise ValueError(f"memory_mib must be >= 0, got {self.memory_mib}")
        if self.gpu_count > 1 and self.gpu_memory_mib:
            raise ValueError(
                "gpu_memory_mib applies to one GPU; "
                "a request for more than one GPU takes whole GPUs"
            )
        if self.gpu_count > 1 and self.gpu_share_milli not in (0, FULL_GPU_MILLI):
            raise ValueError(
                "a request for more than one GPU takes whole GPUs (gpu_share_milli 1000)"
            )
        object.__setattr__(self, "allowed_models", frozenset(self.allowed_models))
        object.__setattr__(self, "datasets", tuple(self.datasets))

    @property
    def whole_gpus(self) -> bool:
        """True when each GPU of the request is taken whole."""
        if self.gpu_count == 0:
            return False
        if self.gpu_count > 1:
            return True
        return self.gpu_share_milli == FULL_GPU_MILLI or (
            self.gpu_memory_mib == 0 and self.gpu_share_milli == 0
        )

    def gpu_demand_mib(self, gpu: Gpu) -> int:
        """Memory this request takes on ``gpu`` (one GPU of the request).

        A share is rounded up to whole MiB so a GPU is never over-committed by rounding.
        """
        if self.gpu_count == 0:
            return 0
        if self.whole_gpus:
            return gpu.memory_mib
        if self.gpu_memory_mib:
            return self.gpu_memory_mib
        return -(-self.gpu_share_milli * gpu.memory_mib // FULL_GPU_MILLI)

    def allows_model(self, model: str) -> bool:
        return not self.allowed_models or model in self.allowed_models


@dataclass(frozen=True, slots=True)
class Assignment:
    """Where a request was placed: a node and, per GPU index, the memory taken on it."""

    node: str
    gpu_indices: tuple[int, ...]
    gpu_memory_mib: tuple[int, ...]
    cpu_milli: int = 0
    memory_mib: int = 0
    owner: str = ""
    """Who holds it (a server or pod name); used by reports, ignored by placement."""
    anonymous_gpus: int = 0
    """Whole GPUs of the node held by something that does not say which (a device-plugin pod
    asking for ``nvidia.com/gpu``): placement keeps that many of the node's GPUs idle
    (docs/placement.md, "GPUs used outside AISpike")."""

    def __post_init__(self) -> None:
        if self.anonymous_gpus < 0:
            raise ValueError(f"anonymous_gpus must be >= 0, got {self.anonymous_gpus}")
        if len(self.gpu_indices) != len(self.gpu_memory_mib):
            raise ValueError("gpu_indices and gpu_memory_mib must have the same length")
        if len(set(self.gpu_indices)) != len(self.gpu_indices):
            raise ValueError(f"duplicate GPU index in assignment {self.gpu_indices}")


@dataclass(frozen=True, slots=True)
class Usage:
    """Live use of one GPU by one server (from the agent's NVML reading)."""

    node: str
    gpu_index: int
    memory_used_mib: int
    utilization_percent: float
    owner: str = ""
