"""``nvidia``: NVIDIA's device plugin; whole ``nvidia.com/gpu`` only, so a slice takes a whole
GPU (the user is told); pure."""

from __future__ import annotations

from aispike_hub.backends.base import GpuBackend, GpuResources, slice_gib
from aispike_hub.contract import NVIDIA_GPU_RESOURCE
from aispike_hub.model import SliceRequest


class NvidiaBackend(GpuBackend):
    """Whole GPUs; no slicing."""

    name = "nvidia"
    description = "whole nvidia.com/gpu (a slice takes a whole GPU)"

    def slice_resources(self, request: SliceRequest) -> GpuResources:
        slice_mib, gib = slice_gib(request)
        if not slice_mib:
            return GpuResources({NVIDIA_GPU_RESOURCE: str(request.gpu_count)}, 0)
        return GpuResources({NVIDIA_GPU_RESOURCE: "1"}, 0,
                            f"this cluster gives whole GPUs: the {gib} GiB slice is a whole GPU")

    def quota_hard(self, servers: int | None, gpus: int | None,
                   gpu_memory_mib: int | None) -> dict[str, str]:
        return {} if gpus is None else {f"requests.{NVIDIA_GPU_RESOURCE}": str(gpus)}
