"""Which GPUs of this node an allocated ResourceClaim got, and how much of each; pure.

The kubelet names a claim; its ``status.allocation`` names devices of our driver by pool and
device name and, for a slice, the ``consumedCapacity.memory``.  This node's ResourceSlice maps
each device to its GPU UUID and size.  The result (:class:`AllocatedGpu`) feeds the isolation
environment (:mod:`aispike_hub.isolation_env`) and the CDI spec (:mod:`aispike_hub.agent.cdi`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aispike_hub.contract import DRIVER, MEMORY_CAPACITY
from aispike_hub.kube.nodespec import quantity_bytes
from aispike_hub.units import MIB


class PrepareError(Exception):
    """A claim cannot be prepared; the message is what the kubelet reports in the pod's events."""


@dataclass(frozen=True, slots=True)
class SliceDevice:
    """One device of this node's ResourceSlice: what preparation needs of it."""

    pool: str
    name: str
    uuid: str
    memory_bytes: int


@dataclass(frozen=True, slots=True)
class AllocatedGpu:
    """One allocation result of our driver on this node, joined with its device."""

    request: str
    pool: str
    device: str
    uuid: str
    limit_bytes: int
    """The claim's ``consumedCapacity.memory`` on this device; the whole device when absent."""
    total_bytes: int
    share_id: str = ""

    @property
    def limit_mib(self) -> int:
        return self.limit_bytes // MIB


def node_devices(
    slices: Iterable[Mapping[str, Any]], node: str
) -> dict[tuple[str, str], SliceDevice]:
    """(pool, device name) -> device, for our driver's ResourceSlices of ``node``."""
    out: dict[tuple[str, str], SliceDevice] = {}
    for s in slices:
        spec = s.get("spec") or {}
        if spec.get("driver") != DRIVER or spec.get("nodeName") != node:
            continue
        pool = str((spec.get("pool") or {}).get("name", ""))
        for d in spec.get("devices") or []:
            uuid = ((d.get("attributes") or {}).get("uuid") or {}).get("string", "")
            memory = ((d.get("capacity") or {}).get(MEMORY_CAPACITY) or {}).get("value", "0")
            if uuid:
                out[(pool, str(d["name"]))] = SliceDevice(
                    pool, str(d["name"]), str(uuid), quantity_bytes(memory)
                )
    return out


def allocated_gpus(
    claim: Mapping[str, Any], devices: Mapping[tuple[str, str], SliceDevice]
) -> list[AllocatedGpu]:
    """This node's GPUs of an allocated claim, in allocation order.

    Raises :class:`PrepareError` when the claim is not allocated or names a device of our driver
    that this node's slice does not have (a stale claim, or a slice that was replaced).
    """
    meta = claim.get("metadata") or {}
    where = f"ResourceClaim {meta.get('namespace', '')}/{meta.get('name', '')}"
    allocation = (claim.get("status") or {}).get("allocation")
    if not allocation:
        raise PrepareError(f"{where} is not allocated yet; the scheduler allocates it first")
    out: list[AllocatedGpu] = []
    for result in (allocation.get("devices") or {}).get("results") or []:
        if result.get("driver") != DRIVER:
            continue
        key = (str(result.get("pool", "")), str(result.get("device", "")))
        device = devices.get(key)
        if device is None:
            raise PrepareError(
                f"{where} was allocated device {key[1]} of pool {key[0]}, which this node's "
                f"ResourceSlice does not have; delete the claim so it is allocated again"
            )
        consumed = (result.get("consumedCapacity") or {}).get(MEMORY_CAPACITY)
        limit = quantity_bytes(consumed) if consumed else device.memory_bytes
        out.append(
            AllocatedGpu(
                request=str(result.get("request", "")),
                pool=key[0],
                device=key[1],
                uuid=device.uuid,
                limit_bytes=min(limit, device.memory_bytes) if device.memory_bytes else limit,
                total_bytes=device.memory_bytes,
                share_id=str(result.get("shareID") or ""),
            )
        )
    if not out:
        raise PrepareError(f"{where} has no device of driver {DRIVER}")
    return out


def reserved_pods(claim: Mapping[str, Any]) -> list[str]:
    """UIDs of the pods a claim is reserved for (``status.reservedFor``)."""
    return [
        str(r["uid"])
        for r in (claim.get("status") or {}).get("reservedFor") or []
        if r.get("resource") == "pods" and r.get("uid")
    ]
