"""GPU backends as types: the registry, and what each backend answers."""

from __future__ import annotations

import pytest

from aispike_hub.backends import (
    BUILTIN,
    SETTING,
    BackendError,
    BackendOptions,
    GpuBackend,
    GpuResources,
    UnknownBackendError,
    backend_class,
    backend_for,
    backend_names,
    register,
)
from aispike_hub.backends import registry as registry_module
from aispike_hub.contract import CLAIMS_QUOTA, DEVICES_QUOTA
from aispike_hub.kube.resources import BACKENDS, gpu_resources
from aispike_hub.model import GIB_IN_MIB, SliceRequest

SLICE12 = SliceRequest(gpu_count=1, gpu_memory_mib=12 * GIB_IN_MIB,
                       allowed_models=frozenset({"NVIDIA A100-SXM4-80GB"}))
WHOLE2 = SliceRequest(gpu_count=2, gpu_memory_mib=0)
CPU_ONLY = SliceRequest(gpu_count=0, gpu_memory_mib=0)


def test_the_builtin_backends_in_the_settings_order() -> None:
    assert backend_names()[:5] == ("aispike", "hami", "gpushare", "mig", "nvidia")
    assert backend_names() == BACKENDS
    assert [cls.name for cls in BUILTIN] == list(backend_names()[:5])


def test_only_the_native_backend_uses_claims() -> None:
    assert [n for n in backend_names() if backend_for(n).uses_claims] == ["aispike"]


def test_an_unknown_name_names_the_setting_and_the_valid_names() -> None:
    with pytest.raises(UnknownBackendError) as info:
        backend_for("rocm")
    message = str(info.value)
    assert "'rocm'" in message and SETTING in message
    assert "aispike, hami, gpushare, mig, nvidia" in message
    assert isinstance(info.value, BackendError) and isinstance(info.value, ValueError)


def test_options_reach_the_backend() -> None:
    mig = backend_for("mig", BackendOptions(mig_profiles=("1g.5gb", "3g.20gb")))
    assert mig.pod_resources(SLICE12).limits == {"nvidia.com/mig-3g.20gb": "1"}
    assert backend_for("hami").options == BackendOptions()


@pytest.mark.parametrize("name", ["aispike", "hami", "gpushare", "mig", "nvidia"])
def test_cpu_only_servers_get_no_gpu_resources(name: str) -> None:
    assert backend_for(name).pod_resources(CPU_ONLY) == GpuResources({}, 0)


@pytest.mark.parametrize("name", ["aispike", "hami", "gpushare", "mig", "nvidia"])
def test_the_wrapper_asks_the_backend(name: str) -> None:
    try:
        expected = backend_for(name).pod_resources(SLICE12)
    except BackendError:
        return
    assert gpu_resources(name, SLICE12) == expected


def test_model_affinity_only_when_kube_scheduler_places() -> None:
    assert backend_for("aispike").model_affinity(SLICE12) is None
    assert backend_for("hami").model_affinity(CPU_ONLY) is None
    term = backend_for("hami").model_affinity(SLICE12, "nvidia.com/gpu.product")
    assert term == {"matchExpressions": [{"key": "nvidia.com/gpu.product", "operator": "In",
                                          "values": ["NVIDIA-A100-SXM4-80GB"]}]}


def test_quota_gpu_part_per_backend() -> None:
    assert backend_for("aispike").quota_hard(3, 2, 1024) == {CLAIMS_QUOTA: "3", DEVICES_QUOTA: "2"}
    assert backend_for("aispike").quota_hard(None, None, None) == {}
    assert backend_for("mig").quota_hard(3, 2, 1024) == {}
    assert backend_for("gpushare").quota_hard(3, 2, 2047) == {"requests.aliyun.com/gpu-mem": "1"}


def test_notebook_env_carries_the_backend_name() -> None:
    env = backend_for("nvidia").notebook_env(SLICE12, 0, {})
    assert env["AISPIKE_BACKEND"] == "nvidia" and env["AISPIKE_GPU_MEMORY_MIB"] == "12288"


def test_a_new_backend_is_one_registered_class(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))

    @register
    class Fake(GpuBackend):
        name = "fake"

        def slice_resources(self, request: SliceRequest) -> GpuResources:
            return GpuResources({"example.com/gpu": "1"}, request.gpu_memory_mib)

    assert backend_class("fake") is Fake and backend_names()[-1] == "fake"
    assert gpu_resources("fake", SLICE12).limits == {"example.com/gpu": "1"}
    assert backend_for("fake").quota_hard(1, 1, 1) == {}
    with pytest.raises(ValueError, match="taken"):
        register(type("Other", (Fake,), {}))
    with pytest.raises(TypeError, match="name"):
        register(type("Nameless", (GpuBackend,), {"name": ""}))
