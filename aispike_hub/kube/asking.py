"""The hub's placer asking admission for a place: the call's shape and the answer's check.

Admission (the AISpike service's ``POST api/place``, or the hub's in-process admission) is the
only decider in the product (docs/architecture.md, "Who owns placement"); the placer calls an
:data:`AskAdmission` from its thread and pins the answer only after :func:`ask_admission` has
checked that it is a place for *this* start's request.  Kept apart from
:mod:`aispike_hub.kube.placer` so the wire rule is readable (and testable) on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from aispike_hub.admission.replace import claimed_request
from aispike_hub.admission.wire import assignment_from_dict, request_from_dict
from aispike_hub.kube.pin import PlacementRefused
from aispike_hub.model import Assignment, SliceRequest

GpuRef = tuple[str, int]
"""``(node, gpu index)``: one GPU, as the placer tells admission which rooms its view refuted."""

AskAdmission = Callable[[str, tuple[GpuRef, ...]], Mapping[str, Any]]
"""``(prefer_node, refuted) -> admission's place answer`` for the server being pinned (the
service's ``POST api/place`` or the in-process admission's ``place``: ``placed``,
``assignment``, ``request``, ``reasons``).  ``refuted``: the GPUs of earlier answers (and of the
ticket's assignment) that the hub's view sees taken, which admission leaves out of this
decision.  Called from the placer's thread, outside the inventory lock; raises
:class:`PlacementRefused` with the reason when admission cannot be asked (fail closed)."""


class NotPlaced(PlacementRefused):
    """Admission answered, and placed nothing (not: could not be asked)."""


def ask_admission(ask: AskAdmission, prefer_node: str, request: SliceRequest,
                  refuted: tuple[GpuRef, ...] = ()) -> tuple[Assignment, SliceRequest]:
    """Admission's fresh place for this server and the request it placed (``request``
    narrowed to the user's GPU models, rounded as the claim holds it).

    Raises :class:`NotPlaced` with admission's reasons when it placed nothing (naming the
    ``refuted`` GPUs it was told to leave out), and :class:`PlacementRefused` when its answer is
    malformed or not for this request (a stale ticket)."""
    answer = ask(prefer_node, refuted)
    if not answer.get("placed") or not answer.get("assignment"):
        reasons = (tuple(str(r) for r in answer.get("reasons") or ())
                   or ("admission found no place for this server",))
        if refuted:
            gpus = ", ".join(f"{node} GPU {index}" for node, index in refuted)
            reasons += (f"admission left out {gpus}, which the hub sees taken",)
        raise NotPlaced(reasons)
    try:
        fresh = assignment_from_dict(answer["assignment"])
        placed = claimed_request(request_from_dict(answer.get("request")))
    except (KeyError, TypeError, ValueError) as e:
        raise PlacementRefused((f"admission answered a malformed place: {e}",)) from None
    if (replace(placed, allowed_models=request.allowed_models) != request
            or (request.allowed_models and not placed.allowed_models
                <= request.allowed_models)):
        raise PlacementRefused(("admission placed a different request than this start "
                                "asks; stop the server and start it again",))
    return fresh, placed


def where(a: Assignment) -> str:
    """``node n-1 GPU 0 (8192 MiB)``: an assignment in a reason users and admins read."""
    gpus = ", ".join(f"{i} ({mib} MiB)" for i, mib in zip(a.gpu_indices, a.gpu_memory_mib,
                                                         strict=True))
    return f"node {a.node}" + (f" GPU {gpus}" if gpus else "")
