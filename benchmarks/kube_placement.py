"""Placement on the real stack, through the product: JupyterHub + AISpikeSpawner + the AISpike
service, kube-apiserver + kube-scheduler (DRA consumable capacity) + kwok GPU nodes.

Not a test: prints tables.  Sections (all by default; pick with --only):
  burst    N servers started at once through the hub's REST API (default 200 on 20 nodes of
           8 GPUs), the placement mix of a notebook platform (memory slices of 8-60 GiB, whole
           GPUs, 2-GPU servers), while another workload makes 100 DRA claims with *no* pin on
           the same GPUs (kube-scheduler picks their devices first-fit), and the AISpike service
           is SIGKILLed once an eighth of the burst is pinned (the hub starts it again, as it
           does any managed service).  Servers ready, spawns failed, time to ready, ready per
           second, re-pins (counted on the claims), over-commit and claims per server checked
           from the API server, and the admission's decision time from the service's own
           ``aispike_placement_decision_seconds`` histogram.
  latency  servers started one after another through the hub (each kept, so the state fills)
           on 100 and 1,000 nodes of 8 GPUs: the decision time inside the service (its
           histogram), time to ready, and the service's and hub's resident memory after.
  memory   resident memory of a fresh process holding what the service holds (its Kubernetes
           inventory, the admission controller with one fit computed, a placer) after its first
           full list of 1,000 nodes and 10,000 pinned claims (made by a placer)

Each server is a real ``jupyterhub-singleuser`` started by the test stack's pod runner (about
60 MiB each): size ``--servers`` to the machine.

    flock /tmp/aispike-integration.lock .venv/bin/python benchmarks/kube_placement.py
    .venv/bin/python benchmarks/kube_placement.py --only burst --servers 200 --nodes 20
    .venv/bin/python benchmarks/kube_placement.py --only latency --latency-nodes 100,1000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import secrets
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))

import product_path as pp  # noqa: E402
import pytest  # noqa: E402
import requests  # noqa: E402
from integration import dra_burst  # noqa: E402
from kubernetes import config  # noqa: E402
from kubernetes.client import ApiClient  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402

from aispike_hub.kube.api import KubeJson  # noqa: E402
from aispike_hub.kube.claims import is_ours, placement_from_claim  # noqa: E402
from aispike_hub.kube.inventory import Inventory  # noqa: E402
from aispike_hub.kube.nodespec import nodes_from_spec  # noqa: E402
from aispike_hub.kube.placer import Placer  # noqa: E402
from aispike_hub.kube.slices import node_manifests, resource_slice_name  # noqa: E402
from aispike_hub.model import GIB_IN_MIB, Node, SliceRequest  # noqa: E402

GROUP_LABEL = "aispike.io/test-group"


def client(pool: int = 64) -> Any:
    # The kubernetes package reads $KUBECONFIG at import, before main() may have set it.
    api = config.new_client_from_config(config_file=os.environ.get("KUBECONFIG"))
    api.configuration.connection_pool_maxsize = pool
    return ApiClient(api.configuration)


def create_nodes(api: KubeJson, spec: dict[str, Any], group: str) -> list[Node]:
    for entry in spec["nodes"]:
        entry["name"] = f"{group}-{entry['name']}"
        entry["labels"] = {GROUP_LABEL: group}
    sims = nodes_from_spec(spec)
    for sim in sims:
        for m in node_manifests(sim.node):
            kind = "nodes" if m["kind"] == "Node" else "resourceslices"
            api.create(kind, m)
    deadline = time.monotonic() + 300
    names = {s.node.name for s in sims}
    while time.monotonic() < deadline:
        ready = sum(
            1 for n in api.list("nodes", query={"labelSelector": f"{GROUP_LABEL}={group}"})[0]
            if n["metadata"]["name"] in names and any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in (n.get("status") or {}).get("conditions") or [])
        )
        if ready == len(names):
            break
        time.sleep(1)
    return [s.node for s in sims]


def delete_nodes(api: KubeJson, nodes: list[Node]) -> None:
    for n in nodes:
        for kind, name in (("resourceslices", resource_slice_name(n.name)), ("nodes", n.name)):
            with contextlib.suppress(ApiException):
                api.delete(kind, name)


def namespace(api: KubeJson, name: str) -> str:
    api.create("namespaces", {"metadata": {"name": name}})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            api.get("serviceaccounts", "default", name)
            return name
        except ApiException:
            time.sleep(0.2)
    return name


def wait_seen(inv: Inventory, count: int, model: str) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        with inv.lock:
            st = inv.state()
            if st is not None and model in st.models:
                got = int((st.gpu_model == st.models.index(model)).any(axis=1).sum())
                if got >= count:
                    return
        time.sleep(0.5)
    raise TimeoutError("inventory did not see the nodes")


MEMORY_CHILD = """
import json, resource, sys, tempfile, time
from kubernetes import config
from aispike_hub.kube.placer import Placer
from aispike_hub.model import SliceRequest
from aispike_hub.quota import User, policy_from_dict
from aispike_hub.admission.controller import AdmissionController
from aispike_hub.service.kube_inventory import KubeClusterInventory
from aispike_hub.service.store import Store
t = time.monotonic()
# What the AISpike service holds: its Kubernetes inventory, the admission controller over it
# (one fit computed), and a placer (the hub's side, for the same view).
kube = KubeClusterInventory.start(config.new_client_from_config(), timeout=600)
inv = kube.inventory
controller = AdmissionController(Store(f"sqlite:///{tempfile.mkdtemp()}/s.sqlite"), kube,
                                 policy_from_dict({}))
controller.fit(User("bench"), SliceRequest(gpu_memory_mib=8192))
with inv.lock:
    st = inv.state()
placer = Placer(inv)
ready = time.monotonic() - t
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
print(json.dumps({"rss_mib": rss(), "max_rss_mib": resource.getrusage(
    resource.RUSAGE_SELF).ru_maxrss / 1024, "claims": len(inv.claims()), "nodes":
    len(st.nodes) if st else 0, "ready_s": ready}))
inv.stop()
"""


def memory(n_nodes: int, claims: int) -> dict[str, Any]:
    """RSS of a fresh service process after listing ``n_nodes`` nodes and ``claims`` claims."""
    api_client = client()
    api = KubeJson(api_client)
    model = f"BENCH-{secrets.token_hex(3)}"
    group = f"mem{secrets.token_hex(2)}"
    started = time.monotonic()
    nodes = create_nodes(api, dra_burst.burst_nodes_spec(n_nodes, model), group)
    ns = namespace(api, f"bench-{group}")
    print(f"[memory] {n_nodes} nodes in {time.monotonic() - started:.0f} s", flush=True)
    inv = Inventory(api_client).start()
    try:
        wait_seen(inv, n_nodes, model)
        placer = Placer(inv)
        started = time.monotonic()
        for i in range(claims):
            req = SliceRequest(gpu_memory_mib=4 * GIB_IN_MIB, allowed_models=frozenset({model}))
            placer.pin(ns, f"mem-{i:05d}", req)
        print(f"[memory] {claims} pinned claims in {time.monotonic() - started:.0f} s",
              flush=True)
        inv.stop()
        out = subprocess.run([sys.executable, "-c", MEMORY_CHILD], capture_output=True,
                             text=True, check=True, env=os.environ.copy())
        result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        return result
    finally:
        inv.stop()
        api.request("DELETE", f"/api/v1/namespaces/{ns}")
        delete_nodes(api, nodes)


PRODUCT_ENV = "AISPIKE_BENCH_PRODUCT"
"""JSON of the product-path sections' arguments, handed to the pytest run below."""


def _product_hub(cluster: Any, hub_factory: Callable[..., Any], hub_namespace: str,
                 gpu_nodes: Any, name: str, extra: str = "") -> tuple[Any, str]:
    """The hub a hub admin runs: AISpikeSpawner + the AISpike service (Kubernetes inventory)
    as a managed service; the ``tests`` token may also read both metrics endpoints."""
    from integration.test_e2e_replay import _policy, _start_hub

    priority_class = f"{name}-{secrets.token_hex(3)}"
    cluster.scheduling.create_priority_class({"metadata": {"name": priority_class},
                                              "value": 100, "description": "benchmark"})
    policy = _policy(priority_class)
    policy["defaults"]["quota"]["servers"] = 1
    extra = textwrap.dedent("""
        c.JupyterHub.concurrent_spawn_limit = 0
        c.JupyterHub.active_server_limit = 0
        c.AISpikeSpawner.start_timeout = 900
        c.AISpikeSpawner.http_timeout = 300
        c.JupyterHub.load_roles.append({"name": "bench-metrics", "services": ["tests"],
                                        "scopes": ["read:metrics", "custom:aispike:admin"]})
        """) + extra
    hub = _start_hub(cluster, hub_factory, hub_namespace, gpu_nodes, policy, extra=extra)
    return hub, priority_class


def _form_options(request: SliceRequest) -> dict[str, Any]:
    """What a user picks in the spawner's form for one of the burst's requests."""
    cpu = request.cpu_milli / 1000
    memory = max(1, request.memory_mib // GIB_IN_MIB)
    if request.gpu_count > 1:
        return {"gpu_count": request.gpu_count, "cpu": cpu, "memory_gib": memory}
    if request.gpu_count == 1 and not request.gpu_memory_mib:
        return {"gpu_count": 1, "gpu_gib": 80, "cpu": cpu, "memory_gib": memory}
    return {"gpu_gib": request.gpu_memory_mib // GIB_IN_MIB, "cpu": cpu, "memory_gib": memory}


def _metrics(hub: Any) -> dict[str, list[tuple[float, float]]]:
    service = pp.scrape(f"{hub.url}services/aispike/metrics", hub.token, wait=120)
    own = pp.scrape(f"{hub.url}hub/metrics", hub.token)
    return {"admission": pp.histogram(service, "admission"), "hub": pp.histogram(own, "hub")}


def _drained(pod_runner: Any, timeout: float = 900) -> None:
    """Wait until the pod runner has ended every notebook process of the last section (it
    stops them one after another): the next section's pods would wait behind them."""
    end = time.monotonic() + timeout
    while pod_runner.alive() and time.monotonic() < end:
        time.sleep(1)


def _our_claims(api: KubeJson, namespace: str) -> list[dict[str, Any]]:
    return [c for c in api.list("resourceclaims", namespace=namespace)[0] if is_ours(c)]


def bench_burst(cluster: Any, hub_factory: Callable[..., Any], hub_namespace: str,
                pod_runner: Any) -> None:
    """N servers started at once through the hub while another workload makes DRA claims with
    no pin on the same GPUs, and the AISpike service is SIGKILLed mid-burst (the hub starts
    it again, as it does any managed service)."""
    from integration.conftest import GpuNodes
    from integration.faults import service_pid

    args = json.loads(os.environ[PRODUCT_ENV])
    servers, n_nodes, competitors = args["servers"], args["nodes"], args["competitors"]
    api = KubeJson(cluster.api)
    gpu_nodes = GpuNodes(cluster, f"kb{secrets.token_hex(3)}")
    other_ns = f"bench-other-{secrets.token_hex(3)}"
    priority_class = ""
    stop_competitors = threading.Event()
    hub = None
    try:
        model = f"BENCH-{secrets.token_hex(3)}"
        gpu_nodes(dra_burst.burst_nodes_spec(n_nodes, model))
        namespace(api, other_ns)  # not a pod runner namespace: the competitors run nothing
        # A hub that rides out a restart of its AISpike service: starts wait for it (still
        # admitted by it, never unchecked) instead of failing at once (the default).
        hub, priority_class = _product_hub(
            cluster, hub_factory, hub_namespace, gpu_nodes, "bench-burst",
            extra='c.AdmissionClient.when_unavailable = "wait"\n'
                  'c.AdmissionClient.unavailable_retry = 1.0\n'
                  'c.AdmissionClient.unavailable_wait = 600.0\n'
                  # The test stack's kube-apiserver shares 2 cores with N notebooks starting:
                  # KubeSpawner's 3 s request timeout (30 s of retries) is too short there.
                  'c.AISpikeSpawner.k8s_api_request_timeout = 30\n'
                  'c.AISpikeSpawner.k8s_api_request_retry_timeout = 600\n')
        spawns = pp.Spawns(hub)
        users = spawns.users(servers, "burst")
        asked = dra_burst.burst_requests(servers, model, seed=7)
        options = {u: _form_options(r) for u, r in zip(users, asked.values(), strict=True)}
        before = _metrics(hub)
        killed: dict[str, Any] = {}

        def crash() -> None:
            end = time.monotonic() + 300
            while time.monotonic() < end:  # SIGKILL the service once 1/8 of the burst is pinned
                if len(_our_claims(api, hub_namespace)) >= max(1, servers // 8):
                    break
                time.sleep(0.05)
            pid = service_pid(hub.process.pid)
            if pid is None:
                return
            pinned = _our_claims(api, hub_namespace)
            os.kill(pid, signal.SIGKILL)
            killed_at = time.monotonic()
            killed.update(pid=pid, claims=len(pinned), not_running=sum(
                1 for c in pinned if not (c.get("status") or {}).get("reservedFor")))
            print(f"[burst] SIGKILLed the AISpike service (pid {pid}) with "
                  f"{len(pinned)} claims pinned", flush=True)
            while time.monotonic() < killed_at + 300:
                with contextlib.suppress(requests.RequestException):
                    if requests.get(f"{hub.url}services/aispike/api/health",
                                    timeout=2).status_code == 200:
                        killed["back_after_s"] = time.monotonic() - killed_at
                        return
                time.sleep(0.25)

        def during() -> None:
            threading.Thread(target=dra_burst.run_competitors, daemon=True, args=(
                api, other_ns, competitors, dict(gpu_nodes.selector), stop_competitors,
                0.02)).start()
            threading.Thread(target=crash, daemon=True).start()

        wall = spawns.burst(options, timeout=args["timeout"], during=during)
        after = _metrics(hub)
        claims = _our_claims(api, hub_namespace)
        attempts = [p.attempt for c in claims if (p := placement_from_claim(c)) is not None]
        over = dra_burst.overcommitted_devices(api)
        per_server = dra_burst.claims_per_server(api, hub_namespace)
        d_adm = pp.minus(after["admission"], [])  # the restarted service counts from zero
        d_hub = pp.minus(after["hub"], before["hub"])
        seconds = spawns.seconds_to_ready()
        result = {
            "servers": servers, "nodes": n_nodes, "gpus": 8 * n_nodes,
            "competitors": competitors, "ready": len(spawns.ready),
            "failed": len(spawns.failed), "wall_s": wall,
            "ready_per_s": len(spawns.ready) / wall if wall else float("nan"),
            "ready_p50_s": pp.pct(seconds, 0.5), "ready_p99_s": pp.pct(seconds, 0.99),
            "overcommitted_gpus": len(over),
            "max_claims_per_server": max(per_server.values(), default=0),
            "repinned": sum(1 for a in attempts if a > 1),
            "killed": killed,
            "admission_decisions": pp.observations(d_adm),
            "admission_p50_ms": 1000 * pp.quantile(d_adm, 0.5),
            "admission_p99_ms": 1000 * pp.quantile(d_adm, 0.99),
            "hub_decisions": pp.observations(d_hub),
            "hub_p50_ms": 1000 * pp.quantile(d_hub, 0.5),
            "hub_p99_ms": 1000 * pp.quantile(d_hub, 0.99),
            "failures": pp.failure_causes(hub.log_text(), sorted(spawns.failed)),
        }
        print("\n## burst through the product (hub, AISpikeSpawner, service, kube-scheduler)")
        print("| servers | nodes (GPUs) | unpinned competitors | ready | failed | over-committed"
              " GPUs | claims per server | to ready p50 / p99 s | ready/s | re-pinned |"
              " admission decision p50 / p99 ms | service SIGKILLed with |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        r = result
        print(f"| {servers} | {n_nodes} ({8 * n_nodes}) | {competitors} | {r['ready']} |"
              f" {r['failed']} | {r['overcommitted_gpus']} | \u2264 {r['max_claims_per_server']}"
              f" | {r['ready_p50_s']:.1f} / {r['ready_p99_s']:.1f} | {r['ready_per_s']:.2f} |"
              f" {r['repinned']} | {r['admission_p50_ms']:.2f} / {r['admission_p99_ms']:.2f} |"
              f" {killed.get('claims', 'not killed')} claims pinned, back after"
              f" {killed.get('back_after_s', float('nan')):.0f} s |", flush=True)
        print(json.dumps(result, indent=1), flush=True)
        spawns.stop_all()
        _drained(pod_runner)
    finally:
        stop_competitors.set()
        if hub is not None:  # two hubs without hub ids would reconcile each other's servers
            hub.stop()
        with contextlib.suppress(Exception):
            api.request("DELETE", f"/api/v1/namespaces/{other_ns}")
        gpu_nodes.delete_all()
        if priority_class:
            with contextlib.suppress(Exception):
                cluster.scheduling.delete_priority_class(priority_class)


def bench_latency(cluster: Any, hub_factory: Callable[..., Any], hub_namespace: str,
                  pod_runner: Any) -> None:
    """Servers started one after another through the hub on clusters of 100 and 1,000 nodes
    (each kept running, so the state fills): the placement core's decision time inside the
    service, from its own histogram, and the whole start's time to ready."""
    from integration.conftest import GpuNodes
    from integration.faults import service_pid

    args = json.loads(os.environ[PRODUCT_ENV])
    rows = []
    for n_nodes in args["latency_nodes"]:
        gpu_nodes = GpuNodes(cluster, f"kl{secrets.token_hex(3)}")
        priority_class = ""
        hub = None
        try:
            started = time.monotonic()
            model = f"BENCH-{secrets.token_hex(3)}"
            gpu_nodes(dra_burst.burst_nodes_spec(n_nodes, model))
            print(f"[latency] {n_nodes} nodes in {time.monotonic() - started:.0f} s", flush=True)
            hub, priority_class = _product_hub(cluster, hub_factory, hub_namespace, gpu_nodes,
                                               f"bench-lat-{n_nodes}")
            spawns = pp.Spawns(hub)
            users = spawns.users(args["pins"], f"lat{n_nodes}")
            sizes = dra_burst.SLICE_SIZES_GIB
            began = time.monotonic()
            for k, user in enumerate(users):
                spawns.start(user, {"gpu_gib": sizes[k % len(sizes)], "cpu": 0.5,
                                    "memory_gib": 1})
                spawns.settle(300, done=lambda u=user, s=spawns: u in s.ready or u in s.failed)
            wall = time.monotonic() - began
            m = _metrics(hub)
            seconds = spawns.seconds_to_ready()
            rows.append({
                "nodes": n_nodes, "servers": len(spawns.ready), "failed": len(spawns.failed),
                "admission_p50_ms": 1000 * pp.quantile(m["admission"], 0.5),
                "admission_p99_ms": 1000 * pp.quantile(m["admission"], 0.99),
                "admission_decisions": pp.observations(m["admission"]),
                "hub_p50_ms": 1000 * pp.quantile(m["hub"], 0.5),
                "hub_p99_ms": 1000 * pp.quantile(m["hub"], 0.99),
                "ready_p50_s": pp.pct(seconds, 0.5), "ready_p99_s": pp.pct(seconds, 0.99),
                "starts_per_s": len(spawns.ready) / wall,
                "service_rss_mib": pp.rss_mib(service_pid(hub.process.pid)),
                "hub_rss_mib": pp.rss_mib(hub.process.pid),
            })
            print(json.dumps(rows[-1]), flush=True)
            spawns.stop_all()
            _drained(pod_runner)
        finally:
            if hub is not None:
                hub.stop()
            gpu_nodes.delete_all()
            if priority_class:
                with contextlib.suppress(Exception):
                    cluster.scheduling.delete_priority_class(priority_class)
    print("\n## placement latency through the product (servers started one after another)")
    print("| nodes | servers | failed | admission decision p50 / p99 ms (decisions) |"
          " hub placer p50 / p99 ms | to ready p50 / p99 s | starts/s | service RSS MiB |"
          " hub RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['nodes']} | {r['servers']} | {r['failed']} |"
              f" {r['admission_p50_ms']:.2f} / {r['admission_p99_ms']:.2f}"
              f" ({r['admission_decisions']}) | {r['hub_p50_ms']:.2f} / {r['hub_p99_ms']:.2f} |"
              f" {r['ready_p50_s']:.1f} / {r['ready_p99_s']:.1f} | {r['starts_per_s']:.2f} |"
              f" {r['service_rss_mib']:.0f} | {r['hub_rss_mib']:.0f} |", flush=True)


def _run_product(sections: list[str], args: argparse.Namespace) -> int:
    """The burst and latency sections run in pytest, with the integration suite's fixtures
    (cluster, real hub with configurable-http-proxy, pod runner), as benchmarks/e2e.py does."""
    os.environ[PRODUCT_ENV] = json.dumps({
        "servers": args.servers, "nodes": args.nodes, "competitors": args.competitors,
        "timeout": args.timeout, "pins": args.pins,
        "latency_nodes": [int(x) for x in args.latency_nodes.split(",")]})
    selected = " or ".join(f"bench_{s}" for s in sections)
    return int(pytest.main([__file__, "-k", selected, "-p", "integration.conftest", "-q", "-s",
                            "-o", "python_functions=bench_*",
                            "-o", "python_files=kube_placement.py", "-p", "no:cacheprovider",
                            "--rootdir", str(REPO)]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", choices=["latency", "memory", "burst"])
    parser.add_argument("--servers", type=int, default=200,
                        help="servers in the burst (each runs a real jupyterhub-singleuser)")
    parser.add_argument("--nodes", type=int, default=20, help="kwok nodes of 8 GPUs (burst)")
    parser.add_argument("--competitors", type=int, default=100,
                        help="claims with no pin made by another workload during the burst")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds for the burst")
    parser.add_argument("--latency-nodes", default="100,1000")
    parser.add_argument("--pins", type=int, default=100,
                        help="servers started one after another per latency row")
    parser.add_argument("--memory-nodes", type=int, default=1000)
    parser.add_argument("--memory-claims", type=int, default=10000)
    args = parser.parse_args()
    sections = args.only or ["latency", "memory", "burst"]
    rc = 0
    product = [s for s in ("burst", "latency") if s in sections]
    if product:
        rc = _run_product(product, args)
    if "memory" in sections:
        rc = rc or _memory_section(args)
    return rc


def _memory_section(args: argparse.Namespace) -> int:
    state = None
    if not os.environ.get("KUBECONFIG"):
        state = Path(tempfile.mkdtemp(prefix="aispike-bench-")) / "state"
        subprocess.run([sys.executable, str(REPO / "scripts" / "test-cluster"), "up",
                        "--state-dir", str(state)], check=True)
        os.environ["KUBECONFIG"] = str(state / "kubeconfig")
    try:
        r = memory(args.memory_nodes, args.memory_claims)
        print("\n## service memory (fresh process after its first list)")
        print("| nodes | claims | RSS MiB | peak RSS MiB | ready s |")
        print("|---|---|---|---|---|")
        print(f"| {r['nodes']} | {r['claims']} | {r['rss_mib']:.0f} | "
              f"{r['max_rss_mib']:.0f} | {r['ready_s']:.1f} |", flush=True)
    finally:
        if state is not None:
            subprocess.run([sys.executable, str(REPO / "scripts" / "test-cluster"), "down",
                            "--state-dir", str(state)], check=False)
        print(f"benchmark process peak RSS: "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
