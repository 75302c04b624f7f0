"""``aispike-hub simulate``: replay a cluster trace through the placement core and report.

A traitlets Application, as Jupyter commands are: every option is a configurable trait
(``--help-all`` lists them; ``--config`` reads a ``aispike_hub_config.py``), and long runs show
progress on stderr while the results go to stdout (a table, or one JSON object with ``--json``).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from traitlets import Bool, Float, Unicode, default
from traitlets.config import Application

from aispike_hub.cli import package_version
from aispike_hub.placement.engine import POLICY_NAMES
from aispike_hub.placement.fragmentation import Workload
from aispike_hub.sim.floor import arrived_until, fluid_floor_unallocated
from aispike_hub.sim.replay import parse_seeds, replay, sample_arrivals, summarise
from aispike_hub.sim.timed import timed_replay
from aispike_hub.sim.trace import TraceError, read_nodes, read_pods, whole_gpu_version


class SimulateApp(Application):
    name = "aispike-hub-simulate"
    version = package_version()
    description = """Replay a GPU cluster trace (Alibaba GPU trace format) with a placement policy.

    Default: the published method (sample pods with replacement to --inflate x GPU capacity,
    no departures, failed pods skipped). --timed: pods arrive, leave after their duration and
    wait in a queue when they do not fit; at their trace times, or with --load as a stationary
    workload of that offered load (measured over --window-hours after --warmup-hours; the
    first of --seeds draws it).
    """
    examples = """
    aispike-hub simulate --nodes openb_node_list_all_node.csv --pods openb_pod_list_default.csv
    aispike-hub simulate --nodes N.csv --pods P.csv --policy fgd --seeds 42-51 --json
    aispike-hub simulate --nodes N.csv --pods P.csv --whole-gpus
    aispike-hub simulate --nodes N.csv --pods P.csv --timed --policy aispike
    aispike-hub simulate --nodes N.csv --pods P.csv --timed --load 0.9 --seeds 42
    """

    nodes = Unicode("", help="CSV node list (sn, cpu_milli, memory_mib, gpu, model).").tag(
        config=True)
    pods = Unicode(
        "", help="CSV pod list (name, cpu_milli, memory_mib, num_gpu, gpu_milli, ...)."
    ).tag(config=True)
    policy = Unicode("aispike", help=f"Placement policy, one of: {', '.join(POLICY_NAMES)}.").tag(
        config=True)
    seeds = Unicode("42-51", help="Seeds to replay: '42-51', '42,43' or '42'.").tag(config=True)
    inflate = Float(1.3, help="Sample pods until their GPU demand is this many times the "
                    "cluster's GPU capacity (published method: 1.3).").tag(config=True)
    whole_gpus = Bool(False, help="Round every fractional GPU request up to a whole GPU "
                      "(what the cluster would serve without slicing).").tag(config=True)
    timed = Bool(False, help="Time-driven replay with departures and a wait queue.").tag(
        config=True)
    load = Float(0.0, help="With --timed: replay a stationary workload drawn from the trace "
                 "(requests and durations, Poisson arrivals, started in steady state) whose "
                 "offered GPU demand is this fraction of capacity; 0 keeps the trace's own times."
                 ).tag(config=True)
    window_hours = Float(12.0, help="With --timed --load: hours measured, after the warm-up."
                         ).tag(config=True)
    warmup_hours = Float(3.0, help="With --timed --load: hours replayed before measuring."
                         ).tag(config=True)
    as_json = Bool(False, help="Print one JSON object instead of a table.").tag(config=True)
    floor = Bool(True, help="Also compute the fluid floor (unallocated share no placement "
                 "can avoid) at 100% arrived.").tag(config=True)
    config_file = Unicode("", help="A Python config file (c.SimulateApp.policy = ...).").tag(
        config=True)

    aliases = {  # noqa: RUF012 (traitlets declares these on the class)
        "nodes": "SimulateApp.nodes",
        "pods": "SimulateApp.pods",
        "policy": "SimulateApp.policy",
        "seeds": "SimulateApp.seeds",
        "inflate": "SimulateApp.inflate",
        "load": "SimulateApp.load",
        "window-hours": "SimulateApp.window_hours",
        "warmup-hours": "SimulateApp.warmup_hours",
        "config": "SimulateApp.config_file",
    }
    flags = {  # noqa: RUF012
        "whole-gpus": ({"SimulateApp": {"whole_gpus": True}}, whole_gpus.help),
        "timed": ({"SimulateApp": {"timed": True}}, timed.help),
        "json": ({"SimulateApp": {"as_json": True}}, as_json.help),
        "no-floor": ({"SimulateApp": {"floor": False}}, "Skip the fluid floor."),
    }

    @default("log_level")
    def _log_level_default(self) -> int:
        return 30

    def start(self) -> None:
        if self.config_file:
            self.load_config_file(self.config_file)
        try:
            result = self.run()
        except (TraceError, ValueError) as e:
            print(f"aispike-hub simulate: {e}", file=sys.stderr)
            self.exit(2)
            return
        if self.as_json:
            print(json.dumps(result, indent=None))
        else:
            print(render_table(result))

    def run(self) -> dict[str, Any]:
        if not self.nodes or not self.pods:
            raise ValueError("give both --nodes and --pods (CSV files of a trace)")
        if self.policy not in POLICY_NAMES:
            raise ValueError(f"--policy: unknown policy {self.policy!r}; one of {POLICY_NAMES}")
        for option in ("inflate", "load", "window_hours", "warmup_hours"):
            if not math.isfinite(getattr(self, option)):
                raise ValueError(f"--{option.replace('_', '-')} must be a finite number")
        if not 0 < self.inflate <= 10:
            raise ValueError(f"--inflate must be in (0, 10], got {self.inflate}")
        nodes = read_nodes(self.nodes)
        pods = read_pods(self.pods)
        workload = Workload.from_requests(p.request for p in pods)
        if self.whole_gpus:
            pods = [whole_gpu_version(p) for p in pods]
            workload = Workload.from_requests(p.request for p in pods)
        if self.timed:
            if self.window_hours <= 0 or self.warmup_hours < 0:
                raise ValueError("--window-hours must be > 0 and --warmup-hours >= 0")
            timed = timed_replay(nodes, pods, self.policy, seed=parse_seeds(self.seeds)[0],
                                 workload=workload, load=self.load or None,
                                 window_s=round(self.window_hours * 3600),
                                 warmup_s=round(self.warmup_hours * 3600))
            return {"mode": "timed", **timed.as_json()}
        results = []
        floors = []
        seeds = parse_seeds(self.seeds)
        total_gpus = sum(len(n.gpus) for n in nodes)
        for k, seed in enumerate(seeds):
            t0 = time.perf_counter()

            def progress(i: int, n: int, seed: int = seed, k: int = k) -> None:
                print(f"\r[{self.policy}] seed {seed} ({k + 1}/{len(seeds)}): pod {i}/{n}",
                      end="", file=sys.stderr, flush=True)

            results.append(replay(nodes, pods, self.policy, seed, self.inflate, workload,
                                  progress=progress if sys.stderr.isatty() else None))
            if self.floor:
                arrivals = sample_arrivals(pods, total_gpus, self.inflate,
                                           np.random.default_rng(seed))
                floors.append(fluid_floor_unallocated(arrived_until(arrivals, total_gpus),
                                                      total_gpus))
            print(f"\r[{self.policy}] seed {seed} ({k + 1}/{len(seeds)}): "
                  f"{results[-1].allocation_at_100:.2f}% allocated at 100% arrived, "
                  f"{time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
        summary = summarise(self.policy, results).as_json()
        summary["whole_gpus"] = self.whole_gpus
        summary["pods_file"] = self.pods
        if floors:
            summary["fluid_floor_unallocated_at_100"] = round(float(np.mean(floors)), 2)
        return summary


def render_table(result: dict[str, Any]) -> str:
    """A plain-text table of one result."""
    if result.get("mode") == "timed":
        rows = [(k, result[k]) for k in ("policy", "pods", "load", "offered_load",
                                         "time_avg_allocation", "waited_pods", "mean_wait_s",
                                         "p95_wait_s", "still_waiting", "window_s",
                                         "warmup_s")]
    else:
        curve = result["allocation_curve"]
        rows = [(k, result[k]) for k in (
            "policy", "seeds", "allocation_at_100", "unallocated_at_100", "failed_pods",
            "served_demand_at_end", "decision_ms_p50", "decision_ms_p99")]
        if "fluid_floor_unallocated_at_100" in result:
            rows.append(("fluid_floor_unallocated_at_100",
                         result["fluid_floor_unallocated_at_100"]))
        rows.append(("allocation at arrived 50/80/90/100/110/120/130 %",
                     " ".join(f"{curve[str(p)]:.2f}" for p in (50, 80, 90, 100, 110, 120, 130))))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(argv: Sequence[str] | None = None) -> None:
    app = SimulateApp()
    app.initialize(list(argv) if argv is not None else None)
    app.start()
