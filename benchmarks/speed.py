"""Placement speed: a full multi-seed run on the trace, and the node list replicated N times.

Not a test: prints a table.  Pin it to two cores to measure what the issue asks for
(``taskset -c 0,1 python benchmarks/speed.py``).  Peak memory is the process's max RSS.

    python benchmarks/speed.py --seeds 42-51                 # 1x: wall time of 10 seeds, p50/p99
    python benchmarks/speed.py --scale 10 --max-seconds 300  # 10x: decisions until time runs out
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np

from aispike_hub.model import Node
from aispike_hub.placement.engine import PlacementEngine
from aispike_hub.placement.fragmentation import Workload
from aispike_hub.placement.state import ClusterState
from aispike_hub.sim.replay import parse_seeds, replay, sample_arrivals
from aispike_hub.sim.trace import read_nodes, read_pods

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"


def scaled_run(nodes: list[Node], pods_csv: str, policy: str, factor: int,
               max_seconds: float) -> dict[str, float]:
    """Place pods on the cluster replicated ``factor`` times until 100 % arrived or time is up."""
    big = [Node(name=f"{n.name}-x{k}", cpu_milli=n.cpu_milli, memory_mib=n.memory_mib,
                gpus=n.gpus) for k in range(factor) for n in nodes]
    pods = read_pods(pods_csv)
    state = ClusterState(big)
    gpus = state.total_gpus()
    arrivals = sample_arrivals(pods, gpus, 1.0, np.random.default_rng(42))
    engine = PlacementEngine(policy, workload=Workload.from_requests(p.request for p in pods),
                             seed=42)
    times: list[float] = []
    start = time.perf_counter()
    for pod in arrivals:
        t0 = time.perf_counter()
        d = engine.place(state, pod.request)
        times.append(time.perf_counter() - t0)
        if d.assignment is not None:
            state.commit(d.assignment)
        if time.perf_counter() - start > max_seconds:
            break
    ms = np.array(times) * 1000
    return {"nodes": len(big), "gpus": gpus, "decisions": len(times),
            "of": len(arrivals), "alloc": state.allocation_share() * 100,
            "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
            "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "wall": time.perf_counter() - start}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    d = SHARED / "traces" / "alibaba-gpu-v2023"
    ap.add_argument("--nodes", default=str(d / "openb_node_list_all_node.csv"))
    ap.add_argument("--pods", default=str(d / "openb_pod_list_default.csv"))
    ap.add_argument("--policy", default="aispike")
    ap.add_argument("--seeds", default="")
    ap.add_argument("--scale", type=int, default=0)
    ap.add_argument("--max-seconds", type=float, default=600.0)
    a = ap.parse_args()
    nodes = read_nodes(a.nodes)
    if a.seeds:
        pods = read_pods(a.pods)
        t0 = time.perf_counter()
        results = [replay(nodes, pods, a.policy, s) for s in parse_seeds(a.seeds)]
        wall = time.perf_counter() - t0
        ms = np.concatenate([np.asarray(r.decision_seconds) for r in results]) * 1000
        print(f"| {a.policy} | {len(nodes):,} nodes | {len(results)} seeds | wall {wall:.1f} s | "
              f"decisions {ms.size:,} | p50 {np.percentile(ms, 50):.2f} ms | "
              f"p99 {np.percentile(ms, 99):.2f} ms | "
              f"median alloc@100 {np.median([r.curve[100] for r in results]):.2f} % |",
              flush=True)
    if a.scale:
        r = scaled_run(nodes, a.pods, a.policy, a.scale, a.max_seconds)
        print(f"| {a.policy} | {r['nodes']:,} nodes, {r['gpus']:,} GPUs | "
              f"{r['decisions']:,} of {r['of']:,} decisions in {r['wall']:.0f} s | "
              f"alloc {r['alloc']:.1f} % | p50 {r['p50']:.2f} ms | p99 {r['p99']:.2f} ms | "
              f"peak RSS {r['rss_mib']:,.0f} MiB |", flush=True)


if __name__ == "__main__":
    main()
