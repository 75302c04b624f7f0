"""Spawn cost against plain KubeSpawner: the same burst through the real hub, both spawners.

Not a test: prints a table.  It reuses the integration stack (tests/integration: the test
cluster's kube-apiserver and kube-scheduler, kwok nodes, the pod runner that starts each pod's
``jupyterhub-singleuser``, real JupyterHub + configurable-http-proxy) through pytest's fixtures,
so it runs the very parts the end-to-end replay test runs (tests/integration/e2e_replay.py).

One burst of ``--servers`` N servers (N users, one server each, every start request sent at
once through the hub's REST API) is started twice on the same kwok nodes (8 GPUs of 16 GiB,
96 CPUs and 384 GiB each, enough for N whole GPUs):

- ``kubespawner``: plain ``kubespawner.KubeSpawner``, one whole GPU per server through the
  ``nvidia.com/gpu`` extended resource (the nodes advertise it), kube-scheduler's default
  placement;
- ``aispike``: ``AISpikeSpawner`` with the AISpike service (admission, quota, placement on the
  Kubernetes inventory), a 4 GiB memory slice per server as a pinned ResourceClaim allocated
  by kube-scheduler's DRA allocator.

Measured per server: seconds from its start request to the hub reporting it ready (the pod
Running *and* its notebook answering the hub: what a user waits for); per burst: p50/p99 of
that, and servers per second (N over the time from the first request to the last ready).  The
KubeSpawner burst runs first; every server is stopped before the next burst.

    flock /tmp/aispike-integration.lock .venv/bin/python benchmarks/e2e.py --servers 200
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pytest  # noqa: E402

SERVERS_ENV = "AISPIKE_BENCH_SERVERS"
RESULTS: dict[str, dict[str, float]] = {}


def _nodes_for(servers: int) -> dict[str, Any]:
    count = max(1, -(-servers // 8))
    return {"nodes": [{"name": f"b{k}", "cpu": "96", "memory": "384Gi", "nvidiaGpu": True,
                       "gpus": [{"model": "G2", "memory": "16Gi", "count": 8}]}
                      for k in range(count)]}


def _burst(hub: Any, servers: int, options: dict[str, Any] | None, label: str,
           timeout: float = 900) -> dict[str, float]:
    """Start ``servers`` servers at once; seconds from each request to ready; stop them all."""
    from concurrent.futures import ThreadPoolExecutor

    users = [f"{label[:4]}-{k}-{secrets.token_hex(2)}" for k in range(servers)]
    r = hub.api("POST", "/users", json={"usernames": users}, timeout=120)
    assert r.status_code == 201, r.text
    sent: dict[str, float] = {}

    def start(user: str) -> None:
        sent[user] = time.monotonic()
        r = hub.api("POST", f"/users/{user}/server", json=options or {}, timeout=300)
        assert r.status_code in (201, 202), f"{user}: {r.status_code} {r.text}"

    began = time.monotonic()
    ready: dict[str, float] = {}
    with ThreadPoolExecutor(max_workers=servers) as pool:  # every request at once
        futures = [pool.submit(start, u) for u in users]
        while len(ready) < servers:
            if time.monotonic() - began > timeout:
                raise AssertionError(f"{label}: {len(ready)}/{servers} ready after {timeout} s")
            listing = hub.api("GET", "/users", params={"state": "ready"}, timeout=60).json()
            now = time.monotonic()
            for u in listing:
                if u["name"] in sent and u["name"] not in ready:
                    ready[u["name"]] = now
            for f in futures:
                if f.done() and f.exception():
                    raise f.exception()  # type: ignore[misc]
            time.sleep(0.25)
    last = max(ready.values())
    seconds = np.array([ready[u] - sent[u] for u in users])
    result = {"p50": float(np.percentile(seconds, 50)), "p99": float(np.percentile(seconds, 99)),
              "per_s": servers / (last - began), "total": last - began}
    print(f"\n[{label}] {servers} servers ready in {last - began:.1f} s; seconds to ready: "
          f"{sorted(round(float(x), 1) for x in seconds)}", flush=True)
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda u: hub.api("DELETE", f"/users/{u}/server", timeout=300), users))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        listing = hub.api("GET", "/users", params={"state": "active"}, timeout=60).json()
        if not [u for u in listing if u["name"] in sent]:
            break
        time.sleep(1)
    return result


def bench_spawn_cost(cluster: Any, hub_factory: Callable[..., Any], hub_namespace: str,
                     pod_runner: Any) -> None:
    from integration.conftest import GpuNodes
    from integration.test_e2e_replay import _policy, _start_hub

    servers = int(os.environ[SERVERS_ENV])
    gpu_nodes = GpuNodes(cluster, f"b{secrets.token_hex(3)}")
    priority_class = f"bench-normal-{secrets.token_hex(3)}"
    try:
        gpu_nodes(_nodes_for(servers))
        selector = dict(gpu_nodes.selector)
        kube = hub_factory(f"bench-kube-{secrets.token_hex(2)}", f"""
        c.JupyterHub.spawner_class = "kubespawner.KubeSpawner"
        c.JupyterHub.concurrent_spawn_limit = 0
        c.KubeSpawner.namespace = {hub_namespace!r}
        c.KubeSpawner.node_selector = {selector!r}
        c.KubeSpawner.image = "quay.io/jupyter/base-notebook:2026-01-05"
        c.KubeSpawner.cmd = ["jupyterhub-singleuser"]
        c.KubeSpawner.extra_resource_limits = {{"nvidia.com/gpu": "1"}}
        c.KubeSpawner.extra_resource_guarantees = {{"nvidia.com/gpu": "1"}}
        c.KubeSpawner.start_timeout = 600
        c.KubeSpawner.http_timeout = 300
        """)
        RESULTS["KubeSpawner (whole GPU, nvidia.com/gpu)"] = _burst(kube, servers, None, "kube")
        kube.stop()
        cluster.scheduling.create_priority_class({"metadata": {"name": priority_class},
                                                  "value": 100, "description": "bench"})
        policy = _policy(priority_class)
        policy["defaults"]["quota"]["servers"] = 1
        aispike = _start_hub(cluster, hub_factory, hub_namespace, gpu_nodes, policy,
                             extra="c.JupyterHub.concurrent_spawn_limit = 0\n"
                                   "c.AISpikeSpawner.start_timeout = 600\n"
                                   "c.AISpikeSpawner.http_timeout = 300\n")
        RESULTS["AISpikeSpawner (4 GiB slice, DRA)"] = _burst(
            aispike, servers, {"gpu_count": 1, "gpu_gib": 4, "cpu": 1.0, "memory_gib": 1,
                               "gpu_model": "any"}, "aispike")
        print("\n" + table(servers), flush=True)
    finally:
        gpu_nodes.delete_all()
        with contextlib.suppress(Exception):  # not made if the first burst failed
            cluster.scheduling.delete_priority_class(priority_class)


def table(servers: int) -> str:
    rows = ["| spawner | servers | ready p50 s | ready p99 s | servers/s |",
            "|---|---|---|---|---|"]
    for name, r in RESULTS.items():
        rows.append(f"| {name} | {servers} | {r['p50']:.2f} | {r['p99']:.2f} | "
                    f"{r['per_s']:.2f} |")
    if len(RESULTS) == 2:
        kube, ais = RESULTS.values()
        rows.append(f"| AISpike / KubeSpawner | | {ais['p50'] / kube['p50']:.2f} | "
                    f"{ais['p99'] / kube['p99']:.2f} | {ais['per_s'] / kube['per_s']:.2f} |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", type=int, default=200, help="servers in the burst (N)")
    args = parser.parse_args()
    os.environ[SERVERS_ENV] = str(args.servers)
    rc = pytest.main([f"{__file__}::bench_spawn_cost", "-p", "integration.conftest", "-q", "-s",
                      "-o", "python_functions=bench_*", "-o", "python_files=e2e.py",
                      "-p", "no:cacheprovider", "--rootdir", str(REPO)])
    return int(rc)  # the table is printed by bench_spawn_cost (pytest imports this file anew)


if __name__ == "__main__":
    sys.exit(main())
