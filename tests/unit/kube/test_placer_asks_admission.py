"""The hub's placer asks admission instead of re-deciding (issue 18, docs/architecture.md).

The real :class:`Inventory` (its ledger fed plain event dicts) and :class:`Placer` against the
small in-memory API of ``test_repin_own_pin``, on two one-GPU nodes: ``a`` (an A100) and ``h``
(an H100).  ``ask`` stands for admission (the service's ``POST api/place`` or the in-process
controller): a recorded function answering a place document.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from unit.kube.test_repin_own_pin import NS, MemoryApi, _pending_pod

from aispike_hub.admission.wire import assignment_to_dict, request_to_dict
from aispike_hub.kube import inventory
from aispike_hub.kube.claims import claim_name
from aispike_hub.kube.placer import PlacementRefused, Placer
from aispike_hub.kube.slices import resource_slice
from aispike_hub.model import GIB_IN_MIB, Assignment, Gpu, SliceRequest
from aispike_hub.placement.fit import still_fits

GIB = GIB_IN_MIB
A100, H100 = "A100", "H100"
SLICE = SliceRequest(gpu_memory_mib=8 * GIB)


def _node(inv: inventory.Inventory, name: str, model: str) -> None:  # one 80 GiB GPU
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
    _node(inv, "b", A100)
    p = Placer(inv, ask_pause_seconds=0)
    p.api = inv.api = MemoryApi()  # type: ignore[assignment]
    return p


def on(node: str, mib: int = 8 * GIB) -> Assignment:
    return Assignment(node, (0,), (mib,), 0, 0)


class Admission:
    """Answers ``ask(prefer_node, refuted)`` with ``assignment`` (None: nothing fits) for
    ``placed``; ``refuted`` records what each ask told admission the hub's view refutes."""

    def __init__(self, assignment: Assignment | None, placed: SliceRequest = SLICE,
                 error: str = "") -> None:
        self.assignment, self.placed, self.error = assignment, placed, error
        self.asked: list[str] = []
        self.refuted: list[tuple[tuple[str, int], ...]] = []

    def __call__(self, prefer_node: str, refuted: tuple[tuple[str, int], ...] = ()
                 ) -> Mapping[str, Any]:
        self.asked.append(prefer_node)
        self.refuted.append(refuted)
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
    (lambda _node, _refuted=(): {"placed": True, "assignment": {"node": "a"}, "request": {}},
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


# -- admission is the only decider: the cases, for a first pin and a re-pin -------------------


class Answers:
    """Admission answering one place per ask, in order (``None``: nothing fits; a ``str``: it
    cannot be asked, that reason)."""

    def __init__(self, *answers: Assignment | str | None) -> None:
        self.answers, self.asked = list(answers), 0

        self.refuted: list[tuple[tuple[str, int], ...]] = []

    def __call__(self, _prefer_node: str, refuted: tuple[tuple[str, int], ...] = ()
                 ) -> Mapping[str, Any]:
        answer = self.answers[min(self.asked, len(self.answers) - 1)]
        self.asked += 1
        self.refuted.append(refuted)
        if isinstance(answer, str):
            raise PlacementRefused((answer,))
        return Admission(answer)(_prefer_node)


# (case, rooms others hold that admission does not see, admission's answers,
#  expected node or the refusal's words, asks expected)
CASES = [
    ("the view agrees: the ticket's assignment is pinned unasked", (), (on("a"),), "h", 0),
    ("the assignment is stale: admission re-places", ("h",), (on("a"),), "a", 1),
    ("admission's answer is stale in our view: asked again, re-placed", ("h", "a"),
     (on("a"), on("b")), "b", 2),
    ("the views keep disagreeing: refused after the bound", ("h", "a"),
     (on("a"), on("a"), on("a")), "the two views still disagree", 3),
    # a pin tells admission that h is taken; nothing fits around it, so it asks once more
    # without the hint (its own view may be the stale one); a re-pin has nothing to refute
    ("admission refuses", ("h",), (None,), "no GPU has 8 GiB free", {"pin": 2, "repin": 1}),
    ("admission is unreachable", ("h",), ("the AISpike service is not answering",),
     "not answering", 1),
]


def _pin_or_repin(placer: Placer, how: str, taken: tuple[str, ...], ask: Answers) -> Any:
    """A first pin preferring the ticket's ``h``, or a re-pin of a pin on ``h`` whose claim is
    gone (a re-pin has no ticket assignment to keep: it always asks).  ``taken``: rooms
    others then hold, seen by the placer and not by admission."""
    if how == "repin":
        first = placer.pin(NS, "s", SLICE, prefer=on("h"))  # fits: pinned as it is
        assert first.placement is not None and first.placement.node == "h"
        _pending_pod(placer, "s")
        placer.api.delete("resourceclaims", claim_name("s"), NS)
    for node in taken:
        _take(placer, node, f"other-{node}")
    if how == "pin":
        return placer.pin(NS, "s", SLICE, prefer=on("h"), ask=ask)
    return placer.repin(NS, "s", "claim missing", SLICE, ask=ask)


@pytest.mark.parametrize("how", ["pin", "repin"])
@pytest.mark.parametrize(("case", "taken", "answers", "expected", "asks"), CASES,
                         ids=[c[0] for c in CASES])
def test_admission_is_the_only_decider(
        placer: Placer, how: str, case: str, taken: tuple[str, ...],
        answers: tuple[Assignment | str | None, ...], expected: str,
        asks: int | dict[str, int]) -> None:
    """The placer pins only the ticket's assignment or an answer of admission; where its view
    refutes them it asks again (at most ``ask_attempts`` times) and then fails closed: it
    never picks a free room itself (``b`` is free in every case)."""
    ask = Answers(*answers)
    if isinstance(asks, dict):
        asks = asks[how]
    if how == "repin" and not taken:
        expected, asks = "a", 1  # a re-pin always asks: the ticket's room is its stale pin
    answered = {a.node for a in answers if isinstance(a, Assignment)}
    if expected in ("h", "a", "b"):
        pin = _pin_or_repin(placer, how, taken, ask)
        assert pin is not None and pin.placement is not None
        assert pin.placement.node == expected
        assert expected in answered or (expected == "h" and how == "pin")
        assert placer.api.get("resourceclaims", claim_name("s"), NS)["metadata"]
    else:
        with pytest.raises(PlacementRefused) as refused:
            _pin_or_repin(placer, how, taken, ask)
        assert expected in " ".join(refused.value.reasons)
        with pytest.raises(ApiException):  # no claim was made
            placer.api.get("resourceclaims", claim_name("s"), NS)
        with placer.inventory.lock:  # nothing of this server is held: b stays whole
            state = placer.inventory.state()
            assert state is not None
            assert still_fits(state, Assignment("b", (0,), (80 * GIB,), 0, 0),
                              SliceRequest(gpu_memory_mib=80 * GIB))
    assert ask.asked == asks


def test_the_refusal_names_both_sides(placer: Placer) -> None:
    _take(placer, "h")
    placer.ask_attempts = 2
    with pytest.raises(PlacementRefused) as refused:
        placer.pin(NS, "s", SLICE, prefer=on("h"), ask=Answers(on("h")))
    (reason,) = refused.value.reasons
    assert reason.startswith("admission placed hub/s-gpu on node h GPU 0 (8192 MiB), "
                             "but the hub sees that room taken (no longer free"), reason
    assert "asked 2 times" in reason


# -- the product path: every pin and re-pin asks; nothing runs the placer's reconcile -----------

PACKAGE = Path(__file__).resolve().parents[3] / "aispike_hub"
FLOW = {"pin", "repin", "start_server"}
INTERNAL = {"kube/placer.py", "kube/repin.py"}  # the placer itself (and its reconcile)


def _flow_calls(tree: ast.AST) -> list[ast.Call]:
    """Calls of a placer's pin/repin/start_server, direct or through ``functools.partial``."""
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        target = node.func
        if isinstance(target, ast.Name | ast.Attribute) and getattr(
                target, "id", getattr(target, "attr", "")) == "partial" and node.args:
            target = node.args[0]
        if isinstance(target, ast.Attribute) and target.attr in FLOW:
            out.append(node)
    return out


def test_every_product_pin_and_repin_asks_admission() -> None:
    calls: dict[str, list[bool]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = str(path.relative_to(PACKAGE))
        if rel in INTERNAL:
            continue
        for call in _flow_calls(ast.parse(path.read_text(), rel)):
            calls.setdefault(rel, []).append(any(k.arg == "ask" for k in call.keywords))
    assert calls.get("spawner/kube_start.py") == [True, True], calls  # pin, repin
    assert all(all(asks) for asks in calls.values()), calls


def test_nothing_in_the_product_runs_the_placers_own_reconcile() -> None:
    runs = [str(p.relative_to(PACKAGE)) for p in sorted(PACKAGE.rglob("*.py"))
            if str(p.relative_to(PACKAGE)) not in INTERNAL
            and re.search(r"placer\w*\.reconcile\b", p.read_text())]
    assert runs == []


@pytest.mark.parametrize(("how", "told"), [
    # a pin: the ticket's h is taken in our view (told at once), then admission's a
    ("pin", [(("h", 0),), (("h", 0), ("a", 0))]),
    # a re-pin: its stale pin is no room of admission's answer; then admission's a
    ("repin", [(), (("a", 0),)]),
])
def test_each_ask_tells_admission_the_gpus_our_view_refuted(
        placer: Placer, how: str, told: list[tuple[tuple[str, int], ...]]) -> None:
    ask = Answers(on("a"), on("b"))
    pin = _pin_or_repin(placer, how, ("h", "a"), ask)
    assert pin.placement is not None and pin.placement.node == "b"
    assert ask.refuted == told


def test_a_misfit_of_another_shape_is_not_told_as_a_taken_room(placer: Placer) -> None:
    """The ticket's 1536 MiB on h is free but not what the claim holds (whole GiB): h is not
    taken, so admission is not told to avoid it."""
    ask = Admission(on("h", 2 * GIB), placed=SliceRequest(gpu_memory_mib=2 * GIB))
    pin = placer.pin(NS, "t", SliceRequest(gpu_memory_mib=1536), prefer=on("h", 1536), ask=ask)
    assert pin.placement is not None and pin.placement.node == "h"
    assert ask.refuted == [()]


class AroundRefuted:
    """Admission that honours ``refuted``: the first of ``nodes`` whose GPU 0 is not refuted
    (blind to every room the placer sees taken)."""

    def __init__(self, *nodes: str) -> None:
        self.nodes, self.refuted = nodes, list[tuple[tuple[str, int], ...]]()

    def __call__(self, _prefer_node: str, refuted: tuple[tuple[str, int], ...] = ()
                 ) -> Mapping[str, Any]:
        self.refuted.append(refuted)
        free = [n for n in self.nodes if (n, 0) not in refuted]
        return Admission(on(free[0]) if free else None)(_prefer_node)


def test_told_what_was_refuted_admission_converges_in_one_ask(placer: Placer) -> None:
    """The ticket's h and admission's own first choice a are taken in the hub's view: told
    ``h`` with the first ask, admission answers ``a``; told ``a`` too, ``b``.  Without the
    hint it would answer ``a`` every time and the pin would fail after ``ask_attempts``."""
    _take(placer, "h")
    _take(placer, "a", "other-a")
    ask = AroundRefuted("a", "b")
    pin = placer.pin(NS, "s", SLICE, prefer=on("h"), ask=ask)
    assert pin.placement is not None and pin.placement.node == "b"
    assert ask.refuted == [(("h", 0),), (("h", 0), ("a", 0))]


def test_when_nothing_fits_around_what_was_refuted_it_asks_without_the_hint(
        placer: Placer) -> None:
    """Our view may be the stale one: once admission finds nothing around the refuted GPUs,
    the next ask goes without them; past ``ask_attempts`` the refusal names what was left
    out and why."""
    _take(placer, "h")
    ask = AroundRefuted("h")  # admission sees only h, and h free
    with pytest.raises(PlacementRefused) as refused:
        placer.pin(NS, "s", SLICE, prefer=on("h"), ask=ask)
    assert ask.refuted == [(("h", 0),), (), (("h", 0),)]
    assert "admission left out h GPU 0, which the hub sees taken" in refused.value.reasons


def test_an_answer_on_a_node_the_hub_does_not_see_warns_about_the_settings(
        placer: Placer, caplog: pytest.LogCaptureFixture) -> None:
    """The service selects other nodes than the hub (a different ``Inventory.node_selector``):
    every answer is refuted, and the log says which setting to align."""
    with caplog.at_level("WARNING", logger="aispike_hub.kube.placer"), \
            pytest.raises(PlacementRefused):
        placer.pin(NS, "s", SLICE, prefer=on("elsewhere"), ask=Answers(on("elsewhere")))
    assert "give the hub and the AISpike service the same Inventory settings" in caplog.text
