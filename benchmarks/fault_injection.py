"""Fault injection on the real stack, the long version (issue 26, item 5).

Runs ``tests/integration/test_fault_injection.py`` (the product's hub, AISpikeSpawner with the
aispike DRA backend, the AISpike service; kube-apiserver, kube-scheduler, kwok) with a burst of
``--spawns`` spawns per seed under ``kill -9`` of the hub, the service and kube-scheduler and a
kube-apiserver restart, and prints one row per seed: spawns, cancels, stops, faults, time to
converge (from the end of the burst until hub servers == tickets == claims with nothing pending),
leaks and over-committed GPUs found.

    flock /tmp/aispike-integration.lock env PATH=$PWD/.venv/bin:$PATH \\
        .venv/bin/python benchmarks/fault_injection.py --spawns 200 --seeds 1 2 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spawns", type=int, default=200)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    args = parser.parse_args()
    print("| seed | spawns | cancels | stops | faults | converge (s) | leaks | over-commit |")
    print("|---|---|---|---|---|---|---|---|")
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            report = Path(tmp) / "outcome.json"
            env = {**os.environ, "AISPIKE_FAULT_SEED": str(seed),
                   "AISPIKE_FAULT_SPAWNS": str(args.spawns),
                   "AISPIKE_FAULT_REPORT": str(report)}
            proc = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                 "tests/integration/test_fault_injection.py"],
                cwd=REPO, env=env, capture_output=True, text=True)
            if not report.exists():
                print(f"| {seed} | run failed (rc {proc.returncode}) |", flush=True)
                print(proc.stdout[-3000:], file=sys.stderr)
                continue
            o = json.loads(report.read_text())
            print(f"| {seed} | {o['spawns']} | {o['cancels']} | {o['stops']} | "
                  f"{', '.join(o['faults'])} | {o['converge_s']:.1f} | {len(o['problems'])} | "
                  f"{len(o['overcommit'])} |", flush=True)
            for line in o["problems"] + o["overcommit"] + o["errors"]:
                print(f"    {line}", file=sys.stderr)


if __name__ == "__main__":
    main()
