"""The "pod runner": what a kubelet and container runtime would do for notebook pods under kwok.

kwok marks pods Running and gives them an IP from 127.1.0.0/16 but runs nothing.  For every pod
that matches the runner's label selector and is Running, the runner starts the pod's command as a
local process bound to the pod's loopback IP and port, with the pod's environment plus the GPU
variables the node agent's DRA plugin would add through CDI.  It stops the process when the pod
is deleted.  So a spawn through the real hub reaches a real ``jupyterhub-singleuser``.

It runs in a thread of the test process, watching pods through the real API server.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from aispike_hub.kube.slices import DRIVER, MEMORY_CAPACITY, RESOURCE_API_VERSION

log = logging.getLogger("podrunner")

NOTEBOOK_SELECTOR = "component=singleuser-server"
"""KubeSpawner's label on notebook pods (``KubeSpawner.component_label``'s default)."""

_RESOURCE_GROUP, _RESOURCE_VERSION = RESOURCE_API_VERSION.split("/")


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

    @property
    def log_path(self) -> Path:
        return self.workdir / "pod.log"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def _memory_mib(quantity: str) -> int:
    from aispike_hub.kube.nodespec import quantity_mib

    return quantity_mib(quantity)


def gpu_env(
    allocation_results: Iterable[Mapping[str, Any]], slices: Iterable[Mapping[str, Any]]
) -> dict[str, str]:
    """Environment the DRA plugin's CDI spec gives a container for its allocated GPU devices.

    Same variables as the Kubernetes contract in DESIGN.md: ``NVIDIA_VISIBLE_DEVICES`` (the
    allocated GPUs' UUIDs), ``AISPIKE_GPU_MEMORY_LIMIT`` (MiB of the first device's consumed
    memory) and HAMi-core's ``CUDA_DEVICE_MEMORY_LIMIT_<i>`` per visible device.
    """
    devices: dict[tuple[str, str], Mapping[str, Any]] = {}
    for s in slices:
        spec = s.get("spec", {})
        if spec.get("driver") != DRIVER:
            continue
        for d in spec.get("devices", []):
            devices[(spec["pool"]["name"], d["name"])] = d
    uuids: list[str] = []
    limits: list[int] = []
    for result in allocation_results:
        if result.get("driver") != DRIVER:
            continue
        device = devices.get((result["pool"], result["device"]))
        if device is None:
            continue
        uuids.append(device["attributes"]["uuid"]["string"])
        consumed = (result.get("consumedCapacity") or {}).get(MEMORY_CAPACITY)
        total = device.get("capacity", {}).get(MEMORY_CAPACITY, {}).get("value", "0")
        limits.append(_memory_mib(consumed or total))
    if not uuids:
        return {}
    env = {"NVIDIA_VISIBLE_DEVICES": ",".join(uuids), "AISPIKE_GPU_MEMORY_LIMIT": f"{limits[0]}"}
    for i, mib in enumerate(limits):
        env[f"CUDA_DEVICE_MEMORY_LIMIT_{i}"] = f"{mib}m"
    return env


class PodRunner:
    """Watches pods and runs the matching ones' commands as local processes (see module doc)."""

    def __init__(
        self,
        api: client.ApiClient,
        *,
        label_selector: str = NOTEBOOK_SELECTOR,
        extra_args: Callable[[list[str]], list[str]] | None = None,
        namespaces: Callable[[str], bool] = lambda namespace: True,
    ) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.label_selector = label_selector
        self.extra_args = extra_args or _allow_root
        self.namespaces = namespaces
        """Which namespaces are this runner's: two test sessions may share one cluster."""
        self.pods: dict[str, RunningPod] = {}
        self.finished: dict[str, RunningPod] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="pod-runner", daemon=True)
        self._root = Path(tempfile.mkdtemp(prefix="aispike-pod-runner-"))

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

    # --- the watch loop ------------------------------------------------------------------------

    def _loop(self) -> None:
        resource_version = ""
        while not self._stop.is_set():
            try:
                if not resource_version:
                    listing = self.core.list_pod_for_all_namespaces(
                        label_selector=self.label_selector
                    )
                    resource_version = listing.metadata.resource_version
                    self._sync({p.metadata.uid: p for p in listing.items})
                stream = watch.Watch().stream(
                    self.core.list_pod_for_all_namespaces,
                    label_selector=self.label_selector,
                    resource_version=resource_version,
                    timeout_seconds=5,
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
        gone = kind == "DELETED" or pod.metadata.deletion_timestamp is not None
        with self._lock:
            if gone:
                self._stop_pod(uid)
                return
            if uid in self.pods or uid in self.finished:
                return
            if pod.status.phase != "Running" or not pod.status.pod_ip:
                return
            try:
                self.pods[uid] = self._start_pod(pod)
            except Exception:
                log.exception("pod runner could not start %s", pod.metadata.name)

    # --- one pod -------------------------------------------------------------------------------

    def _start_pod(self, pod: Any) -> RunningPod:
        container = pod.spec.containers[0]
        ip = pod.status.pod_ip
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
        argv = self.extra_args(argv or ["jupyterhub-singleuser"])
        argv[0] = shutil.which(argv[0], path=env["PATH"]) or argv[0]
        workdir = self._root / f"{pod.metadata.namespace}-{pod.metadata.name}"
        workdir.mkdir(parents=True, exist_ok=True)
        env["HOME"] = str(workdir)
        with open(workdir / "pod.log", "ab") as out:
            process = subprocess.Popen(
                argv,
                env=env,
                cwd=workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
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
        )

    def _container_env(self, pod: Any, container: Any) -> dict[str, str]:
        # A container starts from a clean environment: only what the pod says, plus a PATH that
        # finds this virtualenv's jupyterhub-singleuser.
        env = {
            "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
        }
        fields = {
            "metadata.name": pod.metadata.name,
            "metadata.namespace": pod.metadata.namespace,
            "metadata.uid": pod.metadata.uid,
            "spec.nodeName": pod.spec.node_name or "",
            "status.podIP": pod.status.pod_ip or "",
            "status.hostIP": pod.status.host_ip or "",
        }
        for var in container.env or []:
            if var.value is not None:
                env[var.name] = var.value
            elif var.value_from is not None and var.value_from.field_ref is not None:
                env[var.name] = fields.get(var.value_from.field_ref.field_path, "")
        return env

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
        if pod.process.poll() is None:
            pod.process.send_signal(signal.SIGTERM)
            try:
                pod.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pod.process.kill()
                pod.process.wait(timeout=5)
        log.info("stopped %s/%s", pod.namespace, pod.name)


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
