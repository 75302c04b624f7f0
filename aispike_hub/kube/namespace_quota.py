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

from aispike_hub.backends import backend_for
from aispike_hub.contract import (
    CLAIMS_QUOTA,
    DEVICES_QUOTA,
    HUB_USER_ANNOTATION,
    MANAGED_BY,
    MANAGED_BY_LABEL,
)

__all__ = ["CLAIMS_QUOTA", "DEVICES_QUOTA", "QUOTA_NAME", "USER_ANNOTATION", "quota_hard",
           "resource_quota"]

QUOTA_NAME = "aispike-user-quota"
"""Name of the ResourceQuota the spawner keeps in each user namespace."""

USER_ANNOTATION = HUB_USER_ANNOTATION


def quota_hard(ceiling: Mapping[str, int | None], backend: str) -> dict[str, str]:
    """``spec.hard`` for a user whose ceilings are ``ceiling`` (resource -> amount or None).

    CPU, RAM and servers (``pods``) are the same on every backend; the GPU part is the
    backend's (:meth:`aispike_hub.backends.GpuBackend.quota_hard`).
    """
    gpu_backend = backend_for(backend)
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
    hard.update(gpu_backend.quota_hard(servers, ceiling.get("gpus"),
                                       ceiling.get("gpu_memory_mib")))
    return hard


def resource_quota(user: str, ceiling: Mapping[str, int | None], backend: str,
                   labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ResourceQuota object for ``user`` (``spec.hard`` empty when nothing is limited)."""
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {
            "name": QUOTA_NAME,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY, **(labels or {})},
            "annotations": {USER_ANNOTATION: user},
        },
        "spec": {"hard": quota_hard(ceiling, backend)},
    }
