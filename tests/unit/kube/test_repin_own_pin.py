"""A re-pin never counts the server's own earlier pin, and a claim released by the spawner is
never taken for the server's current one (issue 26 item 6, issue 21).

The CI flake: on a 4-GPU node holding one 8 GiB slice, a 2-GPU server's pod was seen before its
claim (two watch threads), so the placer judged the pin "missing" and re-pinned it, and the
re-pin was refused "most idle on one node: 1": the earlier pin's own hold still counted.  Here
the real :class:`Inventory` (its ledger fed plain event dicts) and :class:`Placer` run against
a small in-memory API.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from aispike_hub.kube import inventory
from aispike_hub.kube.claims import claim_name
from aispike_hub.kube.placer import Placer
from aispike_hub.kube.slices import resource_slice
from aispike_hub.model import GIB_IN_MIB, Gpu, SliceRequest

NS = "hub"
GPUS = tuple(Gpu(i, "A100", 80 * GIB_IN_MIB, uuid=f"GPU-{i}", nvlink_domain=f"nvl{i // 2}")
             for i in range(4))
PAIR = SliceRequest(gpu_count=2, cpu_milli=1000)
SMALL = SliceRequest(gpu_memory_mib=8 * GIB_IN_MIB)


class MemoryApi:
    """Just what the placer calls: create, get, delete (claims and pods), merge_patch."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.uids = itertools.count(1)

    def create(self, kind: str, body: dict[str, Any], namespace: str = "") -> dict[str, Any]:
        key = (kind, body["metadata"]["name"])
        if key in self.objects:
            raise ApiException(status=409, reason="AlreadyExists")
        obj = {**body, "metadata": {**body["metadata"], "namespace": namespace,
                                    "uid": f"uid-{next(self.uids)}", "resourceVersion": "1"}}
        self.objects[key] = obj
        return obj

    def get(self, kind: str, name: str, namespace: str = "") -> dict[str, Any]:
        try:
            return self.objects[(kind, name)]
        except KeyError:
            raise ApiException(status=404, reason="NotFound") from None

    def delete(self, kind: str, name: str, namespace: str = "", **_kw: Any) -> None:
        if self.objects.pop((kind, name), None) is None:
            raise ApiException(status=404, reason="NotFound")

    def merge_patch(self, kind: str, name: str, patch: dict[str, Any],
                    namespace: str = "") -> dict[str, Any]:
        obj = self.get(kind, name, namespace)
        obj["metadata"].update(patch.get("metadata") or {})
        return obj


@pytest.fixture
def placer() -> Placer:
    inv = inventory.Inventory(api_client=None)
    inv._apply("nodes", "ADDED", {
        "metadata": {"name": "n0"}, "spec": {},
        "status": {"allocatable": {"cpu": "32", "memory": "256Gi"},
                   "conditions": [{"type": "Ready", "status": "True"}]}})
    inv._apply("resourceslices", "ADDED", {**resource_slice("n0", GPUS)})
    p = Placer(inv)
    p.api = inv.api = MemoryApi()  # type: ignore[assignment]
    return p


def _pending_pod(placer: Placer, server: str) -> None:
    placer.inventory._apply("pods", "ADDED", {
        "metadata": {"name": server, "namespace": NS, "uid": f"pod-{server}"},
        "spec": {"containers": [{"name": "notebook"}],
                 "resourceClaims": [{"name": "gpu", "resourceClaimName": claim_name(server)}]},
        "status": {"phase": "Pending"}})


def _idle(placer: Placer) -> int:
    with placer.inventory.lock:
        state = placer.inventory.state()
        assert state is not None
        return int((state.gpu_free == state.gpu_cap).sum())


def test_a_pod_seen_before_its_claim_is_not_re_pinned(placer: Placer) -> None:
    placer.pin(NS, "small", SMALL)
    first = placer.pin(NS, "pair", PAIR)
    _pending_pod(placer, "pair")  # the pod's event came first; the claim's is still on its way
    assert placer.status(NS, "pair").phase == "missing"
    assert placer.repin(NS, "pair", "claim missing", PAIR) is None  # nothing to re-pin
    assert placer.repins == 0 and _idle(placer) == 1  # the first pin still holds its GPUs
    assert first.placement is not None and len(first.placement.gpus) == 2


def test_a_re_pin_of_a_claim_really_gone_does_not_count_its_own_earlier_pin(
        placer: Placer) -> None:
    placer.pin(NS, "small", SMALL)
    first = placer.pin(NS, "pair", PAIR)
    _pending_pod(placer, "pair")
    placer.api.delete("resourceclaims", claim_name("pair"), NS)  # gone before we saw it
    again = placer.repin(NS, "pair", "claim missing", PAIR)
    # Before the fix: PlacementRefused("no node has 2 idle GPUs ... (most idle on one node: 1)")
    assert again is not None and again.placement is not None
    assert again.placement.whole and len(again.placement.gpus) == 2
    assert first.placement is not None
    assert {g.index for g in again.placement.gpus} == {g.index for g in first.placement.gpus}
    assert _idle(placer) == 1  # counted once, not twice


def test_a_released_claim_lingering_in_the_watch_is_not_reused_by_the_next_pin(
        placer: Placer) -> None:
    old = placer.pin(NS, "s", SMALL)
    claim = placer.api.get("resourceclaims", claim_name("s"), NS)
    placer.inventory._apply("resourceclaims", "ADDED", claim)
    placer.release(NS, "s")
    # A late event of the old claim (its deletion started, the finalizer still on) arrives.
    placer.inventory._apply("resourceclaims", "MODIFIED", {
        **claim, "metadata": {**claim["metadata"], "deletionTimestamp": "2026-01-01T00:00:00Z",
                              "resourceVersion": "2"}})
    assert placer.inventory.claim(NS, claim_name("s")) is None
    new = placer.pin(NS, "s", SMALL)
    assert placer.pins == 2 and new.placement is not None and old.placement is not None
    made = placer.api.get("resourceclaims", claim_name("s"), NS)
    assert made["metadata"]["uid"] != claim["metadata"]["uid"]  # a claim of its own
