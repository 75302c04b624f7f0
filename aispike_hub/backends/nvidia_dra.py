"""``nvidia-dra``: NVIDIA's DRA driver (``gpu.nvidia.com``); whole GPUs pinned by uuid; pure.

A cluster that keeps NVIDIA's driver gets our placement (packing, topology by PCIe root, quotas)
over its devices: :mod:`aispike_hub.kube.nvidia_slices` reads the driver's ResourceSlices into
our node model and builds a claim of NVIDIA's DeviceClass whose CEL selector names the uuids
placement chose, so kube-scheduler allocates exactly those GPUs.

What it refuses, and why: NVIDIA's driver publishes whole GPUs (and MIG devices) without
consumable capacity, so one GPU cannot be shared *by memory* through it.  Its sharing
strategies (MPS, time-slicing) are per-claim configs that let the containers of one claim share
a GPU; they do not bound each user's memory, so a memory slice on this backend is refused with
that reason (ask for whole GPUs, or use the ``aispike`` backend for memory slices, or ``mig``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aispike_hub.backends.base import BackendError, GpuBackend, GpuResources, slice_gib
from aispike_hub.contract import NVIDIA_DEVICE_CLASS, NVIDIA_DRIVER
from aispike_hub.kube import nvidia_slices
from aispike_hub.model import Gpu, SliceRequest

REFUSED_SLICE = (
    f"NVIDIA's DRA driver ({NVIDIA_DRIVER}) gives whole GPUs and MIG devices only: it publishes "
    "no consumable memory, and its MPS/time-slicing sharing does not bound each user's memory, "
    "so a {gib} GiB slice cannot be held for you; ask for a whole GPU (memory slices need the "
    "'aispike' or 'mig' backend)")
"""Why a memory slice is refused here (``{gib}`` is the slice asked for)."""


class NvidiaDraBackend(GpuBackend):
    """Whole GPUs of NVIDIA's DRA driver, pinned by uuid; memory slices refused."""

    name = "nvidia-dra"
    description = f"NVIDIA's DRA driver ({NVIDIA_DRIVER}), whole GPUs pinned by uuid"
    device_class: str = NVIDIA_DEVICE_CLASS
    """The DeviceClass its claims name."""

    def slice_resources(self, request: SliceRequest) -> GpuResources:
        """No extended resources (the GPUs come in the pinned claim); a slice is refused."""
        slice_mib, gib = slice_gib(request)
        if slice_mib:
            raise BackendError(REFUSED_SLICE.format(gib=gib))
        return GpuResources({}, 0)

    def pinned_claim(self, name: str, gpus: Sequence[Gpu],
                     labels: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The claim that pins exactly ``gpus`` (see :func:`nvidia_slices.pinned_claim`)."""
        return nvidia_slices.pinned_claim(name, gpus, labels=labels)
