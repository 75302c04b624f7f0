"""Reconciliation through the real hub, the real AISpike service and the test cluster (issue 26).

One hub with the product's ``AISpikeSpawner`` (admission by the service, claims pinned by the
hub's placer) and the AISpike service as a hub-managed service reading the cluster through its
Kubernetes inventory, with short reconciliation settings:

| case | expected |
|---|---|
| a ticket with no hub server (a cancelled spawn's) | released after the grace, audited, |
|  | listed as reconciled on the admin panel |
| a running server's ticket | kept, pass after pass |
| our claim with no pod (a hub that died before the pod) | deleted after orphan_seconds |
| our claim under delete-protection in a deleted namespace | finalizer removed, namespace gone |
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from aispike_hub.kube.api import KubeJson
from aispike_hub.kube.claims import MANAGED_BY, MANAGED_BY_LABEL, SERVER_LABEL

from . import dra_burst
from .conftest import RunningHub, TestCluster, _free_port, create_namespace, wait_until
from .hubstack import (
    ServiceHub,
    aispike_service_config,
    service_command,
    spawner_setup,
    wait_for_service,
)

MACHINE = {"name": "reconcile-gpu", "cpu": "64", "memory": "512Gi",
           "gpus": [{"model": "NVIDIA A100-SXM4-80GB", "memory": "80Gi", "count": 1}]}
GRACE, ORPHAN = 3, 20


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest, hub_factory: Callable[..., RunningHub],
          cluster: TestCluster, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[ServiceHub, str]]:
    workdir = tmp_path_factory.mktemp("aispike-reconcile")
    spawner = spawner_setup("kube", request, MACHINE, workdir=workdir, admission=True)
    port, token = _free_port(), secrets.token_hex(16)
    command = service_command(
        workdir, "--AISpikeService.inventory=kubernetes", "--AISpikeService.tick_interval=0.5",
        "--Reconciler.interval=1", f"--Reconciler.grace={GRACE}",
        f"--Reconciler.orphan_seconds={ORPHAN}", "--Reconciler.event_spacing=0.5",
        *spawner.service_args())
    try:
        hub = hub_factory(
            "reconcile",
            spawner.config
            + aispike_service_config(
                port, token, command,
                service_scopes=["admin:servers", "list:users", "read:users", "read:groups",
                                "read:servers", "custom:aispike:admit"],
                admin_scopes=["custom:aispike:admin"],
                environment={"KUBECONFIG": str(cluster.kubeconfig)})
            + "c.JupyterHub.allow_named_servers = True\n")
        try:
            stack = ServiceHub(hub, f"http://127.0.0.1:{port}/services/aispike/")
            wait_for_service(stack.service_url)
            yield stack, token
        finally:
            hub.stop()
    finally:
        spawner.cleanup()


def admit_by_hand(stack: ServiceHub, token: str, user: str, server: str) -> dict[str, Any]:
    """What a spawn cancelled while queued leaves: a ticket the hub has no server for."""
    r = stack.service("POST", "admissions", token=token, json={
        "user": user, "server": server, "groups": [],
        "request": {"gpu_count": 1, "gpu_memory_mib": 4096, "cpu_milli": 500,
                    "memory_mib": 1024}})
    assert r.status_code == 201, r.text
    return dict(r.json())


def state(stack: ServiceHub, user: str, server: str) -> str:
    return str(stack.service("GET", f"admissions/{user}/{server}").json()["state"])


def test_a_ticket_without_a_server_is_released_and_a_running_one_kept(
    stack: tuple[ServiceHub, str],
) -> None:
    hub, token = stack
    user = hub.user()
    assert hub.start(user, "", {"gpu_gib": 8}).status_code in (201, 202)
    hub.wait_ready(user, "", 150)
    ticket = admit_by_hand(hub, token, user, "ghost")
    assert ticket["state"] == "admitted", ticket
    began = time.monotonic()
    try:
        wait_until(lambda: state(hub, user, "ghost") == "unknown", 60, "ghost ticket released")
    except AssertionError:
        raise AssertionError(f"hub log:\n{hub.log_tail()}") from None
    assert time.monotonic() - began >= GRACE - 1  # not before the grace
    audit = hub.audit(f"{user}/ghost", action="reconcile.release")
    assert audit and "the hub has had no 'ghost'" in audit[0]["detail"]["reason"], audit
    reconciled = hub.service("GET", "panel/queue").json()["reconciled"]
    assert any(e["target"] == f"{user}/ghost" for e in reconciled["entries"]), reconciled
    assert reconciled["totals"]["released"] >= 1
    # The running server's ticket survives many passes (interval 1 s, grace 3 s).
    time.sleep(2 * GRACE + 2)
    assert state(hub, user, "") == "admitted"
    hub.stop(user, "", wait=True)
    wait_until(lambda: state(hub, user, "") == "unknown", 60, "released on stop")


def our_claim(name: str, finalizers: list[str] | None = None) -> dict[str, Any]:
    claim = dra_burst.competitor_claim(name, 4)
    claim["metadata"] = {"name": name, "labels": {MANAGED_BY_LABEL: MANAGED_BY,
                                                  SERVER_LABEL: name}}
    if finalizers:
        claim["metadata"]["finalizers"] = finalizers
    return claim


def exists(api: KubeJson, kind: str, name: str, namespace: str = "") -> bool:
    from kubernetes.client.exceptions import ApiException

    try:
        api.get(kind, name, namespace)
    except ApiException as e:
        if e.status == 404:
            return False
        raise
    return True


def test_an_orphan_claim_is_deleted_after_orphan_seconds(
    stack: tuple[ServiceHub, str], cluster: TestCluster, hub_namespace: str,
) -> None:
    hub, _ = stack
    api = KubeJson(cluster.api)
    name = f"orphan-{secrets.token_hex(3)}"
    api.create("resourceclaims", our_claim(name), hub_namespace)
    began = time.monotonic()
    wait_until(lambda: not exists(api, "resourceclaims", name, hub_namespace), ORPHAN + 40,
               "the orphan claim to be deleted")
    assert time.monotonic() - began >= ORPHAN - 5  # its age counts from its creation
    wait_until(lambda: hub.audit(f"{hub_namespace}/{name}", action="reconcile.claim"), 10,
               "the deletion audited")


def test_a_protected_claim_does_not_keep_a_deleted_namespace_terminating(
    stack: tuple[ServiceHub, str], cluster: TestCluster,
) -> None:
    hub, _ = stack
    api = KubeJson(cluster.api)
    ns = create_namespace(cluster, f"gone-{secrets.token_hex(3)}")
    name = "stuck"
    api.create("resourceclaims",
               our_claim(name, ["resource.kubernetes.io/delete-protection"]), ns)
    cluster.core.delete_namespace(ns)
    try:
        wait_until(lambda: not exists(api, "namespaces", ns), 90,
                   f"namespace {ns} to go (its claim's finalizer removed)")
    except AssertionError:
        raise AssertionError(f"hub log:\n{hub.log_tail()}") from None
    entries = hub.audit(f"{ns}/{name}")
    assert {e["action"] for e in entries} & {"reconcile.unprotect", "reconcile.claim"}, entries


def test_another_hubs_orphan_claim_is_never_deleted(
    stack: tuple[ServiceHub, str], cluster: TestCluster, hub_namespace: str,
) -> None:
    """Two hubs on one cluster (issue 26 item 4): this service is the default hub's; a claim
    of hub ``lab-b`` with no pod is left to lab-b's own service, while an orphan of ours
    created at the same moment is deleted."""
    from aispike_hub.kube.claims import HUB_SERVER_ANNOTATION
    from aispike_hub.kube.identity import hub_server_value

    hub, _ = stack
    api = KubeJson(cluster.api)
    suffix = secrets.token_hex(3)
    mine, theirs = f"mine-{suffix}", f"theirs-{suffix}"
    claim = our_claim(theirs)
    claim["metadata"]["annotations"] = {
        HUB_SERVER_ANNOTATION: hub_server_value(f"bob/{suffix}", "lab-b")}
    api.create("resourceclaims", claim, hub_namespace)
    api.create("resourceclaims", our_claim(mine), hub_namespace)
    wait_until(lambda: not exists(api, "resourceclaims", mine, hub_namespace), ORPHAN + 40,
               "our orphan claim to be deleted")
    time.sleep(3)  # several more passes (interval 1 s)
    try:
        assert exists(api, "resourceclaims", theirs, hub_namespace), hub.log_tail()
        assert not hub.audit(f"{hub_namespace}/{theirs}")
    finally:
        api.delete("resourceclaims", theirs, hub_namespace)
