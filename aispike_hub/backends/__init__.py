"""GPU backends as types: one class per way of giving notebook servers GPUs; pure.

| backend | one slice of N GiB | k whole GPUs | uses claims |
|---|---|---|---|
| ``aispike`` | a pinned ResourceClaim of our DRA driver (:mod:`aispike_hub.kube.claims`) | the same, k devices | yes |
| ``hami`` | ``nvidia.com/gpu: 1``, ``nvidia.com/gpumem: N*1024`` (MiB) | ``nvidia.com/gpu: k`` | no |
| ``gpushare`` | ``aliyun.com/gpu-mem: N`` (GiB, or MiB with unit "MiB") | refused (one GPU) | no |
| ``mig`` | ``nvidia.com/mig-<profile>: 1``, smallest profile >= N GiB | ``nvidia.com/gpu: k`` | no |
| ``nvidia`` | ``nvidia.com/gpu: 1`` (the whole GPU) | ``nvidia.com/gpu: k`` | no |

``backend_for(name)`` gives the backend object; :class:`GpuBackend` documents what a backend
answers (pod resources, the namespace ResourceQuota's GPU part, node affinity, the notebook's
environment, whether it pins DRA claims).  Adding a backend: a module here with a subclass of
:class:`GpuBackend`, added to :data:`BUILTIN` below (a plugin outside this package calls
:func:`register` on its class instead; see docs/architecture.md).
"""  # noqa: E501

from __future__ import annotations

from aispike_hub.backends.base import (
    DEFAULT_MIG_PROFILES,
    BackendError,
    BackendOptions,
    GpuBackend,
    GpuResources,
    and_terms,
    model_affinity,
    model_affinity_terms,
)
from aispike_hub.backends.gpushare import GpushareBackend
from aispike_hub.backends.hami import HamiBackend
from aispike_hub.backends.mig import MigBackend, mig_profile_for
from aispike_hub.backends.native import AISpikeBackend
from aispike_hub.backends.nvidia import NvidiaBackend
from aispike_hub.backends.registry import (
    SETTING,
    UnknownBackendError,
    backend_class,
    backend_for,
    backend_names,
    register,
)

BUILTIN: tuple[type[GpuBackend], ...] = (
    AISpikeBackend, HamiBackend, GpushareBackend, MigBackend, NvidiaBackend)
"""The built-in backends, in the order the spawner's setting lists them."""
for _cls in BUILTIN:
    register(_cls)

__all__ = [
    "BUILTIN",
    "DEFAULT_MIG_PROFILES",
    "SETTING",
    "AISpikeBackend",
    "BackendError",
    "BackendOptions",
    "GpuBackend",
    "GpuResources",
    "GpushareBackend",
    "HamiBackend",
    "MigBackend",
    "NvidiaBackend",
    "UnknownBackendError",
    "and_terms",
    "backend_class",
    "backend_for",
    "backend_names",
    "mig_profile_for",
    "model_affinity",
    "model_affinity_terms",
    "register",
]
