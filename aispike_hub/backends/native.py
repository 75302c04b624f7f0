"""``aispike``: our DRA driver; a server's slice is its pinned ResourceClaim; pure.

The claim itself is built by :mod:`aispike_hub.kube.claims` and pinned by
:class:`aispike_hub.kube.placer.Placer`; the container gets no extended resources.  In a user
namespace's ResourceQuota the claims are counted, and the devices of our DeviceClass (a slice is
one device; Kubernetes 1.36 quotas count devices, not consumed capacity, so GPU memory has no
namespace limit here).
"""

from __future__ import annotations

from aispike_hub.backends.base import GpuBackend, GpuResources, slice_gib
from aispike_hub.contract import CLAIMS_QUOTA, DEVICES_QUOTA
from aispike_hub.isolation_env import compute_share_env
from aispike_hub.model import SliceRequest


class AISpikeBackend(GpuBackend):
    """GPU-memory slices as consumable capacity of our DRA driver's devices."""

    name = "aispike"
    uses_claims = True
    description = ("our DRA driver, a pinned ResourceClaim per server "
                   "(Kubernetes >= 1.34)")

    def slice_resources(self, request: SliceRequest) -> GpuResources:
        return GpuResources({}, slice_gib(request)[0])

    def quota_hard(self, servers: int | None, gpus: int | None,
                   gpu_memory_mib: int | None) -> dict[str, str]:
        hard: dict[str, str] = {}
        if servers is not None:
            hard[CLAIMS_QUOTA] = str(servers)
        if gpus is not None:
            hard[DEVICES_QUOTA] = str(gpus)
        return hard

    def compute_share_env(self, percent: int) -> dict[str, str]:
        """``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`` (enforced only under an MPS daemon)."""
        return compute_share_env(percent)
