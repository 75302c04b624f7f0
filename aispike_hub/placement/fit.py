"""Does an earlier placement decision still fit?  One rule for every place that re-checks one.

The AISpike service decides a server's placement at admission; by the time a spawner pins it
(the Kubernetes placer's claim, or the local spawner's held GPUs) other servers may have
started, a GPU may have vanished, or the request may differ from the one decided.  Both pin the
service's decision only while :func:`still_fits` holds, and otherwise decide again.
"""

from __future__ import annotations

from collections.abc import Iterable

from aispike_hub.model import Assignment, SliceRequest
from aispike_hub.placement.state import ClusterState, OverCommitError


def misfit(state: ClusterState, assignment: Assignment, request: SliceRequest) -> str:
    """Why ``assignment`` (an earlier decision) no longer serves ``request`` in ``state``;
    ``''`` when it still does.

    It serves when its node is placeable in ``state``, its GPUs are the request's number and
    exist on that node, each GPU's model is allowed and takes exactly the request's memory on
    it, its CPU and RAM are the request's (:func:`mismatch`), and all of that is free in
    ``state`` right now.  ``state`` is left as it was.
    """
    return mismatch(state, assignment, request) or _taken(state, assignment)


def mismatch(state: ClusterState, assignment: Assignment, request: SliceRequest) -> str:
    """Why ``assignment`` does not have the shape of ``request`` on the nodes of ``state`` (its
    node, GPUs, models, memory per GPU, CPU and RAM), whatever is free; ``''`` when it has.
    An assignment that has the shape but not the room (:func:`misfit` says why) is a *taken
    room*: the only kind of refutation worth telling admission (:func:`leave_out_gpus`)."""
    if assignment.node not in state.node_index:
        return f"node {assignment.node} is not placeable"
    if len(assignment.gpu_indices) != request.gpu_count:
        return (f"{len(assignment.gpu_indices)} GPUs decided, "
                f"{request.gpu_count} requested")
    node = state.nodes[state.node_index[assignment.node]]
    by_index = {g.index: g for g in node.gpus}
    for index, mib in zip(assignment.gpu_indices, assignment.gpu_memory_mib, strict=True):
        gpu = by_index.get(index)
        if gpu is None:
            return f"GPU {index} of {assignment.node} is gone"
        if not request.allows_model(gpu.model):
            return f"GPU {index} of {assignment.node} is a {gpu.model}, not an allowed model"
        if mib != request.gpu_demand_mib(gpu):
            return (f"{mib} MiB decided on GPU {index} of {assignment.node}, "
                    f"{request.gpu_demand_mib(gpu)} MiB requested")
    if assignment.cpu_milli != request.cpu_milli or assignment.memory_mib != request.memory_mib:
        return "the CPU or RAM decided differs from the request"
    return ""


def _taken(state: ClusterState, assignment: Assignment) -> str:
    """Why the room of ``assignment`` (of the right shape) is not free in ``state``."""
    n = state.node_index[assignment.node]
    room = int(state.anonymous_room()[n])
    try:
        state.commit(assignment)
    except OverCommitError as e:
        return f"no longer free: {e}"
    after = int(state.anonymous_room()[n])
    state.release(assignment)
    if after < 0 and after < room:
        return (f"no longer free: {assignment.node} must keep {int(state.anon_gpus[n])} idle "
                "GPUs for workloads outside AISpike")
    return ""


def still_fits(state: ClusterState, assignment: Assignment, request: SliceRequest) -> bool:
    """True when ``assignment`` still serves ``request`` in ``state`` (see :func:`misfit`)."""
    return not misfit(state, assignment, request)


def leave_out_gpus(state: ClusterState, gpus: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
    """Take every free MiB of each GPU ``(node, gpu index)`` in ``state``, so that the next
    decision on ``state`` places nothing there; the GPUs left out (unknown ones are skipped).

    Why: the hub's placer refuted admission's answer because its own view sees that room taken
    (a claim the service's watch has not seen yet).  Asking again with the same view would get
    the same answer; leaving the refuted GPUs out of that one decision places around them at
    once.  Conservative: a GPU wrongly left out only costs this decision a choice, and
    ``state`` is admission's per-call copy.
    """
    done: list[tuple[str, int]] = []
    for node, index in gpus:
        n = state.node_index.get(node)
        if n is None:
            continue
        try:
            slot = state.slot_of(n, index)
        except OverCommitError:
            continue
        free = int(state.gpu_free[n, slot])
        if free > 0:
            state.commit(Assignment(node, (index,), (free,)))
        done.append((node, index))
    return done
