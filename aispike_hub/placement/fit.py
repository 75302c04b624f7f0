"""Does an earlier placement decision still fit?  One rule for every place that re-checks one.

The AISpike service decides a server's placement at admission; by the time a spawner pins it
(the Kubernetes placer's claim, or the local spawner's held GPUs) other servers may have
started, a GPU may have vanished, or the request may differ from the one decided.  Both pin the
service's decision only while :func:`still_fits` holds, and otherwise decide again.
"""

from __future__ import annotations

from aispike_hub.model import Assignment, SliceRequest
from aispike_hub.placement.state import ClusterState, OverCommitError


def misfit(state: ClusterState, assignment: Assignment, request: SliceRequest) -> str:
    """Why ``assignment`` (an earlier decision) no longer serves ``request`` in ``state``;
    ``''`` when it still does.

    It serves when its node is placeable in ``state``, its GPUs are the request's number and
    exist on that node, each GPU's model is allowed and takes exactly the request's memory on
    it, its CPU and RAM are the request's, and all of that is free in ``state`` right now.
    ``state`` is left as it was.
    """
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
