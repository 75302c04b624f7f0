"""The AISpike service on the real control plane: admission counts what Kubernetes holds.

The service's controller reads the cluster through the Kubernetes inventory (ResourceSlices,
ResourceClaims, Nodes, Pods via list+watch): another workload's un-pinned DRA claim, allocated by
the real kube-scheduler, takes room; a hub server's pinned claim and pod (annotated
``aispike.io/hub-server``) are counted as that server's, not twice; a restarted service (new
inventory, same store) gives the same answers; and a queued request is admitted when the other
workload leaves.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from aispike_hub.admission.controller import AdmissionController
from aispike_hub.admission.wire import assignment_from_dict
from aispike_hub.kube.api import KubeJson
from aispike_hub.kube.claims import HUB_SERVER_ANNOTATION, claim_name
from aispike_hub.kube.inventory import Inventory
from aispike_hub.kube.placer import Placer
from aispike_hub.model import GIB_IN_MIB, SliceRequest
from aispike_hub.quota import User, policy_from_dict
from aispike_hub.service.kube_inventory import KubeClusterInventory
from aispike_hub.service.store import Store

from . import dra_burst
from .conftest import GpuNodes, TestCluster, wait_until

GIB = GIB_IN_MIB


def other_workload(api: KubeJson, namespace: str, name: str, gib: int,
                   selector: dict[str, str]) -> None:
    """A claim of our driver with no pin and a pod using it: kube-scheduler allocates it."""
    api.create("resourceclaims", dra_burst.competitor_claim(name, gib), namespace)
    pod = dra_burst.pod_manifest(SliceRequest(cpu_milli=250, memory_mib=512), selector)
    pod["metadata"] = {"name": name, "labels": {"app": "competitor"}}
    pod["spec"]["resourceClaims"] = [{"name": "gpu", "resourceClaimName": name}]
    pod["spec"]["containers"][0]["resources"]["claims"] = [{"name": "gpu"}]
    api.create("pods", pod, namespace)


def allocated(api: KubeJson, namespace: str, claim: str) -> dict[str, Any] | None:
    status = api.get("resourceclaims", claim, namespace).get("status") or {}
    results = ((status.get("allocation") or {}).get("devices") or {}).get("results") or []
    return results[0] if results else None


def gpu_used_mib(inv: KubeClusterInventory, node: str) -> int:
    used = 0
    for a in inv.foreign_assignments():
        if a.node == node:
            used += sum(a.gpu_memory_mib)
    for held in inv.server_assignments().values():
        used += sum(sum(a.gpu_memory_mib) for a in held if a.node == node)
    return used


def test_admission_counts_other_workloads_and_real_pins_and_survives_a_restart(
    cluster: TestCluster, namespace: str, gpu_nodes: GpuNodes, tmp_path: Path
) -> None:
    model = f"TEST-svc-{secrets.token_hex(3)}"
    (node,) = gpu_nodes({"nodes": [{"name": "svc", "cpu": "32", "memory": "128Gi",
                                    "gpus": [{"model": model, "memory": "80Gi", "count": 1}]}]})
    api = KubeJson(cluster.api)
    other_workload(api, namespace, "other", 60, gpu_nodes.selector)
    wait_until(lambda: allocated(api, namespace, "other") is not None, 90,
               "kube-scheduler to allocate the other workload's claim")

    def request(gib: int) -> SliceRequest:
        return SliceRequest(gpu_memory_mib=gib * GIB, allowed_models=frozenset({model}),
                            cpu_milli=500, memory_mib=GIB)

    store_url = f"sqlite:///{tmp_path}/service.sqlite"
    policy = policy_from_dict({})
    alice = User("alice")
    inv = KubeClusterInventory.start(cluster.api)
    try:
        wait_until(lambda: gpu_used_mib(inv, node.name) == 60 * GIB, 30,
                   "the service's inventory to count the other workload's 60 GiB")
        assert node.name in {n.name for n in inv.nodes()}
        controller = AdmissionController(Store(store_url), inv, policy)

        # 80 GiB GPU, 60 GiB taken by someone else: 40 GiB waits, 16 GiB is admitted there.
        big = controller.admit(alice, "big", request(40), "test")
        assert big.state == "queued", big
        small = controller.admit(alice, "small", request(16), "test")
        assert small.state == "admitted" and small.assignment is not None, small
        promised = assignment_from_dict(small.assignment)
        assert promised.node == node.name and promised.gpu_memory_mib == (16 * GIB,)

        # The hub's placer pins exactly the service's decision and names the hub server.
        placer_inventory = Inventory(cluster.api).start()
        try:
            placer = Placer(placer_inventory)
            wait_until(lambda: (s := placer_inventory.state()) is not None
                       and node.name in s.node_index, 30, "the placer to see the node")
            pin = placer.pin(namespace, "nb-small", request(16), hub_server="alice/small",
                             prefer=promised)
            assert pin.placement is not None
            assert (pin.placement.node, pin.placement.gpus[0].index) == (
                promised.node, promised.gpu_indices[0])
            manifest = dra_burst.pod_manifest(request(16), gpu_nodes.selector)
            manifest["metadata"] = {"name": "nb-small",
                                    "annotations": {HUB_SERVER_ANNOTATION: "alice/small"}}
            api.create("pods", pin.pod(manifest), namespace)
            wait_until(lambda: allocated(api, namespace, claim_name("nb-small")) is not None,
                       90, "kube-scheduler to allocate the pinned claim")
        finally:
            placer_inventory.stop()

        def counted_as_alices() -> bool:
            held = inv.server_assignments().get("alice/small", ())
            return sum(sum(a.gpu_memory_mib) for a in held) == 16 * GIB
        wait_until(counted_as_alices, 30, "the pinned claim to count as alice/small's")
        assert gpu_used_mib(inv, node.name) == 76 * GIB  # not 92: the promise is not added

        def fits(gib: int, c: AdmissionController) -> bool:
            return bool(c.fit(alice, request(gib))["fits_now"])
        assert fits(4, controller) and not fits(5, controller)
        assert controller.status("alice", "big").state == "queued"
    finally:
        inv.stop()

    # A restarted service: a new inventory from the API server, the same store.
    inv = KubeClusterInventory.start(cluster.api)
    try:
        wait_until(lambda: gpu_used_mib(inv, node.name) == 76 * GIB, 30,
                   "the restarted service to count 60 + 16 GiB")
        controller = AdmissionController(Store(store_url), inv, policy)
        assert fits(4, controller) and not fits(5, controller)
        assert controller.status("alice", "big").state == "queued"

        # The other workload leaves: the queued 40 GiB is admitted on that GPU.
        api.delete("pods", "other", namespace)
        api.delete("resourceclaims", "other", namespace)
        wait_until(lambda: gpu_used_mib(inv, node.name) == 16 * GIB, 60,
                   "the other workload's claim to be freed")
        controller.process()
        big = controller.status("alice", "big")
        assert big.state == "admitted" and big.assignment is not None, big
        assert assignment_from_dict(big.assignment).node == node.name
    finally:
        inv.stop()
