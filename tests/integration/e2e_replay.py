"""End-to-end trace replay: trace arrivals started as real servers through the product's path.

The simulator (``aispike_hub.sim``) says how well the placement core packs a trace.  This module
checks that the product, end to end, packs as its simulator says: form options -> the hub's REST
start -> ``AISpikeSpawner`` -> the AISpike service's admission and placement -> a pinned
ResourceClaim -> kube-scheduler's allocation -> a Running pod whose ``jupyterhub-singleuser`` the
hub sees answer.  Nothing between the hub and the pod is simulated; kwok plays the kubelets and
the pod runner starts each notebook process.

The same sample feeds both sides:

- **nodes**: ``count`` GPU nodes drawn from the trace's node list (CPU, RAM, GPU model and
  count as the trace has them; GPU memory the model's nominal size, ``sim.trace.NOMINAL_GIB``);
- **arrivals**: GPU pods drawn from the trace's pod list with replacement until their GPU demand
  reaches ``inflate`` x the sample's GPUs (the published method).  A trace asks for GPU *shares*;
  a user of the product asks for GiB, so a share ``s`` of one GPU becomes a slice of
  ``ceil(s x 16 GiB)`` (16 GiB: the smallest nominal GPU of the trace, so every slice fits some
  GPU; one whole GPU is a 16 GiB slice) and ``k > 1`` whole GPUs stay ``k`` whole GPUs; CPUs
  round up to 0.1, RAM up to a GiB.  The simulator is fed exactly these requests.

Arrivals are started one at a time, in order; one that does not fit is refused by the service's
queue after ``queue_timeout`` (the published method skips it) and the next one starts.  The
product's allocation is read back from the API: every allocated claim's consumed memory over its
device's capacity (a device with no consumed capacity counts whole), summed over the sample's
GPUs.  The simulator's allocation comes from the same placement engine on the same nodes and
requests (:func:`simulate`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aispike_hub.contract import HUB_SERVER_ANNOTATION
from aispike_hub.kube.nodespec import nodes_from_spec
from aispike_hub.model import FULL_GPU_MILLI, GIB_IN_MIB, Node, SliceRequest
from aispike_hub.placement.engine import PlacementEngine
from aispike_hub.placement.fragmentation import Workload
from aispike_hub.placement.state import ClusterState
from aispike_hub.sim.replay import sample_arrivals
from aispike_hub.sim.trace import NOMINAL_GIB, TracePod, read_pods
from aispike_hub.units import parse_quantity

SHARED = Path(__file__).resolve().parents[3] / "shared"
TRACES = SHARED / "traces" / "alibaba-gpu-v2023"
SLICE_BASE_GIB = 16
"""A trace share of one GPU becomes a slice of that share of this many GiB (see module doc)."""


@dataclass(frozen=True, slots=True)
class Arrival:
    """One start: the options a user would send, and the request they mean."""

    options: dict[str, Any]
    request: SliceRequest


@dataclass(slots=True)
class Outcome:
    """How one side packed the arrivals."""

    allocation_pct: float
    """Allocated GPU capacity (memory held over memory offered, per GPU, summed) in % of GPUs."""
    placed: int
    refused: int
    seconds_to_ready: list[float] = field(default_factory=list)
    where: list[str] = field(default_factory=list)
    """Per arrival, ``node/gpu-index,...`` where it went, or ``refused`` (for the decision log)."""


def sample_nodes(count: int, rng: np.random.Generator, nodes_csv: Path | None = None
                 ) -> list[dict[str, Any]]:
    """``count`` GPU nodes of the trace as node-spec entries (aispike_hub.kube.nodespec)."""
    import csv

    path = nodes_csv or TRACES / "openb_node_list_all_node.csv"
    with path.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["gpu"] or 0) > 0]
    picked = rng.choice(len(rows), size=count, replace=False)
    entries = []
    for k, i in enumerate(sorted(int(x) for x in picked)):
        row = rows[i]
        model = row["model"].strip()
        entries.append({
            "name": f"e2e-{k}",
            "cpu": str(int(row["cpu_milli"]) // 1000),
            "memory": f"{int(row['memory_mib']) // 1024}Gi",
            "gpus": [{"model": model, "memory": f"{NOMINAL_GIB.get(model, 16)}Gi",
                      "count": int(row["gpu"])}],
        })
    return entries


def model_nodes(spec_entries: Sequence[dict[str, Any]]) -> list[Node]:
    return [s.node for s in nodes_from_spec({"nodes": [dict(e) for e in spec_entries]})]


def arrival_of(pod: TracePod) -> Arrival:
    """The options a user would send for a trace pod, and the request the spawner makes of
    them (the same as ``spawner.form.to_request`` for these options)."""
    r = pod.request
    cpu_tenths = max(1, math.ceil(r.cpu_milli / 100))
    memory_gib = max(1, math.ceil(r.memory_mib / GIB_IN_MIB))
    if r.gpu_count > 1:
        gpu_count, gpu_gib = r.gpu_count, 0
    else:  # one GPU, whole or a share: a slice (a whole one is SLICE_BASE_GIB)
        share = FULL_GPU_MILLI if r.whole_gpus else r.gpu_share_milli
        gpu_count = 1
        gpu_gib = max(1, math.ceil(share / FULL_GPU_MILLI * SLICE_BASE_GIB))
    options = {"gpu_count": gpu_count, "gpu_gib": gpu_gib, "cpu": cpu_tenths / 10,
               "memory_gib": memory_gib, "gpu_model": "any"}
    request = SliceRequest(gpu_count=gpu_count,
                           gpu_memory_mib=gpu_gib * GIB_IN_MIB if gpu_count == 1 else 0,
                           cpu_milli=cpu_tenths * 100, memory_mib=memory_gib * GIB_IN_MIB)
    return Arrival(options, request)


def sample_arrival_list(nodes: Sequence[Node], inflate: float, rng: np.random.Generator,
                        pods_csv: Path | None = None, max_gpus_per_pod: int = 8
                        ) -> list[Arrival]:
    """GPU pods of the trace drawn until their demand reaches ``inflate`` x the nodes' GPUs."""
    pods = [p for p in read_pods(pods_csv or TRACES / "openb_pod_list_default.csv")
            if p.request.gpu_count >= 1 and p.request.gpu_count <= max_gpus_per_pod]
    capacity = float(sum(len(n.gpus) for n in nodes))
    return [arrival_of(p) for p in sample_arrivals(pods, capacity, inflate, rng)]


def simulate(nodes: Sequence[Node], arrivals: Sequence[Arrival], seed: int = 0,
             workload: Workload | None = None) -> Outcome:
    """The placement core alone, on the same nodes and requests, in the same order.

    By default the engine is configured as the product's is (``AISpikeService`` and the hub's
    ``Placer`` build ``PlacementEngine(placement_policy)``: the default notebook workload,
    seed 0), because the product cannot know the mix of arrivals before they come.  Passing
    ``workload=Workload.from_requests(...)`` of the arrivals gives the *oracle* figure the
    published method's simulator reports (the policy told the trace's mix in advance); on
    seed 42's 2-node sample that packs one more whole GPU (91.67 % against 83.33 %), which is
    the gap the product path once showed against it (docs/placement.md, "End-to-end replay").
    """
    state = ClusterState(nodes)
    engine = PlacementEngine("aispike", workload=workload, seed=seed)
    placed = refused = 0
    held = 0.0
    where: list[str] = []
    for k, a in enumerate(arrivals):
        decision = engine.place(state, a.request, owner=f"a{k}", explain=False)
        if decision.assignment is None:
            refused += 1
            where.append("refused")
            continue
        where.append(f"{decision.assignment.node}/"
                     + ",".join(str(g) for g in decision.assignment.gpu_indices))
        state.commit(decision.assignment)
        placed += 1
        n = state.node_index[decision.assignment.node]
        held += sum(m / state.gpu_cap[n, state.slot_of(n, g)] for g, m in zip(
            decision.assignment.gpu_indices, decision.assignment.gpu_memory_mib, strict=True))
    return Outcome(round(held / max(1, state.total_gpus()) * 100, 2), placed, refused,
                   where=where)


def where_from_api(custom: Any, namespace: str, users: Sequence[str]) -> list[str]:
    """Per user (in order), ``node/gpu-index,...`` its allocated claim holds, else ``refused``
    (device names end in the GPU's index, kube.slices.device_name)."""
    claims = custom.list_namespaced_custom_object("resource.k8s.io", "v1", namespace,
                                                  "resourceclaims")
    held: dict[str, str] = {}
    for c in claims["items"]:
        server = (c["metadata"].get("annotations") or {}).get(HUB_SERVER_ANNOTATION, "")
        results = (((c.get("status") or {}).get("allocation") or {}).get("devices")
                   or {}).get("results", [])
        if results:
            held[server.split("/")[0]] = f"{results[0].get('pool', '')}/" + ",".join(
                r.get("device", "").rsplit("-", 1)[-1] for r in results)
    return [held.get(u, "refused") for u in users]


def allocation_from_api(custom: Any, namespace: str, nodes: Sequence[Node]) -> float:
    """% of the nodes' GPUs held by the allocated ResourceClaims of ``namespace``, as the
    scheduler recorded them (consumed memory over device capacity; no consumed capacity: whole)."""
    capacity: dict[tuple[str, str], float] = {}
    slices = custom.list_cluster_custom_object("resource.k8s.io", "v1", "resourceslices")
    names = {n.name for n in nodes}
    for s in slices["items"]:
        pool = s["spec"].get("pool", {}).get("name", "")
        if pool not in names:
            continue
        for d in s["spec"].get("devices", []):
            value = d.get("capacity", {}).get("memory", {}).get("value", "0")
            capacity[(pool, d["name"])] = parse_quantity(str(value), 1)
    claims = custom.list_namespaced_custom_object("resource.k8s.io", "v1", namespace,
                                                  "resourceclaims")
    held = 0.0
    for c in claims["items"]:
        allocation = (c.get("status") or {}).get("allocation") or {}
        for r in (allocation.get("devices") or {}).get("results", []):
            key = (r.get("pool", ""), r.get("device", ""))
            if key not in capacity:
                continue
            used = (r.get("consumedCapacity") or {}).get("memory")
            held += 1.0 if used is None else parse_quantity(str(used), 1) / capacity[key]
    gpus = sum(len(n.gpus) for n in nodes)
    return round(held / max(1, gpus) * 100, 2)


def replay_through_hub(start: Callable[[int, dict[str, Any]], str],
                       outcome_of: Callable[[str], str | None],
                       arrivals: Sequence[Arrival], timeout: float = 180,
                       progress: Callable[[int, int, str], None] | None = None
                       ) -> tuple[int, int, list[float]]:
    """Start every arrival in order, one at a time, waiting for each to be ready or refused.

    ``start(k, options)`` starts arrival ``k`` and returns its handle; ``outcome_of(handle)`` is
    ``"ready"``, ``"refused"`` or None (still starting).  Returns placed, refused, and each
    placed server's seconds from start request to ready.
    """
    placed = refused = 0
    seconds: list[float] = []
    for k, a in enumerate(arrivals):
        began = time.monotonic()
        handle = start(k, a.options)
        while True:
            state = outcome_of(handle)
            if state is not None:
                break
            if time.monotonic() - began > timeout:
                raise AssertionError(f"arrival {k} ({a.options}) neither ready nor refused "
                                     f"after {timeout:g} s")
            time.sleep(0.3)
        if state == "ready":
            placed += 1
            seconds.append(time.monotonic() - began)
        else:
            refused += 1
        if progress:
            progress(k + 1, len(arrivals), state)
    return placed, refused, seconds
