"""GPU process ownership: cgroup parsing (v1, v2, drivers, runtimes), local servers, /proc I/O."""

from __future__ import annotations

from pathlib import Path

import pytest
from agent_fixtures import make_proc

from aispike_hub.agent.procs import (
    Owner,
    PodInfo,
    PodRef,
    owner_of,
    parse_cgroup,
    pod_info_from_manifest,
    read_process,
    read_process_tree,
)

UID = "0f3c1b2a-9d8e-4f70-a1b2-c3d4e5f60718"
CID = "3b8f6e2d1c0a9f8e7d6c5b4a39281706f5e4d3c2b1a0f9e8d7c6b5a493827160"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # cgroup v2, systemd driver, containerd
        (
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
            + UID.replace("-", "_")
            + f".slice/cri-containerd-{CID}.scope\n",
            PodRef(UID, CID),
        ),
        # cgroup v2, guaranteed QoS (no QoS slice), CRI-O
        (
            f"0::/kubepods.slice/kubepods-pod{UID.replace('-', '_')}.slice/crio-{CID}.scope\n",
            PodRef(UID, CID),
        ),
        # cgroup v1, cgroupfs driver, docker: several hierarchies, the first with a path wins
        (
            "12:pids:/kubepods/besteffort/pod" + UID + "/" + CID + "\n"
            "11:memory:/kubepods/besteffort/pod" + UID + "/" + CID + "\n"
            "1:name=systemd:/kubepods/besteffort/pod" + UID + "/" + CID + "\n",
            PodRef(UID, CID),
        ),
        # cgroup v1, systemd driver, docker
        (
            "4:devices:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod"
            + UID.replace("-", "_")
            + f".slice/docker-{CID}.scope\n",
            PodRef(UID, CID),
        ),
        # kind / k3d: kubepods below the node container's own cgroup
        (
            f"0::/system.slice/docker-{'a' * 64}.scope/kubepods/burstable/pod{UID}/{CID}\n",
            PodRef(UID, CID),
        ),
        # pod-level cgroup only (a process in the pause sandbox being set up)
        (f"0::/kubepods/burstable/pod{UID.upper()}\n", PodRef(UID, "")),
        # not a pod
        ("0::/user.slice/user-1000.slice/session-3.scope\n", None),
        ("0::/process_api/7beb0f581d8ab25632879012d97c7b65\n", None),  # the H200 VM's
        ("", None),
        ("garbage without colons\n", None),
    ],
)
def test_parse_cgroup(text: str, expected: PodRef | None) -> None:
    assert parse_cgroup(text) == expected


def test_pod_info_from_kubespawner_pod() -> None:
    pod = {
        "metadata": {
            "uid": UID,
            "name": "jupyter-alice-2etrain",
            "namespace": "hub",
            "labels": {"hub.jupyter.org/username": "alice-2e"},
            "annotations": {
                "hub.jupyter.org/username": "alice.",
                "hub.jupyter.org/servername": "train",
            },
        }
    }
    assert pod_info_from_manifest(pod) == (
        UID,
        PodInfo(name="jupyter-alice-2etrain", namespace="hub", user="alice.", server="train"),
    )
    assert pod_info_from_manifest({"metadata": {"uid": "u", "name": "x", "namespace": "n"}}) == (
        "u",
        PodInfo("x", "n"),
    )


def test_owner_by_pod_by_ancestry_and_by_environment(proc_root: Path) -> None:
    pod_cgroup = f"0::/kubepods/burstable/pod{UID}/{CID}\n"
    make_proc(proc_root, 100, ppid=1, cgroup=pod_cgroup)
    make_proc(proc_root, 200, ppid=1)  # a local jupyter server (known pid)
    make_proc(proc_root, 201, ppid=200)  # its kernel
    make_proc(proc_root, 202, ppid=201)  # "!python train.py" from the kernel
    make_proc(proc_root, 300, ppid=1, environ={"JUPYTERHUB_USER": "bob"})
    make_proc(proc_root, 301, ppid=300)
    make_proc(proc_root, 400, ppid=1)  # someone's host process
    make_proc(proc_root, 1, ppid=0, comm="systemd")
    processes = read_process_tree([100, 202, 301, 400, 999], proc_root)
    pods = {UID: PodInfo("jupyter-alice", "hub", "alice", "")}
    servers = {200: Owner(user="carol", server="gpu")}

    assert owner_of(100, processes, pods) == Owner(
        pod="jupyter-alice", namespace="hub", user="alice", container_id=CID, pod_uid=UID
    )
    assert owner_of(100, processes, {}) == Owner(pod_uid=UID, container_id=CID)
    assert owner_of(202, processes, pods, servers) == Owner(user="carol", server="gpu")
    # the kernel's env is not JupyterHub's here, so without the server pid it is unknown
    assert owner_of(202, processes, pods) == Owner()
    assert owner_of(301, processes, pods) == Owner(user="bob")
    assert not owner_of(400, processes, pods).known
    assert owner_of(999, processes, pods) == Owner()  # exited before we looked


def test_ancestry_loop_terminates(proc_root: Path) -> None:
    make_proc(proc_root, 10, ppid=11)
    make_proc(proc_root, 11, ppid=10)
    processes = read_process_tree([10], proc_root)
    assert owner_of(10, processes, {}) == Owner()


def test_read_process_tolerates_missing_and_odd_files(proc_root: Path) -> None:
    make_proc(proc_root, 42, ppid=7, comm="we (ird) name", environ={"JUPYTERHUB_USER": "dan"})
    info = read_process(42, proc_root)
    assert info.ppid == 7 and info.environ == {"JUPYTERHUB_USER": "dan"}
    (proc_root / "42" / "environ").unlink()
    assert read_process(42, proc_root).environ is None
    missing = read_process(43, proc_root)
    assert (missing.ppid, missing.cgroup, missing.environ) == (0, "", None)


def test_read_process_on_this_machine() -> None:
    import os

    info = read_process(os.getpid())
    assert info.ppid == os.getppid()
