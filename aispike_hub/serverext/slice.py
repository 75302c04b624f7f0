"""This server's GPU slice and its live use, as pure functions of readings.

What the notebook was given comes from its environment (the contract of docs/dra-contract.md and
``aispike_hub/contract.py``:
``NVIDIA_VISIBLE_DEVICES``, ``AISPIKE_GPU_MEMORY_LIMIT(S)``, and the spawner's
``AISPIKE_BACKEND``, ``AISPIKE_GPU_MODEL``, ``AISPIKE_GPU_MEMORY_MIB``); which GPUs those are, and
what they are, comes from an NVML reading (:mod:`aispike_hub.agent.nvml`).  Live use is built
only from this server's own processes: each GPU process is attributed to a kernel when a kernel is
among its ancestors, to "this server" when only the server is, and dropped otherwise, so the
numbers are never other people's, even on a shared GPU.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aispike_hub import contract
from aispike_hub.agent.nvml import GpuProcess, GpuReading
from aispike_hub.agent.procs import ProcessInfo

SLICE_ENV = (contract.ENV_GPU_MEMORY_LIMITS, contract.ENV_GPU_MEMORY_LIMIT,
             contract.ENV_GPU_MEMORY_MIB)
SERVER_ROW = "server"
"""Key of the row for this server's GPU processes that descend from no kernel (a terminal)."""


@dataclass(frozen=True, slots=True)
class SliceGpu:
    """One GPU of the slice: which device, and how much of it is this server's."""

    index: int
    """NVML index (-1 when the GPU is known only from the environment)."""
    uuid: str
    model: str
    memory_total_mib: int
    """The device's memory (0 when unknown)."""
    limit_mib: int
    """This server's share of it: the slice, or the whole device."""
    mig_profile: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "uuid": self.uuid, "model": self.model,
                "memory_total_mib": self.memory_total_mib, "limit_mib": self.limit_mib,
                "mig_profile": self.mig_profile}


@dataclass(frozen=True, slots=True)
class ServerSlice:
    """What this notebook server was given."""

    backend: str
    gpus: tuple[SliceGpu, ...]
    requested_model: str = ""
    """The model(s) chosen in the options form ("any" when any would do)."""
    live: bool = True
    """False when NVML could not be read: the slice is known only from the environment."""
    simulated: bool = False
    """The GPUs are a simulated inventory (``AISPIKE_SIMULATED_GPUS``): no device, no live use."""

    @property
    def limit_mib(self) -> int:
        return sum(g.limit_mib for g in self.gpus)

    def as_dict(self) -> dict[str, Any]:
        models = sorted({g.model for g in self.gpus if g.model})
        return {"backend": self.backend, "model": ", ".join(models) or self.requested_model,
                "requested_model": self.requested_model, "limit_mib": self.limit_mib,
                "indices": [g.index for g in self.gpus], "gpus": [g.as_dict() for g in self.gpus],
                "live": self.live, "simulated": self.simulated}


def _tokens(value: str) -> list[str]:
    return [t.strip() for t in value.split(",") if t.strip()]


def _mib_list(value: str) -> list[int]:
    out = []
    for token in _tokens(value):
        try:
            out.append(int(float(token.rstrip("mM"))))
        except ValueError:
            continue
    return out


def slice_limits(environ: Mapping[str, str]) -> list[int]:
    """MiB per GPU the environment grants (empty: whole GPUs, or no slice at all)."""
    if environ.get(contract.ENV_GPU_MEMORY_LIMITS):
        return _mib_list(environ[contract.ENV_GPU_MEMORY_LIMITS])
    for key in (contract.ENV_GPU_MEMORY_LIMIT, contract.ENV_GPU_MEMORY_MIB):
        if environ.get(key):
            return _mib_list(environ[key])
    return []


def _matches(token: str, reading: GpuReading) -> bool:
    uuid = reading.gpu.uuid.lower()
    token = token.lower()
    if token.isdigit():
        return int(token) == reading.gpu.index
    # CUDA accepts any unique prefix of a UUID ("GPU-5c8a"); NVIDIA_VISIBLE_DEVICES the whole.
    return bool(uuid) and (uuid == token or uuid.startswith(token))


def visible_gpus(environ: Mapping[str, str],
                 gpus: Sequence[GpuReading]) -> tuple[GpuReading, ...]:
    """The GPUs this server's processes can use, in the order CUDA numbers them.

    ``NVIDIA_VISIBLE_DEVICES`` (indices or UUIDs, ``all``, ``none``/``void``) picks devices
    from the reading; ``CUDA_VISIBLE_DEVICES`` then picks among those, by position or UUID
    (``""`` or ``-1``: none).  Unset variables restrict nothing.
    """
    chosen = list(gpus)
    nvidia = environ.get("NVIDIA_VISIBLE_DEVICES")
    if nvidia is not None and nvidia.strip().lower() != "all":
        tokens = _tokens(nvidia)
        if not tokens or tokens[0].lower() in ("none", "void"):
            return ()
        chosen = [g for t in tokens for g in chosen if _matches(t, g)]
    cuda = environ.get("CUDA_VISIBLE_DEVICES")
    if cuda is not None:
        picked: list[GpuReading] = []
        for token in _tokens(cuda):
            if token.lstrip("-").isdigit():
                position = int(token)
                if position < 0:
                    break  # CUDA stops at the first invalid entry
                if position < len(chosen):
                    picked.append(chosen[position])
                continue
            picked.extend(g for g in chosen if _matches(token, g))
        chosen = picked
    unique: dict[str, GpuReading] = {}
    for g in chosen:
        unique.setdefault(g.gpu.uuid or str(g.gpu.index), g)
    return tuple(unique.values())


def server_slice(environ: Mapping[str, str], gpus: Sequence[GpuReading],
                 nvml_available: bool = True) -> ServerSlice | None:
    """This server's slice, or None when it has no GPU ("no GPU slice").

    Each GPU's limit is the environment's (``AISPIKE_GPU_MEMORY_LIMITS`` per GPU, or one
    limit for every GPU), capped at the device's memory; without one, the whole device.  When NVML
    cannot be read but the environment names a slice, the slice is reported from the environment
    alone (``live`` False).
    """
    limits = slice_limits(environ)
    backend = environ.get("AISPIKE_BACKEND") or (
        "unmanaged" if not any(environ.get(k) for k in SLICE_ENV) else "native")
    requested = environ.get(contract.ENV_GPU_MODEL, "")
    if not nvml_available:
        if not limits:
            return None
        return _slice_from_environment(environ, limits, backend, requested)
    visible = visible_gpus(environ, gpus)
    if not visible:
        return None
    out = []
    for i, r in enumerate(visible):
        total = r.gpu.memory_mib
        limit = limits[min(i, len(limits) - 1)] if limits else total
        out.append(SliceGpu(r.gpu.index, r.gpu.uuid, r.gpu.model, total, min(limit, total),
                            r.gpu.mig_profile))
    return ServerSlice(backend, tuple(out), requested)


def _slice_from_environment(environ: Mapping[str, str], limits: list[int], backend: str,
                            requested: str) -> ServerSlice:
    """The slice as the spawner described it, when no NVML reading says which GPUs it is on.

    The spawner's ``AISPIKE_GPU_INDICES`` and ``AISPIKE_GPU_MODELS`` (the GPUs it placed the
    slice on) name them; a numeric ``NVIDIA_VISIBLE_DEVICES`` gives indices too.  A GPU still
    unknown has index -1 and the requested model only when one was asked for ("any" is not a
    model).
    """
    visible = _tokens(environ.get("NVIDIA_VISIBLE_DEVICES", ""))
    uuids = [t for t in visible if not t.isdigit() and t.lower() not in ("all", "none", "void")]
    indices = [int(t) for t in _tokens(environ.get(contract.ENV_GPU_INDICES, "")) if t.isdigit()]
    if not indices:
        indices = [int(t) for t in visible if t.isdigit()]
    models = _tokens(environ.get(contract.ENV_GPU_MODELS, ""))
    count = max(len(limits), len(uuids), len(indices),
                int(environ.get(contract.ENV_GPU_COUNT, "1") or 1))
    asked = [m for m in _tokens(requested) if m != "any"]
    fallback = asked[0] if len(asked) == 1 else ""
    gpus = tuple(
        SliceGpu(indices[i] if i < len(indices) else -1, uuids[i] if i < len(uuids) else "",
                 models[i] if i < len(models) else fallback, 0,
                 limits[min(i, len(limits) - 1)])
        for i in range(count))
    return ServerSlice(backend, gpus, requested, live=False,
                       simulated=bool(environ.get("AISPIKE_SIMULATED_GPUS")))


# ---------------------------------------------------------------------------------------------
# Live use: only this server's processes
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class RowUse:
    """GPU use of one kernel (or of the server's other processes)."""

    key: str
    """Kernel id, or :data:`SERVER_ROW`."""
    memory_used_mib: int = 0
    utilization_percent: float | None = None
    pids: list[int] = field(default_factory=list)
    by_gpu: dict[int, int] = field(default_factory=dict)
    """MiB per GPU index."""

    def add(self, p: GpuProcess) -> None:
        mem = p.memory_used_mib or 0
        self.memory_used_mib += mem
        self.by_gpu[p.gpu_index] = self.by_gpu.get(p.gpu_index, 0) + mem
        if p.pid not in self.pids:
            self.pids.append(p.pid)
        if p.sm_utilization_percent is not None:
            self.utilization_percent = min(
                100.0, (self.utilization_percent or 0.0) + p.sm_utilization_percent)


def owner_row(pid: int, tree: Mapping[int, ProcessInfo], kernels: Mapping[int, str],
              server_pid: int, max_depth: int = 64) -> str | None:
    """The kernel id ``pid`` belongs to, :data:`SERVER_ROW`, or None when it is not ours.

    Walks up from the process: the nearest kernel wins (a kernel's ``!python train.py`` is
    its kernel's), then this server; a process with neither among its ancestors is another
    notebook's (or anyone's) and is never reported.
    """
    current: int | None = pid
    seen: set[int] = set()
    for _ in range(max_depth):
        if current is None or current <= 0 or current in seen:
            return None
        seen.add(current)
        if current in kernels:
            return kernels[current]
        if current == server_pid:
            return SERVER_ROW
        info = tree.get(current)
        current = info.ppid if info is not None else None
    return None


def attribute(processes: Iterable[GpuProcess], tree: Mapping[int, ProcessInfo],
              kernels: Mapping[int, str], server_pid: int,
              slice_indices: Iterable[int] | None = None) -> dict[str, RowUse]:
    """This server's GPU use per kernel id (and :data:`SERVER_ROW`), from NVML processes.

    ``kernels`` maps each kernel's process id to its kernel id.  Processes that are not ours
    are dropped; so are processes on GPUs outside ``slice_indices`` when given.
    """
    allowed = set(slice_indices) if slice_indices is not None else None
    rows: dict[str, RowUse] = {}
    for p in processes:
        if allowed is not None and p.gpu_index not in allowed:
            continue
        key = owner_row(p.pid, tree, kernels, server_pid)
        if key is None:
            continue
        rows.setdefault(key, RowUse(key)).add(p)
    return rows


def fill_level(used_mib: int, limit_mib: int, warn: float, full: float) -> str:
    """"ok", "warn" or "full": how close to its limit one GPU of the slice is."""
    if limit_mib <= 0:
        return "ok"
    share = used_mib / limit_mib
    return "full" if share >= full else "warn" if share >= warn else "ok"
