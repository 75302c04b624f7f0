"""A hub user's quota as a Kubernetes ResourceQuota in their own namespace; pure builder.

With user namespaces (``KubeSpawner.enable_user_namespaces``), every server of a user runs in
that user's namespace, so the API server itself can enforce the user's limits as a second line
of defence behind the AISpike service's admission: a pod or claim created around the hub (a bug,
``kubectl`` with the hub's credentials, a stale retry) is refused by the API server.

The quota is the user's *ceiling* (nominal quota plus borrowing, see
:meth:`aispike_hub.quota.Limits.ceiling`): admission may legitimately let a user borrow up to it.
Group quotas are shared between namespaces and cannot be expressed per namespace; admission
keeps enforcing them.

What each limit becomes (unlimited ones are left out):

| limit | ResourceQuota ``hard`` |
|---|---|
| CPU | ``requests.cpu``, ``limits.cpu`` (notebook pods request what they limit) |
| RAM | ``requests.memory``, ``limits.memory`` |
| servers | ``pods``; on the native backend also ``count/resourceclaims.resource.k8s.io`` |
| GPUs | native: ``gpu.aispike.io.deviceclass.resource.k8s.io/devices`` (a slice is one device); hami, nvidia: ``requests.nvidia.com/gpu`` |
| GPU memory | hami: ``requests.nvidia.com/gpumem`` (MiB); gpushare: ``requests.aliyun.com/gpu-mem`` (GiB). Native: none -- Kubernetes 1.36 quotas count devices, not consumed capacity |
"""  # noqa: E501

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aispike_hub.kube.resources import GPUSHARE_MEMORY_RESOURCE, HAMI_MEMORY_RESOURCE
from aispike_hub.kube.slices import DEVICE_CLASS, NVIDIA_GPU_RESOURCE
from aispike_hub.model import GIB_IN_MIB

QUOTA_NAME = "aispike-user-quota"
"""Name of the ResourceQuota the spawner keeps in each user namespace."""

USER_ANNOTATION = "aispike.io/hub-user"

DEVICES_QUOTA = f"{DEVICE_CLASS}.deviceclass.resource.k8s.io/devices"
CLAIMS_QUOTA = "count/resourceclaims.resource.k8s.io"


def quota_hard(ceiling: Mapping[str, int | None], backend: str) -> dict[str, str]:
    """``spec.hard`` for a user whose ceilings are ``ceiling`` (resource -> amount or None)."""
    hard: dict[str, str] = {}
    cpu = ceiling.get("cpu_milli")
    if cpu is not None:
        hard["requests.cpu"] = hard["limits.cpu"] = f"{cpu}m"
    memory = ceiling.get("memory_mib")
    if memory is not None:
        hard["requests.memory"] = hard["limits.memory"] = f"{memory}Mi"
    servers = ceiling.get("servers")
    if servers is not None:
        hard["pods"] = str(servers)
        if backend == "aispike":
            hard[CLAIMS_QUOTA] = str(servers)
    gpus = ceiling.get("gpus")
    if gpus is not None:
        if backend == "aispike":
            hard[DEVICES_QUOTA] = str(gpus)
        elif backend in ("hami", "nvidia"):
            hard[f"requests.{NVIDIA_GPU_RESOURCE}"] = str(gpus)
    gpu_mem = ceiling.get("gpu_memory_mib")
    if gpu_mem is not None:
        if backend == "hami":
            hard[f"requests.{HAMI_MEMORY_RESOURCE}"] = str(gpu_mem)
        elif backend == "gpushare":
            hard[f"requests.{GPUSHARE_MEMORY_RESOURCE}"] = str(gpu_mem // GIB_IN_MIB)
    return hard


def resource_quota(user: str, ceiling: Mapping[str, int | None], backend: str,
                   labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ResourceQuota object for ``user`` (``spec.hard`` empty when nothing is limited)."""
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {
            "name": QUOTA_NAME,
            "labels": {"app.kubernetes.io/managed-by": "aispike-hub", **(labels or {})},
            "annotations": {USER_ANNOTATION: user},
        },
        "spec": {"hard": quota_hard(ceiling, backend)},
    }
