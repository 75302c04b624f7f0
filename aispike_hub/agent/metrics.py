"""Per-notebook GPU use: joined from NVML processes and their owners, exported two ways.

Why two ways: Prometheus (and the admin's Grafana) scrapes ``/metrics``; the hub services (idle
monitor, admin panel, the lab extension's "my live use") read the JSON document, which carries the
same numbers without a Prometheus server in between.

:func:`notebook_usage` and :func:`usage_document` are pure; :class:`UsageCollector` renders the
latest snapshot for prometheus_client at scrape time, so pods that stopped vanish from the
metrics instead of lingering as stale gauges.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aispike_hub.agent.nvml import GpuProcess, MachineReading
from aispike_hub.agent.procs import Owner
from aispike_hub.model import Usage
from aispike_hub.units import MIB

METRIC_GPU_MEMORY_CAPACITY = "aispike_gpu_memory_capacity_bytes"
METRIC_GPU_MEMORY_USED = "aispike_gpu_memory_used_bytes"
METRIC_GPU_UTILIZATION = "aispike_gpu_utilization_ratio"
METRIC_NOTEBOOK_MEMORY = "aispike_notebook_gpu_memory_used_bytes"
METRIC_NOTEBOOK_UTILIZATION = "aispike_notebook_gpu_utilization_ratio"
METRIC_NOTEBOOK_PROCESSES = "aispike_notebook_gpu_processes"
METRIC_DATASET_CACHE = "aispike_dataset_cache_bytes"
METRIC_NVML_UP = "aispike_agent_nvml_up"
METRIC_NVML_PROBLEMS = "aispike_agent_nvml_problems"

# Label names as dcgm-exporter's (Hostname = the node name, gpu = the index, UUID, modelName;
# pod and namespace as its Kubernetes mapping names them), so its series join ours without
# relabelling: ``aispike_notebook_gpu_memory_used_bytes * on(UUID) group_left
# DCGM_FI_DEV_GPU_UTIL``.
GPU_LABELS = ("Hostname", "gpu", "UUID", "modelName", "mig_profile")
NOTEBOOK_LABELS = ("Hostname", "pod", "namespace", "user", "server", "gpu", "UUID")
NODE_LABELS = ("Hostname",)

CATALOGUE: dict[str, tuple[str, tuple[str, ...]]] = {
    METRIC_NVML_UP: ("1 when NVML answered on this node", NODE_LABELS),
    METRIC_NVML_PROBLEMS: ("NVML reads skipped or unknown in the last pass", NODE_LABELS),
    METRIC_GPU_MEMORY_CAPACITY: ("GPU memory of the device", GPU_LABELS),
    METRIC_GPU_MEMORY_USED: ("GPU memory in use on the device", GPU_LABELS),
    METRIC_GPU_UTILIZATION: ("SM utilisation of the whole device (0..1)", GPU_LABELS),
    METRIC_NOTEBOOK_MEMORY: ("GPU memory used by a notebook's processes", NOTEBOOK_LABELS),
    METRIC_NOTEBOOK_UTILIZATION: ("SM utilisation of a notebook's processes (0..1: their sum, "
                                  "capped at 1)", NOTEBOOK_LABELS),
    METRIC_NOTEBOOK_PROCESSES: ("GPU processes of a notebook", NOTEBOOK_LABELS),
    METRIC_DATASET_CACHE: ("Bytes of a dataset in this node's cache", ("Hostname", "dataset")),
}
"""Every gauge the agent exports: name -> (help, label names)."""


@dataclass(frozen=True, slots=True)
class NotebookGpuUse:
    """One notebook's use of one GPU, summed over its processes.

    ``owner`` is empty (all fields "") for processes whose owner is unknown (a host process, or a
    pod the agent has not listed yet): they are reported, not dropped, so the GPU's numbers add up.
    """

    owner: Owner
    gpu_index: int
    gpu_uuid: str
    memory_used_mib: int
    utilization_percent: float
    pids: tuple[int, ...]

    def as_usage(self, node: str) -> Usage:
        """The core's :class:`Usage` (what the idle policy and quota reports take)."""
        owner = self.owner.pod or self.owner.server or self.owner.user
        return Usage(
            node=node,
            gpu_index=self.gpu_index,
            memory_used_mib=self.memory_used_mib,
            utilization_percent=self.utilization_percent,
            owner=owner,
        )


def notebook_usage(
    processes: Sequence[GpuProcess], owners: Mapping[int, Owner]
) -> list[NotebookGpuUse]:
    """Group GPU processes by (owner, GPU) and sum memory and SM utilisation.

    Utilisation is summed (capped at 100): two processes of one notebook at 30 % each use 60 % of
    the GPU.  Unknown memory (None) counts as 0.
    """
    groups: dict[tuple[Owner, int, str], list[GpuProcess]] = {}
    for proc in processes:
        owner = owners.get(proc.pid, Owner())
        groups.setdefault((owner, proc.gpu_index, proc.gpu_uuid), []).append(proc)
    out = []
    for (owner, index, uuid), procs in groups.items():
        out.append(
            NotebookGpuUse(
                owner=owner,
                gpu_index=index,
                gpu_uuid=uuid,
                memory_used_mib=sum(p.memory_used_mib or 0 for p in procs),
                utilization_percent=min(
                    100.0, sum(p.sm_utilization_percent or 0.0 for p in procs)
                ),
                pids=tuple(sorted(p.pid for p in procs)),
            )
        )
    out.sort(key=lambda u: (u.gpu_index, u.owner.namespace, u.owner.pod, u.owner.user))
    return out


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What one agent tick saw: the NVML reading, the notebooks' use and the dataset cache."""

    node: str
    time: float
    """Seconds since the epoch when the reading was taken (passed in: the core has no clock)."""
    reading: MachineReading
    notebooks: tuple[NotebookGpuUse, ...] = ()
    datasets: Mapping[str, int] = field(default_factory=dict)
    """Dataset name -> bytes in this node's cache."""


def usage_document(snapshot: Snapshot) -> dict[str, Any]:
    """The JSON document served to the hub services at ``/usage``."""
    return {
        "node": snapshot.node,
        "time": snapshot.time,
        "nvml": {
            "available": snapshot.reading.available,
            "driver_version": snapshot.reading.driver_version,
            "problems": list(snapshot.reading.problems),
        },
        "gpus": [
            {
                "index": r.gpu.index,
                "uuid": r.gpu.uuid,
                "model": r.gpu.model,
                "mig_profile": r.gpu.mig_profile,
                "memory_total_mib": r.gpu.memory_mib,
                "memory_used_mib": r.memory_used_mib,
                "utilization_percent": r.utilization_percent,
                "nvlink_domain": r.gpu.nvlink_domain,
                "pcie_switch": r.gpu.pcie_switch,
                "numa_node": r.gpu.numa_node,
            }
            for r in snapshot.reading.gpus
        ],
        "notebooks": [
            {
                "pod": u.owner.pod,
                "namespace": u.owner.namespace,
                "pod_uid": u.owner.pod_uid,
                "user": u.owner.user,
                "server": u.owner.server,
                "gpu_index": u.gpu_index,
                "gpu_uuid": u.gpu_uuid,
                "memory_used_mib": u.memory_used_mib,
                "utilization_percent": u.utilization_percent,
                "pids": list(u.pids),
            }
            for u in snapshot.notebooks
        ],
        "datasets": dict(sorted(snapshot.datasets.items())),
    }


class UsageCollector:
    """A prometheus_client collector that renders the latest :class:`Snapshot` at scrape time."""

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None

    def update(self, snapshot: Snapshot) -> None:
        """Replace the snapshot (one reference assignment, so scrapes never see half of one)."""
        self.snapshot = snapshot

    def describe(self) -> list[Any]:
        return []  # unchecked collector: families depend on what the node has

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        snap = self.snapshot
        if snap is None:
            return
        node = snap.node

        def family(name: str) -> Any:
            text, labels = CATALOGUE[name]
            return GaugeMetricFamily(name, text, labels=list(labels))

        up = family(METRIC_NVML_UP)
        up.add_metric([node], 1.0 if snap.reading.available else 0.0)
        yield up
        problems = family(METRIC_NVML_PROBLEMS)
        problems.add_metric([node], float(len(snap.reading.problems)))
        yield problems

        total = family(METRIC_GPU_MEMORY_CAPACITY)
        used = family(METRIC_GPU_MEMORY_USED)
        util = family(METRIC_GPU_UTILIZATION)
        for r in snap.reading.gpus:
            values = [node, str(r.gpu.index), r.gpu.uuid, r.gpu.model, r.gpu.mig_profile]
            total.add_metric(values, float(r.gpu.memory_mib * MIB))
            used.add_metric(values, float(r.memory_used_mib * MIB))
            if r.utilization_percent is not None:
                util.add_metric(values, r.utilization_percent / 100.0)
        yield total
        yield used
        yield util

        nb_mem = family(METRIC_NOTEBOOK_MEMORY)
        nb_util = family(METRIC_NOTEBOOK_UTILIZATION)
        nb_procs = family(METRIC_NOTEBOOK_PROCESSES)
        for u in snap.notebooks:
            o = u.owner
            values = [node, o.pod, o.namespace, o.user, o.server, str(u.gpu_index), u.gpu_uuid]
            nb_mem.add_metric(values, float(u.memory_used_mib * MIB))
            nb_util.add_metric(values, u.utilization_percent / 100.0)
            nb_procs.add_metric(values, float(len(u.pids)))
        yield nb_mem
        yield nb_util
        yield nb_procs

        cache = family(METRIC_DATASET_CACHE)
        for name, size in sorted(snap.datasets.items()):
            cache.add_metric([node, name], float(size))
        yield cache
