"""Placement on Kubernetes through DRA, on the real control plane (kube-apiserver, kube-scheduler
with consumable capacity, kube-controller-manager, kwok nodes whose GPUs are ResourceSlices).

Each test creates its own nodes with a GPU model name unique to the test, and asks only for that
model, so tests never compete for the session's GPUs.  The burst is scaled for CI by
``AISPIKE_BURST_SERVERS`` / ``AISPIKE_BURST_NODES`` / ``AISPIKE_BURST_COMPETITORS``
(defaults 40 / 4 / 8); ``benchmarks/kube_placement.py`` runs the full 500 / 50.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from aispike_hub.admission.controller import AdmissionController
from aispike_hub.admission.replace import claimed_request
from aispike_hub.kube.api import KubeJson
from aispike_hub.kube.claims import claim_name, owner_reference, pinned_claim
from aispike_hub.kube.inventory import Inventory
from aispike_hub.kube.placer import PlacementRefused, Placer
from aispike_hub.kube.slices import resource_slice, resource_slice_name
from aispike_hub.model import GIB_IN_MIB, Assignment, Gpu, Node, SliceRequest
from aispike_hub.quota import User, policy_from_dict
from aispike_hub.service.kube_inventory import KubeClusterInventory
from aispike_hub.service.store import Store

from . import dra_burst
from .conftest import GpuNodes, TestCluster, wait_until

GIB = GIB_IN_MIB


@pytest.fixture
def placer(cluster: TestCluster) -> Iterator[Placer]:
    inventory = Inventory(cluster.api).start()
    yield Placer(inventory, unschedulable_seconds=5)
    inventory.stop()


def seen(placer: Placer, nodes: list[Node]) -> list[Node]:
    """Wait until the placer's inventory (a watch, so a little behind) has ``nodes``' GPUs."""

    def check() -> bool:
        with placer.inventory.lock:
            state = placer.inventory.state()
            if state is None:
                return False
            return all(
                n.name in state.node_index
                and int(state.gpu_count[state.node_index[n.name]]) == len(n.gpus)
                for n in nodes
            )

    wait_until(check, 30, "the inventory to see the test's nodes")
    return nodes


def model(tag: str) -> str:
    return f"TEST-{tag}-{secrets.token_hex(3)}"


def gpu_spec(name: str, m: str, memory: str, count: int, **topo: Any) -> dict[str, Any]:
    return {"name": name, "cpu": "32", "memory": "256Gi",
            "gpus": [{"model": m, "memory": memory, "count": count, **topo}]}


def pod(request: SliceRequest, selector: dict[str, str]) -> dict[str, Any]:
    return dra_burst.pod_manifest(request, selector)


def allocation(api: KubeJson, namespace: str, server: str) -> list[dict[str, Any]]:
    claim = api.get("resourceclaims", claim_name(server), namespace)
    return list(claim["status"]["allocation"]["devices"]["results"])


def test_pods_land_on_the_pinned_gpu_and_consumed_capacity_matches(
    cluster: TestCluster, namespace: str, gpu_nodes: GpuNodes, placer: Placer
) -> None:
    a100, h100, t4 = model("a100"), model("h100"), model("t4")
    nodes = seen(placer, gpu_nodes({"nodes": [
        {**gpu_spec("a", a100, "80Gi", 2, nvlinkDomain="nvl0"),
         "gpus": [{"model": a100, "memory": "80Gi", "count": 2, "nvlinkDomain": "nvl0"},
                  {"model": a100, "memory": "80Gi", "count": 2, "nvlinkDomain": "nvl1"}]},
        gpu_spec("h", h100, "81559Mi", 2, nvlinkDomain="nvl0"),
        gpu_spec("t", t4, "16Gi", 2, pcieSwitch="sw0"),
    ]}))
    api = placer.api
    cases = [(a100, 24), (a100, 40), (a100, 20), (h100, 79), (h100, 8), (t4, 12), (t4, 6)]
    for i, (m, gib) in enumerate(cases):
        req = SliceRequest(gpu_memory_mib=gib * GIB, allowed_models=frozenset({m}),
                           cpu_milli=500, memory_mib=GIB)
        messages: list[str] = []
        result = placer.start_server(namespace, f"nb-{i}", req, pod(req, gpu_nodes.selector),
                                     timeout=90, progress=messages.append)
        p = result.pin.placement
        assert p is not None and messages[0].startswith(f"placed on {p.node}: GPU")
        (res,) = allocation(api, namespace, f"nb-{i}")
        assert (res["pool"], res["device"]) == (p.node, f"gpu-{p.gpus[0].index}")
        assert res["consumedCapacity"] == {"memory": f"{gib}Gi"}
        assert result.pod is not None and result.pod.node == p.node
        node = next(n for n in nodes if n.name == p.node)
        assert node.gpus[p.gpus[0].index].model == m
    # Packing: the 20 GiB slice joined the 40 GiB one rather than opening another GPU.
    by_server = {f"nb-{i}": allocation(api, namespace, f"nb-{i}")[0]["device"] for i in range(3)}
    assert len(set(by_server.values())) <= 2


def test_a_two_gpu_claim_gets_gpus_of_one_nvlink_domain(
    cluster: TestCluster, namespace: str, gpu_nodes: GpuNodes, placer: Placer
) -> None:
    m = model("nvl")
    (node,) = seen(placer, gpu_nodes({"nodes": [{"name": "nv", "cpu": "32", "memory": "256Gi",
                                                 "gpus": [
        {"model": m, "memory": "80Gi", "count": 2, "nvlinkDomain": "nvl0", "pcieSwitch": "sw0"},
        {"model": m, "memory": "80Gi", "count": 2, "nvlinkDomain": "nvl1", "pcieSwitch": "sw0"},
    ]}]}))
    small = SliceRequest(gpu_memory_mib=8 * GIB, allowed_models=frozenset({m}))
    placer.start_server(namespace, "small", small, pod(small, gpu_nodes.selector), timeout=90)
    pair = SliceRequest(gpu_count=2, allowed_models=frozenset({m}), cpu_milli=1000)
    result = placer.start_server(namespace, "pair", pair, pod(pair, gpu_nodes.selector),
                                 timeout=90)
    devices = sorted(r["device"] for r in allocation(placer.api, namespace, "pair"))
    domains = {node.gpus[int(d.removeprefix("gpu-"))].nvlink_domain for d in devices}
    assert len(devices) == 2 and len(domains) == 1, devices
    claim = placer.api.get("resourceclaims", claim_name("pair"), namespace)
    assert claim["spec"]["devices"]["constraints"] == [
        {"requests": ["gpu"], "matchAttribute": "gpu.aispike.io/nvlinkDomain"}
    ]
    assert result.pin.placement is not None and result.pin.placement.whole


def test_a_request_that_fits_nowhere_is_refused_with_reasons_before_any_pod(
    cluster: TestCluster, namespace: str, gpu_nodes: GpuNodes, placer: Placer
) -> None:
    m = model("full")
    seen(placer, gpu_nodes({"nodes": [{**gpu_spec("f", m, "40Gi", 1), "cpu": "2"}]}))
    cases = {
        "too-big": (SliceRequest(gpu_memory_mib=48 * GIB, allowed_models=frozenset({m})),
                    f"no {m} has 48 GiB free (largest free: 40 GiB)"),
        "no-model": (SliceRequest(gpu_memory_mib=GIB, allowed_models=frozenset({"B300-nope"})),
                     "no node has a GPU of model B300-nope"),
        "no-cpu": (SliceRequest(gpu_memory_mib=GIB, allowed_models=frozenset({m}),
                                cpu_milli=900_000), "CPUs free"),
    }
    for server, (req, reason) in cases.items():
        with pytest.raises(PlacementRefused) as refused:
            placer.start_server(namespace, server, req, pod(req, gpu_nodes.selector))
        assert any(reason in r for r in refused.value.reasons), refused.value.reasons
    assert cluster.core.list_namespaced_pod(namespace).items == []
    assert placer.api.list("resourceclaims", namespace=namespace)[0] == []


def test_deleting_a_server_frees_its_slice(
    cluster: TestCluster, namespace: str, gpu_nodes: GpuNodes, placer: Placer
) -> None:
    m = model("gc")
    seen(placer, gpu_nodes({"nodes": [gpu_spec("g", m, "80Gi", 1)]}))
    big = SliceRequest(gpu_memory_mib=60 * GIB, allowed_models=frozenset({m}))
    placer.start_server(namespace, "first", big, pod(big, gpu_nodes.selector), timeout=90)
    claim = placer.api.get("resourceclaims", claim_name("first"), namespace)
    assert claim["metadata"]["ownerReferences"][0]["name"] == "first"
    with pytest.raises(PlacementRefused):
        placer.pin(namespace, "second", big)
    cluster.core.delete_namespaced_pod("first", namespace, grace_period_seconds=0)

    def claim_gone() -> bool:
        try:
            placer.api.get("resourceclaims", claim_name("first"), namespace)
        except ApiException as e:
            return e.status == 404
        return False

    wait_until(claim_gone, 90, "the garbage collector to delete the server's claim")
    wait_until(lambda: placer.preview(big).placed, 30, "the inventory to see the room free")
    result = placer.start_server(namespace, "second", big, pod(big, gpu_nodes.selector),
                                 timeout=90)
    assert result.pod is not None


def test_a_stale_pin_is_repinned_and_never_two_claims(
    cluster: TestCluster, namespace: str, gpu_nodes: GpuNodes, placer: Placer
) -> None:
    m = model("stale")
    (node,) = seen(placer, gpu_nodes({"nodes": [gpu_spec("s", m, "80Gi", 2)]}))
    req = SliceRequest(gpu_memory_mib=70 * GIB, allowed_models=frozenset({m}))
    pin = placer.pin(namespace, "nb", req)
    assert pin.placement is not None
    pinned = pin.placement.gpus[0]
    # Someone else's claim takes the room on that GPU before our pod exists.
    other = pinned_claim("intruder", pin.placement, SliceRequest(gpu_memory_mib=20 * GIB))
    other["metadata"]["labels"] = {"app": "other"}
    other["metadata"]["annotations"] = {}
    other["spec"]["devices"]["requests"][0]["exactly"]["capacity"]["requests"]["memory"] = "20Gi"
    placer.api.create("resourceclaims", other, namespace)
    intruder = pod(SliceRequest(gpu_count=0), gpu_nodes.selector)
    intruder["metadata"]["name"] = "intruder"
    intruder["spec"]["resourceClaims"] = [{"name": "gpu", "resourceClaimName": "intruder-gpu"}]
    intruder["spec"]["containers"][0]["resources"]["claims"] = [{"name": "gpu"}]
    placer.api.create("pods", intruder, namespace)
    wait_until(lambda: placer.status(namespace, "nb").phase == "stale", 60, "our pin stale")
    with pytest.raises(PlacementRefused):
        placer.pin(namespace, "nb", SliceRequest(gpu_memory_mib=GIB, allowed_models={m}))

    created = placer.api.create("pods", pin.pod(pod(req, gpu_nodes.selector)), namespace)
    placer.adopt(pin, "nb", created["metadata"]["uid"])
    new = placer.repin(namespace, "nb", "test")
    assert new is not None and new.placement is not None
    assert new.placement.gpus[0].uuid != pinned.uuid and new.placement.attempt == 2
    wait_until(lambda: placer.status(namespace, "nb").phase == "running", 90, "nb Running")
    (res,) = allocation(placer.api, namespace, "nb")
    assert res["device"] == f"gpu-{new.placement.gpus[0].index}"
    assert res["pool"] == node.name
    assert dra_burst.claims_per_server(placer.api, namespace) == {"nb": 1}


def _intrude(placer: Placer, namespace: str, selector: dict[str, str], name: str,
             node: str, gib: int) -> None:
    """Someone else's claim (and pod) takes ``gib`` GiB of ``node``'s GPU 0, allocated by
    kube-scheduler: both the placer's and the service's inventories count it as foreign."""
    with placer.inventory.lock:
        state = placer.inventory.state()
        assert state is not None
        where = Placer._placement(state, Assignment(node, (0,), (gib * GIB,), 0, 0),
                                  SliceRequest(gpu_memory_mib=gib * GIB), 1)
    other = pinned_claim(name, where, SliceRequest(gpu_memory_mib=gib * GIB))
    other["metadata"]["labels"] = {"app": "other"}
    other["metadata"]["annotations"] = {}
    placer.api.create("resourceclaims", other, namespace)
    intruder = pod(SliceRequest(gpu_count=0), selector)
    intruder["metadata"]["name"] = name
    intruder["spec"]["resourceClaims"] = [{"name": "gpu", "resourceClaimName": f"{name}-gpu"}]
    intruder["spec"]["containers"][0]["resources"]["claims"] = [{"name": "gpu"}]
    placer.api.create("pods", intruder, namespace)


def test_pins_and_re_pins_go_through_the_service_and_its_promises_and_models(
    cluster: TestCluster, namespace: str, gpu_nodes: GpuNodes, placer: Placer, tmp_path: Any
) -> None:
    """Issue 18: the hub's placer asks admission (here the service's controller over the
    service's own Kubernetes inventory, ``AdmissionController.place``, what ``POST api/place``
    runs) instead of re-deciding.  Three one-GPU nodes: ``x``, ``y`` of model m1 and ``o`` of
    model m2; ann may only have m1 (her limits), though her request allows both.

    1. ann is admitted on an m1 node; someone's claim then takes 40 GiB there, so the ticket's
       assignment no longer fits: the placer asks.  bob's admitted (promised, no claim yet)
       server holds the other m1 node: the service answers "no room", and the pin is refused
       (the placer alone would have taken the promised room or the excluded m2 GPU).
    2. bob's ticket is released: asked again, the service places ann on that m1 node.
    3. Her pin goes stale (a claim takes its room before her pod is bound); the first intruder
       is gone: the re-pin asks the service, which answers the first m1 node, never ``o``.
    """
    m1, m2 = model("ask1"), model("ask2")
    nodes = seen(placer, gpu_nodes({"nodes": [
        gpu_spec("x", m1, "80Gi", 1), gpu_spec("y", m1, "80Gi", 1), gpu_spec("o", m2, "80Gi", 1),
    ]}))
    names = {n.name.rsplit("-", 1)[-1]: n.name for n in nodes}
    service_view = KubeClusterInventory.start(cluster.api, timeout=60)
    try:
        controller = AdmissionController(
            Store(f"sqlite:///{tmp_path}/admission.sqlite"), service_view,
            policy_from_dict({"users": {"ann": {"allowed_models": [m1]}}}),
            rounding=claimed_request)
        wait_until(lambda: {names["x"], names["y"], names["o"]}
                   <= {n.name for n in service_view.nodes()}, 30, "the service's nodes")
        asked: list[str] = []

        def ask(prefer_node: str, refuted: tuple[tuple[str, int], ...] = ()
                ) -> dict[str, Any]:
            asked.append(prefer_node)
            return controller.place("ann", "", "hub", prefer_node, refuted)

        req = SliceRequest(gpu_memory_mib=50 * GIB, allowed_models=frozenset({m1, m2}))
        ticket = controller.admit(User("ann"), "", req, "hub")
        assert ticket.state == "admitted" and ticket.assignment is not None
        first = ticket.assignment["node"]
        second = names["y"] if first == names["x"] else names["x"]
        _intrude(placer, namespace, gpu_nodes.selector, "intruder1", first, 40)

        def counted(node: str) -> bool:
            return any(a.node == node and sum(a.gpu_memory_mib) > 0
                       for a in service_view.foreign_assignments())

        wait_until(lambda: counted(first), 60, "the service to see the first intruder")
        bob = controller.admit(User("bob"), "", SliceRequest(
            gpu_memory_mib=50 * GIB, allowed_models=frozenset({m1})), "hub")
        assert bob.state == "admitted" and (bob.assignment or {})["node"] == second
        prefer = Assignment(first, (0,), (50 * GIB,), 0, 0)
        with pytest.raises(PlacementRefused):  # 1. no room for ann, as the service sees it
            placer.pin(namespace, "ann", req, hub_server="ann/", prefer=prefer, ask=ask)
        # told that first is taken, then asked again without the hint (nothing fit around it)
        assert asked == ["", ""]
        assert placer.inventory.claim(namespace, claim_name("ann")) is None
        assert controller.release("bob", "", "hub")  # 2. bob's promise is gone
        pin = placer.pin(namespace, "ann", req, hub_server="ann/", prefer=prefer, ask=ask)
        assert pin.placement is not None and pin.placement.node == second
        assert controller.status("ann", "").assignment["node"] == second  # type: ignore[index]
        # 3. the pin goes stale before the pod is bound; the first node is free again
        _intrude(placer, namespace, gpu_nodes.selector, "intruder2", second, 40)
        placer.api.delete("pods", "intruder1", namespace, grace_seconds=0)
        placer.api.delete("resourceclaims", "intruder1-gpu", namespace)
        wait_until(lambda: placer.status(namespace, "ann").phase == "stale", 60, "ann stale")
        wait_until(lambda: counted(second) and not counted(first), 60,
                   "the service to see the intruders move")
        created = placer.api.create("pods", pin.pod(pod(req, gpu_nodes.selector)), namespace)
        placer.adopt(pin, "ann", created["metadata"]["uid"])
        new = placer.repin(namespace, "ann", "test", req, ask=ask)
        assert new is not None and new.placement is not None
        assert new.placement.node == first and new.placement.attempt == 2
        assert asked[-1] in ("", second)  # asked, preferring the pod's node if it had one
        assert controller.status("ann", "").assignment["node"] == first  # type: ignore[index]
        wait_until(lambda: placer.status(namespace, "ann").phase == "running", 90, "ann Running")
        (res,) = allocation(placer.api, namespace, "ann")
        assert res["pool"] == first and res["consumedCapacity"] == {"memory": "50Gi"}
        assert names["o"] not in {first, second}
    finally:
        service_view.stop()


def test_corrupt_foreign_and_vanishing_devices_are_skipped(
    cluster: TestCluster, namespace: str, gpu_nodes: GpuNodes, placer: Placer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    m = model("bad")
    good, victim = seen(placer, gpu_nodes({"nodes": [gpu_spec("ok", m, "80Gi", 1),
                                                     gpu_spec("vanish", m, "80Gi", 2)]}))
    api = placer.api
    caplog.set_level(logging.WARNING, logger="aispike_hub.kube.inventory")
    # A node whose slice lost the uuid of one device, and one that reuses another GPU's uuid.
    bad_gpus = (Gpu(0, m, 80 * GIB, uuid="GPU-missing"),
                Gpu(1, m, 80 * GIB, uuid=good.gpus[0].uuid))
    (bad,) = gpu_nodes({"nodes": [{"name": "bad", "cpu": "32", "memory": "256Gi"}]})
    corrupt = resource_slice(bad.name, bad_gpus)
    del corrupt["spec"]["devices"][0]["attributes"]["uuid"]
    api.create("resourceslices", corrupt)
    # A slice and a claim of another driver.
    foreign = resource_slice(bad.name, (Gpu(0, m, 80 * GIB, uuid="GPU-foreign"),))
    foreign["metadata"]["name"] = f"{bad.name}-other"
    foreign["spec"]["driver"] = "gpu.example.com"
    api.create("resourceslices", foreign)
    other_claim = dra_burst.competitor_claim("foreign-claim", 8)
    other_claim["spec"]["devices"]["requests"][0]["exactly"]["deviceClassName"] = "nope.example"
    api.create("resourceclaims", other_claim, namespace)
    try:
        wait_until(lambda: "no uuid attribute" in caplog.text, 30, "warning about the slice")
        wait_until(lambda: "published more than once" in caplog.text
                   or placer.inventory.state() is not None, 30, "duplicate warning")
        # The foreign slice's event may come after the others (a loaded machine): waited for.
        wait_until(lambda: "driver 'gpu.example.com'" in caplog.text, 30,
                   "warning about the other driver's slice")
        placer.inventory.state()
        assert "published more than once" in caplog.text
        # Nothing is pinned to the uuid-less device, the ambiguous uuid or the foreign one.
        pins = []
        for i in range(3):
            req = SliceRequest(gpu_memory_mib=50 * GIB, allowed_models=frozenset({m}))
            try:
                pins.append(placer.pin(namespace, f"p{i}", req))
            except PlacementRefused:
                break
        uuids = {p.placement.gpus[0].uuid for p in pins if p.placement}
        assert uuids <= {g.uuid for g in victim.gpus}, uuids
        assert len(pins) == 2
        # A device vanishes under a pin: the pin is stale, re-pinning avoids the missing GPU.
        target = next(p for p in pins if p.placement)
        assert target.placement is not None
        lost = target.placement.gpus[0]
        keep = tuple(g for g in victim.gpus if g.uuid != lost.uuid)
        slice_now = api.get("resourceslices", resource_slice_name(victim.name))
        replacement = resource_slice(victim.name, keep, generation=2)
        replacement["metadata"]["resourceVersion"] = slice_now["metadata"]["resourceVersion"]
        api.request("PUT", f"/apis/resource.k8s.io/v1/resourceslices/{victim.name}"
                    f"-gpu.aispike.io", body=replacement)
        wait_until(lambda: "no longer published" in placer.inventory.stale_reason(
            namespace, target.claim), 30, "pin on the vanished GPU reported stale")
        placer.release(namespace, next(p for p in pins if p is not target).server)
        new = placer.repin(namespace, target.server, "device vanished")
        assert new is not None and new.placement is not None
        assert new.placement.gpus[0].uuid == keep[0].uuid
    finally:
        for name in (resource_slice_name(bad.name), f"{bad.name}-other"):
            with contextlib.suppress(ApiException):
                api.delete("resourceslices", name)


def test_owner_reference_shape_is_accepted(
    cluster: TestCluster, namespace: str, gpu_nodes: GpuNodes, placer: Placer
) -> None:
    m = model("own")
    seen(placer, gpu_nodes({"nodes": [gpu_spec("o", m, "80Gi", 1)]}))
    req = SliceRequest(gpu_memory_mib=4 * GIB, allowed_models=frozenset({m}))
    p = placer.pin(namespace, "own", req)
    created = placer.api.create("pods", p.pod(pod(req, gpu_nodes.selector)), namespace)
    placer.adopt(p, "own", created["metadata"]["uid"])
    claim = placer.api.get("resourceclaims", p.claim, namespace)
    assert claim["metadata"]["ownerReferences"] == [
        owner_reference("own", created["metadata"]["uid"])
    ]


def test_a_disowned_claim_outlives_its_old_pod(
    cluster: TestCluster, namespace: str, gpu_nodes: GpuNodes, placer: Placer
) -> None:
    """KubeSpawner replacing a server's pod inside a start (its 409 retry): the spawner disowns
    the claim before the old pod goes, so kube-controller-manager's garbage collector leaves
    it for the new pod.  The control: an owned claim is collected with its pod."""
    m = model("dis")
    seen(placer, gpu_nodes({"nodes": [gpu_spec("d", m, "80Gi", 1)]}))
    req = SliceRequest(gpu_memory_mib=4 * GIB, allowed_models=frozenset({m}))
    pins = {}
    for name in ("kept", "owned"):
        pins[name] = p = placer.pin(namespace, name, req)
        created = placer.api.create("pods", p.pod(pod(req, gpu_nodes.selector)), namespace)
        placer.adopt(p, name, created["metadata"]["uid"])
    placer.disown(pins["kept"])
    assert "ownerReferences" not in placer.api.get(
        "resourceclaims", pins["kept"].claim, namespace)["metadata"]
    placer.disown(pins["kept"])  # twice: nothing to take away, no error
    for name in ("kept", "owned"):
        placer.api.delete("pods", name, namespace, grace_seconds=0)

    def collected(name: str) -> bool:
        try:
            placer.api.get("resourceclaims", pins[name].claim, namespace)
        except ApiException as e:
            return e.status == 404
        return False

    wait_until(lambda: collected("owned"), 60, "the owned claim collected with its pod")
    assert not collected("kept")


def test_burst_with_competitors_and_a_restart(
    cluster: TestCluster, namespace: str, gpu_nodes: GpuNodes
) -> None:
    servers = int(os.environ.get("AISPIKE_BURST_SERVERS", "40"))
    n_nodes = int(os.environ.get("AISPIKE_BURST_NODES", "4"))
    competitors = int(os.environ.get("AISPIKE_BURST_COMPETITORS", "8"))
    m = model("burst")
    gpu_nodes(dra_burst.burst_nodes_spec(n_nodes, m))
    started = time.monotonic()
    try:
        report = dra_burst.run_burst(cluster.api, namespace, gpu_nodes.selector, m,
                                     servers=servers, nodes=n_nodes, competitors=competitors,
                                     timeout=240)
        service = dra_burst.last_service()
        api = service.placer.api
        print(f"\n[burst] {servers} servers, {n_nodes} nodes, {competitors} competitors in "
              f"{time.monotonic() - started:.1f} s: {dict(report.outcome)}, "
              f"pins {report.pins}, re-pins {report.repins}, handed over {report.handed_over}, "
              f"refusals {report.reasons}")
        assert dra_burst.overcommitted_devices(api) == {}
        assert max(dra_burst.claims_per_server(api, namespace).values()) == 1
        placed = [n for n in report.requests if n not in report.refused]
        assert report.running_after == len(placed), report.outcome
        assert dra_burst.pinned_where_allocated(api, namespace, placed) == []
        assert report.competitors_running > 0
        assert report.handed_over > 0
        # Every refusal was right: it still does not fit in the final cluster.
        for name, req in report.refused.items():
            assert not service.placer.preview(req).placed, (name, report.reasons[name])
    finally:
        dra_burst.stop_services()
