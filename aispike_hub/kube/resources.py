"""A notebook server's GPU slice in the words of each backend; pure builders, no I/O.

What differs between backends lives in :mod:`aispike_hub.backends` (one class per backend,
``backend_for(name)``); the functions here are the spawner's entry points and keep their old
signatures: :func:`gpu_resources` (container limits), :func:`model_affinity` (the GPU model as a
required node affinity when kube-scheduler places the pod) and :func:`notebook_env` (the slice
variables, from :mod:`aispike_hub.isolation_env`).

Also here, backend-independent: the locality preference for nodes caching the image and
datasets, and dataset volumes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aispike_hub.backends import (
    DEFAULT_MIG_PROFILES,
    BackendError,
    BackendOptions,
    GpuResources,
    backend_for,
    backend_names,
    mig_profile_for,
    model_affinity,
)
from aispike_hub.contract import (
    GPUSHARE_MEMORY_RESOURCE,
    HAMI_MEMORY_RESOURCE,
    MIG_RESOURCE_PREFIX,
)
from aispike_hub.isolation_env import notebook_env
from aispike_hub.model import Node, SliceRequest

__all__ = [
    "BACKENDS",
    "DEFAULT_MIG_PROFILES",
    "GPUSHARE_MEMORY_RESOURCE",
    "HAMI_MEMORY_RESOURCE",
    "MAX_LOCALITY_TERMS",
    "MIG_RESOURCE_PREFIX",
    "BackendError",
    "GpuResources",
    "dataset_volume_name",
    "dataset_volumes",
    "gpu_resources",
    "locality_preference",
    "mig_profile_for",
    "model_affinity",
    "notebook_env",
]

BACKENDS = backend_names()
"""Names of the registered backends (the values of ``c.AISpikeSpawner.backend``)."""


def gpu_resources(
    backend: str,
    request: SliceRequest,
    *,
    mig_profiles: Sequence[str] = DEFAULT_MIG_PROFILES,
    gpushare_unit: str = "GiB",
) -> GpuResources:
    """Container resource limits of ``request`` on ``backend`` (empty for ``aispike``)."""
    options = BackendOptions(mig_profiles=tuple(mig_profiles), gpushare_unit=gpushare_unit)
    return backend_for(backend, options).pod_resources(request)


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
