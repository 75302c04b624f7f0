"""Placement quality and speed on the public traces, beside the published numbers.

Not a test: prints tables.  Sections (all on by default; pick with --only):
  quality   every policy on every trace (published method), beside ../shared/anchors
  slicing   the same trace with fractional requests rounded up to whole GPUs
  scale     the node list replicated 10x: decision time and peak memory
  timed     time-driven replay with departures and a wait queue, per policy and offered load

    python benchmarks/placement.py                      # everything, seeds 42-51
    python benchmarks/placement.py --only quality --seeds 42-44 --traces default
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from aispike_hub.model import Node
from aispike_hub.placement.engine import POLICY_NAMES
from aispike_hub.placement.fragmentation import Workload
from aispike_hub.sim.floor import arrived_until, fluid_floor_unallocated
from aispike_hub.sim.replay import parse_seeds, replay, sample_arrivals
from aispike_hub.sim.timed import timed_replay
from aispike_hub.sim.trace import read_nodes, read_pods, whole_gpu_version

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared"
ANCHOR_NAMES = {"random": "01-Random", "dotprod": "02-DotProd", "packing": "04-GpuPacking",
                "bestfit": "05-BestFit", "fgd": "06-FGD"}


def anchors(path: Path) -> dict[tuple[str, str], float]:
    """(trace, policy) -> published median allocation at 100 % arrived."""
    by: dict[tuple[str, str], list[float]] = {}
    if not path.exists():
        return {}
    with path.open() as f:
        for row in csv.DictReader(f):
            trace = row["workload"].removeprefix("openb_pod_list_")
            by.setdefault((trace, row["sc_policy"]), []).append(float(row["100"]))
    return {k: statistics.median(v) for k, v in by.items()}


def _run(args: tuple[str, str, str, int, bool]) -> tuple[str, str, int, float, float, list[float]]:
    nodes_csv, pods_csv, policy, seed, whole = args
    nodes = read_nodes(nodes_csv)
    pods = read_pods(pods_csv)
    workload = Workload.from_requests(p.request for p in pods)
    if whole:
        pods = [whole_gpu_version(p) for p in pods]
        workload = Workload.from_requests(p.request for p in pods)
    r = replay(nodes, pods, policy, seed, 1.3, workload)
    return policy, pods_csv, seed, r.allocation_at_100, r.served_demand, r.decision_seconds


def _floor(nodes_csv: str, pods_csv: str, seeds: list[int]) -> float:
    nodes = read_nodes(nodes_csv)
    pods = read_pods(pods_csv)
    gpus = sum(len(n.gpus) for n in nodes)
    return float(np.mean([
        fluid_floor_unallocated(
            arrived_until(sample_arrivals(pods, gpus, 1.3, np.random.default_rng(s)), gpus), gpus)
        for s in seeds
    ]))


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


def quality(traces: dict[str, str], nodes_csv: str, seeds: list[int],
            pool: multiprocessing.pool.Pool, whole: bool = False,
            policies: tuple[str, ...] = POLICY_NAMES) -> dict[tuple[str, str], dict[str, float]]:
    jobs = [(nodes_csv, path, p, s, whole) for path in traces.values() for p in policies
            for s in seeds]
    out: dict[tuple[str, str], dict[str, list[float]]] = {}
    for done, (policy, path, _seed, alloc, served, times) in enumerate(
            pool.imap_unordered(_run, jobs), start=1):
        print(f"\r  {done}/{len(jobs)} runs", end="", file=sys.stderr, flush=True)
        d = out.setdefault((path, policy), {"alloc": [], "served": [], "times": []})
        d["alloc"].append(alloc)
        d["served"].append(served)
        d["times"].extend(times)
    print(file=sys.stderr)
    return {
        k: {
            "alloc": statistics.median(v["alloc"]),
            "unalloc": float(np.mean([100 - a for a in v["alloc"]])),
            "served": statistics.median(v["served"]),
            "p50": float(np.percentile(v["times"], 50) * 1000),
            "p99": float(np.percentile(v["times"], 99) * 1000),
        }
        for k, v in out.items()
    }


def section_quality(traces: dict[str, str], nodes_csv: str, seeds: list[int],
                    pool: multiprocessing.pool.Pool,
                    policies: tuple[str, ...] = POLICY_NAMES) -> None:
    pub = anchors(SHARED / "anchors" / "fgd-simulator-allo.csv")
    res = quality(traces, nodes_csv, seeds, pool, policies=policies)
    floors = {name: _floor(nodes_csv, path, seeds) for name, path in traces.items()}
    rows = []
    for name, path in traces.items():
        for policy in policies:
            r = res[(path, policy)]
            published = pub.get((name, ANCHOR_NAMES.get(policy, "")))
            rows.append([
                name, policy, f"{r['alloc']:.2f}",
                f"{published:.2f}" if published is not None else "-",
                f"{r['alloc'] - published:+.2f}" if published is not None else "-",
                f"{r['unalloc']:.2f}", f"{floors[name]:.2f}",
                f"{r['unalloc'] - floors[name]:.2f}", f"{r['p50']:.2f}", f"{r['p99']:.2f}",
            ])
    print(f"\n## Allocation at 100% arrived (median of {len(seeds)} seeds), published method\n")
    print(table(["trace", "policy", "alloc %", "published %", "diff", "unalloc % (mean)",
                 "fluid floor %", "gap to floor", "p50 ms", "p99 ms"], rows))


def section_slicing(traces: dict[str, str], nodes_csv: str, seeds: list[int],
                    pool: multiprocessing.pool.Pool) -> None:
    policies = ("bestfit", "fgd", "aispike")
    sliced = quality(traces, nodes_csv, seeds, pool, policies=policies)
    whole = quality(traces, nodes_csv, seeds, pool, whole=True, policies=policies)
    rows = []
    for name, path in traces.items():
        for policy in policies:
            s, w = sliced[(path, policy)]["served"], whole[(path, policy)]["served"]
            rows.append([name, policy, f"{s:.2f}", f"{w:.2f}", f"{(s / w - 1) * 100:+.1f}%"])
    print("\n## GPU demand served at saturation (130% arrived), % of capacity\n")
    print(table(["trace", "policy", "with slicing", "whole GPUs only", "gain"], rows))


def _scale_run(args: tuple[str, str, int, str]) -> tuple[int, int, float, float, float, float]:
    nodes_csv, pods_csv, factor, policy = args
    base = read_nodes(nodes_csv)
    nodes = [Node(name=f"{n.name}-x{k}", cpu_milli=n.cpu_milli, memory_mib=n.memory_mib,
                  gpus=n.gpus) for k in range(factor) for n in base]
    pods = read_pods(pods_csv)
    t0 = time.perf_counter()
    r = replay(nodes, pods, policy, 42, 1.0)  # to 100 % arrived: the cluster full, not beyond
    wall = time.perf_counter() - t0
    times = np.array(r.decision_seconds) * 1000
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return (len(nodes), sum(len(n.gpus) for n in nodes), float(np.percentile(times, 50)),
            float(np.percentile(times, 99)), peak_mib, wall)


def section_scale(traces: dict[str, str], nodes_csv: str) -> None:
    pods_csv = traces.get("default", next(iter(traces.values())))
    rows = []
    for factor in (1, 10):
        # a fresh process per run, so ru_maxrss is that run's peak
        with multiprocessing.get_context("spawn").Pool(1) as p:
            n, g, p50, p99, peak, wall = p.apply(_scale_run, ((nodes_csv, pods_csv, factor,
                                                               "aispike"),))
        rows.append([f"{n:,}", f"{g:,}", f"{p50:.2f}", f"{p99:.2f}", f"{peak:,.0f}",
                     f"{wall:.0f}"])
    print("\n## Scale: aispike policy, one seed, default trace, pods to 100% of capacity\n")
    print(table(["nodes", "GPUs", "decision p50 ms", "decision p99 ms", "peak RSS MiB",
                 "run s"], rows))


def _timed(args: tuple[str, str, str, float, int]) -> dict[str, object]:
    nodes_csv, pods_csv, policy, load, seed = args
    return timed_replay(read_nodes(nodes_csv), read_pods(pods_csv), policy, seed=seed,
                        load=load).as_json()


def section_timed(traces: dict[str, str], nodes_csv: str, pool: multiprocessing.pool.Pool,
                  loads: tuple[float, ...] = (0.8, 0.9, 1.0, 1.2),
                  policies: tuple[str, ...] = POLICY_NAMES, seed: int = 42) -> None:
    rows = []
    pods_csv = traces.get("default", next(iter(traces.values())))
    jobs = [(nodes_csv, pods_csv, p, load, seed) for load in loads for p in policies]
    for r in pool.imap(_timed, jobs):
        rows.append([f"{r['load']:.1f}", f"{r['offered_load']:.3f}", str(r["policy"]),
                     f"{r['time_avg_allocation']}", str(r["pods"]), str(r["waited_pods"]),
                     f"{float(r['mean_wait_s']) / 60:.1f}",
                     f"{float(r['p95_wait_s']) / 60:.1f}", str(r["still_waiting"])])
    print(f"\n## Time-driven replay (stationary workload drawn from the trace at an offered load, "
          f"seed {seed}; started in steady state, 3 h warm-up, 12 h measured)\n")
    print(table(["offered load", "realised", "policy", "time-avg GPU alloc %", "pods",
                 "pods that waited", "mean wait min", "p95 wait min", "still waiting at end"],
                rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--traces-dir", default=str(SHARED / "traces" / "alibaba-gpu-v2023"))
    ap.add_argument("--traces", default="default,cpu050,gpushare40,gpuspec10,multigpu20")
    ap.add_argument("--seeds", default="42-51")
    ap.add_argument("--only", default="quality,slicing,scale,timed")
    ap.add_argument("--policies", default=",".join(POLICY_NAMES),
                    help="policies of the quality and timed sections")
    ap.add_argument("--jobs", type=int, default=max(1, multiprocessing.cpu_count()))
    a = ap.parse_args()
    d = Path(a.traces_dir)
    nodes_csv = str(d / "openb_node_list_all_node.csv")
    traces = {t: str(d / f"openb_pod_list_{t}.csv") for t in a.traces.split(",")}
    seeds = parse_seeds(a.seeds)
    only = set(a.only.split(","))
    print(f"# Placement benchmark ({len(seeds)} seeds: {a.seeds}; traces: {a.traces})")
    with multiprocessing.Pool(a.jobs) as pool:
        if "quality" in only:
            section_quality(traces, nodes_csv, seeds, pool, tuple(a.policies.split(",")))
        if "slicing" in only:
            section_slicing(traces, nodes_csv, seeds, pool)
        if "timed" in only:
            section_timed(traces, nodes_csv, pool, policies=tuple(a.policies.split(",")))
    if "scale" in only:
        section_scale(traces, nodes_csv)


if __name__ == "__main__":
    main()
