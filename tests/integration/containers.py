"""The pod runner's container mode: a pod's container started from its image with podman + runc.

Kubelet mode (tests/integration/podrunner.py) runs a pod's command from this machine's
virtualenv in a private mount namespace.  Container mode keeps what that mode provides and runs
the image the pod spec names instead, from the podman store ``scripts/build-images`` fills
(images carry the chart's names, so ``spec.containers[0].image`` is looked up as is; nothing is
ever pulled: a missing image is an error the runner reports, as a kubelet's ``ErrImageNeverPull``).

What it keeps (measured recipe: docs/container-images.md, "Container mode"):

- the pod's loopback IP: ``--network host`` (no network namespace here, as in kubelet mode), and
  the runner's rewrites that point listeners at the pod IP;
- volumes: the runner materialises them exactly as in kubelet mode (configMap, secret, emptyDir,
  PVC, hostPath, projected with the service-account token, downwardAPI) and podman bind-mounts
  each at its ``mountPath`` (``subPath``, ``readOnly`` honoured);
- the environment (``valueFrom``, ``envFrom``, ``$(VAR)``), minus the host PATH/HOME the runner
  adds for host processes: the image's own apply;
- ``securityContext``: ``--user uid:gid``, ``--group-add``, ``--read-only``,
  ``--cap-drop=all`` / ``--cap-add``, ``--security-opt=no-new-privileges``;
- ``/etc/hosts``: the runner's per-pod hosts file, bind-mounted (rewritten in place).

What it adds: restarts per ``restartPolicy`` (the runner's back-off; ``Never`` and ``OnFailure``
respected), ``readinessProbe`` and ``livenessProbe`` (``httpGet``, ``tcpSocket``, ``exec`` via
``podman exec``), and the pod's status (``ready``, ``restartCount``, the ``Ready`` condition)
patched through the real API server so ``kubectl get pods`` shows them.

Each container runs as ``podman run --rm --replace`` in the foreground (the runner's process is
podman; its output is the pod's log), in a cgroup under this process's own memory cgroup, removed
when the runner stops.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CACHE = Path(os.environ.get("AISPIKE_CACHE", Path.home() / ".cache" / "aispike-hub")) / "images"
"""Where scripts/build-images keeps podman's storage and settings."""

CGROUP_ROOT = Path("/sys/fs/cgroup")

HOST_ONLY_ENV = ("PATH", "HOME")
"""What the runner sets for host processes; a container gets its image's instead."""


def podman_env() -> dict[str, str]:
    """podman with scripts/build-images' storage and settings (runc, cgroupfs, rlimits)."""
    return {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin") + ":/usr/sbin:/sbin",
        "HOME": os.environ.get("HOME", "/root"),
        "CONTAINERS_STORAGE_CONF": str(CACHE / "storage.conf"),
        "CONTAINERS_CONF": str(CACHE / "containers.conf"),
    }


def podman(*args: str, timeout: float = 60,
           check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], env=podman_env(), capture_output=True, text=True,
                          timeout=timeout, check=check)


def containers_unavailable(images: tuple[str, ...] = ()) -> str | None:
    """Why container mode cannot run here (``None``: it can): root, podman, runc, the store, and
    each of ``images`` in it."""
    if os.geteuid() != 0:
        return "the pod runner's container mode needs root (podman storage of scripts/build-images)"
    for tool in ("podman", "runc"):
        if shutil.which(tool, path=podman_env()["PATH"]) is None:
            return f"the pod runner's container mode needs {tool}: run scripts/build-images"
    if not (CACHE / "storage.conf").is_file():
        return f"no image store at {CACHE}: run scripts/build-images"
    missing = [i for i in images if podman("image", "exists", i).returncode != 0]
    if missing:
        return f"images missing from {CACHE}: {', '.join(missing)} (run scripts/build-images)"
    return None


def _own_cgroups() -> dict[str, str]:
    """This process's cgroup per v1 controller directory (``memory`` -> ``/path``)."""
    out = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for c in controllers.split(","):
            if c:
                out[c.removeprefix("name=")] = path
    return out


@dataclass
class Probe:
    """One of a container's probes, as a kubelet runs it."""

    spec: Any
    failures: int = 0
    successes: int = 0
    last: float = 0.0

    @property
    def period(self) -> float:
        return float(self.spec.period_seconds or 10)


@dataclass
class Tended:
    """What container mode keeps per pod beside the runner's :class:`RunningPod`."""

    container: str
    """podman's container name."""
    name: str
    """The pod's container name (``containerStatuses[].name``)."""
    image: str
    restart_policy: str
    started: float = field(default_factory=time.monotonic)
    readiness: Probe | None = None
    liveness: Probe | None = None
    initial_delay: float = 0.0
    ready: bool = False
    reported: tuple[bool, int] | None = None
    """The (ready, restarts) last written to the pod's status."""


class ContainerMode:
    """Starts pods' containers from images; probes them; reports their status (module doc)."""

    def __init__(self) -> None:
        memory = _own_cgroups().get("memory", "/").rstrip("/")
        self.cgroup_parent = f"{memory}/aispike-pods-{os.getpid()}"
        self.pods: dict[str, Tended] = {}
        self.started_from_image: dict[str, str] = {}
        """``namespace/name`` -> image, for every pod this mode started (what tests check)."""
        self.init_containers_run: dict[str, list[str]] = {}
        """``namespace/name`` -> the images of its init containers, each run to completion."""

    # --- starting ------------------------------------------------------------------------------

    def command(self, runner: Any, pod: Any, container: Any, argv: list[str], env: dict[str, str],
                workdir: Path, hosts_file: Path, security: Mapping[str, Any]) -> list[str]:
        """The ``podman run`` command line for the pod's container (the runner launches it),
        after the pod's init containers ran to completion, in order, as a kubelet runs them."""
        self._run_init_containers(runner, pod, workdir, hosts_file)
        name = f"aispike-pod-{pod.metadata.namespace}-{pod.metadata.name}"[:120]
        args = self._run_args(runner, pod, container, name, env, workdir, hosts_file, security)
        # argv[0] was looked up on this machine's PATH by the runner: the image's own is used
        first = (container.command or container.args or [None])[0]
        rest = [first, *argv[1:]] if first is not None else []
        if container.command:
            args.append(f"--entrypoint={first}")
            rest = rest[1:]
        args += [container.image, *rest]
        self.pods[pod.metadata.uid] = Tended(
            container=name, name=container.name, image=container.image,
            restart_policy=pod.spec.restart_policy or "Always",
            readiness=Probe(container.readiness_probe) if container.readiness_probe else None,
            liveness=Probe(container.liveness_probe) if container.liveness_probe else None,
        )
        self.started_from_image[f"{pod.metadata.namespace}/{pod.metadata.name}"] = container.image
        return args

    def _run_init_containers(self, runner: Any, pod: Any, workdir: Path,
                             hosts_file: Path) -> None:
        """Each init container to completion before the pod's container starts; one that fails
        fails the start (a kubelet would retry it with back-off: the runner reports it)."""
        from .podlogs import write_output
        from .podrunner import _expand, _security, container_log

        for init in pod.spec.init_containers or []:
            env = runner._container_env(pod, init)
            argv = [_expand(a, env) for a in [*(init.command or []), *(init.args or [])]]
            name = f"aispike-init-{pod.metadata.namespace}-{pod.metadata.name}-{init.name}"[:120]
            args = self._run_args(runner, pod, init, name, env, workdir, hosts_file,
                                  _security(pod, init))
            if init.command:
                args.append(f"--entrypoint={argv[0]}")
                argv = argv[1:]
            done = subprocess.run([*args, init.image, *argv], env=dict(env),
                                  capture_output=True, stdin=subprocess.DEVNULL,
                                  timeout=600, check=False)
            for stream, data in (("stdout", done.stdout), ("stderr", done.stderr)):
                write_output(workdir / "pod.log", container_log(workdir, init.name), stream, data)
            if done.returncode != 0:
                raise RuntimeError(f"{pod.metadata.name}: init container {init.name} exited with "
                                   f"{done.returncode} (Init:Error)")
            self.init_containers_run.setdefault(
                f"{pod.metadata.namespace}/{pod.metadata.name}", []).append(init.image)

    def _run_args(self, runner: Any, pod: Any, container: Any, name: str, env: Mapping[str, str],
                  workdir: Path, hosts_file: Path, security: Mapping[str, Any]) -> list[str]:
        """``podman run`` and its options for one container of the pod (image and command not
        included): volumes, /etc/hosts, user, read-only root, capabilities, environment."""
        image = container.image
        if podman("image", "exists", image).returncode != 0:
            raise RuntimeError(f"{pod.metadata.name}: image {image} is not in the runner's store "
                               f"({CACHE}; imagePullPolicy is never honoured: nothing is pulled)")
        volumes = {v.name: v for v in pod.spec.volumes or []}
        # The runner starts this command with the pod's environment, not ours: podman is told
        # its store and settings on the command line (else it looks in its default store).
        settings = [f"{k}={v}" for k, v in podman_env().items()]
        # podman's own log lines would land in the container's log (its output is the pod's);
        # a kubelet's container log holds only the container's.  Its errors still print.
        args = ["/usr/bin/env", *settings, "podman", "--log-level=fatal", "run", "--rm",
                "--replace", f"--name={name}",
                "--network=host",
                f"--cgroup-parent={self.cgroup_parent}", "--health-cmd=none",
                f"--hostname={pod.metadata.name}", "--pull=never"]
        if pod.spec.host_pid:
            # The node agent reads every notebook's /proc (hostPID: true in the chart).
            args.append("--pid=host")
        mounted = set()
        for m in container.volume_mounts or []:
            source = runner._volume_source(pod, volumes[m.name], workdir, security)
            if m.sub_path:
                source = source / m.sub_path
                if not source.exists():
                    source.mkdir(parents=True)
            target = os.path.normpath(m.mount_path)
            mounted.add(target)
            args.append(f"--volume={source}:{target}:{'ro' if m.read_only else 'rw'}")
        if "/etc/hosts" not in mounted:
            args.append(f"--volume={hosts_file}:/etc/hosts:ro")
        uid, gid = security.get("uid"), security.get("gid")
        if uid is not None:
            args.append(f"--user={uid}:{gid if gid is not None else 0}")
        for g in security.get("groups") or []:
            args.append(f"--group-add={g}")
        if security.get("read_only_root"):
            args += ["--read-only", "--read-only-tmpfs=false"]
        if security.get("no_new_privs"):
            args.append("--security-opt=no-new-privileges")
        caps = getattr(container.security_context, "capabilities", None) \
            if container.security_context is not None else None
        if security.get("drop_all"):
            args.append("--cap-drop=all")
        for cap in (getattr(caps, "add", None) or []) if caps is not None else []:
            args.append(f"--cap-add={cap}")
        if container.working_dir:
            args.append(f"--workdir={container.working_dir}")
        for key, value in env.items():
            if key in HOST_ONLY_ENV and not any(e.name == key for e in container.env or []):
                continue
            args.append(f"--env={key}={value}")
        return args

    def pid(self, running: Any, timeout: float = 60) -> int:
        """The host pid of the pod's container's first process (its ``/proc`` is the container's
        view: root, mounts, user), where ``running.process`` is podman's.  Waits while podman is
        still creating the container (its process runs before the container does)."""
        tended = self.pods[running.uid]
        deadline = time.monotonic() + timeout
        while True:
            out = podman("inspect", "--format", "{{.State.Pid}}", tended.container).stdout.strip()
            if out.isdigit() and int(out) != 0:
                return int(out)
            if running.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{running.name}: no running container {tended.container}: "
                                   f"{out} (podman exit {running.process.poll()})")
            time.sleep(0.2)

    # --- tending -------------------------------------------------------------------------------

    def may_restart(self, uid: str, code: int) -> bool:
        """``restartPolicy``: Always, OnFailure (non-zero exit) or Never."""
        tended = self.pods.get(uid)
        if tended is None:
            return True
        if tended.restart_policy == "Never":
            return False
        return tended.restart_policy != "OnFailure" or code != 0

    def restarted(self, uid: str) -> None:
        tended = self.pods.get(uid)
        if tended is not None:
            tended.started = time.monotonic()
            tended.ready = False
            for probe in (tended.readiness, tended.liveness):
                if probe is not None:
                    probe.failures = probe.successes = 0
                    probe.last = 0.0

    def tend(self, runner: Any, running: Any) -> None:
        """One round for one pod: run the probes that are due, kill a container whose liveness
        failed (the runner restarts it), and write status changes to the API server."""
        tended = self.pods.get(running.uid)
        if tended is None:
            return
        now = time.monotonic()
        alive = running.process.poll() is None
        if tended.liveness is not None and alive and self._due(tended.liveness, tended, now):
            ok = self._probe(tended.liveness.spec, running, tended)
            self._count(tended.liveness, ok)
            if tended.liveness.failures >= int(tended.liveness.spec.failure_threshold or 3):
                podman("kill", "--signal=KILL", tended.container)
                alive = False
        if not alive:
            tended.ready = False
        elif tended.readiness is None:
            tended.ready = True
        elif self._due(tended.readiness, tended, now):
            probe = tended.readiness
            ok = self._probe(probe.spec, running, tended)
            self._count(probe, ok)
            if probe.successes >= int(probe.spec.success_threshold or 1):
                tended.ready = True
            elif probe.failures >= int(probe.spec.failure_threshold or 3):
                tended.ready = False
        state = (tended.ready, running.restarts)
        if state != tended.reported:
            with contextlib.suppress(Exception):
                self._report(runner, running, tended)
                tended.reported = state

    @staticmethod
    def _due(probe: Probe, tended: Tended, now: float) -> bool:
        if now - tended.started < float(probe.spec.initial_delay_seconds or 0):
            return False
        if now - probe.last < probe.period:
            return False
        probe.last = now
        return True

    @staticmethod
    def _count(probe: Probe, ok: bool) -> None:
        if ok:
            probe.successes += 1
            probe.failures = 0
        else:
            probe.failures += 1
            probe.successes = 0

    @staticmethod
    def _probe(spec: Any, running: Any, tended: Tended) -> bool:
        timeout = float(spec.timeout_seconds or 1)
        if spec.http_get is not None:
            port = _port(spec.http_get.port, running)
            scheme = (spec.http_get.scheme or "HTTP").lower()
            url = f"{scheme}://{running.ip}:{port}{spec.http_get.path or '/'}"
            try:
                with urllib.request.urlopen(url, timeout=timeout) as answer:
                    return bool(200 <= answer.status < 400)
            except urllib.error.HTTPError as e:
                return 200 <= e.code < 400
            except OSError:
                return False
        if spec.tcp_socket is not None:
            try:
                with socket.create_connection(
                        (running.ip, _port(spec.tcp_socket.port, running)), timeout=timeout):
                    return True
            except OSError:
                return False
        if spec._exec is not None:
            try:
                result = podman("exec", tended.container, *spec._exec.command,
                                timeout=timeout + 10)
            except subprocess.TimeoutExpired:
                return False
            return result.returncode == 0
        return True

    def _report(self, runner: Any, running: Any, tended: Tended) -> None:
        """The pod's status as a kubelet writes it: ready, restartCount, the Ready condition."""
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        alive = running.process.poll() is None
        ready = "True" if tended.ready else "False"
        status = {
            "containerStatuses": [{
                "name": tended.name, "image": tended.image, "imageID": "",
                "ready": tended.ready, "restartCount": running.restarts, "started": alive,
                "state": {"running": {"startedAt": now}} if alive else
                {"waiting": {"reason": "CrashLoopBackOff"}},
            }],
            "conditions": [
                {"type": "Ready", "status": ready, "lastTransitionTime": now},
                {"type": "ContainersReady", "status": ready, "lastTransitionTime": now},
            ],
        }
        runner.core.patch_namespaced_pod_status(running.name, running.namespace,
                                                {"status": status})

    # --- stopping ------------------------------------------------------------------------------

    def remove(self, uid: str) -> None:
        tended = self.pods.pop(uid, None)
        if tended is not None:
            podman("rm", "--force", "--time=2", tended.container)

    def close(self) -> None:
        for uid in list(self.pods):
            self.remove(uid)
        mine = self.cgroup_parent.rsplit("/", 1)[-1]
        own = _own_cgroups()
        for controller_dir in CGROUP_ROOT.iterdir():
            parents = {own.get(controller_dir.name, "/"), own.get("memory", "/")}
            for path in (controller_dir / p.lstrip("/") / mine for p in parents):
                if path.is_dir():
                    for d in sorted((p for p in path.rglob("*") if p.is_dir()),
                                    key=lambda p: -len(p.parts)):
                        with contextlib.suppress(OSError):
                            d.rmdir()
                    with contextlib.suppress(OSError):
                        path.rmdir()


def _port(port: Any, running: Any) -> int:
    if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
        return int(port)
    return int(running.port)
