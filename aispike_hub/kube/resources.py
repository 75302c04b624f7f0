"""A notebook server's GPU slice in the words of each backend; pure builders, no I/O.

The native backend ``aispike`` expresses the slice as the server's pinned ResourceClaim
(:mod:`aispike_hub.kube.claims`); the others, for clusters without DRA consumable capacity,
as extended resources on the notebook container (``DESIGN.md``, "Other backends"):

| backend | one slice of N GiB | k whole GPUs |
|---|---|---|
| ``hami`` | ``nvidia.com/gpu: 1``, ``nvidia.com/gpumem: N*1024`` (MiB) | ``nvidia.com/gpu: k`` |
| ``gpushare`` | ``aliyun.com/gpu-mem: N`` (GiB, or MiB with unit "MiB") | refused (one GPU) |
| ``mig`` | ``nvidia.com/mig-<profile>: 1``, smallest profile >= N GiB | ``nvidia.com/gpu: k`` |
| ``nvidia`` | ``nvidia.com/gpu: 1`` (the whole GPU) | ``nvidia.com/gpu: k`` |

Also here: the GPU model as a required node affinity (non-native backends: the placement is
kube-scheduler's), the locality preference for nodes caching the image and datasets, dataset
volumes and the notebook's environment.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aispike_hub.kube.slices import GPU_MODEL_LABEL, NVIDIA_GPU_RESOURCE, label_value
from aispike_hub.model import GIB_IN_MIB, Node, SliceRequest

BACKENDS = ("aispike", "hami", "gpushare", "mig", "nvidia")

HAMI_MEMORY_RESOURCE = "nvidia.com/gpumem"
GPUSHARE_MEMORY_RESOURCE = "aliyun.com/gpu-mem"
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"
DEFAULT_MIG_PROFILES = ("1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb")
"""MIG profiles of an A100/H100 80GB, smallest first."""

_MIG_PROFILE = re.compile(r"^([1-7])g\.([0-9]+)gb$")


class BackendError(ValueError):
    """The request cannot be expressed on this backend (the message says what to ask for)."""


@dataclass(frozen=True, slots=True)
class GpuResources:
    """What a backend adds to the notebook container, and what the user actually gets."""

    limits: Mapping[str, str]
    granted_mib: int
    """GPU memory per GPU the server gets (0 when only the device knows: whole GPUs)."""
    note: str = ""
    """Told to the user when the backend rounds the request (e.g. a whole GPU for a slice)."""


def mig_profile_for(gib: int, profiles: Sequence[str] = DEFAULT_MIG_PROFILES) -> str:
    """The smallest MIG profile with at least ``gib`` GiB (fewest compute slices on ties)."""
    best: tuple[int, int, str] | None = None
    for p in profiles:
        m = _MIG_PROFILE.match(p)
        if not m:
            raise BackendError(f"{p!r} is not a MIG profile name like '1g.10gb'")
        size, slices = int(m.group(2)), int(m.group(1))
        if size >= gib and (best is None or (size, slices) < best[:2]):
            best = (size, slices, p)
    if best is None:
        largest = max((int(_MIG_PROFILE.match(p).group(2)) for p in profiles  # type: ignore[union-attr]
                       if _MIG_PROFILE.match(p)), default=0)
        raise BackendError(f"no MIG profile has {gib} GiB (largest: {largest} GiB); "
                           "ask for less, or for a whole GPU")
    return best[2]


def gpu_resources(
    backend: str,
    request: SliceRequest,
    *,
    mig_profiles: Sequence[str] = DEFAULT_MIG_PROFILES,
    gpushare_unit: str = "GiB",
) -> GpuResources:
    """Container resource limits of ``request`` on ``backend`` (empty for ``aispike``)."""
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    k = request.gpu_count
    if k == 0 or backend == "aispike":
        return GpuResources({}, request.gpu_memory_mib if k == 1 else 0)
    slice_mib = request.gpu_memory_mib if k == 1 else 0
    gib = -(-slice_mib // GIB_IN_MIB)
    if not slice_mib:  # whole GPUs
        if backend == "gpushare":
            raise BackendError("the gpushare backend gives one GPU's memory per server; "
                               "ask for one GPU with a memory size")
        return GpuResources({NVIDIA_GPU_RESOURCE: str(k)}, 0)
    if backend == "hami":
        return GpuResources({NVIDIA_GPU_RESOURCE: "1", HAMI_MEMORY_RESOURCE: str(slice_mib)},
                            slice_mib)
    if backend == "gpushare":
        amount = gib if gpushare_unit == "GiB" else slice_mib
        return GpuResources({GPUSHARE_MEMORY_RESOURCE: str(amount)}, gib * GIB_IN_MIB)
    if backend == "mig":
        profile = mig_profile_for(gib, mig_profiles)
        size = int(profile.split(".")[1].removesuffix("gb"))
        note = "" if size == gib else f"MIG profile {profile}: {size} GB for the {gib} GiB asked"
        return GpuResources({MIG_RESOURCE_PREFIX + profile: "1"}, size * 1000 * 1000 * 1000
                            // (1 << 20), note)
    return GpuResources({NVIDIA_GPU_RESOURCE: "1"}, 0,
                        f"this cluster gives whole GPUs: the {gib} GiB slice is a whole GPU")


def model_affinity(models: Iterable[str], label: str = GPU_MODEL_LABEL) -> dict[str, Any] | None:
    """A required node-selector term keeping the pod on nodes of the allowed GPU models."""
    values = sorted({label_value(m) for m in models})
    if not values:
        return None
    return {"matchExpressions": [{"key": label, "operator": "In", "values": values}]}


MAX_LOCALITY_TERMS = 32
"""Preferred-affinity terms at most: a node field selector takes one node name per term."""


def locality_preference(
    nodes: Iterable[Node], image: str, datasets: Sequence[str], weight: int = 50
) -> list[dict[str, Any]]:
    """Preferred node-affinity terms for nodes that already cache the image and datasets.

    Nodes holding more of what would otherwise be pulled come first: those with everything get
    the full ``weight``; if none has everything, those with the most bytes cached get it.  The
    API server accepts one value per ``metadata.name`` field selector, so each node is a term of
    its own (at most :data:`MAX_LOCALITY_TERMS`, the first by name).
    """
    best: list[str] = []
    best_bytes = 0
    for node in nodes:
        cached = (node.images.get(image, 0) if image else 0) + sum(
            node.datasets.get(d, 0) for d in datasets)
        if cached <= 0:
            continue
        if cached > best_bytes:
            best, best_bytes = [node.name], cached
        elif cached == best_bytes:
            best.append(node.name)
    return [
        {
            "weight": max(1, min(100, weight)),
            "preference": {"matchFields": [
                {"key": "metadata.name", "operator": "In", "values": [name]}]},
        }
        for name in sorted(best)[:MAX_LOCALITY_TERMS]
    ]


def dataset_volume_name(name: str) -> str:
    """Pod volume name of dataset ``name`` (a DNS label)."""
    slug = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:50] or "dataset"
    return f"dataset-{slug}"


def dataset_volumes(
    datasets: Iterable[tuple[str, str, Mapping[str, Any], bool]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Pod volumes and container mounts for ``(name, mount_path, volume source, read_only)``."""
    volumes, mounts = [], []
    for name, path, source, read_only in datasets:
        vname = dataset_volume_name(name)
        volumes.append({"name": vname, **dict(source)})
        mounts.append({"name": vname, "mountPath": path, "readOnly": read_only})
    return volumes, mounts


def notebook_env(
    request: SliceRequest, granted_mib: int, backend: str, datasets: Mapping[str, str]
) -> dict[str, str]:
    """Environment the notebook sees: its slice, GPU model choice and dataset paths."""
    env = {
        "AISPIKE_BACKEND": backend,
        "AISPIKE_GPU_COUNT": str(request.gpu_count),
        "AISPIKE_GPU_MODEL": ",".join(sorted(request.allowed_models)) or "any",
    }
    if request.gpu_count == 1 and request.gpu_memory_mib:
        env["AISPIKE_GPU_MEMORY_MIB"] = str(granted_mib or request.gpu_memory_mib)
    if datasets:
        env["AISPIKE_DATASETS"] = ",".join(f"{n}={p}" for n, p in sorted(datasets.items()))
    return env
