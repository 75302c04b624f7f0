"""Per-notebook use over every recorded machine: processes -> pods -> metrics and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from agent_fixtures import ALL_FIXTURES, make_proc, recorded
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from aispike_hub.agent.main import build_snapshot
from aispike_hub.agent.metrics import (
    METRIC_NOTEBOOK_MEMORY,
    METRIC_NOTEBOOK_UTILIZATION,
    UsageCollector,
    notebook_usage,
    usage_document,
)
from aispike_hub.agent.nvml import GpuProcess, read_machine
from aispike_hub.agent.procs import Owner, PodInfo, read_process_tree
from aispike_hub.model import Usage

NOW = 1_800_000_000.0


def pod_uid(pid: int) -> str:
    return f"00000000-0000-4000-8000-{pid:012d}"


def snapshot_with_one_pod_per_pid(name: str, proc_root: Path):  # type: ignore[no-untyped-def]
    """Each GPU process of the fixture runs in its own pod ``nb-<pid>`` of user ``u<pid>``."""
    reading = read_machine(recorded(name))
    pods = {}
    for p in reading.processes:
        cgroup = f"0::/kubepods/burstable/pod{pod_uid(p.pid)}/{'c' * 64}\n"
        make_proc(proc_root, p.pid, cgroup=cgroup)
        pods[pod_uid(p.pid)] = PodInfo(f"nb-{p.pid}", "hub", f"u{p.pid}", "")
    processes = read_process_tree({p.pid for p in reading.processes}, proc_root)
    return reading, build_snapshot("node-a", NOW, reading, processes, pods, None)


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_every_process_is_attributed_to_its_pod(name: str, proc_root: Path) -> None:
    reading, snap = snapshot_with_one_pod_per_pid(name, proc_root)
    assert len(snap.notebooks) == len(reading.processes)
    for use in snap.notebooks:
        (pid,) = use.pids
        assert use.owner.pod == f"nb-{pid}" and use.owner.user == f"u{pid}"
        proc = next(p for p in reading.processes if p.pid == pid)
        assert (use.gpu_index, use.memory_used_mib) == (proc.gpu_index, proc.memory_used_mib or 0)
    doc = usage_document(snap)
    json.dumps(doc)  # serialisable as it is served
    assert [g["index"] for g in doc["gpus"]] == [r.gpu.index for r in reading.gpus]
    assert len(doc["notebooks"]) == len(reading.processes)


def test_processes_of_one_notebook_add_up(proc_root: Path) -> None:
    reading = read_machine(recorded("a100-pcie-4gpu.json"))
    owners = {7001: Owner(pod="nb-a", user="a"), 7002: Owner(pod="nb-a", user="a")}
    uses = notebook_usage(reading.processes, owners)
    by_pod = {u.owner.pod: u for u in uses}
    assert by_pod["nb-a"].memory_used_mib == 8192 + 16384
    assert by_pod["nb-a"].utilization_percent == 80.0
    assert by_pod["nb-a"].pids == (7001, 7002)
    assert by_pod[""].pids == (7003,)  # unknown owner: reported, not dropped
    assert by_pod["nb-a"].as_usage("node-a") == Usage("node-a", 1, 24576, 80.0, "nb-a")


def test_utilisation_sum_is_capped() -> None:
    procs = [GpuProcess(0, "GPU-x", pid, 10, 70.0) for pid in (1, 2)]
    (use,) = notebook_usage(procs, {1: Owner(pod="p"), 2: Owner(pod="p")})
    assert use.utilization_percent == 100.0


def test_mig_use_is_reported_per_instance(proc_root: Path) -> None:
    _reading, snap = snapshot_with_one_pod_per_pid("a100-mig.json", proc_root)
    assert {(u.owner.pod, u.gpu_index) for u in snap.notebooks} == {("nb-5001", 2), ("nb-5002", 4)}


def test_local_server_on_the_h200(proc_root: Path) -> None:
    """As on the device run: the notebook process carries the hub's environment."""
    reading = read_machine(recorded("h200-1gpu.json"))
    make_proc(proc_root, 429, ppid=427, environ={"JUPYTERHUB_USER": "alice",
                                                  "JUPYTERHUB_SERVER_NAME": "train"})
    make_proc(proc_root, 427, ppid=1)
    processes = read_process_tree([429], proc_root)
    snap = build_snapshot("h200", NOW, reading, processes, {}, None)
    (use,) = snap.notebooks
    assert (use.owner.user, use.owner.server, use.memory_used_mib) == ("alice", "train", 4458)
    assert use.utilization_percent == 91.0


def test_prometheus_exposition(proc_root: Path) -> None:
    _reading, snap = snapshot_with_one_pod_per_pid("h100-sxm-8gpu.json", proc_root)
    collector = UsageCollector()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    assert generate_latest(registry) == b""  # nothing before the first tick
    collector.update(snap)
    text = generate_latest(registry).decode()
    (memory_line,) = [
        line for line in text.splitlines()
        if line.startswith(METRIC_NOTEBOOK_MEMORY + "{") and 'pod="nb-4101"' in line
    ]
    assert 'namespace="hub"' in memory_line and 'user="u4101"' in memory_line
    assert 'gpu="0"' in memory_line
    assert float(memory_line.rsplit(" ", 1)[1]) == 20480 * 2**20
    lines = [line for line in text.splitlines() if line.startswith(METRIC_NOTEBOOK_UTILIZATION)]
    assert len(lines) == 3 and any('pod="nb-4201"' in line and line.endswith(" 0.97")
                                   for line in lines)
    assert 'aispike_gpu_memory_capacity_bytes{Hostname="node-a",UUID="GPU-' in text
    assert 'UUID="GPU-' in memory_line and 'Hostname="node-a"' in memory_line
    assert "aispike_agent_nvml_up{Hostname=\"node-a\"} 1.0" in text
    # No percent, no _total on a gauge (Prometheus' naming conventions).
    names = {line.split("{", 1)[0].split(" ", 1)[0] for line in text.splitlines()
             if not line.startswith("#")}
    assert not any(n.endswith(("_percent", "_total")) for n in names), names


def test_no_driver_metrics_say_down(proc_root: Path) -> None:
    _reading, snap = snapshot_with_one_pod_per_pid("no-driver.json", proc_root)
    collector = UsageCollector()
    collector.update(snap)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    assert "aispike_agent_nvml_up{Hostname=\"node-a\"} 0.0" in generate_latest(registry).decode()
