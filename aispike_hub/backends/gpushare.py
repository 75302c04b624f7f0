"""``gpushare``: Aliyun's gpushare device plugin; a slice is ``aliyun.com/gpu-mem`` (GiB, or
MiB with ``gpushare_unit = "MiB"``); whole GPUs are refused (one GPU per server); pure."""

from __future__ import annotations

from aispike_hub.backends.base import BackendError, GpuBackend, GpuResources, slice_gib
from aispike_hub.contract import GPUSHARE_MEMORY_RESOURCE
from aispike_hub.model import SliceRequest
from aispike_hub.units import GIB_IN_MIB


class GpushareBackend(GpuBackend):
    """GPU-memory slices as ``aliyun.com/gpu-mem`` (scheduling only; no enforcement)."""

    name = "gpushare"
    description = "aliyun.com/gpu-mem"

    def slice_resources(self, request: SliceRequest) -> GpuResources:
        slice_mib, gib = slice_gib(request)
        if not slice_mib:
            raise BackendError("the gpushare backend gives one GPU's memory per server; "
                               "ask for one GPU with a memory size")
        amount = gib if self.options.gpushare_unit == "GiB" else slice_mib
        return GpuResources({GPUSHARE_MEMORY_RESOURCE: str(amount)}, gib * GIB_IN_MIB)

    def quota_hard(self, servers: int | None, gpus: int | None,
                   gpu_memory_mib: int | None) -> dict[str, str]:
        if gpu_memory_mib is None:
            return {}
        # The quota is in GiB whatever the plugin's unit (as before; see docs/quotas.md).
        return {f"requests.{GPUSHARE_MEMORY_RESOURCE}": str(gpu_memory_mib // GIB_IN_MIB)}
