"""A thin layer over NVML (``pynvml`` from nvidia-ml-py) that returns core types.

Why a layer: NVML is a C library with per-model gaps (NUMA ids, NVLink, process samples are
"not supported" on some GPUs), GPUs that fall off the bus, and MIG, which turns one GPU into several
devices.  Everything here is read through an ``nvml`` object that has pynvml's function names, so
tests pass a recorded machine (:class:`aispike_hub.agent.recorded.RecordedNvml`) instead of the
real module, and the agent's other parts never see an NVML handle or error.

The rule for bad data: a failed read that the agent cannot do without (the GPU's handle, UUID,
memory) skips that GPU; a failed optional read (NUMA node, NVLink, utilisation, process samples)
falls back to "unknown".  Every skip is logged and kept in :attr:`MachineReading.problems`.

The pure reduction of what was read to topology groups is :mod:`aispike_hub.agent.topology`
(its names are re-exported here).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aispike_hub.agent.topology import (
    NVLINK_DEVICE_TYPE_GPU,
    NVLINK_DEVICE_TYPE_SWITCH,
    NVLINK_MAX_LINKS,
    PCIE_SWITCH_MAX_LEVEL,
    TOPOLOGY_HOSTBRIDGE,
    TOPOLOGY_INTERNAL,
    TOPOLOGY_MULTIPLE,
    TOPOLOGY_NODE,
    TOPOLOGY_SINGLE,
    TOPOLOGY_SYSTEM,
    TopologyGroups,
    normalize_bus_id,
    numa_node_from_sysfs,
    reduce_topology,
)
from aispike_hub.model import Gpu
from aispike_hub.units import MIB

log = logging.getLogger(__name__)


UNKNOWN_MODEL = "unknown"


@dataclass(frozen=True, slots=True)
class GpuReading:
    """One schedulable GPU (a whole GPU, or one MIG instance) and its live state.

    Wraps the core :class:`Gpu` (what placement needs) with what only the agent uses: live memory
    use, the GPU's own utilisation and where it sits on the bus.
    """

    gpu: Gpu
    memory_used_mib: int
    utilization_percent: float | None
    """Whole-device SM utilisation; None when NVML does not report it (e.g. MIG instances)."""
    parent_index: int
    """NVML index of the physical GPU; equal to ``gpu.index`` for a whole GPU."""
    pci_bus_id: str = ""
    mig_enabled: bool = False
    """True for an instance of a GPU in MIG mode."""


@dataclass(frozen=True, slots=True)
class GpuProcess:
    """One process using one GPU: what per-notebook use is built from."""

    gpu_index: int
    """Index of the :class:`Gpu` (the MIG instance's index where the process runs in one)."""
    gpu_uuid: str
    pid: int
    memory_used_mib: int | None
    """None when the driver does not say (e.g. without permission to see other processes)."""
    sm_utilization_percent: float | None = None
    """Mean SM utilisation of this process over the last sampling window; None if unknown."""


@dataclass(frozen=True, slots=True)
class MachineReading:
    """Everything one NVML pass read from this machine."""

    available: bool
    """False when there is no driver or NVML library: the node has no GPUs to publish."""
    driver_version: str = ""
    gpus: tuple[GpuReading, ...] = ()
    processes: tuple[GpuProcess, ...] = ()
    problems: tuple[str, ...] = ()
    """What was skipped or unknown, one readable line each."""

    @property
    def core_gpus(self) -> tuple[Gpu, ...]:
        """The core view of the GPUs, as placement and the ResourceSlice builder take them."""
        return tuple(r.gpu for r in self.gpus)



_MIG_PROFILE_IN_NAME = re.compile(r"\bMIG\s+(\S+)\s*$")


def mig_profile_from(name: str, slice_count: int | None, memory_mib: int) -> str:
    """The MIG profile ("3g.20gb") of an instance, from its name or else its attributes.

    Why two sources: NVML names MIG devices "NVIDIA A100-SXM4-40GB MIG 3g.20gb" on current
    drivers, but older drivers give the parent's name; then the slice count and memory say it.
    """
    match = _MIG_PROFILE_IN_NAME.search(name or "")
    if match:
        return match.group(1)
    if slice_count:
        return f"{slice_count}g.{round(memory_mib / 1024)}gb"
    return "mig"


def parent_model(name: str) -> str:
    """The GPU model of a MIG instance's name ("NVIDIA A100-SXM4-40GB MIG 1g.5gb" -> parent)."""
    return _MIG_PROFILE_IN_NAME.sub("", name or "").strip()


def mean_utilization_by_pid(samples: Iterable[tuple[int, int, float]]) -> dict[int, float]:
    """Mean SM utilisation per pid from (pid, timestamp_us, sm_util) samples.

    Why the mean: NVML keeps a ring of samples per process; one sample is a 1/6 s glimpse, the mean
    over the window since the last read is what "this notebook used the GPU" means.
    """
    sums: dict[int, list[float]] = {}
    for pid, _ts, util in samples:
        sums.setdefault(pid, []).append(float(util))
    return {pid: sum(v) / len(v) for pid, v in sums.items()}


# ---------------------------------------------------------------------------------------------
# Reading (I/O through the nvml object)
# ---------------------------------------------------------------------------------------------


def _error_types(nvml: Any) -> tuple[type[BaseException], ...]:
    error = getattr(nvml, "NVMLError", None)
    return (error,) if isinstance(error, type) else (Exception,)


def _error_name(exc: BaseException) -> str:
    return type(exc).__name__.replace("NVMLError_", "") or str(exc)


def _decode(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


@dataclass
class _Reader:
    """One NVML pass; collects problems instead of raising."""

    nvml: Any
    last_sample_us: MutableMapping[str, int]
    sysfs_root: str | None = None
    problems: list[str] = field(default_factory=list)
    _mig_gi: dict[int, int] = field(default_factory=dict)
    """GPU-instance id of each MIG instance, by its Gpu.index (to place MIG processes)."""

    def __post_init__(self) -> None:
        self.errors = _error_types(self.nvml)

    def note(self, text: str) -> None:
        log.warning("NVML: %s", text)
        self.problems.append(text)

    def optional(self, what: str, fn: str, *args: Any, quiet: Iterable[str] = ()) -> Any:
        """Call an NVML function whose failure only makes one fact unknown (returns None)."""
        try:
            return getattr(self.nvml, fn)(*args)
        except self.errors as exc:
            name = _error_name(exc)
            if name not in set(quiet) | {"NotSupported"}:
                self.note(f"{what}: {fn} failed ({name}); left unknown")
            return None

    # -- physical GPUs -----------------------------------------------------------------------

    def read(self) -> MachineReading:
        nvml = self.nvml
        try:
            nvml.nvmlInit()
        except self.errors as exc:
            self.note(f"no NVML on this machine ({_error_name(exc)}): publishing no GPUs")
            return MachineReading(available=False, problems=tuple(self.problems))
        try:
            return self._read_initialised()
        finally:
            try:
                nvml.nvmlShutdown()
            except self.errors as exc:
                log.debug("nvmlShutdown failed: %s", exc)

    def _read_initialised(self) -> MachineReading:
        nvml = self.nvml
        driver = self.optional("driver", "nvmlSystemGetDriverVersion")
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except self.errors as exc:
            self.note(f"cannot count GPUs ({_error_name(exc)}): publishing no GPUs")
            return MachineReading(available=False, problems=tuple(self.problems))

        handles: dict[int, Any] = {}
        for i in range(count):
            try:
                handles[i] = nvml.nvmlDeviceGetHandleByIndex(i)
            except self.errors as exc:
                self.note(f"GPU {i}: no handle ({_error_name(exc)}); skipped")

        physical: dict[int, dict[str, Any]] = {}
        for i, handle in handles.items():
            facts = self._physical(i, handle)
            if facts is not None:
                physical[i] = facts

        groups = reduce_topology(
            {i: f["bus_id"] for i, f in physical.items()},
            self._common_ancestors({i: handles[i] for i in physical}),
            {i: f["nvlink"] for i, f in physical.items()},
        )

        readings: list[GpuReading] = []
        processes: list[GpuProcess] = []
        next_mig_index = count
        for i in sorted(physical):
            facts = physical[i]
            topo = groups.get(i, TopologyGroups())
            if facts["mig"]:
                instances = self._mig_instances(i, handles[i], facts, topo, next_mig_index)
                next_mig_index += len(instances)
                readings.extend(instances)
                processes.extend(self._mig_processes(handles[i], instances))
                continue
            gpu = Gpu(
                index=i,
                model=facts["model"],
                memory_mib=facts["total_mib"],
                uuid=facts["uuid"],
                nvlink_domain=topo.nvlink_domain,
                pcie_switch=topo.pcie_switch,
                numa_node=facts["numa"],
            )
            readings.append(
                GpuReading(
                    gpu=gpu,
                    memory_used_mib=facts["used_mib"],
                    utilization_percent=facts["util"],
                    parent_index=i,
                    pci_bus_id=facts["bus_id"],
                )
            )
            processes.extend(self._processes(handles[i], gpu))
        return MachineReading(
            available=True,
            driver_version=_decode(driver) if driver is not None else "",
            gpus=tuple(sorted(readings, key=lambda r: r.gpu.index)),
            processes=tuple(processes),
            problems=tuple(self.problems),
        )

    def _physical(self, i: int, handle: Any) -> dict[str, Any] | None:
        nvml = self.nvml
        try:
            uuid = _decode(nvml.nvmlDeviceGetUUID(handle))
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            total_mib = int(memory.total) // MIB
            used_mib = int(memory.used) // MIB
        except self.errors as exc:
            self.note(f"GPU {i}: cannot read UUID or memory ({_error_name(exc)}); skipped")
            return None
        if total_mib <= 0 or not uuid:
            self.note(f"GPU {i}: reports no memory or UUID; skipped")
            return None
        name = self.optional(f"GPU {i}", "nvmlDeviceGetName", handle)
        model = _decode(name).strip() if name is not None else ""
        if not model:
            self.note(f"GPU {i}: model unknown; published as '{UNKNOWN_MODEL}'")
            model = UNKNOWN_MODEL
        pci = self.optional(f"GPU {i}", "nvmlDeviceGetPciInfo", handle)
        bus_id = normalize_bus_id(pci.busId) if pci is not None else ""
        numa = self.optional(f"GPU {i}", "nvmlDeviceGetNumaNodeId", handle)
        if (numa is None or int(numa) < 0) and self.sysfs_root and bus_id:
            numa = numa_node_from_sysfs(bus_id, self.sysfs_root)
        mig_mode = self.optional(f"GPU {i}", "nvmlDeviceGetMigMode", handle)
        util = self.optional(f"GPU {i}", "nvmlDeviceGetUtilizationRates", handle)
        return {
            "uuid": uuid,
            "model": model,
            "total_mib": total_mib,
            "used_mib": used_mib,
            "bus_id": bus_id,
            "numa": int(numa) if numa is not None and int(numa) >= 0 else -1,
            "mig": bool(mig_mode is not None and int(mig_mode[0]) == 1),
            "util": float(util.gpu) if util is not None else None,
            "nvlink": self._nvlinks(i, handle),
        }

    def _nvlinks(self, i: int, handle: Any) -> list[tuple[str, int | None]]:
        """(remote bus id, remote type) of each active link; stops at the first absent link."""
        remotes: list[tuple[str, int | None]] = []
        for link in range(NVLINK_MAX_LINKS):
            try:
                state = self.nvml.nvmlDeviceGetNvLinkState(handle, link)
            except self.errors as exc:
                if _error_name(exc) not in ("NotSupported", "InvalidArgument", "NotFound"):
                    self.note(f"GPU {i}: NVLink {link} state failed ({_error_name(exc)})")
                break
            if not state:
                continue
            pci = self.optional(
                f"GPU {i} NVLink {link}", "nvmlDeviceGetNvLinkRemotePciInfo", handle, link
            )
            if pci is None:
                continue
            kind = self.optional(
                f"GPU {i} NVLink {link}", "nvmlDeviceGetNvLinkRemoteDeviceType", handle, link
            )
            remotes.append((normalize_bus_id(pci.busId), int(kind) if kind is not None else None))
        return remotes

    def _common_ancestors(self, handles: Mapping[int, Any]) -> dict[tuple[int, int], int]:
        levels: dict[tuple[int, int], int] = {}
        indices = sorted(handles)
        for a, i in enumerate(indices):
            for j in indices[a + 1 :]:
                level = self.optional(
                    f"GPUs {i}-{j}",
                    "nvmlDeviceGetTopologyCommonAncestor",
                    handles[i],
                    handles[j],
                )
                if level is not None:
                    levels[(i, j)] = int(level)
        return levels

    # -- processes -----------------------------------------------------------------------------

    def _raw_processes(self, handle: Any, what: str) -> list[Any]:
        procs = self.optional(what, "nvmlDeviceGetComputeRunningProcesses", handle)
        return list(procs or [])

    def _samples(self, handle: Any, uuid: str, what: str) -> dict[int, float] | None:
        since = self.last_sample_us.get(uuid, 0)
        samples = self.optional(
            what, "nvmlDeviceGetProcessUtilization", handle, since, quiet=("NotFound",)
        )
        if samples is None:
            return None
        rows = [(int(s.pid), int(s.timeStamp), float(s.smUtil)) for s in samples]
        if rows:
            self.last_sample_us[uuid] = max(ts for _pid, ts, _u in rows)
        return mean_utilization_by_pid(rows)

    def _processes(self, handle: Any, gpu: Gpu) -> list[GpuProcess]:
        what = f"GPU {gpu.index} processes"
        raw = self._raw_processes(handle, what)
        utils = self._samples(handle, gpu.uuid, what) if raw else None
        out = []
        for p in raw:
            mem = getattr(p, "usedGpuMemory", None)
            out.append(
                GpuProcess(
                    gpu_index=gpu.index,
                    gpu_uuid=gpu.uuid,
                    pid=int(p.pid),
                    memory_used_mib=int(mem) // MIB if mem is not None else None,
                    sm_utilization_percent=(utils or {}).get(int(p.pid)),
                )
            )
        return out

    # -- MIG -----------------------------------------------------------------------------------

    def _mig_instances(
        self, i: int, handle: Any, facts: Mapping[str, Any], topo: TopologyGroups, first: int
    ) -> list[GpuReading]:
        """MIG instances of GPU ``i``, numbered from ``first`` (after the physical GPUs).

        Why new indices: every device on a node needs a distinct index (``gpu-<index>`` in the
        ResourceSlice) and a MIG-enabled GPU cannot be handed out whole, so its instances take
        the indices after the physical GPUs, in NVML's order.
        """
        count = self.optional(f"GPU {i}", "nvmlDeviceGetMaxMigDeviceCount", handle) or 0
        out: list[GpuReading] = []
        for k in range(int(count)):
            try:
                mig = self.nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, k)
            except self.errors as exc:
                if _error_name(exc) != "NotFound":  # NotFound: an empty slot
                    self.note(f"GPU {i} MIG {k}: no handle ({_error_name(exc)}); skipped")
                continue
            try:
                uuid = _decode(self.nvml.nvmlDeviceGetUUID(mig))
                memory = self.nvml.nvmlDeviceGetMemoryInfo(mig)
                total_mib = int(memory.total) // MIB
                used_mib = int(memory.used) // MIB
            except self.errors as exc:
                self.note(f"GPU {i} MIG {k}: cannot read UUID or memory ({_error_name(exc)})")
                continue
            if total_mib <= 0:
                self.note(f"GPU {i} MIG {k}: reports no memory; skipped")
                continue
            name = self.optional(f"GPU {i} MIG {k}", "nvmlDeviceGetName", mig)
            attrs = self.optional(f"GPU {i} MIG {k}", "nvmlDeviceGetAttributes", mig)
            gi = self.optional(f"GPU {i} MIG {k}", "nvmlDeviceGetGpuInstanceId", mig)
            profile = mig_profile_from(
                _decode(name) if name is not None else "",
                int(attrs.gpuInstanceSliceCount) if attrs is not None else None,
                total_mib,
            )
            model = facts["model"]
            if model == UNKNOWN_MODEL and name is not None:
                model = parent_model(_decode(name)) or UNKNOWN_MODEL
            gpu = Gpu(
                index=first + len(out),
                model=model,
                memory_mib=total_mib,
                uuid=uuid,
                nvlink_domain=topo.nvlink_domain,
                pcie_switch=topo.pcie_switch,
                numa_node=facts["numa"],
                mig_profile=profile,
            )
            reading = GpuReading(
                gpu=gpu,
                memory_used_mib=used_mib,
                utilization_percent=None,
                parent_index=i,
                pci_bus_id=facts["bus_id"],
                mig_enabled=True,
            )
            out.append(reading)
            self._mig_gi[gpu.index] = int(gi) if gi is not None else -1
        return out

    def _mig_processes(self, handle: Any, instances: Sequence[GpuReading]) -> list[GpuProcess]:
        """Processes of a MIG GPU, each put on its instance by GPU-instance id.

        Why from the parent: NVML lists a MIG GPU's processes on the parent handle, each with the
        GPU instance it runs in; per-process utilisation is not available under MIG.
        """
        by_gi = {self._mig_gi.get(r.gpu.index, -1): r.gpu for r in instances}
        out = []
        parent = instances[0].parent_index if instances else -1
        for p in self._raw_processes(handle, f"GPU {parent} processes"):
            gpu = by_gi.get(int(getattr(p, "gpuInstanceId", -1)))
            if gpu is None:
                self.note(f"process {p.pid} runs in an unknown MIG instance; skipped")
                continue
            mem = getattr(p, "usedGpuMemory", None)
            out.append(
                GpuProcess(
                    gpu_index=gpu.index,
                    gpu_uuid=gpu.uuid,
                    pid=int(p.pid),
                    memory_used_mib=int(mem) // MIB if mem is not None else None,
                )
            )
        return out


def read_machine(
    nvml: Any | None = None,
    last_sample_us: MutableMapping[str, int] | None = None,
    sysfs_root: str | None = None,
) -> MachineReading:
    """Read this machine's GPUs, topology and GPU processes through ``nvml``.

    ``nvml`` is the pynvml module (the default) or anything with its function names, such as a
    recorded machine.  ``last_sample_us`` carries each GPU's last process-sample timestamp between
    calls, so each pass averages only the samples taken since the previous one.  With
    ``sysfs_root`` ("/sys" on a real node) a NUMA node NVML cannot give is read from sysfs; a
    recorded machine leaves it None, as sysfs is not part of a recording.  Never raises for
    NVML errors: a machine without a driver reads as ``available=False``.
    """
    if nvml is None:
        try:
            import pynvml
        except ImportError:
            log.warning("nvidia-ml-py is not installed: publishing no GPUs")
            return MachineReading(
                available=False, problems=("nvidia-ml-py (pynvml) is not installed",)
            )
        nvml = pynvml
    marks = last_sample_us if last_sample_us is not None else {}
    return _Reader(nvml, marks, sysfs_root).read()


__all__ = [  # the topology names importable from here before the split, and this module's own
    "NVLINK_DEVICE_TYPE_GPU",
    "NVLINK_DEVICE_TYPE_SWITCH",
    "NVLINK_MAX_LINKS",
    "PCIE_SWITCH_MAX_LEVEL",
    "TOPOLOGY_HOSTBRIDGE",
    "TOPOLOGY_INTERNAL",
    "TOPOLOGY_MULTIPLE",
    "TOPOLOGY_NODE",
    "TOPOLOGY_SINGLE",
    "TOPOLOGY_SYSTEM",
    "UNKNOWN_MODEL",
    "GpuProcess",
    "GpuReading",
    "MachineReading",
    "TopologyGroups",
    "mean_utilization_by_pid",
    "mig_profile_from",
    "normalize_bus_id",
    "numa_node_from_sysfs",
    "parent_model",
    "read_machine",
    "reduce_topology",
]
