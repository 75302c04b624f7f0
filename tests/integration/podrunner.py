"""The "pod runner": what a kubelet and container runtime would do for pods under kwok.

kwok marks pods Running and gives them an IP from 127.1.0.0/16 but runs nothing.  For every pod
that matches the runner's label selector and is Running, the runner starts the pod's command as a
local process bound to the pod's loopback IP and port, with the pod's environment plus the GPU
variables the node agent's DRA plugin would add through CDI.  It stops the process when the pod
is deleted.  So a spawn through the real hub reaches a real ``jupyterhub-singleuser``.

With a :class:`Kubelet` (``kubelet=``; needs root, as CI runs) it runs pods the way a kubelet
would, so that installed charts work for real (tests/integration/test_helm_chart.py runs the
aispike-hub chart's hub, proxy and AISpike service this way):

- each container runs in a private mount namespace, chrooted into a recursive bind of ``/`` on
  which the runner mounts what a kubelet provides: configMap and secret volumes (materialised from
  the API), emptyDir and PVC volumes (temporary directories; a PVC's outlives its pod), hostPath
  volumes (a per-node directory, never the real host path), and projected / downwardAPI volumes,
  among them the service-account volume the API server's admission adds (a real token from the
  TokenRequest API, bound to the pod, and ``ca.crt`` from ``kube-root-ca.crt``); missing mount
  points are made on a tmpfs-backed overlay of their nearest existing parent, never on the host;
- ``readOnlyRootFilesystem`` makes that root read-only, ``runAsUser`` / ``runAsGroup`` /
  ``fsGroup`` / ``allowPrivilegeEscalation: false`` / ``capabilities.drop: [ALL]`` are applied
  with ``setpriv``, ``runAsNonRoot`` is enforced, ``workingDir`` is honoured;
- the environment resolves ``secretKeyRef``, ``configMapKeyRef``, ``envFrom`` and ``fieldRef``,
  expands ``$(VAR)``, and sets ``KUBERNETES_SERVICE_HOST``/``PORT`` to the test API server;
- there is no cluster DNS and no kube-proxy: every pod gets a private ``/etc/hosts`` that maps
  each Service of its namespace (``name``, ``name.ns``, ``name.ns.svc``,
  ``name.ns.svc.cluster.local``) to the IP of a running pod behind it (a headless one to
  each), rewritten in place when pods come and go.  So a Service must listen on its pods'
  targetPort (the aispike-hub chart's
  in-cluster Services do; proxy-public maps 80 to 8000 and is only reached from outside, by pod IP);
- there is no network namespace either: listeners on every interface would listen on the host's,
  so the runner points them at the pod's IP (``JUPYTERHUB_SERVICE_URL``'s host,
  configurable-http-proxy's empty ``--ip=``/``--api-ip=``/``--metrics-ip=``, and
  ``--JupyterHub.hub_bind_url`` for ``jupyterhub``);
- a container that exits is restarted with back-off (``restartPolicy: Always``).

In every mode, each container's output is kept as a kubelet keeps it (CRI log files, the
previous instance's after a restart) and named in a kwok ``Logs`` object, so ``kubectl logs``
(and ``--previous``, ``-c``, ``--tail``, ``--timestamps``) answers for the pod
(tests/integration/podlogs.py).

It runs in a thread of the test process, watching pods through the real API server.  Every process
it started runs in a session of its own and is killed as a process group when its pod goes, and
:meth:`PodRunner.stop` ends all of them.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from aispike_hub.kube.slices import RESOURCE_API_VERSION

from .podlogs import LOGS_GROUP, LOGS_PLURAL, LOGS_VERSION, LogPump, logs_object, rotate

log = logging.getLogger("podrunner")

_REPO = Path(__file__).resolve().parents[2]
"""The checkout this runs from (installed in editable mode: part of the "image")."""

NOTEBOOK_SELECTOR = "component=singleuser-server"
"""KubeSpawner's label on notebook pods (``KubeSpawner.component_label``'s default)."""

_RESOURCE_GROUP, _RESOURCE_VERSION = RESOURCE_API_VERSION.split("/")

KUBELET_TOOLS = ("unshare", "mount", "chroot", "setpriv", "env", "sh")
"""What kubelet mode runs (util-linux and coreutils)."""


@dataclass(frozen=True)
class Kubelet:
    """Kubelet mode's settings: where pods find the API server, and more command search path."""

    api_host: str
    """The API server's address as pods see it (``KUBERNETES_SERVICE_HOST``)."""
    api_port: int
    ca_file: Path
    """The cluster CA, for ``ca.crt`` when ``kube-root-ca.crt`` is missing."""
    search_path: Sequence[str] = ()
    """Directories added to containers' PATH (what an image would have, e.g. the
    configurable-http-proxy binary's)."""

    @classmethod
    def for_api(cls, api: client.ApiClient, search_path: Sequence[str] = ()) -> Kubelet:
        url = urllib.parse.urlsplit(api.configuration.host)
        ca = api.configuration.ssl_ca_cert
        if not url.hostname or not ca:
            raise ValueError(f"the API client has no host or CA ({api.configuration.host})")
        return cls(url.hostname, url.port or 443, Path(ca), tuple(search_path))


def kubelet_unavailable() -> str | None:
    """Why kubelet mode cannot run here (``None``: it can).  It needs root for mount namespaces."""
    if os.geteuid() != 0:
        return "the pod runner's kubelet mode needs root (mount namespaces, chroot, setpriv)"
    missing = [t for t in KUBELET_TOOLS if not os.path.isabs(_tool(t))]
    if missing:
        return f"the pod runner's kubelet mode needs {', '.join(missing)} on PATH"
    # What a container needs: a private mount namespace with a tmpfs and an overlay on it.
    with tempfile.TemporaryDirectory(prefix="aispike-kubelet-probe-") as d:
        mount = _tool("mount")
        script = (f"{mount} -t tmpfs aispike-probe {d} && mkdir {d}/l {d}/u {d}/w {d}/m && "
                  f"{mount} -t overlay aispike-probe -o lowerdir={d}/l,upperdir={d}/u,"
                  f"workdir={d}/w {d}/m")
        probe = subprocess.run(
            [_tool("unshare"), "--mount", "--propagation", "private", "--", _tool("sh"), "-c",
             script], capture_output=True, text=True, check=False,
        )
    if probe.returncode != 0:
        return f"cannot mount a tmpfs and an overlay in a private mount namespace here: " \
               f"{probe.stderr.strip()}"
    return None


@dataclass
class RunningPod:
    """One pod's process."""

    namespace: str
    name: str
    uid: str
    ip: str
    port: int
    process: subprocess.Popen[bytes]
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)
    """What runs in the container (after the runner's rewrites), not the wrapper around it."""
    launch: list[str] = field(default_factory=list)
    """The command line that was started (the kubelet-mode wrapper, or ``argv`` itself)."""
    cwd: str = ""
    hosts_file: Path | None = None
    restarts: int = 0
    exited_at: float | None = None
    grace: float = 10
    container: str = "notebook"
    """The pod's (first) container's name: its log files are named after it."""

    @property
    def log_path(self) -> Path:
        """Everything the pod's containers wrote, as written (stdout and stderr interleaved)."""
        return self.workdir / "pod.log"

    @property
    def container_log(self) -> Path:
        """The container's CRI log file (what ``kubectl logs`` reads)."""
        return container_log(self.workdir, self.container)

    @property
    def previous_log(self) -> Path:
        """The CRI log of the container's previous instance (``kubectl logs --previous``)."""
        return previous_log(self.workdir, self.container)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def container_log(workdir: Path, container: str) -> Path:
    return workdir / f"{container}.log"


def previous_log(workdir: Path, container: str) -> Path:
    return workdir / f"{container}.previous.log"


def gpu_env(
    allocation_results: Iterable[Mapping[str, Any]], slices: Iterable[Mapping[str, Any]]
) -> dict[str, str]:
    """Environment the DRA plugin's CDI spec gives a container for its allocated GPU devices.

    The plugin's own code, not a copy: the allocated GPUs as the plugin finds them
    (:func:`aispike_hub.agent.allocation.allocated_gpus` over the slices' devices) and the
    isolation environment with the plugin's default settings
    (:func:`aispike_hub.isolation_env.isolation_env`).  ``{}`` when no result is a device of
    our driver in the given slices (the plugin would refuse the claim).
    """
    from aispike_hub.agent.allocation import PrepareError, allocated_gpus, node_devices
    from aispike_hub.isolation_env import IsolationSettings, isolation_env

    slices = list(slices)
    devices = {}
    for node in {(s.get("spec") or {}).get("nodeName") for s in slices}:
        if node:
            devices.update(node_devices(slices, node))
    claim = {"status": {"allocation": {"devices": {"results": list(allocation_results)}}}}
    try:
        gpus = allocated_gpus(claim, devices)
    except PrepareError:
        return {}
    return isolation_env(gpus, IsolationSettings())


class PodRunner:
    """Watches pods and runs the matching ones' commands as local processes (see module doc)."""

    def __init__(
        self,
        api: client.ApiClient,
        *,
        label_selector: str = NOTEBOOK_SELECTOR,
        extra_args: Callable[[list[str]], list[str]] | None = None,
        namespaces: Callable[[str], bool] = lambda namespace: True,
        watch_namespace: str | None = None,
        accept: Callable[[Any], bool] | None = None,
        kubelet: Kubelet | None = None,
        containers: Any = None,
    ) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.label_selector = label_selector
        self.extra_args = extra_args or _allow_root
        self.namespaces = namespaces
        """Which namespaces are this runner's: two test sessions may share one cluster."""
        self.watch_namespace = watch_namespace
        """Watch only this namespace (``None``: all of them, filtered by ``namespaces``)."""
        self.accept = accept
        """Which of the watched pods to run (``None``: every one the selector matches)."""
        self.kubelet = kubelet
        self.containers = containers
        """Container mode (a :class:`tests.integration.containers.ContainerMode`, with
        ``kubelet``): pods' containers from their images instead of this virtualenv."""
        self.pods: dict[str, RunningPod] = {}
        self.finished: dict[str, RunningPod] = {}
        self.errors: list[str] = []
        """Pods the runner could not start, and why."""
        self._stop = threading.Event()
        self._lock = threading.RLock()
        self._thread = threading.Thread(target=self._loop, name="pod-runner", daemon=True)
        self._root = Path(tempfile.mkdtemp(prefix="aispike-pod-runner-"))
        self._root.chmod(0o711)  # pods running as other users reach their own directories
        self._hosts_text: dict[str, str] = {}
        self.log_pump = LogPump()
        """Copies every container's output into its log files (:mod:`.podlogs`)."""
        self._logs_api_missing = False

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> PodRunner:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)
        with self._lock:
            for uid in list(self.pods):
                self._stop_pod(uid)
        if self.containers is not None:
            self.containers.close()
        self.log_pump.close()
        shutil.rmtree(self._root, ignore_errors=True)

    def running(self, namespace: str, name: str) -> RunningPod | None:
        with self._lock:
            for pod in self.pods.values():
                if (pod.namespace, pod.name) == (namespace, name):
                    return pod
        return None

    def wait_running(self, namespace: str, name: str, timeout: float = 60) -> RunningPod:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pod = self.running(namespace, name)
            if pod is not None:
                return pod
            time.sleep(0.2)
        raise TimeoutError(f"pod runner never started {namespace}/{name} within {timeout} s")

    def alive(self) -> list[RunningPod]:
        """Every pod (running or finished) whose process has not exited."""
        with self._lock:
            every = [*self.pods.values(), *self.finished.values()]
        return [p for p in every if p.process.poll() is None]

    def logs(self, tail: int = 3000) -> str:
        """The end of every pod's log this runner wrote, for a failing test's message."""
        with self._lock:
            every = [*self.pods.values(), *self.finished.values()]
        errors = [f"--- could not start {e}" for e in self.errors]
        return "\n".join(errors + [f"--- {p.namespace}/{p.name} (exit {p.process.poll()}, "
                                   f"restarts {p.restarts}):\n{p.log_text()[-tail:]}"
                                   for p in every])

    # --- the watch loop ------------------------------------------------------------------------

    def _list_call(self) -> tuple[Callable[..., Any], list[Any], dict[str, Any]]:
        """The list function with its arguments (``watch.stream`` reads its return type)."""
        kw = {"label_selector": self.label_selector} if self.label_selector else {}
        if self.watch_namespace:
            return self.core.list_namespaced_pod, [self.watch_namespace], kw
        return self.core.list_pod_for_all_namespaces, [], kw

    def _loop(self) -> None:
        resource_version = ""
        while not self._stop.is_set():
            try:
                func, args, kw = self._list_call()
                if not resource_version:
                    listing = func(*args, **kw)
                    resource_version = listing.metadata.resource_version
                    self._sync({p.metadata.uid: p for p in listing.items})
                stream = watch.Watch().stream(
                    func,
                    *args,
                    **kw,
                    resource_version=resource_version,
                    timeout_seconds=2 if self.kubelet else 5,
                    allow_watch_bookmarks=True,
                )
                for event in stream:
                    obj = event["object"]
                    if event["type"] == "BOOKMARK":  # arrives as a plain dict
                        resource_version = obj["metadata"]["resourceVersion"]
                        continue
                    resource_version = obj.metadata.resource_version
                    self._handle(event["type"], obj)
                    if self._stop.is_set():
                        break
                if self.kubelet and not self._stop.is_set():
                    self._tend()
            except ApiException as e:
                if e.status == 410:  # history compacted: list again
                    resource_version = ""
                    continue
                log.warning("pod runner watch failed: %s", e)
                time.sleep(1)
            except Exception:
                log.exception("pod runner watch failed")
                time.sleep(1)

    def _sync(self, pods: Mapping[str, Any]) -> None:
        with self._lock:
            for uid in list(self.pods):
                if uid not in pods:
                    self._stop_pod(uid)
        for pod in pods.values():
            self._handle("MODIFIED", pod)

    def _handle(self, kind: str, pod: Any) -> None:
        uid = pod.metadata.uid
        if not self.namespaces(pod.metadata.namespace):
            return
        if self.accept is not None and not self.accept(pod):
            return
        gone = kind == "DELETED" or pod.metadata.deletion_timestamp is not None
        with self._lock:
            if gone:
                if uid in self.pods:
                    self._stop_pod(uid)
                    self._refresh_hosts()
                return
            if uid in self.pods or uid in self.finished:
                return
            if pod.status.phase != "Running" or not pod.status.pod_ip:
                return
            try:
                self.pods[uid] = self._start_pod(pod)
            except Exception as e:
                # As a kubelet would report it in the pod's events; the test's message shows it.
                log.exception("pod runner could not start %s", pod.metadata.name)
                self.errors.append(f"{pod.metadata.namespace}/{pod.metadata.name}: {e!r}")
                return
            self._refresh_hosts()

    def _tend(self) -> None:
        """Kubelet mode, every watch round: hosts files current, exited containers restarted."""
        with self._lock:
            self._refresh_hosts()
            now = time.monotonic()
            for running in self.pods.values():
                code = running.process.poll()
                if self.containers is not None:
                    self.containers.tend(self, running)
                if code is None or (self.containers is not None
                                    and not self.containers.may_restart(running.uid, code)):
                    continue
                if running.exited_at is None:
                    running.exited_at = now
                    log.warning("%s/%s exited with %s", running.namespace, running.name, code)
                backoff = min(10.0, 1.0 * 2 ** running.restarts)
                if now - running.exited_at >= backoff:
                    running.restarts += 1
                    running.exited_at = None
                    rotate(running.container_log, running.previous_log)
                    running.process = self._launch(running.launch, running.env, running.workdir,
                                                   running.cwd if not self.kubelet else "/",
                                                   running.container)
                    if self.containers is not None:
                        self.containers.restarted(running.uid)

    # --- one pod -------------------------------------------------------------------------------

    def _start_pod(self, pod: Any) -> RunningPod:
        container = pod.spec.containers[0]
        ip = pod.status.pod_ip
        workdir = self._root / f"{pod.metadata.namespace}-{pod.metadata.name}"
        workdir.mkdir(parents=True, exist_ok=True)
        security = _security(pod, container)
        if self.kubelet and security.get("run_as_non_root") and not security.get("uid"):
            raise RuntimeError(f"{pod.metadata.name}: runAsNonRoot without a non-zero runAsUser "
                               "(a kubelet refuses to start it: CreateContainerConfigError)")
        env = self._container_env(pod, container)
        port = _port(container, env)
        service_url = env.get("JUPYTERHUB_SERVICE_URL")
        if service_url:
            # The spawner asked the server to listen on 0.0.0.0 inside its own network
            # namespace; here every pod shares the host's, so it listens on its pod IP only.
            parts = urllib.parse.urlsplit(service_url)
            env["JUPYTERHUB_SERVICE_URL"] = parts._replace(netloc=f"{ip}:{port}").geturl()
        env.update(self._gpu_env(pod))
        argv = list(container.command or []) + list(container.args or [])
        argv = [_expand(a, env) for a in argv] or ["jupyterhub-singleuser"]
        if not (self.kubelet and security.get("uid")):  # the process runs as root here
            argv = self.extra_args(argv)
        if self.kubelet:
            argv = _bind_to_pod_ip(argv, ip, container)
        argv[0] = shutil.which(argv[0], path=env["PATH"]) or argv[0]
        cwd = container.working_dir or _default_cwd(container, workdir)
        if self.kubelet:
            uid = int(security.get("uid") or 0)
            if uid:
                os.chown(workdir, uid, int(security.get("gid") or 0))
            env.setdefault("HOME", cwd)  # an image's HOME; here the working directory
        else:
            env["HOME"] = str(workdir)
        hosts_file: Path | None = None
        if self.kubelet:
            hosts_file = workdir / "hosts"
            hosts_file.write_text(self._hosts_for(pod.metadata.namespace, pod))
            launch = (self._contain(pod, container, argv, cwd, workdir, hosts_file, security)
                      if self.containers is None else self.containers.command(
                          self, pod, container, argv, env, workdir, hosts_file, security))
        else:
            launch = argv
        process = self._launch(launch, env, workdir, "/" if self.kubelet else cwd, container.name)
        self._publish_logs(pod, workdir)
        log.info(
            "started %s/%s on %s:%s: %s", pod.metadata.namespace, pod.metadata.name, ip, port, argv
        )
        return RunningPod(
            namespace=pod.metadata.namespace,
            name=pod.metadata.name,
            uid=pod.metadata.uid,
            ip=ip,
            port=port,
            process=process,
            workdir=workdir,
            env=env,
            argv=argv,
            launch=launch,
            cwd=cwd,
            hosts_file=hosts_file,
            grace=min(10.0, float(pod.spec.termination_grace_period_seconds or 10)),
            container=container.name,
        )

    def _launch(self, argv: list[str], env: Mapping[str, str], workdir: Path,
                cwd: str, container: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            argv,
            env=dict(env),
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        raw, cri = workdir / "pod.log", container_log(workdir, container)
        assert process.stdout is not None and process.stderr is not None
        self.log_pump.follow(process.stdout, "stdout", raw, cri)
        self.log_pump.follow(process.stderr, "stderr", raw, cri)
        return process

    def _publish_logs(self, pod: Any, workdir: Path) -> None:
        """The pod's kwok ``Logs`` object: every container's log files, for ``kubectl logs``.
        A cluster without kwok's Logs type (not made by scripts/test-cluster) is told once."""
        if self._logs_api_missing:
            return
        names = [c.name for c in [*(pod.spec.init_containers or []), *pod.spec.containers]]
        body = logs_object(pod, [(n, container_log(workdir, n), previous_log(workdir, n))
                                 for n in names])
        args = (LOGS_GROUP, LOGS_VERSION, pod.metadata.namespace, LOGS_PLURAL)
        try:
            try:
                self.custom.create_namespaced_custom_object(*args, body)
            except ApiException as e:
                if e.status != 409:
                    raise
                # A pod of the same name ran before and its object is not yet collected.
                self.custom.delete_namespaced_custom_object(*args, pod.metadata.name)
                self.custom.create_namespaced_custom_object(*args, body)
        except ApiException as e:
            if e.status == 404 and "namespaces" not in (e.body or ""):
                self._logs_api_missing = True
                log.warning("no kwok Logs type in this cluster: `kubectl logs` will not answer "
                            "for the runner's pods (start it with scripts/test-cluster)")
            else:  # the pod runs whatever happens to its logs object (a namespace going, ...)
                log.warning("no Logs object for %s/%s: %s", pod.metadata.namespace,
                            pod.metadata.name, e.reason)

    def _container_env(self, pod: Any, container: Any) -> dict[str, str]:
        # A container starts from a clean environment: only what the pod says, plus a PATH that
        # finds this virtualenv's jupyterhub-singleuser.
        search = self.kubelet.search_path if self.kubelet else ()
        env = {
            "PATH": ":".join([str(Path(sys.executable).parent), *search,
                              "/usr/local/bin:/usr/bin:/bin"]),
            "LANG": "C.UTF-8",
        }
        if self.kubelet:
            env["HOSTNAME"] = pod.metadata.name
            env["KUBERNETES_SERVICE_HOST"] = self.kubelet.api_host
            env["KUBERNETES_SERVICE_PORT"] = str(self.kubelet.api_port)
            env["KUBERNETES_SERVICE_PORT_HTTPS"] = str(self.kubelet.api_port)
        namespace = pod.metadata.namespace
        for source in container.env_from or []:
            prefix = source.prefix or ""
            if source.config_map_ref is not None:
                data = self._config_map(namespace, source.config_map_ref.name,
                                        bool(source.config_map_ref.optional))
            elif source.secret_ref is not None:
                data = self._secret(namespace, source.secret_ref.name,
                                    bool(source.secret_ref.optional))
            else:
                continue
            env.update({f"{prefix}{k}": v.decode(errors="replace") for k, v in data.items()})
        fields = _fields(pod)
        for var in container.env or []:
            if var.value is not None:
                env[var.name] = _expand(var.value, env)
                continue
            ref = var.value_from
            if ref is None:
                env[var.name] = ""
            elif ref.field_ref is not None:
                env[var.name] = fields.get(ref.field_ref.field_path, "")
            elif ref.secret_key_ref is not None:
                k = ref.secret_key_ref
                value = self._secret(namespace, k.name, bool(k.optional)).get(k.key)
                if value is None and not k.optional:
                    raise RuntimeError(f"secret {k.name} has no key {k.key}")
                if value is not None:
                    env[var.name] = value.decode(errors="replace")
            elif ref.config_map_key_ref is not None:
                k = ref.config_map_key_ref
                value = self._config_map(namespace, k.name, bool(k.optional)).get(k.key)
                if value is None and not k.optional:
                    raise RuntimeError(f"configmap {k.name} has no key {k.key}")
                if value is not None:
                    env[var.name] = value.decode(errors="replace")
        return env

    def _config_map(self, namespace: str, name: str, optional: bool = False) -> dict[str, bytes]:
        try:
            cm = self.core.read_namespaced_config_map(name, namespace)
        except ApiException as e:
            if e.status == 404 and optional:
                return {}
            raise
        out = {k: v.encode() for k, v in (cm.data or {}).items()}
        out.update({k: base64.b64decode(v) for k, v in (cm.binary_data or {}).items()})
        return out

    def _secret(self, namespace: str, name: str, optional: bool = False) -> dict[str, bytes]:
        try:
            secret = self.core.read_namespaced_secret(name, namespace)
        except ApiException as e:
            if e.status == 404 and optional:
                return {}
            raise
        return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}

    def _gpu_env(self, pod: Any) -> dict[str, str]:
        claim_names = [
            c.resource_claim_name for c in (pod.spec.resource_claims or []) if c.resource_claim_name
        ]
        claim_names += [
            s.resource_claim_name
            for s in (pod.status.resource_claim_statuses or [])
            if s.resource_claim_name
        ]
        results: list[Mapping[str, Any]] = []
        for name in claim_names:
            claim = self.custom.get_namespaced_custom_object(
                _RESOURCE_GROUP, _RESOURCE_VERSION, pod.metadata.namespace, "resourceclaims", name
            )
            allocation = claim.get("status", {}).get("allocation") or {}
            results += allocation.get("devices", {}).get("results", [])
        if not results:
            return {}
        slices = self.custom.list_cluster_custom_object(
            _RESOURCE_GROUP,
            _RESOURCE_VERSION,
            "resourceslices",
            field_selector=f"spec.nodeName={pod.spec.node_name}",
        )["items"]
        return gpu_env(results, slices)

    def _stop_pod(self, uid: str) -> None:
        pod = self.pods.pop(uid, None)
        if pod is None:
            return
        self.finished[uid] = pod
        _end_process_group(pod.process, pod.grace)
        if self.containers is not None:
            self.containers.remove(uid)
        log.info("stopped %s/%s", pod.namespace, pod.name)

    # --- kubelet mode: DNS without DNS ---------------------------------------------------------

    def _hosts_for(self, namespace: str, pod: Any) -> str:
        """/etc/hosts for a pod of ``namespace``: localhost, the pod itself, every Service."""
        text = self._hosts_text.get(namespace)
        if text is None:
            text = self._services_hosts(namespace)
            self._hosts_text[namespace] = text
        return _hosts_file(pod.status.pod_ip, pod.metadata.name, text)

    def _services_hosts(self, namespace: str) -> str:
        pods = [p for p in self.core.list_namespaced_pod(namespace).items
                if p.status.phase == "Running" and p.status.pod_ip
                and p.metadata.deletion_timestamp is None]
        running = {p.uid: p for p in self.pods.values() if p.process.poll() is None}
        lines = []
        for svc in self.core.list_namespaced_service(namespace).items:
            selector = svc.spec.selector or {}
            if not selector:
                continue
            behind = [p for p in pods
                      if selector.items() <= (p.metadata.labels or {}).items()]
            if not behind:
                continue
            # The pod whose process runs here, the newest first: what a Service would reach.
            behind.sort(key=lambda p: (p.metadata.uid in running,
                                       p.metadata.creation_timestamp), reverse=True)
            name = svc.metadata.name
            names = [name, f"{name}.{namespace}", f"{name}.{namespace}.svc",
                     f"{name}.{namespace}.svc.cluster.local"]
            for ip in _service_addresses(svc, behind):
                lines.append(f"{ip}\t{' '.join(names)}\n")
        return "".join(sorted(lines))

    def _refresh_hosts(self) -> None:
        if not self.kubelet:
            return
        self._hosts_text.clear()
        by_namespace: dict[str, list[RunningPod]] = {}
        for running in self.pods.values():
            if running.hosts_file is not None:
                by_namespace.setdefault(running.namespace, []).append(running)
        for namespace, pods in by_namespace.items():
            try:
                services = self._services_hosts(namespace)
            except ApiException as e:
                log.warning("cannot list services of %s: %s", namespace, e)
                continue
            self._hosts_text[namespace] = services
            for running in pods:
                assert running.hosts_file is not None
                text = _hosts_file(running.ip, running.name, services)
                if running.hosts_file.read_text() != text:
                    # In place (same inode): the file is bind-mounted into the container.
                    with open(running.hosts_file, "r+") as f:
                        f.write(text)
                        f.truncate()

    # --- kubelet mode: the container's file system ---------------------------------------------

    def _contain(self, pod: Any, container: Any, argv: list[str], cwd: str, workdir: Path,
                 hosts_file: Path, security: Mapping[str, Any]) -> list[str]:
        """The command line that runs ``argv`` as the container (see module doc)."""
        volumes = {v.name: v for v in pod.spec.volumes or []}
        mounts: list[tuple[str, Path, bool]] = []
        for m in container.volume_mounts or []:
            source = self._volume_source(pod, volumes[m.name], workdir, security)
            if m.sub_path:
                source = source / m.sub_path
                if not source.exists():
                    source.mkdir(parents=True)
            mounts.append((os.path.normpath(m.mount_path), source, bool(m.read_only)))
        if not any(target == "/etc/hosts" for target, _, _ in mounts):
            mounts.append(("/etc/hosts", hosts_file, True))
        mounts.sort(key=lambda m: m[0].count("/"))
        rootfs = workdir / "rootfs"
        rootfs.mkdir(exist_ok=True)
        overlays_dir = workdir / "overlays"
        overlays_dir.mkdir(exist_ok=True)
        placed: list[tuple[str, Path]] = []  # (target as mounted, source)
        plan: list[tuple[str, Path, bool]] = []
        overlays: set[str] = set()
        for target, source, read_only in mounts:
            inside = next(((t, s) for t, s in reversed(placed)
                           if target.startswith(t.rstrip("/") + "/")), None)
            if inside is not None:
                # Under an earlier volume: make the mount point in that volume's directory.
                spot = inside[1] / os.path.relpath(target, inside[0])
                _make_mount_point(spot, source.is_dir())
                real = target
            else:
                real = os.path.realpath(target)
                if not os.path.lexists(real):
                    parent = os.path.dirname(real)
                    while not os.path.isdir(parent):
                        parent = os.path.dirname(parent)
                    if parent == "/":
                        raise RuntimeError(f"{pod.metadata.name}: no parent for mount point "
                                           f"{target} (would need an overlay of /)")
                    overlays.add(parent)
            placed.append((real, source))
            plan.append((real, source, read_only))
        # What an image would hold (this virtualenv, its Python, the search path) must be
        # reachable by the container's user: directories on the way that it may not traverse
        # (e.g. /root, 0700) get an overlay in the container whose top allows traversal.
        traverse: set[str] = set()
        if security.get("uid"):
            needed = [sys.executable, os.path.realpath(sys.executable), sys.prefix,
                      os.path.realpath(argv[0]), *(self.kubelet.search_path
                                                   if self.kubelet else ())]
            traverse = _untraversable(needed)
            overlays |= traverse
        # Overlay the outermost parents only (an inner overlay would be hidden by an outer one).
        overlays = {o for o in overlays
                    if not any(o != p and o.startswith(p.rstrip("/") + "/") for p in overlays)}
        q = shlex.quote
        lines = [
            "set -eu",
            f"R={q(str(rootfs))}",
            f"MOUNT={q(_tool('mount'))}",
            "$MOUNT --make-rprivate /",
            '$MOUNT --rbind / "$R"',
            '$MOUNT --make-rprivate "$R"',
        ]
        if overlays:
            lines.append(f"$MOUNT -t tmpfs -o mode=0755 aispike-overlays {q(str(overlays_dir))}")
        for i, parent in enumerate(sorted(overlays)):
            upper, work = overlays_dir / f"{i}-upper", overlays_dir / f"{i}-work"
            # The merged top takes the upper directory's mode: the lower's, plus traversal.
            mode = os.stat(parent).st_mode & 0o7777 | (0o111 if parent in traverse else 0)
            lines += [
                f"mkdir {q(str(upper))} {q(str(work))}",
                f"chmod {mode:o} {q(str(upper))}",
                f"$MOUNT -t overlay aispike-overlay -o lowerdir=\"$R\"{q(parent)},"
                f"upperdir={q(str(upper))},workdir={q(str(work))} \"$R\"{q(parent)}",
            ]
        for real, source, read_only in plan:
            point = f'"$R"{q(real)}'
            if source.is_dir():
                lines.append(f"[ -d {point} ] || mkdir -p {point}")
            else:
                lines.append(f"[ -e {point} ] || {{ mkdir -p \"$(dirname {point})\"; "
                             f": > {point}; }}")
            lines.append(f"$MOUNT --bind {q(str(source))} {point}")
            if read_only:
                lines.append(f"$MOUNT -o remount,bind,ro {point}")
        # What an image would hold (this virtualenv, the checkout it is installed from, the
        # proxy's directory) stays visible where it is when a volume covers one of its parents
        # (an emptyDir at /tmp while the checkout is under /tmp): bound back over the volume.
        image = {os.path.realpath(p) for p in (sys.prefix, str(_REPO), *(
            self.kubelet.search_path if self.kubelet else ()))}
        covered = sorted(p for p in image
                         if any(p == r or p.startswith(r.rstrip("/") + "/") for r, _, _ in plan))
        for path in covered:
            if any(path.startswith(o.rstrip("/") + "/") for o in covered if o != path):
                continue  # inside another one bound back already
            point = f'"$R"{q(path)}'
            lines += [f"mkdir -p {point}", f"$MOUNT --rbind {q(path)} {point}",
                      f"$MOUNT -o remount,bind,ro {point}"]
        if security.get("read_only_root"):
            lines.append('$MOUNT -o remount,bind,ro "$R"')
        setpriv = [_tool("setpriv")]
        uid, gid = security.get("uid"), security.get("gid")
        if uid is not None:
            setpriv += ["--reuid", str(uid)]
        if gid is not None or uid is not None:
            setpriv += ["--regid", str(gid if gid is not None else 0)]
        groups = security.get("groups") or []
        setpriv += ["--groups", ",".join(map(str, groups))] if groups else ["--clear-groups"]
        if security.get("no_new_privs"):
            setpriv.append("--no-new-privs")
        if security.get("drop_all"):
            setpriv += ["--inh-caps", "-all", "--bounding-set", "-all"]
        envbin = _tool("env")
        final = [*setpriv, "--", envbin, f"--chdir={cwd}", "--", *argv]
        lines.append(f'exec {q(_tool("chroot"))} "$R" {" ".join(q(a) for a in final)}')
        script = workdir / "container.sh"
        script.write_text("\n".join(lines) + "\n")
        return [_tool("unshare"), "--mount", "--propagation", "private", "--", _tool("sh"),
                str(script)]

    def _volume_source(self, pod: Any, volume: Any, workdir: Path,
                       security: Mapping[str, Any]) -> Path:
        """The directory a kubelet would mount for ``volume``, made on this machine."""
        namespace = pod.metadata.namespace
        fs_group = security.get("fs_group")
        base = workdir / "volumes" / volume.name
        if volume.empty_dir is not None:
            return _world_writable(base)
        if volume.persistent_volume_claim is not None:
            # A PVC's data outlives the pod (the next pod of a Deployment finds it).
            name = volume.persistent_volume_claim.claim_name
            return _world_writable(self._root / "pvcs" / namespace / name)
        if volume.host_path is not None:
            # The kwok node's file system, never this machine's own path.
            node = pod.spec.node_name or "node"
            return _world_writable(self._root / "nodes" / node /
                                   volume.host_path.path.lstrip("/"))
        files: dict[str, bytes] = {}
        mode = 0o644
        if volume.config_map is not None:
            source = volume.config_map
            files = _pick(self._config_map(namespace, source.name, bool(source.optional)),
                          source.items)
            mode = source.default_mode or mode
        elif volume.secret is not None:
            source = volume.secret
            files = _pick(self._secret(namespace, source.secret_name, bool(source.optional)),
                          source.items)
            mode = source.default_mode or mode
        elif volume.downward_api is not None:
            files = self._downward(pod, volume.downward_api.items)
            mode = volume.downward_api.default_mode or mode
        elif volume.projected is not None:
            mode = volume.projected.default_mode or mode
            for s in volume.projected.sources or []:
                if s.service_account_token is not None:
                    files[s.service_account_token.path] = self._token(
                        pod, s.service_account_token).encode()
                elif s.config_map is not None:
                    data = self._config_map(namespace, s.config_map.name,
                                            bool(s.config_map.optional))
                    if s.config_map.name == "kube-root-ca.crt" and not data:
                        data = {"ca.crt": self.kubelet_ca()}
                    files.update(_pick(data, s.config_map.items))
                elif s.secret is not None:
                    files.update(_pick(self._secret(namespace, s.secret.name,
                                                    bool(s.secret.optional)), s.secret.items))
                elif s.downward_api is not None:
                    files.update(self._downward(pod, s.downward_api.items))
        else:
            raise RuntimeError(f"{pod.metadata.name}: volume {volume.name}'s kind is not one "
                               "the pod runner provides")
        base.mkdir(parents=True, exist_ok=True)
        base.chmod(0o755)
        for rel, content in files.items():
            path = base / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            if fs_group is not None:
                os.chown(path, 0, int(fs_group))
                path.chmod(mode | 0o040)
            else:
                path.chmod(mode)
        return base

    def kubelet_ca(self) -> bytes:
        assert self.kubelet is not None
        return self.kubelet.ca_file.read_bytes()

    def _token(self, pod: Any, projection: Any) -> str:
        """A real service-account token from the TokenRequest API, bound to the pod."""
        spec: dict[str, Any] = {
            "expirationSeconds": int(projection.expiration_seconds or 3600),
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod",
                               "name": pod.metadata.name, "uid": pod.metadata.uid},
        }
        if projection.audience:
            spec["audiences"] = [projection.audience]
        account = pod.spec.service_account_name or "default"
        answer = self.core.create_namespaced_service_account_token(
            account, pod.metadata.namespace, {"spec": spec})
        return str(answer.status.token)

    def _downward(self, pod: Any, items: Sequence[Any] | None) -> dict[str, bytes]:
        fields = _fields(pod)
        out = {}
        for item in items or []:
            if item.field_ref is not None:
                path = item.field_ref.field_path
                if path == "metadata.labels":
                    value = "\n".join(f'{k}="{v}"' for k, v in
                                      sorted((pod.metadata.labels or {}).items()))
                elif path == "metadata.annotations":
                    value = "\n".join(f'{k}="{v}"' for k, v in
                                      sorted((pod.metadata.annotations or {}).items()))
                else:
                    value = fields.get(path, "")
                out[item.path] = value.encode()
        return out


def _hosts_file(ip: str, hostname: str, services: str) -> str:
    return ("# Kubernetes-managed hosts file (tests/integration/podrunner.py).\n"
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            f"{ip}\t{hostname}\n{services}")


def _untraversable(paths: Iterable[str]) -> set[str]:
    """Directories on the way to ``paths`` that others may not traverse (no ``o+x``)."""
    out: set[str] = set()
    for path in paths:
        for parent in Path(path).parents:
            with contextlib.suppress(OSError):
                if parent.is_dir() and not parent.stat().st_mode & 0o001:
                    out.add(str(parent))
    return out


def _tool(name: str) -> str:
    """Absolute path of a system tool (containers' PATH lacks the sbin directories)."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
    return shutil.which(name, path=path) or name


def _fields(pod: Any) -> dict[str, str]:
    """``fieldRef`` paths a kubelet resolves."""
    return {
        "metadata.name": pod.metadata.name,
        "metadata.namespace": pod.metadata.namespace,
        "metadata.uid": pod.metadata.uid,
        "spec.nodeName": pod.spec.node_name or "",
        "spec.serviceAccountName": pod.spec.service_account_name or "",
        "status.podIP": pod.status.pod_ip or "",
        "status.podIPs": pod.status.pod_ip or "",
        "status.hostIP": pod.status.host_ip or "",
        "status.hostIPs": pod.status.host_ip or "",
    }


def _pick(data: Mapping[str, bytes], items: Sequence[Any] | None) -> dict[str, bytes]:
    """configMap/secret volume files: every key, or the listed ``items`` under their paths."""
    if not items:
        return dict(data)
    return {i.path: data[i.key] for i in items if i.key in data}


def _world_writable(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o777)  # as a kubelet makes emptyDir
    return path


def _make_mount_point(path: Path, directory: bool) -> None:
    if directory:
        path.mkdir(parents=True, exist_ok=True)
    elif not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


def _security(pod: Any, container: Any) -> dict[str, Any]:
    """The pod's and container's securityContext, merged as a kubelet does (container wins)."""
    p = pod.spec.security_context
    c = container.security_context

    def pick(attr: str) -> Any:
        for ctx in (c, p):
            value = getattr(ctx, attr, None) if ctx is not None else None
            if value is not None:
                return value
        return None

    fs_group = getattr(p, "fs_group", None) if p is not None else None
    groups = list(getattr(p, "supplemental_groups", None) or []) if p is not None else []
    if fs_group is not None:
        groups = [fs_group, *groups]
    gid = pick("run_as_group")
    caps = getattr(c, "capabilities", None) if c is not None else None
    return {
        "uid": pick("run_as_user"),
        "gid": gid,
        "groups": [g for g in dict.fromkeys(groups) if g != gid] if groups else [],
        "fs_group": fs_group,
        "run_as_non_root": bool(pick("run_as_non_root")),
        "read_only_root": bool(getattr(c, "read_only_root_filesystem", None)) if c else False,
        "no_new_privs": c is not None and c.allow_privilege_escalation is False,
        "drop_all": caps is not None and "ALL" in (caps.drop or []),
    }


_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def _expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion in command, args and env values."""
    return _VAR.sub(lambda m: env.get(m.group(1), m.group(0)), text)


def _bind_to_pod_ip(argv: list[str], ip: str, container: Any) -> list[str]:
    """No network namespace here: what would listen on every interface of the pod listens on its
    pod IP instead of every interface of this machine."""
    name = Path(argv[0]).name
    out = list(argv)
    if name == "configurable-http-proxy":
        for i, arg in enumerate(out):
            for flag in ("--ip=", "--api-ip=", "--metrics-ip="):
                if arg in (flag, f"{flag}0.0.0.0", f"{flag}::", f"{flag}*"):
                    out[i] = f"{flag}{ip}"
    elif name == "aispike-hub" and out[1:2] == ["agent"]:
        out = _bind_agent(out, ip)
    elif name == "jupyterhub":
        ports = {p.name: p.container_port for p in container.ports or []}
        out.append(f"--JupyterHub.hub_bind_url=http://{ip}:{ports.get('hub', 8081)}")
    return out


def _default_cwd(container: Any, workdir: Path) -> str:
    """The working directory of a container without ``workingDir``: the runner's directory of
    the pod (an image's WORKDIR), or ``/`` (an image's default) where a volume of the container
    would hide that directory (the node agent's emptyDir at /tmp, while the runner works there)."""
    here = os.path.realpath(workdir)
    for m in container.volume_mounts or []:
        target = os.path.realpath(m.mount_path)
        if here == target or here.startswith(target.rstrip("/") + "/"):
            return "/"
    return str(workdir)


def _service_addresses(svc: Any, behind: Sequence[Any]) -> list[str]:
    """What a Service's name resolves to: a headless one (``clusterIP: None``) to every pod
    behind it (one DNS record each; here one hosts line each, all returned by getaddrinfo),
    any other to the first pod (standing in for its cluster IP)."""
    if svc.spec.cluster_ip == "None":
        return list(dict.fromkeys(p.status.pod_ip for p in behind))
    return [behind[0].status.pod_ip]


def _bind_agent(argv: list[str], ip: str) -> list[str]:
    """The node agent's metrics server (/usage, /metrics) listens on every interface of its
    pod by default: here on its pod IP, so that each node's agent has its own address."""
    if any(a.startswith("--metrics-address") for a in argv):
        return argv
    return [*argv, f"--metrics-address={ip}"]


def _end_process_group(process: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the process's group, SIGKILL what is left after ``grace`` seconds."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


def _port(container: Any, env: Mapping[str, str]) -> int:
    service_url = env.get("JUPYTERHUB_SERVICE_URL")
    if service_url:
        port = urllib.parse.urlsplit(service_url).port
        if port:
            return port
    for p in container.ports or []:
        return int(p.container_port)
    return 8888


def _allow_root(argv: list[str]) -> list[str]:
    """Running as root (CI does) is what a notebook image's root user would do: allow it."""
    if os.geteuid() == 0 and Path(argv[0]).name == "jupyterhub-singleuser":
        with contextlib.suppress(ValueError):
            if "--allow-root" not in argv:
                return [*argv, "--allow-root"]
    return argv
