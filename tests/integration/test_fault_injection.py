"""Fault injection through the real hub, AISpikeSpawner and AISpike service (issue 26, item 5).

A seeded burst of spawns (kept, cancelled while starting, stopped once ready) while ``kill -9``
hits the hub, the AISpike service and kube-scheduler and kube-apiserver restarts (the driver:
``faults.py``).  After it settles, exactly: the hub's servers == the service's tickets == our
claims, no GPU over-committed, nothing leaked.  No timing is asserted (``benchmarks/
fault_injection.py`` reports the time to converge).
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from tools import start_group

from . import faults
from .conftest import RunningHub, TestCluster, _free_port, wait_until
from .hubstack import (
    ServiceHub,
    aispike_service_config,
    service_command,
    spawner_setup,
    wait_for_service,
)

MACHINE = {"name": "faults-gpu", "cpu": "64", "memory": "512Gi",
           "gpus": [{"model": "NVIDIA A100-SXM4-80GB", "memory": "40Gi", "count": 2}]}
SEED = int(os.environ.get("AISPIKE_FAULT_SEED", "26"))
SPAWNS = int(os.environ.get("AISPIKE_FAULT_SPAWNS", "20"))
REPORT = os.environ.get("AISPIKE_FAULT_REPORT", "")
"""A file the outcome is written to as JSON (``benchmarks/fault_injection.py`` reads it)."""


def restart_hub(hub: RunningHub) -> Callable[[], None]:
    """``kill -9`` of the hub and its managed service (a crashed hub pod), then the same hub
    again (its proxy, a separate process, keeps running)."""
    def restart() -> None:
        old = hub.process
        service = faults.service_pid(old.pid)
        os.kill(old.pid, signal.SIGKILL)
        if service is not None:
            os.kill(service, signal.SIGKILL)
        old.wait(30)
        with open(hub.log_path, "ab") as out:
            hub.process = start_group(
                [sys.executable, "-m", "jupyterhub", "-f",
                 str(hub.workdir / "jupyterhub_config.py")],
                cwd=hub.workdir, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL)

        def answers() -> bool:
            try:
                return hub.api("GET", "/", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_until(answers, 120, "the restarted hub to answer")
    return restart


def fault_stack(name: str, request: pytest.FixtureRequest,
                hub_factory: Callable[..., RunningHub], cluster: TestCluster,
                workdir: os.PathLike[str], machine: dict[str, Any]
                ) -> Iterator[faults.Stack]:
    """The product's stack for the driver (used by the test and the benchmark)."""
    from pathlib import Path

    if cluster.state_dir is None:
        raise AssertionError("fault injection needs a test cluster whose processes are known "
                             "(scripts/test-cluster's cluster.json)")
    spawner = spawner_setup("kube", request, machine, workdir=Path(workdir), admission=True)
    port, token = _free_port(), secrets.token_hex(16)
    command = service_command(
        Path(workdir), "--AISpikeService.inventory=kubernetes",
        "--AISpikeService.tick_interval=0.5", "--Reconciler.interval=2",
        "--Reconciler.grace=10", "--Reconciler.orphan_seconds=30")
    try:
        hub = hub_factory(
            name,
            spawner.config
            + aispike_service_config(
                port, token, command,
                service_scopes=["admin:servers", "list:users", "read:users", "read:groups",
                                "read:servers", "custom:aispike:admit"],
                admin_scopes=["custom:aispike:admin"],
                environment={"KUBECONFIG": str(cluster.kubeconfig)}))
        try:
            sh = ServiceHub(hub, f"http://127.0.0.1:{port}/services/aispike/")
            wait_for_service(sh.service_url)
            yield faults.Stack(sh, cluster, request.getfixturevalue("hub_namespace"),
                               restart_hub(hub))
        finally:
            hub.stop()
    finally:
        spawner.cleanup()


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest, hub_factory: Callable[..., RunningHub],
          cluster: TestCluster, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[faults.Stack]:
    yield from fault_stack("faults", request, hub_factory, cluster,
                           tmp_path_factory.mktemp("aispike-faults"), MACHINE)


def test_a_burst_under_faults_settles_with_nothing_leaked_or_over_committed(
    stack: faults.Stack,
) -> None:
    the_plan = faults.plan(SEED, SPAWNS, window=SPAWNS * 1.0)
    out = stack.run(the_plan, spacing=1.0)
    report = (f"{faults.table([(SEED, out)])}\nerrors: {out.errors}\n"
              f"problems: {out.problems}\nover-commit: {out.overcommit}")
    print(report)
    if REPORT:
        with open(REPORT, "w") as f:
            json.dump({"seed": SEED, **dataclasses.asdict(out)}, f)
    assert sorted(out.faults) == sorted(faults.FAULTS), report
    assert not out.errors, report
    assert not out.overcommit, report
    assert not out.problems, f"{report}\nhub log:\n{stack.sh.log_tail(8000)}"
