"""A fresh place for an admitted server: the pure parts of admission's re-decision.

Why its own module: the AISpike service decides where a server goes (docs/architecture.md,
"Who owns placement").  When the hub's placer cannot pin that decision any more (it no longer
``still_fits`` the placer's view, or the pin went stale before kube-scheduler allocated it), the
placer asks admission again (``POST api/place``, or :meth:`InProcessAdmission.place`) instead
of deciding on its own.  The controller answers under its lock with the helpers here, so a
re-decision sees the queue's promises and the user's restricted GPU models, exactly like the
first one.  Nothing here does I/O.

- :func:`placed_request`: the request as placement must see it: narrowed to the models the
  user's limits allow, and its memory rounded as the device's policy will hold it;
- :func:`single_node_state`: one node of a state with the same free room (a re-pin that keeps
  the pod on its node);
- :func:`place_preferring`: place, trying ``prefer_node`` first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from aispike_hub.kube.claims import claimed_mib
from aispike_hub.model import GIB_IN_MIB, Assignment, SliceRequest
from aispike_hub.placement.engine import Decision, PlacementEngine
from aispike_hub.placement.state import ClusterState
from aispike_hub.quota import Limits, restrict_request

__all__ = ["NO_ALLOWED_MODEL", "Rounding", "claimed_request", "place_preferring",
           "placed_request", "single_node_state"]

Rounding = Callable[[SliceRequest], SliceRequest]
"""The device's rounding of a request (:func:`claimed_request` for the DRA driver)."""


def claimed_request(request: SliceRequest) -> SliceRequest:
    """``request`` as a ResourceClaim of our DRA driver will hold it: a memory slice rounded up
    to whole GiB (:func:`aispike_hub.kube.claims.claimed_mib`, the device's request policy).
    The hub's placer pins this, and admission places this when the hub uses claims."""
    if request.gpu_memory_mib and request.gpu_memory_mib % GIB_IN_MIB:
        return replace(request, gpu_memory_mib=claimed_mib(request.gpu_memory_mib))
    return request


def placed_request(request: SliceRequest, limits: Limits, rounding: Rounding | None = None
                   ) -> SliceRequest | None:
    """``request`` as placement must see it: restricted to the models ``limits`` allow, then
    rounded by ``rounding`` (``None``: as asked), so the decision is what the claim will hold
    and a spawner that pins it finds it still fits.  ``None`` when the user may use none of
    the GPU models the request allows (:func:`aispike_hub.quota.restrict_request`): nothing
    to place."""
    restricted = restrict_request(request, limits)
    if restricted is None:
        return None
    return rounding(restricted) if rounding is not None else restricted


NO_ALLOWED_MODEL = "none of the GPU models this request allows is one its user may use"
"""Placement's reason when :func:`placed_request` is ``None`` (the quota check refuses such a
request with the user's own sentence; this is what the placement side says)."""


def single_node_state(state: ClusterState, node: str) -> ClusterState | None:
    """A one-node copy of ``state`` with the same free room (to re-pin without moving the pod);
    ``None`` when ``node`` is not placeable in ``state``."""
    n = state.node_index.get(node)
    if n is None:
        return None
    one = ClusterState([state.nodes[n]])
    slots = [s for s in range(state.width) if state.gpu_exists[n, s]]
    used = Assignment(
        node,
        tuple(int(state.gpu_index[n, s]) for s in slots),
        tuple(int(state.gpu_cap[n, s] - state.gpu_free[n, s]) for s in slots),
        int(state.cpu_cap[n] - state.cpu_free[n]),
        int(state.mem_cap[n] - state.mem_free[n]),
    )
    one.commit(used)
    return one


def place_preferring(engine: PlacementEngine, state: ClusterState, request: SliceRequest,
                     owner: str, prefer_node: str = "",
                     local_engine: PlacementEngine | None = None) -> Decision:
    """The engine's decision for ``request`` on ``state``, on ``prefer_node`` when it fits there
    (a pending pod stays where it is), else anywhere.  ``local_engine`` decides the one-node
    state (scorers cache a model per state object; default: ``engine``)."""
    if prefer_node:
        local = single_node_state(state, prefer_node)
        if local is not None:
            decision = (local_engine or engine).place(local, request, owner=owner)
            if decision.placed:
                return decision
    return engine.place(state, request, owner=owner)
