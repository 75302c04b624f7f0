"""Slice enforcement on the recorded-NVML surface: an over-slice notebook is warned, then stopped.

The machines are the recorded fixtures (the H200 one was recorded on a real H200 with a notebook
process of 4458 MiB); the processes' owners and slices come from fake /proc trees, as the agent
reads them; signals and notices are recorded instead of sent.
"""

from __future__ import annotations

import json
import signal
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from agent_fixtures import load_fixture, make_proc, recorded

from aispike_hub.agent.enforce import (
    EnforcementPolicy,
    Enforcer,
    Episode,
    Observation,
    ServiceNotices,
    decide,
    hami_limit_mib,
    limits_from_environ,
    observations,
)
from aispike_hub.agent.main import build_snapshot
from aispike_hub.agent.nvml import read_machine
from aispike_hub.agent.procs import PodInfo, read_process_tree
from aispike_hub.agent.recorded import RecordedNvml

H200_UUID = "GPU-1ebf3528-e5b2-76bb-9a6f-d932f6f20ea6"
H200_PID = 429
H200_USED_MIB = 4458
T0 = 1_800_000_000.0


class Recorder:
    def __init__(self) -> None:
        self.notices: list[tuple[str, str, str, str]] = []
        self.signals: list[tuple[int, int]] = []

    def post(self, user: str, server: str, kind: str, message: str) -> None:
        self.notices.append((user, server, kind, message))

    def signal(self, pid: int, signum: int) -> None:
        self.signals.append((pid, signum))


def local_notebook(proc_root: Path, limit_mib: int) -> None:
    """The H200's notebook process as the local spawner starts it, with the CDI env's slice."""
    make_proc(proc_root, H200_PID, ppid=427, environ={
        "JUPYTERHUB_USER": "alice", "JUPYTERHUB_SERVER_NAME": "train",
        "NVIDIA_VISIBLE_DEVICES": H200_UUID, "AISPIKE_GPU_MEMORY_LIMIT": str(limit_mib),
        "CUDA_DEVICE_MEMORY_LIMIT_0": f"{limit_mib}m",
    })
    make_proc(proc_root, 427, ppid=1)


def tick(enforcer: Enforcer, nvml: RecordedNvml, proc_root: Path, now: float,
         limits_by_pod: dict[str, dict[str, int]] | None = None,
         pods: dict[str, PodInfo] | None = None) -> list[str]:
    reading = read_machine(nvml)
    processes = read_process_tree({p.pid for p in reading.processes}, proc_root)
    snap = build_snapshot("h200", now, reading, processes, pods or {}, None)
    return [a.kind for a in enforcer.tick(snap.notebooks, processes, limits_by_pod or {}, now)]


def h200(used_bytes: int | None = None) -> RecordedNvml:
    data = load_fixture("h200-1gpu.json")
    if used_bytes is not None:
        data["devices"][0]["nvmlDeviceGetComputeRunningProcesses"][0]["usedGpuMemory"] = used_bytes
    return RecordedNvml(data)


def test_over_slice_notebook_is_warned_then_interrupted_then_killed(proc_root: Path) -> None:
    local_notebook(proc_root, 2048)  # a 2 GiB slice; the recorded process holds 4458 MiB
    rec = Recorder()
    enforcer = Enforcer(sink=rec, signal_process=rec.signal, policy="interrupt",
                        grace_seconds=60, kill_after_seconds=120, tolerance_mib=512)
    nvml = recorded("h200-1gpu.json")
    assert tick(enforcer, nvml, proc_root, T0) == ["warn"]
    user, server, kind, message = rec.notices[0]
    assert (user, server, kind) == ("alice", "train", "gpu-memory")
    assert "server 'train' uses 4.4 GiB of GPU memory, but its slice is 2.0 GiB" in message
    assert "within 60 s" in message and rec.signals == []
    assert tick(enforcer, nvml, proc_root, T0 + 30) == []  # within the grace period
    assert tick(enforcer, nvml, proc_root, T0 + 61) == ["interrupt"]
    assert rec.signals == [(H200_PID, signal.SIGINT)]
    assert "interrupted" in rec.notices[-1][3]
    assert tick(enforcer, nvml, proc_root, T0 + 120) == []  # interrupt had its chance
    assert tick(enforcer, nvml, proc_root, T0 + 181) == ["kill"]
    assert rec.signals[-1] == (H200_PID, signal.SIGKILL)
    assert "kernel was stopped" in rec.notices[-1][3]
    assert tick(enforcer, nvml, proc_root, T0 + 200) == []  # killed once, not again
    # The process is gone (the recorded idle H200): the episode ends.
    assert tick(enforcer, recorded("h200-idle.json"), proc_root, T0 + 215) == []
    assert enforcer.episodes == {}


def test_kill_policy_kills_after_grace(proc_root: Path) -> None:
    local_notebook(proc_root, 2048)
    rec = Recorder()
    enforcer = Enforcer(sink=rec, signal_process=rec.signal, policy="kill", grace_seconds=10)
    nvml = recorded("h200-1gpu.json")
    assert tick(enforcer, nvml, proc_root, T0) == ["warn"]
    assert tick(enforcer, nvml, proc_root, T0 + 11) == ["kill"]
    assert rec.signals == [(H200_PID, signal.SIGKILL)]


def test_warn_policy_only_warns_and_says_when_back_within(proc_root: Path) -> None:
    local_notebook(proc_root, 2048)
    rec = Recorder()
    enforcer = Enforcer(sink=rec, signal_process=rec.signal, policy="warn", grace_seconds=1)
    assert tick(enforcer, recorded("h200-1gpu.json"), proc_root, T0) == ["warn"]
    assert tick(enforcer, recorded("h200-1gpu.json"), proc_root, T0 + 999) == []
    # The user freed memory (1.5 GiB now): told so, episode over, no signal ever.
    assert tick(enforcer, h200(1536 * 2**20), proc_root, T0 + 1000) == ["resolved"]
    assert "back within" in rec.notices[-1][3] and rec.signals == []


def test_within_slice_plus_tolerance_is_left_alone(proc_root: Path) -> None:
    local_notebook(proc_root, H200_USED_MIB - 400)  # 400 MiB over: the CUDA context's share
    rec = Recorder()
    enforcer = Enforcer(sink=rec, signal_process=rec.signal, policy="kill", tolerance_mib=512)
    assert tick(enforcer, recorded("h200-1gpu.json"), proc_root, T0) == []
    local_notebook(proc_root, 8192)
    assert tick(enforcer, recorded("h200-1gpu.json"), proc_root, T0 + 1) == []
    assert rec.notices == []


def test_off_and_unknown_slices_do_nothing(proc_root: Path) -> None:
    rec = Recorder()
    make_proc(proc_root, H200_PID, environ={"JUPYTERHUB_USER": "alice"})  # no slice in env
    enforcer = Enforcer(sink=rec, signal_process=rec.signal, policy="kill", grace_seconds=0)
    assert tick(enforcer, recorded("h200-1gpu.json"), proc_root, T0) == []
    local_notebook(proc_root, 1024)
    off = Enforcer(sink=rec, signal_process=rec.signal, policy="off")
    assert tick(off, recorded("h200-1gpu.json"), proc_root, T0) == []
    assert rec.notices == [] and rec.signals == []


def test_pod_slices_come_from_prepared_claims_not_the_process_env(proc_root: Path) -> None:
    """In Kubernetes the slice is the prepared claim's (the user cannot edit it): a process that
    was started with a bigger CUDA_DEVICE_MEMORY_LIMIT_0 is still judged by its claim."""
    reading = read_machine(recorded("a100-pcie-4gpu.json"))
    uuid_of = {r.gpu.index: r.gpu.uuid for r in reading.gpus}
    pod_uid = "11111111-2222-4333-8444-555555555555"
    for p in reading.processes:
        make_proc(proc_root, p.pid, cgroup=f"0::/kubepods/pod{pod_uid}/{'c' * 64}\n", environ={
            "NVIDIA_VISIBLE_DEVICES": uuid_of[p.gpu_index], "CUDA_DEVICE_MEMORY_LIMIT_0": "999g"})
    pods = {pod_uid: PodInfo("jupyter-bob", "hub", "bob", "")}
    limits = {pod_uid: {uuid_of[p.gpu_index]: 1024 for p in reading.processes}}
    rec = Recorder()
    enforcer = Enforcer(sink=rec, signal_process=rec.signal, policy="kill", grace_seconds=5)
    nvml = recorded("a100-pcie-4gpu.json")
    first = tick(enforcer, nvml, proc_root, T0, limits, pods)
    assert first and set(first) == {"warn"}
    assert {n[0] for n in rec.notices} == {"bob"}
    assert set(tick(enforcer, nvml, proc_root, T0 + 6, limits, pods)) == {"kill"}
    # The notebook's use is the sum of its processes on the GPU (25 GiB here): all of them go.
    killed = {pid for pid, s in rec.signals if s == signal.SIGKILL}
    assert killed == {p.pid for p in reading.processes}


def test_decide_is_a_table() -> None:
    o = Observation("server:a/", "a", "", "", "GPU-x", 3000, 1000, (7,))
    under = Observation("server:a/", "a", "", "", "GPU-x", 900, 1000, (7,))
    policy = EnforcementPolicy("interrupt", grace_seconds=10, tolerance_mib=0,
                               kill_after_seconds=0)
    episodes: dict[tuple[str, str], Episode] = {}
    steps = [(o, 0), (o, 5), (o, 10), (o, 20), (o, 500), (under, 501), (o, 502)]
    kinds = [[a.kind for a in decide([obs], episodes, t, policy)] for obs, t in steps]
    # kill_after 0: an interrupt is never escalated; back within ends the episode; a new one
    # starts with a new warning.
    assert kinds == [["warn"], [], ["interrupt"], [], [], ["resolved"], ["warn"]]


@pytest.mark.parametrize(("value", "mib"), [("8192m", 8192), ("8g", 8192), ("1073741824", 1024)])
def test_hami_limits(value: str, mib: int) -> None:
    assert hami_limit_mib(value) == mib


def test_limits_from_environ() -> None:
    env = {"NVIDIA_VISIBLE_DEVICES": "GPU-a,GPU-b", "CUDA_DEVICE_MEMORY_LIMIT_0": "4096m",
           "AISPIKE_GPU_MEMORY_LIMITS": "1,2048"}
    assert limits_from_environ(env) == {"GPU-a": 4096, "GPU-b": 2048}
    assert limits_from_environ({"NVIDIA_VISIBLE_DEVICES": "all",
                                "AISPIKE_GPU_MEMORY_LIMIT": "5"}) == {}
    assert limits_from_environ({"NVIDIA_VISIBLE_DEVICES": "GPU-a",
                                "CUDA_DEVICE_MEMORY_LIMIT_0": "lots"}) == {}
    assert limits_from_environ(None) == {}
    assert observations([], {}, {}) == []


def test_service_notices_post_json_with_the_token() -> None:
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append({"path": self.path, "auth": self.headers["Authorization"], **body})
            self.send_response(201)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/services/aispike/"
        sink = ServiceNotices(url, "tok")
        sink.post("alice", "train", "gpu-memory", "over")
        assert seen == [{"path": "/services/aispike/api/notices", "auth": "token tok",
                         "user": "alice", "server": "train", "kind": "gpu-memory",
                         "message": "over"}]
        ServiceNotices("http://127.0.0.1:1/", "tok", timeout=1).post("a", "", "k", "m")  # logged
    finally:
        server.shutdown()


def test_the_agent_command_enforces_each_tick(proc_root: Path) -> None:
    """``aispike-hub agent --enforce=warn``: the tick reads NVML and /proc, the enforcer warns."""
    from aispike_hub.agent.dra import KubeletPlugin
    from aispike_hub.agent.main import AgentApp

    local_notebook(proc_root, 2048)
    app = AgentApp()
    app.initialize([f"--nvml-fixture={Path(__file__).parents[2] / 'fixtures/nvml/h200-1gpu.json'}",
                    f"--proc-root={proc_root}", "--enforce=warn", "--Enforcer.grace_seconds=5",
                    "--metrics-port=0"])
    rec = Recorder()
    app.enforcer.sink = rec
    app.tick()
    assert [n[2] for n in rec.notices] == ["gpu-memory"]
    assert app.enforcer.policy == "warn" and app.enforcer.grace_seconds == 5
    assert KubeletPlugin in app.classes and not app.dra.enabled
    for name, trait in KubeletPlugin.class_traits(config=True).items():
        assert len(trait.help.strip()) > 20, name
