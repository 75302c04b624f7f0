"""The "+30 %" question as admins plan: how much load the same GPUs carry before users wait.

Not a test: prints a table.  Demand served at saturation (benchmarks/placement.py's `slicing`
section) says how much more of a full queue slices serve; an admin sizing a cluster asks something
else: at what offered load do users start to wait?  For each trace and configuration this finds,
by bisection over the offered load of the time-driven replay (aispike_hub/sim/timed.py: a
stationary workload drawn from the trace, Poisson arrivals, departures, a FIFO wait queue), the
highest load whose mean wait over *every* pod of the measured window (pods placed at once count
as 0; pods still waiting at the end count up to the end) stays under each threshold.

Configurations, fed the same arrivals (same seed; the workload is drawn from the trace as asked
and only then, for the whole-GPU configurations, each fractional request is rounded up: the
arrival stream and the offered load, the users' demand, are identical, only the request differs):
  slices+aispike   memory slices as asked, AISpike's placement
  whole+spread     every fractional request rounded up to a whole GPU, kube-scheduler-like spreading
  whole+bestfit    the same, best fit (the tightest whole-GPU packing a default scheduler offers)
The ratio of sustainable loads (slices+aispike over each whole-GPU configuration) is the
utilisation gain from slicing.

    python benchmarks/sustainable_load.py                          # every trace, both thresholds
    python benchmarks/sustainable_load.py --traces default --tolerance 0.02
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from collections.abc import Callable
from pathlib import Path

from aispike_hub.sim.timed import timed_replay
from aispike_hub.sim.trace import TracePod, read_nodes, read_pods, whole_gpu_version

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared"
CONFIGS: dict[str, tuple[str, bool]] = {
    "slices+aispike": ("aispike", False),
    "whole+spread": ("spread", True),
    "whole+bestfit": ("bestfit", True),
}
THRESHOLDS_MIN = (1.0, 10.0)


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    line = lambda cells: "| " + " | ".join(  # noqa: E731
        str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *(line(r) for r in rows)])


def mean_wait_all_min(nodes_csv: str, pods_csv: str, config: str, load: float,
                      seed: int) -> float:
    """Mean wait in minutes over every pod of the window at ``load`` for ``config``."""
    policy, whole = CONFIGS[config]
    pods: list[TracePod] = read_pods(pods_csv)
    r = timed_replay(read_nodes(nodes_csv), pods, policy, seed=seed, load=load,
                     transform=whole_gpu_version if whole else None)
    if r.pods == 0:
        return 0.0
    return r.mean_wait_s * r.waited_pods / r.pods / 60.0


def highest_load(wait_at: Callable[[float], float], threshold_min: float, lo: float, hi: float,
                 tolerance: float) -> float:
    """The highest offered load in [lo, hi] (to ``tolerance``) whose mean wait is under the
    threshold, assuming the wait grows with the load (it does, up to the replay's noise)."""
    if wait_at(lo) >= threshold_min:
        return 0.0  # not even the lowest load searched: reported as "< lo"
    if wait_at(hi) < threshold_min:
        return hi
    while hi - lo > tolerance:
        mid = round((lo + hi) / 2, 4)
        if wait_at(mid) < threshold_min:
            lo = mid
        else:
            hi = mid
    return lo


def search(args: tuple[str, str, str, str, int, float, float, float]) -> dict[str, object]:
    """Both thresholds for one (trace, configuration), sharing the replays they both need."""
    trace, nodes_csv, pods_csv, config, seed, lo, hi, tolerance = args
    cache: dict[float, float] = {}
    started = time.monotonic()

    def wait_at(load: float) -> float:
        if load not in cache:
            cache[load] = mean_wait_all_min(nodes_csv, pods_csv, config, load, seed)
        return cache[load]

    try:
        found = {t: highest_load(wait_at, t, lo, hi, tolerance) for t in THRESHOLDS_MIN}
    except ValueError as e:  # a trace without creation/deletion times cannot be replayed in time
        return {"trace": trace, "config": config, "found": {}, "probes": {}, "seconds": 0,
                "error": str(e)}
    return {"trace": trace, "config": config, "found": found, "probes": dict(sorted(cache.items())),
            "seconds": round(time.monotonic() - started)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--traces-dir", default=str(SHARED / "traces" / "alibaba-gpu-v2023"))
    ap.add_argument("--traces", default="default,cpu050,gpushare40,gpuspec10,multigpu20")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--low", type=float, default=0.3, help="lowest offered load searched")
    ap.add_argument("--high", type=float, default=1.3, help="highest offered load searched")
    ap.add_argument("--tolerance", type=float, default=0.02, help="bisection stops at this width")
    ap.add_argument("--jobs", type=int, default=max(1, multiprocessing.cpu_count()))
    a = ap.parse_args()
    d = Path(a.traces_dir)
    nodes_csv = str(d / "openb_node_list_all_node.csv")
    traces = a.traces.split(",")
    configs = a.configs.split(",")
    jobs = [(t, nodes_csv, str(d / f"openb_pod_list_{t}.csv"), c, a.seed, a.low, a.high,
             a.tolerance) for t in traces for c in configs]
    print(f"# Sustainable offered load (seed {a.seed}; 3 h warm-up, 12 h measured; bisection to "
          f"{a.tolerance} over [{a.low}, {a.high}]; mean wait over every pod of the window)\n")
    results: dict[tuple[str, str], dict[str, object]] = {}
    with multiprocessing.Pool(a.jobs) as pool:
        for k, r in enumerate(pool.imap_unordered(search, jobs), start=1):
            results[(str(r["trace"]), str(r["config"]))] = r
            print(f"[{k}/{len(jobs)}] {r['trace']} {r['config']}: {r['found']} "
                  f"({len(r['probes'])} replays, {r['seconds']} s)", flush=True)
    rows = []
    for t in traces:
        base = results.get((t, "slices+aispike"))
        for c in configs:
            r = results[(t, c)]
            found = r["found"]
            assert isinstance(found, dict)
            cells = [t, c]
            if "error" in r:
                rows.append([*cells, *(f"- ({r['error']})" for _ in THRESHOLDS_MIN)])
                continue
            for th in THRESHOLDS_MIN:
                load = float(found[th])
                cell = (f"< {a.low:.2f}" if not load else
                        f">= {a.high:.2f}" if load >= a.high else f"{load:.2f}")
                if base is not None and c != "slices+aispike" and base["found"]:
                    ours = float(base["found"][th])  # type: ignore[index]
                    cell += f" (slices {(ours / load - 1) * 100:+.0f} %)" if load else ""
                cells.append(cell)
            rows.append(cells)
    print()
    print(table(["trace", "configuration",
                 *(f"highest load, mean wait < {th:g} min" for th in THRESHOLDS_MIN)], rows))


if __name__ == "__main__":
    main()
