"""Who owns a GPU process: its pod and container (from its cgroup) or its local notebook server.

Why: on a shared GPU every container sees the whole device's numbers, so per-notebook use can
only come from the node, by joining NVML's per-process readings with each process's owner.  In the
DaemonSet the agent runs in the host PID namespace, so NVML's pids are the host's and
``/proc/<pid>/cgroup`` names the pod.  On one machine (the local spawner) there are no pods; a
process belongs to the notebook server it descends from, or whose ``JUPYTERHUB_*`` environment it
inherited.

Parsing and joining are pure functions; :func:`read_process` is the only I/O here.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_POD_UID = re.compile(
    r"pod([0-9a-fA-F]{8}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{12})"
)
_CONTAINER_ID = re.compile(r"(?:^|[-/])(?:[a-z]+-)?([0-9a-f]{64})(?:\.scope)?$")

USERNAME_KEYS = ("hub.jupyter.org/username",)
SERVERNAME_KEYS = ("hub.jupyter.org/servername",)


@dataclass(frozen=True, slots=True)
class PodRef:
    """Pod UID and container id of a process, as its cgroup path names them."""

    pod_uid: str
    container_id: str = ""


@dataclass(frozen=True, slots=True)
class PodInfo:
    """What the metrics and the hub need to know about a pod: names and the hub user."""

    name: str
    namespace: str
    user: str = ""
    server: str = ""


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """What ``/proc/<pid>`` says about a process (only the parts ownership needs)."""

    pid: int
    ppid: int
    cgroup: str = ""
    environ: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Owner:
    """The notebook a GPU process belongs to; empty fields when unknown."""

    pod: str = ""
    namespace: str = ""
    user: str = ""
    server: str = ""
    container_id: str = ""
    pod_uid: str = ""

    @property
    def known(self) -> bool:
        return bool(self.pod or self.user)


def parse_cgroup(text: str) -> PodRef | None:
    """Pod UID and container id from the text of ``/proc/<pid>/cgroup``, or None if not a pod.

    Handles cgroup v2 (``0::/kubepods.slice/...``) and v1 (one line per hierarchy), with the
    systemd driver (``kubepods-burstable-pod<uid_with_underscores>.slice/`` then
    ``cri-containerd-<id>.scope``) and the cgroupfs driver
    (``/kubepods/burstable/pod<uid>/<id>``), and nesting below another container (kind,
    k3d) where the kubepods part is not at the root.
    """
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        path = parts[2].strip()
        if "kubepods" not in path:
            continue
        match = _POD_UID.search(path)
        if not match:
            continue
        uid = match.group(1).replace("_", "-").lower()
        tail = path[match.end() :].strip("/")
        container = ""
        for segment in reversed(tail.split("/")):
            found = _CONTAINER_ID.search(segment)
            if found:
                container = found.group(1)
                break
        return PodRef(pod_uid=uid, container_id=container)
    return None


def pod_info_from_manifest(pod: Mapping[str, Any]) -> tuple[str, PodInfo]:
    """(UID, PodInfo) of a pod manifest (a dict as the API returns it).

    The hub user and server name come from KubeSpawner's labels and annotations
    (``hub.jupyter.org/username``, ``hub.jupyter.org/servername``); annotations win because
    labels hold an escaped form of the name.
    """
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}

    def first(keys: Iterable[str]) -> str:
        for key in keys:
            for source in (annotations, labels):
                if source.get(key):
                    return str(source[key])
        return ""

    return str(meta.get("uid", "")), PodInfo(
        name=str(meta.get("name", "")),
        namespace=str(meta.get("namespace", "")),
        user=first(USERNAME_KEYS),
        server=first(SERVERNAME_KEYS),
    )


def owner_from_environ(environ: Mapping[str, str] | None) -> Owner | None:
    """A local server's owner from the environment JupyterHub gives the server and its kernels."""
    if not environ or not environ.get("JUPYTERHUB_USER"):
        return None
    return Owner(user=environ["JUPYTERHUB_USER"], server=environ.get("JUPYTERHUB_SERVER_NAME", ""))


def owner_of(
    pid: int,
    processes: Mapping[int, ProcessInfo],
    pods: Mapping[str, PodInfo],
    local_servers: Mapping[int, Owner] | None = None,
    max_depth: int = 64,
) -> Owner:
    """The owner of GPU process ``pid``.

    In order: the pod its cgroup names (joined with ``pods`` by UID; a pod not in ``pods`` still
    yields its UID), then the nearest ancestor that is a known local server (``local_servers`` by
    pid), then the nearest ``JUPYTERHUB_USER`` in its own or its ancestors' environment.  Why the
    ancestry walk: kernels are children of the server, and a kernel's subprocesses (a training
    script started with ``!python``) are grandchildren.
    """
    info = processes.get(pid)
    if info is None:
        return Owner()
    ref = parse_cgroup(info.cgroup)
    if ref is not None:
        pod = pods.get(ref.pod_uid)
        if pod is None:
            return Owner(pod_uid=ref.pod_uid, container_id=ref.container_id)
        return Owner(
            pod=pod.name,
            namespace=pod.namespace,
            user=pod.user,
            server=pod.server,
            container_id=ref.container_id,
            pod_uid=ref.pod_uid,
        )
    local_servers = local_servers or {}
    seen: set[int] = set()
    current: ProcessInfo | None = info
    for _ in range(max_depth):
        if current is None or current.pid in seen:
            break
        seen.add(current.pid)
        if current.pid in local_servers:
            return local_servers[current.pid]
        from_env = owner_from_environ(current.environ)
        if from_env is not None:
            return from_env
        current = processes.get(current.ppid)
    return Owner()


# ---------------------------------------------------------------------------------------------
# I/O
# ---------------------------------------------------------------------------------------------


def _parse_ppid(stat: str) -> int:
    # /proc/<pid>/stat: "pid (comm) state ppid ..."; comm may hold spaces and parentheses.
    after = stat[stat.rfind(")") + 2 :].split()
    return int(after[1]) if len(after) > 1 else 0


def read_process(pid: int, proc_root: str | Path = "/proc", environ: bool = True) -> ProcessInfo:
    """Read what ownership needs of ``pid`` under ``proc_root``; missing parts stay empty.

    A process can exit between NVML's reading and this one, and ``environ`` is readable only for
    our own user or as root, so every part is optional.
    """
    base = Path(proc_root) / str(pid)
    ppid = 0
    cgroup = ""
    env: dict[str, str] | None = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        ppid = _parse_ppid((base / "stat").read_text(errors="replace"))
    with contextlib.suppress(OSError):
        cgroup = (base / "cgroup").read_text(errors="replace")
    if environ:
        try:
            raw = (base / "environ").read_bytes()
            env = {}
            for item in raw.split(b"\0"):
                key, sep, value = item.partition(b"=")
                if sep:
                    env[key.decode(errors="replace")] = value.decode(errors="replace")
        except OSError:
            env = None
    return ProcessInfo(pid=pid, ppid=ppid, cgroup=cgroup, environ=env)


def read_process_tree(
    pids: Iterable[int], proc_root: str | Path = "/proc", max_depth: int = 64
) -> dict[int, ProcessInfo]:
    """``read_process`` for ``pids`` and their ancestors (up to ``max_depth`` each)."""
    out: dict[int, ProcessInfo] = {}
    for pid in pids:
        current = pid
        for _ in range(max_depth):
            if current <= 0 or current in out:
                break
            info = read_process(current, proc_root)
            out[current] = info
            if info.cgroup and parse_cgroup(info.cgroup) is not None:
                break  # a pod's process: the cgroup says all, no need to climb
            current = info.ppid
    return out
