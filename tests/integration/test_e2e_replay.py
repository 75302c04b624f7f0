"""The product path packs as its simulator says (the short version of benchmarks/e2e.py).

A sample of the trace's GPU nodes as kwok nodes, the trace's GPU pods as real servers started
one by one through the real hub's REST API, ``AISpikeSpawner``, the AISpike service reading the
cluster from Kubernetes, pinned claims allocated by kube-scheduler, notebook processes run by the
pod runner (see tests/integration/e2e_replay.py).  The GPU capacity the scheduler's allocations
hold at the end must be within 1 point of what the placement core alone packs on the same nodes
and requests, configured as the product configures it (the service's default workload: the
product is not told the arrivals' mix in advance; docs/placement.md, "End-to-end replay").

Scale: ``AISPIKE_E2E_NODES`` trace nodes (default 2), arrivals up to ``AISPIKE_E2E_INFLATE`` x
their GPUs (default 1.0), seed ``AISPIKE_E2E_SEED`` (42).  benchmarks/e2e.py runs it larger and
prints the table.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import numpy as np
import requests
from kubernetes.client.rest import ApiException

from aispike_hub.placement.fragmentation import Workload

from . import e2e_replay
from .conftest import REPO, GpuNodes, RunningHub, TestCluster, _free_port, wait_until
from .podrunner import PodRunner

QUEUE_TIMEOUT_S = 4
"""A start that does not fit is refused by the service's queue after this (the published
method skips a pod that does not fit; a real hub would let it wait)."""


def _policy(priority_class: str) -> dict[str, Any]:
    big = {"servers": 4, "gpus": 8, "gpu_memory": "4Ti", "cpu": 512, "memory": "16Ti"}
    return {"defaults": {"quota": big},
            "tiers": [{"name": "normal", "priority": 100, "priority_class": priority_class}],
            "default_tier": "normal"}


def test_product_path_packs_as_its_simulator(cluster: TestCluster,
                                             hub_factory: Callable[..., RunningHub],
                                             hub_namespace: str, pod_runner: PodRunner) -> None:
    count = int(os.environ.get("AISPIKE_E2E_NODES", "2"))
    inflate = float(os.environ.get("AISPIKE_E2E_INFLATE", "1.0"))
    seed = int(os.environ.get("AISPIKE_E2E_SEED", "42"))
    rng = np.random.default_rng(seed)
    gpu_nodes = GpuNodes(cluster, f"e{secrets.token_hex(3)}")
    priority_class = f"e2e-normal-{secrets.token_hex(3)}"
    try:
        nodes = gpu_nodes({"nodes": e2e_replay.sample_nodes(count, rng)})
        arrivals = e2e_replay.sample_arrival_list(nodes, inflate, rng)
        # the simulator configured as the product is (its default workload; see simulate)
        expected = e2e_replay.simulate(nodes, arrivals)
        oracle = e2e_replay.simulate(nodes, arrivals, workload=Workload.from_requests(
            a.request for a in arrivals))
        cluster.scheduling.create_priority_class({"metadata": {"name": priority_class},
                                                  "value": 100, "description": "e2e test"})
        hub = _start_hub(cluster, hub_factory, hub_namespace, gpu_nodes,
                                      _policy(priority_class))
        users: dict[int, str] = {}

        def start(k: int, options: dict[str, Any]) -> str:
            user = f"e2e-{seed}-{k}-{secrets.token_hex(2)}"
            assert hub.api("POST", f"/users/{user}").status_code == 201
            r = hub.api("POST", f"/users/{user}/server", json=options, timeout=120)
            if r.status_code == 503 and "in the queue" in r.text:
                return ""  # refused by the queue before the hub's slow-spawn answer
            assert r.status_code in (201, 202), f"{options}: {r.status_code} {r.text}"
            users[k] = user
            return user

        def outcome_of(user: str) -> str | None:
            if not user:
                return "refused"
            model = hub.api("GET", f"/users/{user}").json()
            server = (model.get("servers") or {}).get("")
            if not server:
                return "refused"
            return "ready" if server.get("ready") else None

        placed, refused, seconds = e2e_replay.replay_through_hub(start, outcome_of, arrivals)
        got = e2e_replay.allocation_from_api(cluster.custom, hub_namespace, nodes)
        product_where = e2e_replay.where_from_api(
            cluster.custom, hub_namespace, [users.get(k, "") for k in range(len(arrivals))])
        print("\narrival | request | product | simulator")
        for k, a in enumerate(arrivals):
            print(f"{k} | {a.options} | {product_where[k]} | {expected.where[k]}")
        print(f"\ne2e: {len(nodes)} nodes, {sum(len(n.gpus) for n in nodes)} GPUs, "
              f"{len(arrivals)} arrivals: product {got} % allocated "
              f"({placed} placed, {refused} refused); simulator {expected.allocation_pct} % "
              f"({expected.placed} placed, {expected.refused} refused); oracle simulator "
              f"(told the arrivals' mix) {oracle.allocation_pct} %; "
              f"time to ready p50 {float(np.median(seconds)) if seconds else 0:.1f} s")
        assert placed > 0
        assert abs(got - expected.allocation_pct) <= 1.0, (
            f"the product path allocated {got} % of the GPUs, its simulator "
            f"{expected.allocation_pct} % on the same {len(arrivals)} arrivals")
        for user in users.values():
            hub.api("DELETE", f"/users/{user}/server", timeout=120)
    finally:
        gpu_nodes.delete_all()
        with contextlib.suppress(ApiException):  # not made if the sample failed
            cluster.scheduling.delete_priority_class(priority_class)


def _start_hub(cluster: TestCluster, hub_factory: Callable[..., RunningHub], namespace: str,
               gpu_nodes: GpuNodes, policy: dict[str, Any], extra: str = "") -> RunningHub:
    """A hub with ``AISpikeSpawner`` and the AISpike service on ``gpu_nodes`` (``extra``: more
    hub config, e.g. benchmarks/e2e.py's spawn limits)."""
    port = _free_port()
    token = secrets.token_hex(16)
    service_url = f"http://127.0.0.1:{port}/services/aispike/"
    selector = dict(gpu_nodes.selector)
    command = [sys.executable, "-m", "aispike_hub.cli", "service",
               "--db-url=sqlite:///aispike-e2e.sqlite", "--AISpikeService.inventory=kubernetes",
               f"--AISpikeService.policy={json.dumps(policy)}",
               f"--AISpikeService.queue_timeout={QUEUE_TIMEOUT_S}",
               "--AISpikeService.tick_interval=0.5",
               *(f"--Inventory.node_selector={k}={v}" for k, v in selector.items())]
    hub = hub_factory(
        f"e2e-{secrets.token_hex(2)}",
        f"""
        c.JupyterHub.spawner_class = "aispike"
        c.AISpikeSpawner.namespace = {namespace!r}
        c.AISpikeSpawner.node_selector = {selector!r}
        c.Inventory.node_selector = {selector!r}
        c.AISpikeSpawner.image = "quay.io/jupyter/base-notebook:2026-01-05"
        c.AISpikeSpawner.cmd = ["jupyterhub-singleuser"]
        c.AISpikeSpawner.start_timeout = 150
        c.AISpikeSpawner.http_timeout = 60
        c.AISpikeSpawner.cpu_max = 512.0
        c.AISpikeSpawner.memory_gib_max = 4096
        c.AISpikeSpawner.max_gpus = 8
        c.JupyterHub.custom_scopes = {{
            "custom:aispike:admin": {{"description": "edit AISpike quotas"}},
            "custom:aispike:admit": {{"description": "ask AISpike to admit spawns"}},
        }}
        c.JupyterHub.services.append({{
            "name": "aispike", "url": "http://127.0.0.1:{port}", "api_token": {token!r},
            "command": {command!r},
            "environment": {{"PYTHONPATH": {str(REPO)!r},
                             "KUBECONFIG": {os.environ.get("KUBECONFIG", "")!r}}},
            "oauth_no_confirm": True,
        }})
        c.JupyterHub.load_roles += [
            {{"name": "aispike", "services": ["aispike"],
              "scopes": ["admin:servers", "list:users", "read:users", "read:groups",
                         "custom:aispike:admit"]}},
        ]
        c.AdmissionClient.url = {service_url!r}
        c.AdmissionClient.api_token = {token!r}
        c.AdmissionClient.poll_interval = 0.5
        """ + textwrap.dedent(extra).replace("\n", "\n" + " " * 8),  # after the 8 spaces above
    )

    def answers() -> bool:
        try:
            return requests.get(f"{service_url}api/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    wait_until(answers, 90, "the AISpike service (Kubernetes inventory) to answer")
    return hub

