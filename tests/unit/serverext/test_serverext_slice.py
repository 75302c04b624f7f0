"""The slice and live-use rules of the server extension, on recorded NVML machines."""

from __future__ import annotations

from pathlib import Path

import pytest

from aispike_hub.agent.nvml import GpuProcess, read_machine
from aispike_hub.agent.procs import ProcessInfo
from aispike_hub.agent.recorded import RecordedNvml
from aispike_hub.serverext.app import reading_from_agent
from aispike_hub.serverext.service import idle_state
from aispike_hub.serverext.slice import (
    SERVER_ROW,
    attribute,
    fill_level,
    owner_row,
    server_slice,
    slice_limits,
    visible_gpus,
)

FIXTURES = Path(__file__).parents[2] / "fixtures" / "nvml"
A100_1 = "GPU-bebccd92-0001-4000-8000-578599ea0001"
A100_3 = "GPU-91e72cd2-0003-4000-8000-78de78aa0003"


def machine(name: str):  # type: ignore[no-untyped-def]
    return read_machine(RecordedNvml.from_file(FIXTURES / f"{name}.json"))


@pytest.mark.parametrize(("env", "expected"), [
    ({}, [0, 1, 2, 3]),
    ({"NVIDIA_VISIBLE_DEVICES": "all"}, [0, 1, 2, 3]),
    ({"NVIDIA_VISIBLE_DEVICES": "none"}, []),
    ({"NVIDIA_VISIBLE_DEVICES": "void"}, []),
    ({"NVIDIA_VISIBLE_DEVICES": f"{A100_3},{A100_1}"}, [3, 1]),
    ({"NVIDIA_VISIBLE_DEVICES": "2"}, [2]),
    ({"CUDA_VISIBLE_DEVICES": "1,3"}, [1, 3]),
    ({"CUDA_VISIBLE_DEVICES": ""}, []),
    ({"CUDA_VISIBLE_DEVICES": "0,-1,2"}, [0]),
    ({"CUDA_VISIBLE_DEVICES": "GPU-bebccd92"}, [1]),  # a UUID prefix, as CUDA accepts
    ({"NVIDIA_VISIBLE_DEVICES": f"{A100_1},{A100_3}", "CUDA_VISIBLE_DEVICES": "1"}, [3]),
])
def test_visible_gpus(env: dict[str, str], expected: list[int]) -> None:
    gpus = machine("a100-pcie-4gpu").gpus
    assert [g.gpu.index for g in visible_gpus(env, gpus)] == expected


def test_limits_from_the_environment() -> None:
    assert slice_limits({}) == []
    assert slice_limits({"AISPIKE_GPU_MEMORY_LIMIT": "8192"}) == [8192]
    assert slice_limits({"AISPIKE_GPU_MEMORY_LIMITS": "8192,4096",
                         "AISPIKE_GPU_MEMORY_LIMIT": "8192"}) == [8192, 4096]
    assert slice_limits({"AISPIKE_GPU_MEMORY_MIB": "6144"}) == [6144]


def test_one_gpu_slice() -> None:
    env = {"AISPIKE_GPU_MEMORY_LIMIT": "8192", "AISPIKE_BACKEND": "native",
           "AISPIKE_GPU_MODEL": "NVIDIA H200"}
    s = server_slice(env, machine("h200-1gpu").gpus)
    assert s is not None
    doc = s.as_dict()
    assert (doc["model"], doc["limit_mib"], doc["indices"], doc["backend"]) == (
        "NVIDIA H200", 8192, [0], "native")


def test_several_gpus_each_with_its_limit_capped_at_the_device() -> None:
    env = {"NVIDIA_VISIBLE_DEVICES": f"{A100_1},{A100_3}",
           "AISPIKE_GPU_MEMORY_LIMITS": "8192,999999"}
    s = server_slice(env, machine("a100-pcie-4gpu").gpus)
    assert s is not None
    assert [(g.index, g.limit_mib) for g in s.gpus] == [(1, 8192), (3, 81920)]
    assert s.limit_mib == 8192 + 81920


def test_whole_gpus_without_a_slice_and_no_gpu_slice_without_a_gpu() -> None:
    s = server_slice({}, machine("t4-2gpu").gpus)
    assert s is not None and s.backend == "unmanaged"
    assert [g.limit_mib for g in s.gpus] == [g.memory_total_mib for g in s.gpus]
    none = machine("no-driver")
    assert server_slice({}, none.gpus, none.available) is None
    assert server_slice({"NVIDIA_VISIBLE_DEVICES": "none"}, machine("t4-2gpu").gpus) is None


def test_slice_from_the_environment_when_nvml_cannot_be_read() -> None:
    s = server_slice({"AISPIKE_GPU_MEMORY_LIMIT": "8192", "NVIDIA_VISIBLE_DEVICES": A100_1,
                      "AISPIKE_GPU_MODEL": "A100"}, (), nvml_available=False)
    assert s is not None and not s.live
    assert [(g.uuid, g.limit_mib, g.model) for g in s.gpus] == [(A100_1, 8192, "A100")]


def test_a_simulated_slice_says_the_gpu_the_local_spawner_placed_it_on(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo's simulated inventory: no NVML, the spawner's environment names the GPU."""
    from types import SimpleNamespace

    from jupyterhub.spawner import LocalProcessSpawner

    from aispike_hub.model import SliceRequest
    from aispike_hub.spawner.local import LocalGPUSpawner

    # The hub's part of the environment (API URLs, the server's token) needs a hub.
    monkeypatch.setattr(LocalProcessSpawner, "get_env", lambda self: {})

    spawner = LocalGPUSpawner(
        user=SimpleNamespace(name="alice", groups=[], url="/user/alice/", escaped_name="alice"),
        orm_spawner=SimpleNamespace(name="", server=None, state=None, user_options=None),
        simulated_gpus="2x A100 80GB", node_name="box", machine_cpus=32.0,
        machine_memory_gib=256, system_users=False)
    request = SliceRequest(gpu_count=1, gpu_memory_mib=4096)
    taken = SliceRequest(gpu_count=1, gpu_memory_mib=80 * 1024)
    spawner.hold(spawner.place(taken))  # GPU 0 is full: the slice goes to GPU 1
    other = LocalGPUSpawner(
        user=SimpleNamespace(name="bob", groups=[], url="/user/bob/", escaped_name="bob"),
        orm_spawner=SimpleNamespace(name="", server=None, state=None, user_options=None),
        simulated_gpus="2x A100 80GB", node_name="box", machine_cpus=32.0,
        machine_memory_gib=256, system_users=False)
    try:
        other.hold(other.place(request))
        other._request = request
        env = other.get_env()
    finally:
        spawner.hold(None)
        other.hold(None)
    s = server_slice(env, (), nvml_available=False)
    assert s is not None and not s.live and s.simulated
    doc = s.as_dict()
    assert doc["indices"] == [1] and doc["model"] == "A100 80GB", doc
    assert doc["limit_mib"] == 4096 and doc["simulated"] is True


def test_an_unknown_gpu_is_never_named_any() -> None:
    s = server_slice({"AISPIKE_GPU_MEMORY_LIMIT": "4096", "AISPIKE_GPU_MODEL": "any"}, (),
                     nvml_available=False)
    assert s is not None and s.as_dict()["model"] == "any"  # what was asked, kept as asked
    assert [(g.index, g.model) for g in s.gpus] == [(-1, "")]  # ... but no GPU named "any"


def _tree(*edges: tuple[int, int]) -> dict[int, ProcessInfo]:
    return {pid: ProcessInfo(pid, ppid) for pid, ppid in edges}


def test_only_this_servers_processes_are_counted() -> None:
    # server 100 -> kernel 200 -> !python 300; kernel 201; terminal 400; stranger 900 (under 1)
    tree = _tree((100, 1), (200, 100), (300, 200), (201, 100), (400, 100), (900, 1))
    kernels = {200: "k-a", 201: "k-b"}
    assert owner_row(300, tree, kernels, 100) == "k-a"
    assert owner_row(400, tree, kernels, 100) == SERVER_ROW
    assert owner_row(900, tree, kernels, 100) is None
    assert owner_row(12345, tree, kernels, 100) is None  # exited or not visible
    procs = [GpuProcess(0, "u0", 300, 1000, 40.0), GpuProcess(0, "u0", 200, 500, 30.0),
             GpuProcess(0, "u0", 201, 256, None), GpuProcess(0, "u0", 400, 64, None),
             GpuProcess(0, "u0", 900, 70000, 99.0), GpuProcess(1, "u1", 200, 2048, 10.0)]
    rows = attribute(procs, tree, kernels, 100, slice_indices=[0])
    assert {k: (r.memory_used_mib, r.utilization_percent) for k, r in rows.items()} == {
        "k-a": (1500, 70.0), "k-b": (256, None), SERVER_ROW: (64, None)}
    assert attribute(procs, tree, kernels, 100)["k-a"].by_gpu == {0: 1500, 1: 2048}


def test_fill_levels() -> None:
    assert [fill_level(u, 8192, 0.8, 0.95) for u in (0, 6553, 6554, 7783, 8192, 9000)] == [
        "ok", "ok", "warn", "full", "full", "full"]
    assert fill_level(10, 0, 0.8, 0.95) == "ok"


def test_agent_document_keeps_only_this_servers_rows() -> None:
    doc = {"nvml": {"available": True, "problems": []},
           "gpus": [{"index": 0, "uuid": "GPU-a", "model": "NVIDIA H200",
                     "memory_total_mib": 143771, "memory_used_mib": 30000}],
           "notebooks": [
               {"user": "alice", "server": "", "gpu_index": 0, "gpu_uuid": "GPU-a",
                "memory_used_mib": 4458, "utilization_percent": 91.0, "pids": [429, 430]},
               {"user": "bob", "server": "", "gpu_index": 0, "gpu_uuid": "GPU-a",
                "memory_used_mib": 25000, "utilization_percent": 5.0, "pids": [77]}]}
    reading = reading_from_agent(doc, "alice", "")
    assert reading.available and [g.gpu.model for g in reading.gpus] == ["NVIDIA H200"]
    assert [(p.pid, p.memory_used_mib) for p in reading.processes] == [(429, 4458), (430, 0)]


def test_idle_state_from_report_row_and_notices() -> None:
    notices = [{"id": 7, "kind": "idle-warning", "server": "",
                "message": "Your server 'default' is idle; it will be stopped at 14:00 UTC"}]
    row = {"verdict": "idle", "reason": "idle", "evidence": ["GPU idle for 2 h"],
           "warned_at": "2026-01-01T12:00:00Z", "stop_at": "2026-01-01T14:00:00Z"}
    state = idle_state(row, notices)
    assert state["warned"] and state["notice_id"] == 7 and "14:00" in state["message"]
    assert not idle_state({**row, "warned_at": None}, notices)["warned"]
    # No report row (no idle monitor): the notices alone say it, and a later all-clear wins.
    assert idle_state(None, notices)["warned"]
    cleared = [{"id": 8, "kind": "idle-cleared", "server": "", "message": "in use again"},
               *notices]
    assert not idle_state(None, cleared)["warned"]
