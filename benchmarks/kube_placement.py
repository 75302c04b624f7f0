"""Placement on the real stack: kube-apiserver + kube-scheduler (DRA consumable capacity) + kwok.

Not a test: prints tables.  Sections (all by default; pick with --only):
  latency  core decision time inside our service (under the inventory lock, the state kept
           incrementally from the watch) at 100 and 1,000 nodes of 8 GPUs, pinning real claims
  memory   resident memory of a fresh service process (inventory + placer, after its first full
           list) at 1,000 nodes and 10,000 claims
  burst    500 servers at once on 50 nodes with 100 un-pinned competing claims and the service
           SIGKILLed and restarted mid-burst: requests to Running per second, stale-pin rate,
           no over-commit (checked from the API)

    python benchmarks/kube_placement.py                     # starts its own cluster
    KUBECONFIG=... python benchmarks/kube_placement.py --only burst --servers 500 --nodes 50
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from integration import dra_burst  # noqa: E402
from kubernetes import config  # noqa: E402
from kubernetes.client import ApiClient  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402

from aispike_hub.kube.api import KubeJson  # noqa: E402
from aispike_hub.kube.inventory import Inventory  # noqa: E402
from aispike_hub.kube.nodespec import nodes_from_spec  # noqa: E402
from aispike_hub.kube.placer import PlacementRefused, Placer  # noqa: E402
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


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


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


def latency(n_nodes: int, pins: int) -> dict[str, Any]:
    """Core decisions on a live service state: pin ``pins`` claims on ``n_nodes`` nodes."""
    api_client = client()
    api = KubeJson(api_client)
    model = f"BENCH-{secrets.token_hex(3)}"
    group = f"lat{secrets.token_hex(2)}"
    nodes = create_nodes(api, dra_burst.burst_nodes_spec(n_nodes, model), group)
    ns = namespace(api, f"bench-{group}")
    inv = Inventory(api_client).start()
    try:
        wait_seen(inv, n_nodes, model)
        placer = Placer(inv)
        sizes = dra_burst.SLICE_SIZES_GIB
        previews = []
        for i in range(200):
            req = SliceRequest(gpu_memory_mib=sizes[i % len(sizes)] * GIB_IN_MIB,
                               allowed_models=frozenset({model}), cpu_milli=500)
            t = time.perf_counter()
            placer.preview(req)
            previews.append(time.perf_counter() - t)
        started = time.perf_counter()
        for i in range(pins):
            req = SliceRequest(gpu_memory_mib=sizes[i % len(sizes)] * GIB_IN_MIB,
                               allowed_models=frozenset({model}), cpu_milli=500)
            try:
                placer.pin(ns, f"lat-{i:05d}", req)
            except PlacementRefused:
                break
        wall = time.perf_counter() - started
        d = placer.decision_seconds
        return {"nodes": n_nodes, "pins": len(d), "p50_ms": 1000 * statistics.median(d),
                "p99_ms": 1000 * pct(d, 0.99), "preview_p99_ms": 1000 * pct(previews, 0.99),
                "pins_per_s": len(d) / wall}
    finally:
        inv.stop()
        api.request("DELETE", f"/api/v1/namespaces/{ns}")
        delete_nodes(api, nodes)


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


def burst(servers: int, n_nodes: int, competitors: int) -> dict[str, Any]:
    api_client = client()
    api = KubeJson(api_client)
    model = f"BENCH-{secrets.token_hex(3)}"
    group = f"bst{secrets.token_hex(2)}"
    nodes = create_nodes(api, dra_burst.burst_nodes_spec(n_nodes, model), group)
    ns = namespace(api, f"bench-{group}")
    try:
        report = dra_burst.run_burst(api_client, ns, {GROUP_LABEL: group}, model,
                                     servers=servers, nodes=n_nodes, competitors=competitors,
                                     timeout=600)
        service = dra_burst.last_service()
        over = dra_burst.overcommitted_devices(service.placer.api)
        placed = [n for n in report.requests if n not in report.refused]
        wrong_refusals = [n for n, r in report.refused.items()
                          if service.placer.preview(r).placed]
        d = report.decision_seconds
        return {
            "servers": servers, "nodes": n_nodes, "competitors": competitors,
            "running": report.running_after, "refused": len(report.refused),
            "placed_not_running": len(placed) - report.running_after,
            "wrong_refusals": len(wrong_refusals),
            "overcommitted_gpus": len(over),
            "max_claims_per_server": max(
                dra_burst.claims_per_server(service.placer.api, ns).values()),
            "wall_s": report.wall_seconds,
            "running_per_s": report.running_after / report.wall_seconds,
            "pins": report.pins, "repins": report.repins,
            "stale_rate": report.stale_rate, "handed_over": report.handed_over,
            "decision_p50_ms": 1000 * statistics.median(d) if d else 0.0,
            "decision_p99_ms": 1000 * pct(d, 0.99),
            "outcome": dict(report.outcome),
        }
    finally:
        dra_burst.stop_services()
        api.request("DELETE", f"/api/v1/namespaces/{ns}")
        delete_nodes(api, nodes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", choices=["latency", "memory", "burst"])
    parser.add_argument("--servers", type=int, default=500)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--competitors", type=int, default=100)
    parser.add_argument("--latency-nodes", default="100,1000")
    parser.add_argument("--pins", type=int, default=500)
    parser.add_argument("--memory-nodes", type=int, default=1000)
    parser.add_argument("--memory-claims", type=int, default=10000)
    args = parser.parse_args()
    sections = args.only or ["latency", "memory", "burst"]
    state = None
    if not os.environ.get("KUBECONFIG"):
        state = Path(tempfile.mkdtemp(prefix="aispike-bench-")) / "state"
        subprocess.run([sys.executable, str(REPO / "scripts" / "test-cluster"), "up",
                        "--state-dir", str(state)], check=True)
        os.environ["KUBECONFIG"] = str(state / "kubeconfig")
    try:
        if "latency" in sections:
            print("\n## placement latency inside the service (core decision, live state)")
            print("| nodes | pins | p50 ms | p99 ms | preview p99 ms | pins/s (with API) |")
            print("|---|---|---|---|---|---|")
            for n in (int(x) for x in args.latency_nodes.split(",")):
                r = latency(n, args.pins)
                print(f"| {r['nodes']} | {r['pins']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |"
                      f" {r['preview_p99_ms']:.2f} | {r['pins_per_s']:.0f} |", flush=True)
        if "memory" in sections:
            r = memory(args.memory_nodes, args.memory_claims)
            print("\n## service memory (fresh process after its first list)")
            print("| nodes | claims | RSS MiB | peak RSS MiB | ready s |")
            print("|---|---|---|---|---|")
            print(f"| {r['nodes']} | {r['claims']} | {r['rss_mib']:.0f} | "
                  f"{r['max_rss_mib']:.0f} | {r['ready_s']:.1f} |", flush=True)
        if "burst" in sections:
            r = burst(args.servers, args.nodes, args.competitors)
            print("\n## burst with competitors and a SIGKILLed service")
            print(json.dumps(r, indent=1))
    finally:
        if state is not None:
            subprocess.run([sys.executable, str(REPO / "scripts" / "test-cluster"), "down",
                            "--state-dir", str(state)], check=False)
        print(f"benchmark process peak RSS: "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
