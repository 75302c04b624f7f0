"""Pure reduction of NVML's pairwise topology to named groups, and the sysfs NUMA lookup.

Why its own module: :mod:`aispike_hub.agent.nvml` reads the machine (I/O through an ``nvml``
object); turning what it read (bus ids, common-ancestor levels, NVLink remotes) into stable group
names ("nvlink-0", "pcie-2") is pure and tested on its own, so it lives here.  The names stay
importable from :mod:`aispike_hub.agent.nvml`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

# NVML's constants, repeated so the pure code here needs no pynvml import.
TOPOLOGY_INTERNAL = 0
TOPOLOGY_SINGLE = 10
TOPOLOGY_MULTIPLE = 20
TOPOLOGY_HOSTBRIDGE = 30
TOPOLOGY_NODE = 40
TOPOLOGY_SYSTEM = 50
NVLINK_DEVICE_TYPE_GPU = 0
NVLINK_DEVICE_TYPE_SWITCH = 2
NVLINK_MAX_LINKS = 36

PCIE_SWITCH_MAX_LEVEL = TOPOLOGY_MULTIPLE
"""Two GPUs whose common ancestor is at most this level (same board, one PCIe switch, or a tree
of switches without crossing a host bridge) are in one PCIe switch group."""


@dataclass(frozen=True, slots=True)
class TopologyGroups:
    """Topology group names of one physical GPU ("" = shares that level with no other GPU)."""

    nvlink_domain: str = ""
    pcie_switch: str = ""



class _UnionFind:
    """Connected components over hashable keys; small enough that path halving is plenty."""

    def __init__(self) -> None:
        self._parent: dict[object, object] = {}

    def find(self, key: object) -> object:
        self._parent.setdefault(key, key)
        while self._parent[key] != key:
            self._parent[key] = self._parent[self._parent[key]]
            key = self._parent[key]
        return key

    def union(self, a: object, b: object) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self._parent[ra] = rb


def normalize_bus_id(bus_id: str | bytes) -> str:
    """PCI bus ids compare equal however NVML spelled them ("0000:18:00.0" vs "00000000:18:00.0").

    Why: NVLink remote PCI info and a GPU's own PCI info use the same struct, but tools and
    fixtures write the domain with 4 or 8 digits and in either case.
    """
    text = bus_id.decode() if isinstance(bus_id, bytes) else str(bus_id)
    text = text.strip().lower()
    if not text:
        return ""
    parts = text.split(":")
    if len(parts) == 3:
        domain = parts[0].lstrip("0") or "0"
        return f"{int(domain, 16):08x}:{parts[1]}:{parts[2]}"
    return text


def _groups_by_smallest_index(
    uf: _UnionFind, indices: Iterable[int], prefix: str
) -> dict[int, str]:
    members: dict[object, list[int]] = {}
    for i in indices:
        members.setdefault(uf.find(("gpu", i)), []).append(i)
    names: dict[int, str] = {}
    for group in members.values():
        if len(group) < 2:
            continue
        name = f"{prefix}-{min(group)}"
        for i in group:
            names[i] = name
    return names


def reduce_topology(
    bus_ids: Mapping[int, str],
    common_ancestor: Mapping[tuple[int, int], int],
    nvlink_remotes: Mapping[int, Sequence[tuple[str, int | None]]],
) -> dict[int, TopologyGroups]:
    """Reduce pairwise NVML topology to named groups per GPU.

    ``bus_ids`` maps GPU index to its PCI bus id; ``common_ancestor`` maps a pair ``(i, j)`` to
    ``nvmlDeviceGetTopologyCommonAncestor``'s level; ``nvlink_remotes`` lists, per GPU, the
    (remote PCI bus id, remote device type or None) of each *active* NVLink.

    NVLink domain: GPUs joined by active NVLinks, directly or through a shared NVSwitch, form one
    domain (an HGX board's eight GPUs, or two GPUs with a bridge).  PCIe switch group: GPUs whose
    common ancestor is at most :data:`PCIE_SWITCH_MAX_LEVEL`.  A group is named after its smallest
    GPU index ("nvlink-0", "pcie-2") so names are stable across restarts and readable.
    """
    indices = sorted(bus_ids)
    gpu_by_bus = {normalize_bus_id(b): i for i, b in bus_ids.items() if b}

    nvl = _UnionFind()
    for i in indices:
        nvl.find(("gpu", i))
        for remote_bus, remote_type in nvlink_remotes.get(i, ()):
            bus = normalize_bus_id(remote_bus)
            peer = gpu_by_bus.get(bus)
            if peer is not None and remote_type in (None, NVLINK_DEVICE_TYPE_GPU):
                nvl.union(("gpu", i), ("gpu", peer))
            elif bus and remote_type != NVLINK_DEVICE_TYPE_GPU:
                # An NVSwitch (or a remote we cannot name): GPUs reaching the same one share it.
                nvl.union(("gpu", i), ("switch", bus))

    pcie = _UnionFind()
    for i in indices:
        pcie.find(("gpu", i))
    for (i, j), level in common_ancestor.items():
        if i in bus_ids and j in bus_ids and level <= PCIE_SWITCH_MAX_LEVEL:
            pcie.union(("gpu", i), ("gpu", j))

    nvl_names = _groups_by_smallest_index(nvl, indices, "nvlink")
    pcie_names = _groups_by_smallest_index(pcie, indices, "pcie")
    return {
        i: TopologyGroups(nvlink_domain=nvl_names.get(i, ""), pcie_switch=pcie_names.get(i, ""))
        for i in indices
    }


def numa_node_from_sysfs(bus_id: str, sysfs_root: str = "/sys") -> int | None:
    """The NUMA node the kernel gives the PCI device ``bus_id``, or None.

    Why: NVML's nvmlDeviceGetNumaNodeId is missing on older drivers and answered NotSupported on
    the H200 virtual machine, where ``nvidia-smi topo -m`` still shows the node from sysfs.
    """
    parts = normalize_bus_id(bus_id).split(":")
    if len(parts) != 3:
        return None
    path = f"{sysfs_root}/bus/pci/devices/{parts[0][-4:]}:{parts[1]}:{parts[2]}/numa_node"
    try:
        with open(path, encoding="ascii") as f:
            value = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return value if value >= 0 else None

