"""``aispike-hub agent``: the node agent's command (the DaemonSet's entry point).

Each tick it reads NVML, maps GPU processes to notebooks, scans the dataset cache (evicting
beyond its limit), serves the result as Prometheus metrics and JSON, and publishes the node's
ResourceSlice, GPU-model label and datasets annotation when they changed.  Every setting is a
traitlets trait with help (``aispike-hub agent --help-all``), set on the command line or in a
config file (``--config``), as JupyterHub's own settings are.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

from traitlets import Bool, Float, Integer, Unicode, default
from traitlets.config import Application

from aispike_hub.agent import datasets as cache
from aispike_hub.agent.dra import KubeletPlugin, KubernetesClaimSource
from aispike_hub.agent.enforce import Enforcer
from aispike_hub.agent.metrics import Snapshot, UsageCollector, notebook_usage, usage_document
from aispike_hub.agent.nvml import MachineReading, read_machine
from aispike_hub.agent.procs import PodInfo, owner_of, pod_info_from_manifest, read_process_tree
from aispike_hub.agent.slices import (
    KubeClient,
    KubernetesClient,
    PublishMemory,
    desired_state,
    publish,
)
from aispike_hub.cli import package_version


def build_snapshot(
    node: str,
    now: float,
    reading: MachineReading,
    processes: Any,
    pods: dict[str, PodInfo],
    datasets: Sequence[cache.CachedDataset] | None,
) -> Snapshot:
    """Join one tick's readings into a :class:`Snapshot` (pure: all inputs are passed in)."""
    owners = {p.pid: owner_of(p.pid, processes, pods) for p in reading.processes}
    return Snapshot(
        node=node,
        time=now,
        reading=reading,
        notebooks=tuple(notebook_usage(reading.processes, owners)),
        datasets={d.name: d.bytes for d in datasets or ()},
    )


class AgentApp(Application):
    """The node agent."""

    name = "aispike-hub agent"
    version = package_version()
    description = (
        "AISpike Hub node agent: discovers this node's GPUs (NVML), their topology and "
        "per-notebook use, its dataset cache, and publishes them as a DRA ResourceSlice and "
        "node metadata."
    )

    node_name = Unicode(
        help="""Name of this node's Node object in Kubernetes.

        Defaults to $NODE_NAME (set it from the downward API, spec.nodeName, in the DaemonSet),
        else the host name.""",
    ).tag(config=True)

    @default("node_name")
    def _default_node_name(self) -> str:
        return os.environ.get("NODE_NAME") or socket.gethostname()

    nvml_fixture = Unicode(
        "",
        help="""Read GPUs from this recorded NVML fixture (JSON, see scripts/record-nvml) instead
        of the real driver: for simulated nodes, demos and tests.""",
    ).tag(config=True)

    proc_root = Unicode(
        "/proc",
        help="""Where to read processes' cgroups, parents and environment.  In Kubernetes the
        DaemonSet needs hostPID: true, so that NVML's pids are the ones found here.""",
    ).tag(config=True)

    sysfs_root = Unicode(
        "/sys",
        help="""Where to read a GPU's NUMA node when NVML cannot say (older drivers, virtual
        machines): <sysfs_root>/bus/pci/devices/<bus id>/numa_node.  Empty: do not.""",
    ).tag(config=True)

    interval = Float(
        15.0,
        help="Seconds between two readings of NVML and the dataset cache.",
    ).tag(config=True)

    dataset_cache_dir = Unicode(
        "",
        help="""Node-local dataset cache directory (one dataset per entry).  Empty: the agent
        manages no cache and leaves the aispike.io/datasets annotation alone.""",
    ).tag(config=True)

    dataset_cache_limit_bytes = Integer(
        0,
        help="""Evict least recently used datasets when the cache holds more than this many
        bytes.  0: never evict.""",
    ).tag(config=True)

    metrics_address = Unicode(
        "0.0.0.0",
        help="Address to serve /metrics (Prometheus), /usage (JSON) and /healthz on.",
    ).tag(config=True)

    metrics_port = Integer(
        9402,
        help="""Port of the metrics server; 0 disables it.  9402, not dcgm-exporter's 9400,
        so that both run on one GPU node (host network included) and scrape configs that find
        dcgm-exporter by its port do not take the agent for it.""",
    ).tag(config=True)

    publish = Bool(
        False,
        help="""Publish to Kubernetes: this node's ResourceSlice (driver gpu.aispike.io), the
        aispike.io/gpu-model label and the aispike.io/datasets annotation, and read the pods on
        this node to name the owners of GPU processes.  Off: only metrics and JSON.""",
    ).tag(config=True)

    kubeconfig = Unicode(
        "",
        help="Kubeconfig file for publishing; empty: the in-cluster service account.",
    ).tag(config=True)

    once = Bool(
        False,
        help="""Do one tick, print the JSON usage document and the ResourceSlice that would be
        published, and exit (discovery check on a new machine).""",
    ).tag(config=True)

    classes: ClassVar[list[Any]] = [KubeletPlugin, Enforcer]  # type: ignore[misc]

    aliases: ClassVar[dict[str, Any]] = {  # type: ignore[misc]
        "enforce": "Enforcer.policy",
        "cdi-dir": "KubeletPlugin.cdi_dir",
        "dra-state-dir": "KubeletPlugin.state_dir",
        "node-name": "AgentApp.node_name",
        "nvml-fixture": "AgentApp.nvml_fixture",
        "proc-root": "AgentApp.proc_root",
        "interval": "AgentApp.interval",
        "dataset-cache-dir": "AgentApp.dataset_cache_dir",
        "dataset-cache-limit-bytes": "AgentApp.dataset_cache_limit_bytes",
        "metrics-address": "AgentApp.metrics_address",
        "metrics-port": "AgentApp.metrics_port",
        "kubeconfig": "AgentApp.kubeconfig",
        "config": "AgentApp.config_file",
        "log-level": "Application.log_level",
    }
    flags: ClassVar[dict[str, Any]] = {  # type: ignore[misc]
        "once": ({"AgentApp": {"once": True}}, "One tick, print what was found, exit."),
        "publish": ({"AgentApp": {"publish": True}}, "Publish to Kubernetes."),
        "dra-plugin": (
            {"KubeletPlugin": {"enabled": True}},
            "Serve the kubelet DRA plugin (prepare claims: CDI specs with the GPU and its slice).",
        ),
    }

    config_file = Unicode(
        "", help="Python config file to load (c.AgentApp.<setting> = ...)."
    ).tag(config=True)

    def initialize(self, argv: Any = None) -> None:
        super().initialize(argv)
        if self.config_file:
            self.load_config_file(self.config_file)
        level: Any = self.log_level
        logging.basicConfig(
            level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        self.collector = UsageCollector()
        self._sample_marks: dict[str, int] = {}
        self._memory = PublishMemory()
        self._kube: KubeClient | None = None
        self._core_api: Any = None
        self._api_client: Any = None
        self._nvml: Any = None
        self.dra = KubeletPlugin(parent=self)
        self.enforcer = Enforcer(parent=self)
        if self.nvml_fixture:
            from aispike_hub.agent.recorded import RecordedNvml

            self._nvml = RecordedNvml.from_file(self.nvml_fixture)

    # -- one tick ------------------------------------------------------------------------------

    def _connect(self) -> None:
        import kubernetes

        kube: Any = kubernetes  # the client package is untyped
        if self.kubeconfig:
            kube.config.load_kube_config(config_file=self.kubeconfig)
        else:
            kube.config.load_incluster_config()
        client = kube.client
        api_client = client.ApiClient()
        self._kube = KubernetesClient(api_client)
        self._core_api = client.CoreV1Api(api_client)
        self._api_client = api_client

    def _pods_on_node(self) -> dict[str, PodInfo]:
        if self._core_api is None:
            return {}
        try:
            listed = self._core_api.list_pod_for_all_namespaces(
                field_selector=f"spec.nodeName={self.node_name}"
            )
        except Exception as exc:  # the API being away must not stop the metrics
            self.log.warning("cannot list pods on %s: %s", self.node_name, exc)
            return {}
        pods = {}
        api_client: Any = self._api_client
        for item in api_client.sanitize_for_serialization(listed).get("items", []):
            uid, info = pod_info_from_manifest(item)
            pods[uid] = info
        return pods

    def _datasets(self) -> list[cache.CachedDataset] | None:
        if not self.dataset_cache_dir:
            return None
        scan = cache.scan_cache(self.dataset_cache_dir)
        victims = cache.plan_eviction(scan.datasets, self.dataset_cache_limit_bytes)
        if victims:
            removed = set(cache.evict(self.dataset_cache_dir, [v.name for v in victims]))
            return [d for d in scan.datasets if d.name not in removed]
        return list(scan.datasets)

    def tick(self) -> Snapshot:
        """Read everything once, update the metrics, publish what changed."""
        now = time.time()
        sysfs = None if self.nvml_fixture else self.sysfs_root
        reading = read_machine(self._nvml, self._sample_marks, sysfs or None)
        processes = read_process_tree({p.pid for p in reading.processes}, self.proc_root)
        datasets = self._datasets()
        snapshot = build_snapshot(
            self.node_name, now, reading, processes, self._pods_on_node(), datasets
        )
        self.collector.update(snapshot)
        preparer = getattr(self.dra, "preparer", None)
        limits = preparer.limits_by_pod() if preparer is not None else {}
        try:
            self.enforcer.tick(snapshot.notebooks, processes, limits, now)
        except Exception:  # enforcement must not stop the metrics
            self.log.exception("slice enforcement failed")
        if self._kube is not None:
            desired = desired_state(self.node_name, reading.core_gpus, datasets)
            try:
                publish(self._kube, desired, self._memory)
            except Exception as exc:  # retried next tick; memory is left as it was
                self.log.warning("publishing %s failed: %s", self.node_name, exc)
        return snapshot

    # -- serving -------------------------------------------------------------------------------

    def _serve(self) -> ThreadingHTTPServer:
        from prometheus_client import CollectorRegistry
        from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

        registry = CollectorRegistry(auto_describe=False)
        registry.register(self.collector)
        collector = self.collector

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    body, kind = generate_latest(registry), CONTENT_TYPE_LATEST
                elif path == "/usage" and collector.snapshot is not None:
                    body = json.dumps(usage_document(collector.snapshot)).encode()
                    kind = "application/json"
                elif path == "/healthz":
                    body, kind = b"ok\n", "text/plain"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                logging.getLogger("aispike_hub.agent.http").debug(format, *args)

        server = ThreadingHTTPServer((self.metrics_address, self.metrics_port), Handler)
        threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
        self.log.info("serving /metrics and /usage on %s:%s", *server.server_address[:2])
        return server

    def start(self) -> None:
        if self.publish:
            self._connect()
        if self.dra.enabled and not self.once:
            if self._api_client is None:
                self._connect()
            self.dra.start(self.node_name, KubernetesClaimSource(self._api_client))
        if self.once:
            snapshot = self.tick()
            desired = desired_state(self.node_name, snapshot.reading.core_gpus, None)
            print(
                json.dumps(
                    {"usage": usage_document(snapshot), "resourceSlice": desired.resource_slice,
                     "labels": desired.labels, "problems": list(desired.problems)},
                    indent=1,
                )
            )
            return
        if self.metrics_port:
            self._serve()
        while True:
            started = time.monotonic()
            try:
                self.tick()
            except Exception:  # one bad tick must not end the DaemonSet's pod
                self.log.exception("agent tick failed")
            time.sleep(max(0.0, self.interval - (time.monotonic() - started)))


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``aispike-hub agent`` (``argv`` without the subcommand)."""
    app = AgentApp()
    app.initialize(list(argv) if argv is not None else sys.argv[1:])
    app.start()


if __name__ == "__main__":
    main()
