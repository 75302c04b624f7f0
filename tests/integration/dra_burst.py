"""A burst of notebook servers against kwok GPU nodes, with a competing DRA workload and a
restart of our placement service in the middle.  Shared by tests/integration/test_dra_placement.py
(scaled down, CI) and benchmarks/kube_placement.py (500 servers on 50 nodes).

Our side: :class:`Placer` + :class:`Inventory` (the library the AISpike service runs).  The other
side: a thread that creates claims for our DRA driver *without* a pin (kube-scheduler picks the
device first-fit) plus pods using them, on the same nodes, while our servers start.  After the
burst, the facts are checked from the API server itself, not from our view.
"""

from __future__ import annotations

import copy
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from aispike_hub.kube.api import KubeJson
from aispike_hub.kube.claims import claim_name
from aispike_hub.kube.inventory import Inventory
from aispike_hub.kube.nodespec import quantity_mib
from aispike_hub.kube.placer import PlacementFailed, PlacementRefused, Placer
from aispike_hub.kube.slices import DEVICE_CLASS, DRIVER
from aispike_hub.model import GIB_IN_MIB, SliceRequest

SLICE_SIZES_GIB = (8, 16, 24, 40, 60)
GPUS_PER_NODE = 8


def burst_nodes_spec(nodes: int, model: str) -> dict[str, Any]:
    """``nodes`` nodes of 8 GPUs (80 GiB, two NVLink domains of 4) of a model unique to the run."""
    return {
        "nodes": [
            {
                "name": "burst-{i}",
                "count": nodes,
                "cpu": "96",
                "memory": "1024Gi",
                "gpus": [
                    {"model": model, "memory": "80Gi", "count": 4, "nvlinkDomain": "nvl0",
                     "pcieSwitch": "sw0", "numaNode": 0},
                    {"model": model, "memory": "80Gi", "count": 4, "nvlinkDomain": "nvl1",
                     "pcieSwitch": "sw1", "numaNode": 1},
                ],
            }
        ]
    }


def pod_manifest(request: SliceRequest, selector: dict[str, str]) -> dict[str, Any]:
    """A notebook-like pod; kwok runs nothing, so the image is never pulled."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"labels": {"app": "burst"}},
        "spec": {
            "nodeSelector": dict(selector),
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "notebook",
                    "image": "registry.invalid/notebook:1",
                    "resources": {
                        "requests": {"cpu": f"{request.cpu_milli}m",
                                     "memory": f"{request.memory_mib}Mi"}
                    },
                }
            ],
        },
    }


@dataclass
class BurstReport:
    servers: int
    nodes: int
    competitors: int
    wall_seconds: float = 0.0
    outcome: Counter[str] = field(default_factory=Counter)
    refused: dict[str, SliceRequest] = field(default_factory=dict)
    reasons: dict[str, tuple[str, ...]] = field(default_factory=dict)
    requests: dict[str, SliceRequest] = field(default_factory=dict)
    pins: int = 0
    repins: int = 0
    handed_over: int = 0
    decision_seconds: list[float] = field(default_factory=list)
    running_after: int = 0
    competitors_running: int = 0
    first_placer_pins: int = 0

    @property
    def stale_rate(self) -> float:
        return self.repins / self.pins if self.pins else 0.0


class Service:
    """Our placement service in-process: inventory + placer + a reconcile loop."""

    def __init__(self, api_client: Any, **placer_config: Any) -> None:
        # Its own client and connection pool, as a separate process would have.
        config = copy.copy(api_client.configuration)
        config.connection_pool_maxsize = 64
        self.inventory = Inventory(ApiClient(config), resync_seconds=120).start()
        self.placer = Placer(self.inventory, **placer_config)
        self._stop = threading.Event()
        self._loop = threading.Thread(target=self._reconcile_loop, daemon=True)
        self._loop.start()

    def _reconcile_loop(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.placer.reconcile()
            except Exception as e:  # keep reconciling; report in the log
                print(f"[service] reconcile failed: {e}")

    def stop(self) -> None:
        """Stop it as a crash would: nothing is flushed, in-flight flows are abandoned."""
        self._stop.set()
        self.inventory.stop()


def competitor_claim(name: str, memory_gib: int) -> dict[str, Any]:
    """A claim for our driver with no pin: kube-scheduler picks the device first-fit."""
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "labels": {"app": "competitor"}},
        "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {
            "deviceClassName": DEVICE_CLASS, "allocationMode": "ExactCount", "count": 1,
            "capacity": {"requests": {"memory": f"{memory_gib}Gi"}}}}]}},
    }


def run_competitors(api: KubeJson, namespace: str, count: int, selector: dict[str, str],
                    stop: threading.Event, pace: float) -> None:
    for i in range(count):
        if stop.is_set():
            return
        name = f"other-{i}"
        api.create("resourceclaims", competitor_claim(name, 8), namespace)
        pod = pod_manifest(SliceRequest(cpu_milli=250, memory_mib=512, gpu_count=0), selector)
        pod["metadata"] = {"name": name, "labels": {"app": "competitor"}}
        pod["spec"]["resourceClaims"] = [{"name": "gpu", "resourceClaimName": name}]
        pod["spec"]["containers"][0]["resources"]["claims"] = [{"name": "gpu"}]
        api.create("pods", pod, namespace)
        time.sleep(pace)


def burst_requests(servers: int, model: str, seed: int) -> dict[str, SliceRequest]:
    rng = random.Random(seed)
    out: dict[str, SliceRequest] = {}
    for i in range(servers):
        roll = rng.random()
        if roll < 0.06:
            req = SliceRequest(gpu_count=2, allowed_models=frozenset({model}), cpu_milli=2000,
                               memory_mib=8 * GIB_IN_MIB)
        elif roll < 0.12:
            req = SliceRequest(gpu_count=1, allowed_models=frozenset({model}), cpu_milli=1000,
                               memory_mib=4 * GIB_IN_MIB)
        else:
            req = SliceRequest(gpu_memory_mib=rng.choice(SLICE_SIZES_GIB) * GIB_IN_MIB,
                               allowed_models=frozenset({model}), cpu_milli=500,
                               memory_mib=2 * GIB_IN_MIB)
        out[f"nb-{i:04d}"] = req
    return out


def run_burst(
    api_client: Any,
    namespace: str,
    selector: dict[str, str],
    model: str,
    *,
    servers: int,
    nodes: int,
    competitors: int,
    seed: int = 7,
    workers: int = 24,
    restart: bool = True,
    timeout: float = 600,
    log: Callable[[str], None] = print,
) -> BurstReport:
    """Start ``servers`` at once (``workers`` in flight), competitors alongside, restart midway."""
    base = copy.copy(api_client.configuration)
    base.connection_pool_maxsize = 64
    api = KubeJson(ApiClient(base))
    report = BurstReport(servers, nodes, competitors)
    requests = burst_requests(servers, model, seed)
    report.requests = requests
    names = list(requests)
    half = len(names) // 2 if restart else len(names)
    lock = threading.Lock()
    service = Service(api_client)
    stop_competitors = threading.Event()
    comp = threading.Thread(
        target=run_competitors,
        args=(api, namespace, competitors, selector, stop_competitors,
              0.02),
        daemon=True,
    )
    started = time.monotonic()
    comp.start()

    def start(svc: Service, name: str) -> None:
        req = requests[name]
        if svc.inventory.stopped:
            return  # the crashed service never got to it; the restarted one will
        try:
            svc.placer.start_server(namespace, name, req, pod_manifest(req, selector),
                                    timeout=timeout)
            outcome = "running"
        except PlacementRefused as e:
            outcome = "refused"
            with lock:
                report.refused[name] = req
                report.reasons[name] = e.reasons
        except PlacementFailed:
            outcome = "failed"
        except TimeoutError as e:
            outcome = "handed-over" if svc.inventory.stopped else "timeout"
            log(f"[burst] {name}: {e}")
        except ApiException as e:
            outcome = "handed-over" if svc.inventory.stopped else f"api-{e.status}"
        with lock:
            report.outcome[outcome] += 1

    if restart:
        # Service A is a separate process, killed (SIGKILL) mid-burst: pins made, pods pending,
        # flows in flight.  Service B starts from the API alone and finishes the job.
        service.stop()
        crashed = _run_crashing_service(namespace, selector, model, seed, servers, names[:half],
                                        workers, kill_after=max(1, half // 4), log=log)
        report.pins += crashed
        service = Service(api_client)
        pending = [n for n in names[:half] if not _running(service, namespace, n)]
        report.handed_over = sum(
            1 for n in pending if service.inventory.claim(namespace, claim_name(n))
        )
        log(f"[burst] {report.handed_over} servers were pinned but not Running at the crash")
        todo = pending + names[half:]
    else:
        todo = names
    with ThreadPoolExecutor(workers) as pool:
        for f in [pool.submit(start, service, n) for n in todo]:
            f.result()
    comp.join()
    report.wall_seconds = time.monotonic() - started
    report.decision_seconds += service.placer.decision_seconds
    report.pins += service.placer.pins
    report.repins += service.placer.repins
    # Let reconcile finish anything still pending, then count from the API.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        placed = [n for n in names if n not in report.refused]
        others = [p for p in service.inventory.pods()
                  if p.namespace == namespace and p.name.startswith("other-")]
        if all(_running(service, namespace, n) for n in placed) and all(
            p.running or p.unschedulable for p in others
        ):
            break
        time.sleep(0.5)
    report.running_after = sum(_running(service, namespace, n) for n in names)
    report.competitors_running = sum(
        1 for p in service.inventory.pods()
        if p.namespace == namespace and p.name.startswith("other-") and p.running
    )
    report_service = service
    report_service.placer.reconcile()
    _SERVICES.append(report_service)
    return report


_SERVICES: list[Service] = []
"""The last service of each burst, for the caller's checks (stop with :func:`stop_services`)."""


def last_service() -> Service:
    return _SERVICES[-1]


def stop_services() -> None:
    while _SERVICES:
        _SERVICES.pop().stop()


def _running(service: Service, namespace: str, name: str) -> bool:
    pod = service.inventory.pod(namespace, name)
    return pod is not None and pod.running


def _run_crashing_service(
    namespace: str, selector: dict[str, str], model: str, seed: int, servers: int,
    names: list[str], workers: int, kill_after: int, log: Callable[[str], None],
) -> int:
    """Run ``names`` through a service in a child process; SIGKILL it once ``kill_after`` of
    them are pinned.  Returns how many claims it had created by then."""
    import json
    import os
    import signal
    import subprocess
    import sys

    cmd = [sys.executable, __file__, namespace, json.dumps(selector), model, str(seed),
           str(servers), str(workers), *names]
    child = subprocess.Popen(cmd, env=os.environ.copy(), stdout=subprocess.DEVNULL)
    from kubernetes import config as kube_config

    api = KubeJson(kube_config.new_client_from_config())
    wanted = set(names)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and child.poll() is None:
            pinned = api.list("resourceclaims", namespace=namespace, query={
                "labelSelector": "app.kubernetes.io/managed-by=aispike-hub"})[0]
            if sum(1 for c in pinned if c["metadata"]["name"][:-4] in wanted) >= kill_after:
                break
            time.sleep(0.02)
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
        child.wait()
    claims = api.list("resourceclaims", namespace=namespace,
                      query={"labelSelector": "app.kubernetes.io/managed-by=aispike-hub"})[0]
    log(f"[burst] killed service A (pid {child.pid}) with {len(claims)} claims made")
    return len(claims)


def _child_main(argv: list[str]) -> None:
    """Service A of :func:`run_burst`, in its own process (killed by the parent)."""
    import json

    from kubernetes import config as kube_config

    namespace, selector_json, model, seed, servers, workers, *names = argv
    selector = json.loads(selector_json)
    requests = burst_requests(int(servers), model, int(seed))
    cfg = kube_config.new_client_from_config().configuration
    cfg.connection_pool_maxsize = 64
    service = Service(ApiClient(cfg))

    def start(name: str) -> None:
        req = requests[name]
        try:
            service.placer.start_server(namespace, name, req, pod_manifest(req, selector),
                                        timeout=300)
        except Exception as e:
            print(f"{name}: {e}", flush=True)

    with ThreadPoolExecutor(int(workers)) as pool:
        list(pool.map(start, names))


def overcommitted_devices(api: KubeJson) -> dict[tuple[str, str], tuple[int, int]]:
    """Published devices of our driver whose allocated ``consumedCapacity`` exceeds capacity
    (from the API).

    Returns ``{(pool, device): (allocated MiB, capacity MiB)}`` for each violation (none: ``{}``).
    """
    capacity: dict[tuple[str, str], int] = {}
    for s in api.list("resourceslices")[0]:
        spec = s.get("spec") or {}
        if spec.get("driver") != DRIVER:
            continue
        for d in spec.get("devices") or []:
            cap = ((d.get("capacity") or {}).get("memory") or {}).get("value")
            if cap:
                capacity[(spec["pool"]["name"], d["name"])] = quantity_mib(cap)
    used: Counter[tuple[str, str]] = Counter()
    for c in api.list("resourceclaims")[0]:
        for r in (((c.get("status") or {}).get("allocation") or {}).get("devices") or {}).get(
            "results"
        ) or []:
            if r.get("driver") != DRIVER:
                continue
            key = (r["pool"], r["device"])
            consumed = (r.get("consumedCapacity") or {}).get("memory")
            used[key] += quantity_mib(consumed) if consumed else capacity.get(key, 0)
    # Only published devices: a claim left on a device whose node another test already removed
    # (its garbage collection still pending) has no capacity to exceed.
    return {k: (v, capacity[k]) for k, v in used.items() if k in capacity and v > capacity[k]}


def claims_per_server(api: KubeJson, namespace: str) -> Counter[str]:
    """How many of our claims exist per server label (must never exceed one)."""
    items = api.list("resourceclaims", namespace=namespace,
                     query={"labelSelector": "app.kubernetes.io/managed-by=aispike-hub"})[0]
    return Counter(c["metadata"]["labels"]["aispike.io/server"] for c in items)


def pinned_where_allocated(api: KubeJson, namespace: str, names: list[str]) -> list[str]:
    """Servers whose allocation is not on the GPU their (last) pin names: must be none."""
    from aispike_hub.kube.claims import placement_from_claim

    wrong = []
    for name in names:
        try:
            c = api.get("resourceclaims", claim_name(name), namespace)
        except ApiException:
            continue
        results = (((c.get("status") or {}).get("allocation") or {}).get("devices") or {}).get(
            "results"
        ) or []
        p = placement_from_claim(c)
        if not results or p is None:
            continue
        got = sorted((r["pool"], r["device"]) for r in results)
        want = sorted((p.node, f"gpu-{g.index}") for g in p.gpus)
        if got != want:
            wrong.append(f"{name}: pinned {want}, allocated {got}")
    return wrong


if __name__ == "__main__":
    import sys

    _child_main(sys.argv[1:])
