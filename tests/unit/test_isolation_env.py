"""The isolation environment has one implementation: the DRA plugin, the local spawner and the
test stack's pod runner all get the same variables for the same GPUs."""

from __future__ import annotations

from aispike_hub import contract
from aispike_hub.agent import dra, kernel_hook
from aispike_hub.isolation_env import (
    GpuLimit,
    IsolationSettings,
    assignment_env,
    isolation_env,
    no_gpu_env,
    xla_fraction,
)
from aispike_hub.model import Assignment, Gpu, Node, SliceRequest
from aispike_hub.units import GIB, MIB

H200 = 143771 * MIB


def test_the_dra_module_reexports_the_one_implementation() -> None:
    assert dra.isolation_env is isolation_env and dra.xla_fraction is xla_fraction
    assert dra.IsolationSettings is IsolationSettings


def test_layers_switch_independently() -> None:
    gpus = [GpuLimit("GPU-a", 12 * GIB, H200), GpuLimit("GPU-b", 20 * GIB, H200)]
    bare = isolation_env(gpus, IsolationSettings(hami=False, framework_env=False))
    assert bare == {"NVIDIA_VISIBLE_DEVICES": "GPU-a,GPU-b", "AISPIKE_GPU_MEMORY_LIMIT": "12288",
                    "AISPIKE_GPU_MEMORY_LIMITS": "12288,20480"}
    full = isolation_env(gpus, IsolationSettings(frameworks=("torch",)))
    assert full == {**bare, "CUDA_DEVICE_MEMORY_LIMIT_0": "12288m",
                    "CUDA_DEVICE_MEMORY_LIMIT_1": "20480m",
                    "XLA_PYTHON_CLIENT_MEM_FRACTION": "0.085", "AISPIKE_FRAMEWORK_LIMITS": "torch"}


def test_xla_fraction_without_a_known_total_is_everything() -> None:
    assert xla_fraction([GpuLimit("GPU-a", GIB, 0)]) == "1.000"


def test_a_local_assignment_gets_the_same_variables_plus_cuda_and_the_slice() -> None:
    node = Node(name="here", cpu_milli=8000, memory_mib=32768, gpus=(
        Gpu(index=0, model="A100", memory_mib=81920, uuid="GPU-0"),
        Gpu(index=1, model="A100", memory_mib=81920, uuid="")))
    request = SliceRequest(gpu_count=1, gpu_memory_mib=8192)
    env = assignment_env(node, Assignment(node="here", gpu_indices=(1,), gpu_memory_mib=(8192,)),
                         IsolationSettings(), request, "local")
    assert env["NVIDIA_VISIBLE_DEVICES"] == env["CUDA_VISIBLE_DEVICES"] == "1"  # no uuid: index
    assert env["AISPIKE_GPU_MEMORY_LIMIT"] == env["AISPIKE_GPU_MEMORY_MIB"] == "8192"
    assert env["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.100"
    assert env["AISPIKE_BACKEND"] == "local" and env["AISPIKE_GPU_INDICES"] == "1"
    assert no_gpu_env("local") == {"CUDA_VISIBLE_DEVICES": "", "NVIDIA_VISIBLE_DEVICES": "void",
                                   "AISPIKE_BACKEND": "local", "AISPIKE_GPU_COUNT": "0"}


def test_the_kernel_hook_spells_the_contract_names_the_same() -> None:
    # The hook runs in images without this package, so it cannot import them.
    assert kernel_hook.ENV_LIMITS == contract.ENV_GPU_MEMORY_LIMITS
    assert kernel_hook.ENV_LIMIT == contract.ENV_GPU_MEMORY_LIMIT
    assert kernel_hook.ENV_FRAMEWORKS == contract.ENV_FRAMEWORK_LIMITS
    assert kernel_hook.MIB == MIB
