"""``mig``: NVIDIA MIG instances; a slice is ``nvidia.com/mig-<profile>: 1`` for the smallest
profile that holds it, k whole GPUs are ``nvidia.com/gpu: k``; pure."""

from __future__ import annotations

import re
from collections.abc import Sequence

from aispike_hub.backends.base import (
    DEFAULT_MIG_PROFILES,
    BackendError,
    GpuBackend,
    GpuResources,
    slice_gib,
)
from aispike_hub.contract import MIG_RESOURCE_PREFIX, NVIDIA_GPU_RESOURCE
from aispike_hub.model import SliceRequest
from aispike_hub.units import MIB

_MIG_PROFILE = re.compile(r"^([1-7])g\.([0-9]+)gb$")


def mig_profile_for(gib: int, profiles: Sequence[str] = DEFAULT_MIG_PROFILES) -> str:
    """The smallest MIG profile with at least ``gib`` GiB (fewest compute slices on ties)."""
    best: tuple[int, int, str] | None = None
    sizes = []
    for p in profiles:
        m = _MIG_PROFILE.match(p)
        if not m:
            raise BackendError(f"{p!r} is not a MIG profile name like '1g.10gb'")
        size, slices = int(m.group(2)), int(m.group(1))
        sizes.append(size)
        if size >= gib and (best is None or (size, slices) < best[:2]):
            best = (size, slices, p)
    if best is None:
        raise BackendError(f"no MIG profile has {gib} GiB (largest: {max(sizes, default=0)} "
                           "GiB); ask for less, or for a whole GPU")
    return best[2]


class MigBackend(GpuBackend):
    """GPU-memory slices rounded up to a MIG instance (hardware isolation)."""

    name = "mig"
    description = "the smallest nvidia.com/mig-<profile> that holds the slice"

    def slice_resources(self, request: SliceRequest) -> GpuResources:
        slice_mib, gib = slice_gib(request)
        if not slice_mib:
            return GpuResources({NVIDIA_GPU_RESOURCE: str(request.gpu_count)}, 0)
        profile = mig_profile_for(gib, self.options.mig_profiles)
        size = int(profile.split(".")[1].removesuffix("gb"))
        note = "" if size == gib else f"MIG profile {profile}: {size} GB for the {gib} GiB asked"
        # MIG sizes are decimal GB: the granted MiB is what the instance really has.
        return GpuResources({MIG_RESOURCE_PREFIX + profile: "1"}, size * 10**9 // MIB, note)
