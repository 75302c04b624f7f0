"""What a placement on Kubernetes writes: the :class:`Pin`, and the two ways placing fails.

Why its own module: :mod:`aispike_hub.kube.placer` (the flow) and :mod:`aispike_hub.kube.repin`
(re-pinning a stale pin) both make pins and raise these errors; here they depend on neither.
All names stay importable from :mod:`aispike_hub.kube.placer`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aispike_hub.kube.claims import Placement, apply_pin_to_pod
from aispike_hub.model import GIB_IN_MIB, SliceRequest


class PlacementRefused(Exception):
    """Nothing fits (or admission refused): ``reasons`` say why, for the spawn progress page."""

    def __init__(self, reasons: Sequence[str], message: str = "") -> None:
        self.reasons = tuple(reasons)
        super().__init__(message or "; ".join(self.reasons))


class PlacementFailed(Exception):
    """The pin went stale more often than
    :attr:`aispike_hub.kube.placer.Placer.max_repins` allows."""


@dataclass(frozen=True, slots=True)
class Pin:
    """A server's placement as written to the cluster: its claim and where it points."""

    namespace: str
    server: str
    claim: str
    """Name of the server's ResourceClaim ('' for a CPU-only server: nothing to pin)."""
    placement: Placement | None
    request: SliceRequest
    candidates: int = 0

    def pod(self, manifest: Mapping[str, Any], container: str = "") -> dict[str, Any]:
        """``manifest`` with the claim, the node affinity and the server label added."""
        pod = apply_pin_to_pod(manifest, self.server, self.placement, container)
        pod.setdefault("metadata", {})["name"] = self.server
        return pod

    def describe(self) -> str:
        """One line for the spawn progress page."""
        p = self.placement
        if p is None:
            return "CPU-only server: kube-scheduler picks the node"
        gpus = ", ".join(
            f"GPU {g.index}" + ("" if p.whole else f" ({g.memory_mib / GIB_IN_MIB:g} GiB)")
            for g in p.gpus
        )
        return f"placed on {p.node}: {gpus} (best of {self.candidates} candidates)"
