"""Reading cluster traces (the Alibaba GPU trace format) into core types, with row-named errors.

Format (see ``shared/traces/README.md``): a node list ``sn, cpu_milli, memory_mib, gpu, model``
and a pod list ``name, cpu_milli, memory_mib, num_gpu, gpu_milli[, gpu_spec, qos, pod_phase,
creation_time, deletion_time, scheduled_time]``.

The trace gives GPU *shares*, not bytes.  Each trace GPU is therefore given a memory of its
model's nominal size in GiB times 1000 (in the engine's MiB unit), so that every share in
thousandths divides it exactly and a trace replay packs exactly as the published simulator.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from aispike_hub.model import FULL_GPU_MILLI, Gpu, Node, SliceRequest

NOMINAL_GIB = {"T4": 16, "P100": 16, "V100M16": 16, "V100M32": 32, "A10": 24, "G2": 16, "G3": 32}
"""Nominal memory of the trace's GPU models; unknown models get 16."""

NODE_FIELDS = ("sn", "cpu_milli", "memory_mib", "gpu", "model")
POD_FIELDS = ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli")


class TraceError(ValueError):
    """A malformed trace: the message names the file, the row and the field."""


@dataclass(frozen=True, slots=True)
class TracePod:
    """One pod of a trace: its request, and when it came and went (seconds, -1 if unknown)."""

    name: str
    request: SliceRequest
    creation_time: int = -1
    deletion_time: int = -1
    asked_gpus: float = -1.0
    """What the user asked for, in GPUs, when ``request`` was rounded up (``--whole-gpus``)."""

    @property
    def served_gpus(self) -> float:
        """The demand this pod serves when placed: what its user asked for."""
        return self.asked_gpus if self.asked_gpus >= 0 else self.gpu_demand

    @property
    def gpu_demand(self) -> float:
        """GPUs requested (0.5 for half a GPU, 4.0 for four whole GPUs)."""
        r = self.request
        share = FULL_GPU_MILLI if r.whole_gpus else r.gpu_share_milli
        return r.gpu_count * share / FULL_GPU_MILLI


def _int(row: dict[str, str], field: str, where: str, lo: int = 0,
         hi: int | None = None) -> int:
    raw = (row.get(field) or "").strip()
    try:
        value = int(float(raw)) if raw else None
    except (ValueError, OverflowError):  # "inf", "1e999": not a whole number
        value = None
    if value is None or (raw and float(raw) != int(float(raw))):
        raise TraceError(f"{where}: field {field!r} must be a whole number, got {raw!r}")
    if value < lo or (hi is not None and value > hi):
        bound = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise TraceError(f"{where}: field {field!r} must be {bound}, got {value}")
    return value


def _rows(path: Path, required: tuple[str, ...]) -> list[tuple[str, dict[str, str]]]:
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            missing = [c for c in required if c not in header]
            if missing:
                raise TraceError(f"{path}: missing column(s) {', '.join(missing)} in the header")
            return [(f"{path}:{i + 2}", row) for i, row in enumerate(reader)]
    except OSError as e:
        raise TraceError(f"{path}: cannot read: {e.strerror}") from None
    except (csv.Error, UnicodeDecodeError) as e:
        raise TraceError(f"{path}: not a CSV file: {e}") from None


def read_nodes(path: str | Path) -> list[Node]:
    """Nodes of a trace node list; GPUs get the nominal memory described in the module doc."""
    nodes: list[Node] = []
    seen: set[str] = set()
    for where, row in _rows(Path(path), NODE_FIELDS):
        name = (row.get("sn") or "").strip()
        if not name:
            raise TraceError(f"{where}: field 'sn' (node name) is empty")
        if name in seen:
            raise TraceError(f"{where}: field 'sn': node {name!r} appears twice")
        seen.add(name)
        cpu = _int(row, "cpu_milli", where)
        mem = _int(row, "memory_mib", where)
        count = _int(row, "gpu", where, 0, 128)
        model = (row.get("model") or "").strip()
        if count and not model:
            raise TraceError(f"{where}: field 'model' is empty on a node with {count} GPUs")
        memory = NOMINAL_GIB.get(model, 16) * FULL_GPU_MILLI
        gpus = tuple(Gpu(index=i, model=model, memory_mib=memory) for i in range(count))
        nodes.append(Node(name=name, cpu_milli=cpu, memory_mib=mem, gpus=gpus))
    if not nodes:
        raise TraceError(f"{path}: no nodes")
    return nodes


def read_pods(path: str | Path) -> list[TracePod]:
    """Pods of a trace pod list, in file order."""
    pods: list[TracePod] = []
    for where, row in _rows(Path(path), POD_FIELDS):
        name = (row.get("name") or "").strip() or where
        cpu = _int(row, "cpu_milli", where)
        mem = _int(row, "memory_mib", where)
        count = _int(row, "num_gpu", where, 0, 128)
        milli = _int(row, "gpu_milli", where, 0, FULL_GPU_MILLI)
        if count == 0 and milli:
            raise TraceError(f"{where}: field 'gpu_milli' is {milli} but 'num_gpu' is 0")
        if count and not milli:
            raise TraceError(f"{where}: field 'gpu_milli' is 0 but 'num_gpu' is {count}")
        if count > 1 and milli != FULL_GPU_MILLI:
            raise TraceError(
                f"{where}: field 'gpu_milli' must be 1000 for a pod with {count} GPUs "
                f"(multi-GPU pods take whole GPUs), got {milli}"
            )
        spec = (row.get("gpu_spec") or "").strip()
        models = frozenset(m for m in spec.split("|") if m) if spec else frozenset()
        created = _int(row, "creation_time", where) if row.get("creation_time") else -1
        deleted = _int(row, "deletion_time", where) if row.get("deletion_time") else -1
        if created >= 0 and deleted >= 0 and deleted < created:
            raise TraceError(
                f"{where}: field 'deletion_time' ({deleted}) is before 'creation_time' ({created})"
            )
        request = SliceRequest(
            gpu_count=count, gpu_share_milli=milli if count else 0, allowed_models=models,
            cpu_milli=cpu, memory_mib=mem,
        )
        pods.append(TracePod(name, request, created, deleted))
    if not pods:
        raise TraceError(f"{path}: no pods")
    return pods


def whole_gpu_version(pod: TracePod) -> TracePod:
    """The same pod with a fractional GPU request rounded up to one whole GPU."""
    r = pod.request
    if r.gpu_count != 1 or r.whole_gpus:
        return pod
    rounded = SliceRequest(gpu_count=1, gpu_share_milli=FULL_GPU_MILLI,
                           allowed_models=r.allowed_models, cpu_milli=r.cpu_milli,
                           memory_mib=r.memory_mib)
    return TracePod(pod.name, rounded, pod.creation_time, pod.deletion_time, pod.gpu_demand)
