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


def restart_hub(hub: RunningHub) -> Callable[..., None]:
    """``kill -9`` of the hub and its managed service (a crashed hub pod), then the same hub
    again (its proxy, a separate process, keeps running).  ``lose_database=True``: the hub
    comes back without its database (a hub pod on ``sqlite-memory`` or an emptyDir, a
    database restored from an old backup): it no longer knows any server it ran."""
    def restart(lose_database: bool = False) -> None:
        old = hub.process
        service = faults.service_pid(old.pid)
        os.kill(old.pid, signal.SIGKILL)
        if service is not None:
            os.kill(service, signal.SIGKILL)
        old.wait(30)
        if lose_database:
            (hub.workdir / "jupyterhub.sqlite").unlink()
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


NEVER_READY = "stuck-"
"""Users named so get a pod whose notebook never answers (``sleep``): a spawn that stays in
flight for as long as a test needs, so the hub can be killed in the middle of it."""
NEVER_READY_HOOK = f"""
def _never_ready(spawner, pod):
    if spawner.user.name.startswith({NEVER_READY!r}):
        pod.spec.containers[0].command = ["sleep", "3600"]
        pod.spec.containers[0].args = None
    return pod
c.KubeSpawner.modify_pod_hook = _never_ready
"""


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
        "--Reconciler.grace=10", "--Reconciler.orphan_seconds=30", *spawner.service_args())
    try:
        hub = hub_factory(
            name,
            spawner.config
            + aispike_service_config(
                port, token, command,
                service_scopes=["admin:servers", "list:users", "read:users", "read:groups",
                                "read:servers", "custom:aispike:admit"],
                admin_scopes=["custom:aispike:admin"],
                environment={"KUBECONFIG": str(cluster.kubeconfig)})
            + NEVER_READY_HOOK)
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


def in_flight(stack: faults.Stack) -> tuple[str, Callable[[], list[Any]]]:
    """A new user's spawn whose pod and claim exist but whose notebook never answers: (the
    user, a function listing the user's pods)."""
    sh = stack.sh
    stack.stop_all()  # the burst test keeps servers: the GPUs may be full
    user = f"{NEVER_READY}{secrets.token_hex(3)}"
    assert sh.hub.api("POST", f"/users/{user}").status_code == 201
    started = sh.start(user, "", {"gpu_gib": 4})
    assert started.status_code in (201, 202), started.text

    def pods_of_user() -> list[Any]:
        pods = stack.cluster.core.list_namespaced_pod(stack.namespace).items
        return [p for p in pods if (p.metadata.annotations or {}).get(
            faults.HUB_SERVER_ANNOTATION, "").endswith(f"{user}/")]

    wait_until(lambda: pods_of_user() and f"{user}/" in stack.claims()[0], 120,
               "the spawn's pod and claim to exist")
    assert not sh.server(user, "").get("ready"), "the spawn must still be in flight"
    return user, pods_of_user


def wait_gone(stack: faults.Stack, user: str, pods_of_user: Callable[[], list[Any]],
              pod_uid: str) -> None:
    """Until the pod (uid), the user's claim and ticket are gone and the hub lists no server
    of the user; then the three views agree and no GPU is over-committed."""
    def settled() -> bool:
        if any(p.metadata.uid == pod_uid and not p.metadata.deletion_timestamp
               for p in pods_of_user()):
            return False
        return (f"{user}/" not in stack.claims()[0] and f"{user}/" not in stack.tickets()
                and f"{user}/" not in stack.hub_servers()[0])

    try:
        wait_until(settled, 180, f"{user}'s pod, claim and ticket to go")
    except AssertionError:
        raise AssertionError(f"hub log:\n{stack.sh.log_tail()}") from None
    problems, overcommit, _ = stack.check()
    assert not [p for p in problems if user in p], problems
    assert overcommit == []


def test_a_spawn_in_flight_when_the_hub_is_killed_leaves_nothing_behind(
    stack: faults.Stack,
) -> None:
    """The hub is killed after the pod and its claim exist but before the notebook answers.
    JupyterHub wrote the server's row when the spawn began (``User.spawn``), so the restarted
    hub polls the pod, waits ``http_timeout`` for it to answer and stops it; the stop releases
    the ticket and the claim.  Whoever acts, nothing of the spawn is left."""
    user, pods_of_user = in_flight(stack)
    pod_uid = pods_of_user()[0].metadata.uid
    stack.restart_hub()
    wait_gone(stack, user, pods_of_user, pod_uid)


def test_pods_of_a_hub_that_lost_its_database_are_deleted_by_reconciliation(
    stack: faults.Stack,
) -> None:
    """The hub comes back without its database: it knows no server, nothing of the hub's will
    ever stop the pods it ran.  The service's reconciliation deletes each of our pods whose
    server the hub has not listed for the grace (audited as ``reconcile.pod``), the claims
    follow, the tickets are released."""
    user, pods_of_user = in_flight(stack)
    pod_uid = pods_of_user()[0].metadata.uid
    stack.restart_hub(lose_database=True)
    wait_until(lambda: faults.service_pid(stack.sh.hub.process.pid) is not None, 60,
               "the restarted hub to start its service")
    wait_gone(stack, user, pods_of_user, pod_uid)
    audit = stack.sh.audit(action="reconcile.pod")
    assert any(e["detail"].get("uid") == pod_uid for e in audit), audit
