"""This machine as a node spec: its GPUs (read by NVML, or a simulated inventory) and its size.

The local spawner (and the demo) describe the one machine they run on in the same node-spec
format the Kubernetes side uses (:mod:`aispike_hub.kube.nodespec`), so placement, the form and
the admin panel treat it like any other node.  ``"2x A100 80GB"`` is how a person writes a
simulated inventory for a first look on a machine without GPUs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from aispike_hub.contract import INVENTORY_LABEL
from aispike_hub.kube.nodespec import nodes_from_spec
from aispike_hub.model import Node
from aispike_hub.units import MIB

_GROUP = re.compile(
    r"^\s*(?:(\d+)\s*[x×]\s*)?(.+?)\s+(\d+(?:\.\d+)?)\s*(GB|GiB|G|Gi)\s*$", re.IGNORECASE)


class InventoryError(ValueError):
    """A simulated inventory that cannot be read; the message says how to write one."""


def parse_simulated(text: str) -> list[dict[str, Any]]:
    """GPU groups of a simulated inventory, in the node spec's format.

    ``"2x A100 80GB"`` -> ``[{"model": "A100 80GB", "memory": "80Gi", "count": 2}]``; several
    groups are separated by commas or "+" (``"2x A100 80GB + 1x T4 16GB"``).  The memory is the
    last number with a GB/GiB unit (GPU makers' GB are GiB).
    """
    groups = []
    for part in re.split(r"[,+]", text):
        if not part.strip():
            continue
        match = _GROUP.match(part)
        if match is None:
            raise InventoryError(
                f"cannot read {part.strip()!r} as GPUs: write e.g. '2x A100 80GB' (count, model, "
                "memory per GPU), several separated by '+'")
        count, model, memory, _unit = match.groups()
        gib = float(memory)
        if not 0 < gib <= 4096 or int(count or 1) < 1 or int(count or 1) > 64:
            raise InventoryError(f"{part.strip()!r}: 1-64 GPUs of 1-4096 GB each")
        groups.append({"model": f"{model.strip()} {memory}GB", "memory": f"{int(gib * 1024)}Mi",
                       "count": int(count or 1)})
    if not groups:
        raise InventoryError("the simulated inventory is empty: write e.g. '2x A100 80GB'")
    return groups


def machine_spec(node_name: str, cpu_milli: int, memory_mib: int, simulated: str = "",
                 gpus: Any = ()) -> dict[str, Any]:
    """This machine as a node spec (:mod:`aispike_hub.kube.nodespec`): simulated GPU groups,
    or the GPUs an NVML reading found (``gpus``: :class:`aispike_hub.model.Gpu`)."""
    if simulated:
        groups = parse_simulated(simulated)
    else:
        groups = [{"model": g.model, "memory": f"{g.memory_mib}Mi", "count": 1, "uuid": g.uuid,
                   "nvlinkDomain": g.nvlink_domain, "pcieSwitch": g.pcie_switch,
                   "numaNode": g.numa_node, "mig": g.mig_profile} for g in gpus]
    return {"nodes": [{
        "name": node_name, "cpu": f"{cpu_milli}m", "memory": f"{memory_mib}Mi",
        "labels": {INVENTORY_LABEL: "simulated" if simulated else "nvml"},
        "gpus": groups,
    }]}


def node_of_spec(spec: Mapping[str, Any]) -> Node:
    (only,) = nodes_from_spec(spec)
    return only.node


def describe_gpus(node: Node) -> str:
    """"2x A100 80GB" style summary of a node's GPUs."""
    counts: dict[str, int] = {}
    for g in node.gpus:
        counts[g.model] = counts.get(g.model, 0) + 1
    return " + ".join(f"{n}x {m}" for m, n in counts.items()) or "no GPU"


def machine_memory_mib() -> int:
    """This machine's RAM in MiB (16 GiB where the system does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) // MIB
    except (ValueError, OSError, AttributeError):
        return 16 * 1024
