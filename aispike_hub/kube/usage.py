"""The usage rules: what each ResourceClaim and Pod holds of the cluster (pure, no I/O).

A claim or pod turns into :class:`Usage`: the :class:`~aispike_hub.model.Assignment` s it takes,
and whether that is the scheduler's fact (``hard``: an allocation, a bound pod) or our own promise
(``soft``: a pin not yet allocated), which gives way when a fact contradicts it.  Devices are
located through a :class:`DeviceIndex` built from the published ResourceSlices; the ledger
(:mod:`aispike_hub.kube.ledger`) commits the usage into the placement state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aispike_hub.kube.objects import ClaimInfo, PodInfo
from aispike_hub.model import Assignment


@dataclass(frozen=True, slots=True)
class DeviceIndex:
    """Where each published device is: (pool, device) and uuid -> (node, GPU index, MiB)."""

    by_device: Mapping[tuple[str, str], tuple[str, int, int]]
    by_uuid: Mapping[str, tuple[str, int, int]]


@dataclass(frozen=True, slots=True)
class Usage:
    """What one claim or pod takes: assignments, and whether the scheduler already decided it.

    ``hard`` usage (an allocation, a bound pod) is the scheduler's fact; ``soft`` usage (our pin
    not yet allocated) is our promise, and gives way when a fact contradicts it (the pin is stale).
    """

    assignments: tuple[Assignment, ...]
    hard: bool
    problems: tuple[str, ...] = ()


def claim_usage(claim: ClaimInfo, devices: DeviceIndex, bound_pod: bool) -> Usage:
    """GPU memory (and, before its pod is bound, CPU/RAM) that ``claim`` takes.

    Allocated: each result on one of our devices takes its ``consumedCapacity.memory`` (the whole
    device when none is recorded).  Ours and not allocated: the pinned GPUs take the pinned MiB.
    CPU and RAM of our placement count until a bound pod uses the claim (then the pod counts).
    """
    problems: list[str] = []
    cpu = mem = 0
    if claim.ours and claim.placement is not None and not bound_pod:
        cpu, mem = claim.placement.cpu_milli, claim.placement.memory_mib
    if claim.is_allocated:
        per_node: dict[str, dict[int, int]] = {}
        for dev in claim.allocated:
            where = devices.by_device.get((dev.pool, dev.device))
            if where is None:
                problems.append(
                    f"claim {claim.key}: allocated device {dev.pool}/{dev.device} is not published"
                )
                continue
            node, index, cap = where
            gpus = per_node.setdefault(node, {})
            gpus[index] = gpus.get(index, 0) + (cap if dev.memory_mib is None else dev.memory_mib)
        if claim.ours and claim.placement is not None and claim.placement.node not in per_node:
            per_node.setdefault(claim.placement.node, {})
        out = tuple(
            Assignment(node, tuple(g), tuple(g.values()),
                       cpu if claim.placement and node == claim.placement.node else 0,
                       mem if claim.placement and node == claim.placement.node else 0,
                       claim.key)
            for node, g in per_node.items()
        )
        return Usage(out, True, tuple(problems))
    if not claim.ours or claim.placement is None or claim.deleting:
        return Usage((), False, tuple(problems))
    p = claim.placement
    for g in p.gpus:
        where = devices.by_uuid.get(g.uuid)
        if where is None or where[0] != p.node or where[1] != g.index:
            problems.append(f"claim {claim.key}: pinned GPU {g.uuid} is no longer published"
                            f" on {p.node}")
    if problems:
        return Usage((), False, tuple(problems))
    pinned = p.assignment(claim.key)
    return Usage((Assignment(pinned.node, pinned.gpu_indices, pinned.gpu_memory_mib, cpu, mem,
                             claim.key),), False)


def pod_usage(pod: PodInfo) -> Usage:
    """CPU and RAM a bound, unfinished pod takes on its node."""
    if not pod.counts or (pod.cpu_milli == 0 and pod.memory_mib == 0):
        return Usage((), True)
    return Usage((Assignment(pod.node, (), (), pod.cpu_milli, pod.memory_mib, pod.key),), True)

