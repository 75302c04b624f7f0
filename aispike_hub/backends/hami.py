"""``hami``: HAMi's device plugin; a slice is ``nvidia.com/gpu: 1`` + ``nvidia.com/gpumem``
in MiB, k whole GPUs are ``nvidia.com/gpu: k``; pure."""

from __future__ import annotations

from aispike_hub.backends.base import GpuBackend, GpuResources, slice_gib
from aispike_hub.contract import HAMI_CORES_RESOURCE, HAMI_MEMORY_RESOURCE, NVIDIA_GPU_RESOURCE
from aispike_hub.model import SliceRequest


class HamiBackend(GpuBackend):
    """GPU-memory slices as HAMi's ``nvidia.com/gpumem`` (enforced by HAMi-core)."""

    name = "hami"
    description = "nvidia.com/gpu + nvidia.com/gpumem (MiB)"

    def slice_resources(self, request: SliceRequest) -> GpuResources:
        slice_mib, _ = slice_gib(request)
        if not slice_mib:
            return GpuResources({NVIDIA_GPU_RESOURCE: str(request.gpu_count)}, 0)
        return GpuResources({NVIDIA_GPU_RESOURCE: "1", HAMI_MEMORY_RESOURCE: str(slice_mib)},
                            slice_mib)

    def quota_hard(self, servers: int | None, gpus: int | None,
                   gpu_memory_mib: int | None) -> dict[str, str]:
        hard: dict[str, str] = {}
        if gpus is not None:
            hard[f"requests.{NVIDIA_GPU_RESOURCE}"] = str(gpus)
        if gpu_memory_mib is not None:
            hard[f"requests.{HAMI_MEMORY_RESOURCE}"] = str(gpu_memory_mib)
        return hard

    def compute_share_limits(self, percent: int) -> dict[str, str]:
        """``nvidia.com/gpucores``: HAMi-core throttles the container's kernels to it."""
        if percent >= 100:
            return {}
        if percent < 1:
            raise ValueError(f"a compute share is 1..100 percent, got {percent}")
        return {HAMI_CORES_RESOURCE: str(percent)}
