"""The hub's placer asks admission instead of re-deciding (issue 18, docs/architecture.md).

The real :class:`Inventory` (its ledger fed plain event dicts) and :class:`Placer` against the
small in-memory API of ``test_repin_own_pin``, on two one-GPU nodes: ``a`` (an A100) and ``h``
(an H100).  ``ask`` stands for admission (the service's ``POST api/place`` or the in-process
controller): a recorded function answering a place document.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest
from unit.kube.test_repin_own_pin import NS, MemoryApi, _pending_pod

from aispike_hub.admission.wire import assignment_to_dict, request_to_dict
from aispike_hub.kube import inventory
from aispike_hub.kube.claims import claim_name
from aispike_hub.kube.placer import PlacementRefused, Placer
from aispike_hub.kube.slices import resource_slice
from aispike_hub.model import GIB_IN_MIB, Assignment, Gpu, SliceRequest

GIB = GIB_IN_MIB
A100, H100 = "A100", "H100"
SLICE = SliceRequest(gpu_memory_mib=8 * GIB)


def _node(inv: inventory.Inventory, name: str, model: str) -> None:
    inv._apply("nodes", "ADDED", {
        "metadata": {"name": name}, "spec": {},
        "status": {"allocatable": {"cpu": "32", "memory": "256Gi"},
                   "conditions": [{"type": "Ready", "status": "True"}]}})
    inv._apply("resourceslices", "ADDED",
               {**resource_slice(name, (Gpu(0, model, 80 * GIB, uuid=f"GPU-{name}"),))})


@pytest.fixture
def placer() -> Placer:
    inv = inventory.Inventory(api_client=None)
    _node(inv, "a", A100)
    _node(inv, "h", H100)
    p = Placer(inv)
    p.api = inv.api = MemoryApi()  # type: ignore[assignment]
    return p


def on(node: str, mib: int = 8 * GIB) -> Assignment:
    return Assignment(node, (0,), (mib,), 0, 0)


class Admission:
    """Answers ``ask(prefer_node)`` with ``assignment`` (None: nothing fits) for ``placed``."""

    def __init__(self, assignment: Assignment | None, placed: SliceRequest = SLICE,
                 error: str = "") -> None:
        self.assignment, self.placed, self.error = assignment, placed, error
        self.asked: list[str] = []

    def __call__(self, prefer_node: str) -> Mapping[str, Any]:
        self.asked.append(prefer_node)
        if self.error:
            raise PlacementRefused((self.error,))
        if self.assignment is None:
            return {"placed": False, "assignment": None, "request": None,
                    "reasons": ["no GPU has 8 GiB free"], "state": "admitted"}
        return {"placed": True, "assignment": assignment_to_dict(self.assignment),
                "request": request_to_dict(self.placed), "reasons": [], "state": "admitted"}


def _take(placer: Placer, node: str, name: str = "other-gpu") -> None:
    """Someone else's pin holds the whole GPU of ``node`` (seen by the placer, not admission)."""
    placer.inventory.hold(NS, name, Assignment(node, (0,), (80 * GIB,), 0, 0, owner=name))


def test_a_ticket_assignment_that_still_fits_is_pinned_without_asking(placer: Placer) -> None:
    ask = Admission(on("a"))
    pin = placer.pin(NS, "s", SLICE, prefer=on("h"), ask=ask)
    assert pin.placement is not None and pin.placement.node == "h"
    assert ask.asked == []


def test_an_assignment_that_no_longer_fits_is_placed_again_by_admission(placer: Placer) -> None:
    _take(placer, "h")
    ask = Admission(on("a"))
    pin = placer.pin(NS, "s", SLICE, prefer=on("h"), ask=ask)
    assert ask.asked == [""]
    assert pin.placement is not None and pin.placement.node == "a"


def test_admissions_answer_that_our_view_refutes_is_re_decided_within_the_users_models(
        placer: Placer) -> None:
    """Admission (not yet seeing someone's claim on the A100) answers the A100; the placer sees
    it taken and decides itself, but for the request as admission placed it: A100s only, so the
    free H100 is never chosen (the start is refused instead)."""
    _take(placer, "a")
    ask = Admission(on("a"), placed=SliceRequest(gpu_memory_mib=8 * GIB,
                                                 allowed_models=frozenset({A100})))
    with pytest.raises(PlacementRefused):
        placer.pin(NS, "s", SLICE, prefer=on("h", 4 * GIB), ask=ask)
    assert ask.asked == [""]
    # without the user's restriction the placer's own decision takes the H100
    free = Admission(on("a"))
    pin = placer.pin(NS, "t", SLICE, prefer=on("h", 4 * GIB), ask=free)
    assert pin.placement is not None and pin.placement.node == "h"


def test_an_unreachable_admission_fails_the_pin_closed(placer: Placer) -> None:
    _take(placer, "h")
    ask = Admission(on("a"), error="the AISpike service is not answering")
    with pytest.raises(PlacementRefused) as refused:
        placer.pin(NS, "s", SLICE, prefer=on("h"), ask=ask)
    assert refused.value.reasons == ("the AISpike service is not answering",)
    with pytest.raises(Exception, match=r"NotFound"):
        placer.api.get("resourceclaims", claim_name("s"), NS)  # no claim was made


@pytest.mark.parametrize(("ask", "reason"), [
    (Admission(None), "no GPU has 8 GiB free"),
    (Admission(on("a"), placed=SliceRequest(gpu_memory_mib=16 * GIB)), "different request"),
    (lambda _node: {"placed": True, "assignment": {"node": "a"}, "request": {}},
     "malformed"),
])
def test_admissions_refusal_or_a_wrong_answer_refuses_the_pin(
        placer: Placer, ask: Callable[[str], Mapping[str, Any]], reason: str) -> None:
    _take(placer, "h")
    with pytest.raises(PlacementRefused) as refused:
        placer.pin(NS, "s", SLICE, prefer=on("h"), ask=ask)
    assert reason in " ".join(refused.value.reasons)


def test_a_non_gib_slice_pins_admissions_rounded_decision_as_it_is(placer: Placer) -> None:
    """Admission places 1.5 GiB as the claim holds it (2 GiB): the placer keeps it."""
    ask = Admission(on("a"))
    request = SliceRequest(gpu_memory_mib=1536)
    pin = placer.pin(NS, "s", request, prefer=on("h", 2 * GIB), ask=ask)
    assert ask.asked == [] and pin.placement is not None and pin.placement.node == "h"
    # an unrounded decision (1536 MiB) cannot be pinned as it is: admission is asked again
    ask = Admission(on("a", 2 * GIB), placed=SliceRequest(gpu_memory_mib=1536))
    pin = placer.pin(NS, "t", request, prefer=on("h", 1536), ask=ask)
    assert ask.asked == [""] and pin.placement is not None and pin.placement.node == "a"


def test_a_stale_pin_is_re_pinned_where_admission_says(placer: Placer) -> None:
    first = placer.pin(NS, "s", SLICE, prefer=on("h"))
    assert first.placement is not None and first.placement.node == "h"
    _pending_pod(placer, "s")
    placer.api.delete("resourceclaims", claim_name("s"), NS)  # the pin is gone: re-pin
    ask = Admission(on("a"))
    again = placer.repin(NS, "s", "claim missing", SLICE, ask=ask)
    assert ask.asked == [""]  # the pod is not bound to a node: no node to keep
    assert again is not None and again.placement is not None and again.placement.node == "a"
    made = placer.api.get("resourceclaims", claim_name("s"), NS)
    assert made is not None
    # the service being down during a re-pin refuses it with the reason
    placer.api.delete("resourceclaims", claim_name("s"), NS)
    down = Admission(on("a"), error="the AISpike service is not answering")
    with pytest.raises(PlacementRefused, match="not answering"):
        placer.repin(NS, "s", "claim missing", SLICE, ask=down)
