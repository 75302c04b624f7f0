"""The environment of a GPU slice: what a notebook's processes are told about their GPUs; pure.

Three writers give a notebook its slice as environment variables, and they must agree, because
the same readers (the kernel hook, HAMi-core, JAX, the server extension, enforcement) read it:

- the node agent's DRA plugin writes it into each claim's CDI spec (:mod:`aispike_hub.agent.cdi`);
- the local spawner sets it on the server process (:mod:`aispike_hub.spawner.local`);
- the test stack's pod runner sets it on the processes it runs for pods.

All three call this module.  The layers (docs/isolation.md):

| variable | layer | value |
|---|---|---|
| ``NVIDIA_VISIBLE_DEVICES`` | always | the GPUs' UUIDs, in allocation order |
| ``AISPIKE_GPU_MEMORY_LIMIT`` | always | MiB of the first GPU's slice |
| ``AISPIKE_GPU_MEMORY_LIMITS`` | always | MiB per GPU, same order |
| ``CUDA_DEVICE_MEMORY_LIMIT_<i>`` | HAMi-core | ``<MiB>m`` per visible GPU |
| ``XLA_PYTHON_CLIENT_MEM_FRACTION`` | framework | smallest slice/total, rounded down to 0.001 |
| ``AISPIKE_FRAMEWORK_LIMITS`` | framework | frameworks the kernel hook limits |
| ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`` | MPS | the slice's compute share (percent), when < 100 |
| ``AISPIKE_GPU_COMPUTE_PERCENT`` | with a share | the same share, for the notebook to show |

plus, from the spawners, the slice as the user asked for it (:func:`notebook_env`:
``AISPIKE_BACKEND``, ``AISPIKE_GPU_COUNT``, ``AISPIKE_GPU_MODEL``, ``AISPIKE_GPU_MEMORY_MIB``,
``AISPIKE_DATASETS``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from aispike_hub.contract import (
    ENV_BACKEND,
    ENV_COMPUTE_PERCENT,
    ENV_CUDA_VISIBLE_DEVICES,
    ENV_DATASETS,
    ENV_FRAMEWORK_LIMITS,
    ENV_GPU_COUNT,
    ENV_GPU_INDICES,
    ENV_GPU_MEMORY_LIMIT,
    ENV_GPU_MEMORY_LIMITS,
    ENV_GPU_MEMORY_MIB,
    ENV_GPU_MODEL,
    ENV_HAMI_LIMIT_PREFIX,
    ENV_MPS_THREAD_PERCENTAGE,
    ENV_NVIDIA_VISIBLE_DEVICES,
    ENV_XLA_MEM_FRACTION,
)
from aispike_hub.model import Assignment, Node, SliceRequest
from aispike_hub.units import MIB

KERNEL_HOOK_CONTAINER_PATH = "/usr/local/etc/ipython/ipython_kernel_config.py"
"""Where the kernel hook is mounted by default: a system config file every IPython kernel loads."""


@dataclass(frozen=True, slots=True)
class IsolationSettings:
    """Which isolation layers a prepared container gets (each switchable; docs/isolation.md)."""

    framework_env: bool = True
    """``XLA_PYTHON_CLIENT_MEM_FRACTION`` and ``AISPIKE_FRAMEWORK_LIMITS`` (read by the hook)."""
    frameworks: tuple[str, ...] = ("torch", "tensorflow")
    """Frameworks the kernel hook limits (``AISPIKE_FRAMEWORK_LIMITS``)."""
    kernel_hook_host_path: str = ""
    """The hook file on the host, mounted read-only into the container; "" = no mount."""
    kernel_hook_container_path: str = KERNEL_HOOK_CONTAINER_PATH
    hami: bool = True
    """HAMi-core's ``CUDA_DEVICE_MEMORY_LIMIT_<i>`` (hard limit when the image preloads it)."""
    extra_cdi_devices: tuple[str, ...] = ()
    """CDI device ID templates added per GPU, e.g. ``nvidia.com/gpu={uuid}`` (NVIDIA's CDI specs
    from ``nvidia-ctk cdi generate``) for the device nodes and driver libraries."""


class LimitedGpu(Protocol):
    """A GPU with the slice a container may use of it (the DRA plugin's ``AllocatedGpu`` is one)."""

    @property
    def uuid(self) -> str: ...

    @property
    def limit_bytes(self) -> int: ...

    @property
    def total_bytes(self) -> int: ...


@dataclass(frozen=True, slots=True)
class GpuLimit:
    """A plain :class:`LimitedGpu` (for writers that have no claim, like the local spawner)."""

    uuid: str
    limit_bytes: int
    total_bytes: int


def xla_fraction(gpus: Sequence[LimitedGpu]) -> str:
    """``XLA_PYTHON_CLIENT_MEM_FRACTION``: the smallest slice/total over the GPUs, rounded down
    to 0.001 so JAX never preallocates more than the slice."""
    fractions = [g.limit_bytes / g.total_bytes for g in gpus if g.total_bytes > 0]
    if not fractions:
        return "1.000"
    return f"{math.floor(min(fractions) * 1000) / 1000:.3f}"


def compute_share_env(percent: int | None) -> dict[str, str]:
    """The compute-share variables for a slice with ``percent`` of the GPU's SMs.

    ``None`` (no share decided) and 100 (a whole GPU) add nothing.  Otherwise
    ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`` (CUDA reads it when the process connects to an MPS
    daemon; without one it is ignored: docs/isolation.md) and ``AISPIKE_GPU_COMPUTE_PERCENT``.
    The share itself comes from :func:`aispike_hub.quota.compute_share.compute_percent`.
    """
    if percent is None or percent >= 100:
        return {}
    if percent < 1:
        raise ValueError(f"a compute share is 1..100 percent, got {percent}")
    return {ENV_MPS_THREAD_PERCENTAGE: str(percent), ENV_COMPUTE_PERCENT: str(percent)}


def isolation_env(gpus: Sequence[LimitedGpu], settings: IsolationSettings,
                  compute_percent: int | None = None) -> dict[str, str]:
    """The environment a container of the claim gets (the table in the module docstring).

    ``gpus`` must not be empty (a claim without a GPU of ours is refused before this).
    ``compute_percent`` adds the compute-share layer (:func:`compute_share_env`).
    """
    limits = [g.limit_bytes // MIB for g in gpus]
    env = {
        ENV_NVIDIA_VISIBLE_DEVICES: ",".join(g.uuid for g in gpus),
        ENV_GPU_MEMORY_LIMIT: str(limits[0]),
        ENV_GPU_MEMORY_LIMITS: ",".join(str(mib) for mib in limits),
    }
    if settings.hami:
        for i, mib in enumerate(limits):
            env[f"{ENV_HAMI_LIMIT_PREFIX}{i}"] = f"{mib}m"
    if settings.framework_env:
        env[ENV_XLA_MEM_FRACTION] = xla_fraction(gpus)
        env[ENV_FRAMEWORK_LIMITS] = ",".join(settings.frameworks)
    env.update(compute_share_env(compute_percent))
    return env


def notebook_env(
    request: SliceRequest, granted_mib: int, backend: str, datasets: Mapping[str, str]
) -> dict[str, str]:
    """Environment the notebook sees: its slice, GPU model choice and dataset paths."""
    env = {
        ENV_BACKEND: backend,
        ENV_GPU_COUNT: str(request.gpu_count),
        ENV_GPU_MODEL: ",".join(sorted(request.allowed_models)) or "any",
    }
    if request.gpu_count == 1 and request.gpu_memory_mib:
        env[ENV_GPU_MEMORY_MIB] = str(granted_mib or request.gpu_memory_mib)
    if datasets:
        env[ENV_DATASETS] = ",".join(f"{n}={p}" for n, p in sorted(datasets.items()))
    return env


def assignment_env(node: Node, assignment: Assignment, settings: IsolationSettings,
                   request: SliceRequest, backend: str,
                   compute_percent: int | None = None) -> dict[str, str]:
    """The environment of a process holding ``assignment`` on ``node`` (no claim, no CDI).

    The isolation variables for the chosen GPUs, ``CUDA_VISIBLE_DEVICES`` (UUIDs, so CUDA's own
    device order does not matter), the slice variables the server extension and the notebook
    read, and ``AISPIKE_GPU_INDICES``.
    """
    by_index = {g.index: g for g in node.gpus}
    gpus = [
        GpuLimit(uuid=by_index[index].uuid or str(index), limit_bytes=mib * MIB,
                 total_bytes=by_index[index].memory_mib * MIB)
        for index, mib in zip(assignment.gpu_indices, assignment.gpu_memory_mib, strict=True)
    ]
    env = isolation_env(gpus, settings, compute_percent)
    env[ENV_CUDA_VISIBLE_DEVICES] = env[ENV_NVIDIA_VISIBLE_DEVICES]
    env.update(notebook_env(request, assignment.gpu_memory_mib[0] if request.gpu_count == 1
                            else 0, backend, {}))
    env[ENV_GPU_INDICES] = ",".join(str(i) for i in assignment.gpu_indices)
    return env


def no_gpu_env(backend: str) -> dict[str, str]:
    """A CPU-only server sees no GPU at all."""
    return {ENV_CUDA_VISIBLE_DEVICES: "", ENV_NVIDIA_VISIBLE_DEVICES: "void",
            ENV_BACKEND: backend, ENV_GPU_COUNT: "0"}
