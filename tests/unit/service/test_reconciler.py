"""The reconciliation loop against a stand-in hub and a stand-in Kubernetes API (issue 26):
tickets the hub no longer runs are released and audited, the admin panel lists them, a hub the
service cannot read judges nothing, orphan claims are deleted with preconditions and a claim
stuck in a terminating namespace loses its delete-protection finalizer.  The real hub and
cluster: tests/integration/test_reconcile_hub.py."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from service_fixtures import GIB, a100_nodes
from test_hubclient import TOKEN, StandInHub, run_with_hub

from aispike_hub.admission.controller import AdmissionController
from aispike_hub.admission.inventory import StaticInventory
from aispike_hub.kube.objects import ClaimInfo, PodInfo
from aispike_hub.model import SliceRequest
from aispike_hub.quota import User, policy_from_dict
from aispike_hub.service.api import ServiceContext
from aispike_hub.service.hubclient import HubClient
from aispike_hub.service.idle import IdleMonitor
from aispike_hub.service.panel import AdminPanel
from aispike_hub.service.reconciler import Reconciler
from aispike_hub.service.store import ReservationRow, Store, utcnow


def controller(tmp_path: Path) -> AdmissionController:
    store = Store(f"sqlite:///{tmp_path}/s.sqlite")
    return AdmissionController(store, StaticInventory(a100_nodes()), policy_from_dict({}))


def admit(c: AdmissionController, user: str, server: str, gib: int = 8) -> None:
    ticket = c.admit(User(user), server, SliceRequest(gpu_memory_mib=gib * GIB), "hub")
    assert ticket.state == "admitted", ticket


def test_tickets_without_a_hub_server_are_released_audited_and_shown(tmp_path: Path) -> None:
    c = controller(tmp_path)
    admit(c, "alice", "")          # before the service started; the hub runs it
    admit(c, "bob", "s1")          # before the service started; the hub lost it (shutdown)
    hub = StandInHub()
    hub.add("alice", "")
    hub.add("bob")

    async def test(url: str) -> None:
        ctx = ServiceContext(c, "aispike")
        rec = Reconciler(ctx, HubClient(url, TOKEN), grace=60)
        rec.started_at = utcnow() + dt.timedelta(seconds=1)  # both tickets predate the start
        await asyncio.sleep(0.01)
        assert await rec.run_once("start") == {"released": 1, "pods_deleted": 0,
                                               "claims_deleted": 0, "unprotected": 0}
        assert c.status("bob", "s1").state == "unknown"
        assert c.status("alice", "").state == "admitted"

        # A ticket of this process whose server vanished: remembered, kept within the grace,
        # released once the grace is over.
        rec.started_at = utcnow() - dt.timedelta(hours=1)
        admit(c, "carol", "")
        await asyncio.sleep(0.01)
        assert (await rec.run_once())["released"] == 0
        with c.store.session() as s:
            row = s.get(ReservationRow, ("carol", ""))
            assert row is not None and row.missing_since is not None
            row.missing_since = utcnow() - dt.timedelta(seconds=61)
        assert (await rec.run_once())["released"] == 1
        assert c.status("carol", "").state == "unknown"
        assert rec.totals["released"] == 2

        monitor = IdleMonitor(c.store, url, TOKEN)
        panel = AdminPanel(ctx, monitor, "/services/aispike/", hub_prefix="/hub/")
        panel.reconciler = rec
        shown = panel.queue()["reconciled"]
        assert [(e["action"], e["target"]) for e in shown["entries"]] == [
            ("reconcile.release", "carol/"), ("reconcile.release", "bob/s1")]
        assert "for 61 s" in shown["entries"][0]["detail"]["reason"]
        assert "(found at start)" in shown["entries"][1]["detail"]["reason"]
        assert shown["totals"]["released"] == 2 and shown["last"]["why"] == "interval"

    run_with_hub(hub, test)
    actions = [(e.actor, e.action, e.target) for e in c.store.audit_log()]
    assert ("aispike:reconcile", "admission.release", "bob/s1") in actions


@pytest.mark.parametrize("hub_state", ["no read:servers", "down"])
def test_a_hub_that_cannot_be_read_judges_no_ticket(tmp_path: Path, hub_state: str) -> None:
    c = controller(tmp_path)
    admit(c, "bob", "")
    hub = StandInHub()
    hub.read_servers = False

    async def test(url: str) -> None:
        if hub_state == "down":
            url = "http://127.0.0.1:1/hub/api"
        rec = Reconciler(ServiceContext(c, "aispike"), HubClient(url, TOKEN, request_timeout=2))
        rec.started_at = utcnow() + dt.timedelta(seconds=1)
        assert (await rec.run_once("start"))["released"] == 0
        assert "no ticket is judged" in rec.last["problem"]

    run_with_hub(hub, test)
    assert c.status("bob", "").state == "admitted"


def test_a_ticket_restarted_meanwhile_is_not_released(tmp_path: Path) -> None:
    """The judged ticket went and a new start of that server came before the release."""
    c = controller(tmp_path)
    admit(c, "bob", "")
    hub = StandInHub()

    async def test(url: str) -> None:
        rec = Reconciler(ServiceContext(c, "aispike"), HubClient(url, TOKEN))
        rec.started_at = utcnow() + dt.timedelta(seconds=1)
        seen = await rec.look()
        c.release("bob", "", "hub")
        admit(c, "bob", "")  # a new start, a new ticket
        from aispike_hub.service.reconcile import Settings, decide

        done = await rec.apply(decide(seen, Settings()), seen)
        assert done["released"] == 0

    run_with_hub(hub, test)
    assert c.status("bob", "").state == "admitted"


class FakeKube:
    """The inventory and API calls the reconciler makes, recorded."""

    def __init__(self, claims: list[ClaimInfo], pods: list[PodInfo],
                 namespaces: dict[str, dict[str, Any]]) -> None:
        self._claims, self._pods, self.namespaces = claims, pods, namespaces
        self.calls: list[tuple[Any, ...]] = []
        self.api = self

    def claims(self) -> list[ClaimInfo]:
        return list(self._claims)

    def pods(self) -> list[PodInfo]:
        return list(self._pods)

    def drop(self, namespace: str, name: str, uid: str = "") -> None:
        self.calls.append(("drop", namespace, name, uid))

    def get(self, kind: str, name: str, namespace: str = "") -> dict[str, Any]:
        if kind == "namespaces":
            if name not in self.namespaces:
                raise ApiException(status=404)
            return self.namespaces[name]
        return {"metadata": {"uid": f"uid-{name}", "resourceVersion": "9",
                             "finalizers": ["resource.kubernetes.io/delete-protection",
                                            "example.com/keep"]}}

    def delete(self, kind: str, name: str, namespace: str = "", **pre: Any) -> None:
        self.calls.append(("delete", kind, namespace, name, pre))

    def merge_patch(self, kind: str, name: str, patch: dict[str, Any],
                    namespace: str = "") -> dict[str, Any]:
        self.calls.append(("patch", kind, namespace, name, patch))
        return {}


def ours(name: str, ns: str = "jhub", age: float = 400, **kw: Any) -> ClaimInfo:
    created = (utcnow() - dt.timedelta(seconds=age)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return ClaimInfo(ns, name, f"uid-{name}", "7", created, ours=True, hub_server="bob/", **kw)


def test_orphan_claims_are_deleted_and_a_terminating_namespace_is_unblocked(
    tmp_path: Path,
) -> None:
    c = controller(tmp_path)
    kube = FakeKube(
        claims=[ours("orphan"), ours("young", age=10), ours("used"),
                ours("stuck", ns="gone-ns", age=5, deleting=True, allocating=True),
                ClaimInfo("jhub", "not-ours", "u", "1", "2020-01-01T00:00:00Z")],
        pods=[PodInfo("jhub", "jupyter-bob", "p", "n", 0, 0, "Running", ("used",))],
        namespaces={"jhub": {"metadata": {}, "status": {"phase": "Active"}},
                    "gone-ns": {"metadata": {"deletionTimestamp": "x"},
                                "status": {"phase": "Terminating"}}})
    hub = StandInHub()

    async def test(url: str) -> None:
        rec = Reconciler(ServiceContext(c, "aispike"), HubClient(url, TOKEN), kube,
                         orphan_seconds=300)
        done = await rec.run_once()
        assert done == {"released": 0, "pods_deleted": 0, "claims_deleted": 1,
                        "unprotected": 1}

    run_with_hub(hub, test)
    assert ("delete", "resourceclaims", "jhub", "orphan",
            {"uid": "uid-orphan", "resource_version": "7"}) in kube.calls
    assert ("drop", "jhub", "orphan", "uid-orphan") in kube.calls
    assert ("patch", "resourceclaims", "gone-ns", "stuck", {"metadata": {
        "resourceVersion": "9", "finalizers": ["example.com/keep"]}}) in kube.calls
    touched = {call[3] for call in kube.calls if call[0] in ("delete", "patch")}
    assert touched == {"orphan", "stuck"}
    audit = {(e.action, e.target) for e in c.store.audit_log()}
    assert {("reconcile.claim", "jhub/orphan"),
            ("reconcile.unprotect", "gone-ns/stuck")} <= audit


def server_pod(name: str, hub_server: str, age: float = 900, **kw: Any) -> PodInfo:
    created = (utcnow() - dt.timedelta(seconds=age)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return PodInfo("jhub", name, f"uid-{name}", "n", 0, 0, "Running", (f"{name}-gpu",),
                   created=created, hub_server=hub_server, **kw)


def test_a_pod_the_hub_forgot_is_deleted_after_the_grace_and_audited(tmp_path: Path) -> None:
    """A hub killed mid-spawn has no server for that spawn: its pod is deleted once it has
    been missing for the grace (remembered between passes), with the pod's uid as
    precondition; a pod the hub lists, another hub's pod and a plain pod are never touched."""
    c = controller(tmp_path)
    kube = FakeKube(claims=[], namespaces={"jhub": {"metadata": {}}}, pods=[
        server_pod("jupyter-bob", "bob/"), server_pod("jupyter-alice", "alice/"),
        server_pod("jupyter-carol", "other-hub:carol/"),
        PodInfo("jhub", "batch-job", "uid-batch", "n", 0, 0, "Running")])
    hub = StandInHub()
    hub.add("alice", "")

    async def test(url: str) -> None:
        ctx = ServiceContext(c, "aispike")
        rec = Reconciler(ctx, HubClient(url, TOKEN), kube, grace=60)
        assert (await rec.run_once())["pods_deleted"] == 0  # first sighting: remembered
        assert set(rec._pod_missing) == {"uid-jupyter-bob"}
        assert (await rec.run_once())["pods_deleted"] == 0  # within the grace
        rec._pod_missing["uid-jupyter-bob"] -= dt.timedelta(seconds=61)
        assert (await rec.run_once())["pods_deleted"] == 1
        assert rec.totals["pods_deleted"] == 1 and rec._pod_missing == {}
        monitor = IdleMonitor(c.store, url, TOKEN)
        panel = AdminPanel(ctx, monitor, "/services/aispike/", hub_prefix="/hub/")
        panel.reconciler = rec
        shown = panel.queue()["reconciled"]["entries"]
        assert [(e["action"], e["target"]) for e in shown] == [("reconcile.pod",
                                                                "jhub/jupyter-bob")]
        assert "killed mid-spawn" in shown[0]["detail"]["reason"]

    run_with_hub(hub, test)
    deleted = [call for call in kube.calls if call[0] == "delete"]
    assert deleted == [("delete", "pods", "jhub", "jupyter-bob", {"uid": "uid-jupyter-bob"})]


def test_a_pod_the_hub_lists_again_is_forgotten(tmp_path: Path) -> None:
    c = controller(tmp_path)
    kube = FakeKube(claims=[], namespaces={}, pods=[server_pod("jupyter-bob", "bob/")])
    hub = StandInHub()

    async def test(url: str) -> None:
        rec = Reconciler(ServiceContext(c, "aispike"), HubClient(url, TOKEN), kube, grace=60)
        await rec.run_once()
        assert set(rec._pod_missing) == {"uid-jupyter-bob"}
        pods, kube._pods = kube._pods, []
        await rec.run_once()  # the pod went: its absence is forgotten
        assert rec._pod_missing == {}
        kube._pods = pods
        await rec.run_once()
        assert set(rec._pod_missing) == {"uid-jupyter-bob"}
        hub.add("bob", "")
        await rec.run_once()  # listed again: forgotten
        assert rec._pod_missing == {}

    run_with_hub(hub, test)
    assert not [call for call in kube.calls if call[0] == "delete"]


def test_the_service_reconciles_at_start_before_it_listens(tmp_path: Path) -> None:
    """AISpikeService.run: the start pass comes before the service takes requests."""
    import inspect

    from aispike_hub.service.app import AISpikeService

    source = inspect.getsource(AISpikeService.run)
    assert source.index('run_once("start")') < source.index("app.listen(")
