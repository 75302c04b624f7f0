"""AISpikeSpawner with profiles, through its start (no cluster; see conftest.py): REST and
form options in KubeSpawner's shape, admin bounds, the order of application, sane defaults."""

from __future__ import annotations

import asyncio
import inspect
import re
import time
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import A100, Fakes
from jupyterhub.spawner import SpawnException
from kubernetes_asyncio.client.exceptions import ApiException

from aispike_hub.admission.client import AdmissionClient
from aispike_hub.admission.inprocess import InProcessAdmission
from aispike_hub.spawner.kube import AISpikeSpawner

GPU_PROFILES = [
    {"display_name": "CPU only", "slug": "cpu", "default": True,
     "kubespawner_override": {"max_gpus": 0, "mem_limit": "4G", "mem_guarantee": "4G"}},
    {"display_name": "GPU", "slug": "gpu", "description": "A slice of an A100",
     "kubespawner_override": {"backend": "hami", "min_gpu_gib": 4, "max_gpu_gib": 20,
                              "cpu_limit": 8.0, "cpu_guarantee": 2.0,
                              "mem_limit": "32G", "mem_guarantee": "8G"},
     "profile_options": {"image": {"display_name": "Image", "choices": {
         "torch": {"display_name": "PyTorch",
                   "kubespawner_override": {"image": "quay.io/torch:1"}}}}}},
]


def _resources(pod: dict[str, Any]) -> dict[str, Any]:
    return dict(pod["spec"]["containers"][0]["resources"])


def _start(fakes: Fakes, kube: dict[str, Any], options: dict[str, Any],
           aispike: dict[str, Any] | None = None) -> tuple[dict[str, Any], Any]:
    return asyncio.run(fakes.aispike_pod(fakes.config(kube, aispike), options))


def test_a_rest_start_with_a_profile_gets_the_profile_and_the_slice(no_cluster: Fakes) -> None:
    pod, spawner = _start(no_cluster, {"profile_list": GPU_PROFILES},
                          {"profile": "gpu", "image": "torch", "gpu_gib": 8, "cpu": 4})
    limits, requests = _resources(pod)["limits"], _resources(pod)["requests"]
    assert spawner.backend == "hami"  # the profile fixed the backend
    assert limits["nvidia.com/gpumem"] == "8192" and limits["nvidia.com/gpu"] == "1"
    assert limits["cpu"] == 4.0 and requests["cpu"] == 1.0  # the admin's 1:4 kept
    assert limits["memory"] == 32 << 30 and requests["memory"] == 8 << 30
    assert pod["spec"]["containers"][0]["image"] == "quay.io/torch:1"
    assert pod["metadata"]["annotations"]["aispike.io/backend"] == "hami"


def test_the_default_profile_forbids_gpus_and_keeps_its_ram(no_cluster: Fakes) -> None:
    pod, _ = _start(no_cluster, {"profile_list": GPU_PROFILES}, {})
    resources = _resources(pod)
    assert not any(k.startswith("nvidia.com/") for k in resources["limits"])
    assert resources["limits"]["memory"] == resources["requests"]["memory"] == 4 << 30
    with pytest.raises(SpawnException) as e:
        _start(no_cluster, {"profile_list": GPU_PROFILES}, {"profile": "cpu", "gpu_gib": 8})
    assert e.value.status_code == 400 and "gpu_gib" in e.value.log_message


@pytest.mark.parametrize(("options", "field"), [
    ({"profile": "tpu"}, "profile: no such profile 'tpu'"),
    ({"profile": "gpu", "image": "jax"}, "image: 'jax' is not a choice"),
    ({"profile": "gpu", "gpu_gib": 2}, "gpu_gib: 2 GiB is out of range: choose 4 GiB to 20"),
    ({"profile": "gpu", "memory_gib": 64}, "memory_gib: 64 GiB is out of range"),
    ({"profile": "gpu", "cpu": 12}, "cpu: 12 CPUs is out of range: choose 0.5 to 8"),
    ({"profile": "gpu", "privileged": True}, "privileged: unknown option"),
])
def test_bad_profile_options_are_refused_with_the_field_named(
        no_cluster: Fakes, options: dict[str, Any], field: str) -> None:
    with pytest.raises(SpawnException) as e:
        _start(no_cluster, {"profile_list": GPU_PROFILES}, options)
    assert e.value.status_code == 400 and field in e.value.log_message


def test_no_profile_override_lands_after_the_slices_resources(no_cluster: Fakes) -> None:
    """The issue's bug: KubeSpawner's _start calls load_user_options() again; the default
    profile's 4 GiB limit must not land under an 8 GiB request."""
    profiles = [{"display_name": "Default", "default": True,
                 "kubespawner_override": {"mem_limit": "16G", "mem_guarantee": "16G"}},
                {"display_name": "Small", "kubespawner_override": {"mem_limit": "4G"}}]
    pod, _ = _start(no_cluster, {"profile_list": profiles}, {"memory_gib": 8})
    resources = _resources(pod)
    assert resources["limits"]["memory"] == resources["requests"]["memory"] == 8 << 30
    # a profile's guarantee above its limit is lowered to the limit
    pod, _ = _start(no_cluster, {"profile_list": [
        {"display_name": "Odd", "kubespawner_override": {
            "mem_limit": "4G", "mem_guarantee": "8G",
            "extra_resource_limits": {"example.com/fpga": "1"},
            "extra_resource_guarantees": {"example.com/fpga": "2"}}}]}, {})
    resources = _resources(pod)
    assert resources["requests"]["memory"] <= resources["limits"]["memory"] == 4 << 30
    assert resources["requests"]["example.com/fpga"] == "1"


def test_an_admin_overcommit_survives_a_users_choice(no_cluster: Fakes) -> None:
    kube = {"cpu_limit": 4.0, "cpu_guarantee": 1.0, "mem_limit": "8G", "mem_guarantee": "2G"}
    pod, _ = _start(no_cluster, kube, {})
    assert _resources(pod)["limits"]["cpu"] == 4.0 and _resources(pod)["requests"]["cpu"] == 1.0
    pod, _ = _start(no_cluster, kube, {"cpu": 2, "memory_gib": 4})
    assert _resources(pod)["limits"] == {"cpu": 2.0, "memory": 4 << 30}
    assert _resources(pod)["requests"] == {"cpu": 0.5, "memory": 1 << 30}


def test_each_start_begins_from_the_configured_values(no_cluster: Fakes) -> None:
    async def scenario() -> None:
        config = no_cluster.config({"profile_list": GPU_PROFILES})
        spawner = no_cluster.spawner(AISpikeSpawner, config, {})
        await spawner.apply_options({"profile": "gpu", "gpu_gib": 8})
        assert spawner.backend == "hami" and spawner.cpu_limit == 8.0
        await spawner.apply_options({"profile": "cpu"})
        assert spawner.backend == "aispike" and spawner.cpu_limit is None
        assert spawner.mem_limit == 4 << 30

    asyncio.run(scenario())


def _built(fakes: Fakes, kube: dict[str, Any], aispike: dict[str, Any] | None = None) -> Any:
    """A spawner made inside an event loop (KubeSpawner's API client needs one)."""
    async def make() -> Any:
        spawner = fakes.spawner(AISpikeSpawner, fakes.config(kube, aispike), {})
        spawner.hub = SimpleNamespace(base_url="/hub/")
        return spawner

    return asyncio.run(make())


def test_kubespawner_shapes_of_the_hooks(no_cluster: Fakes) -> None:
    spawner = _built(no_cluster, {})
    # options_from_form: KubeSpawner's (formdata) -> dict, synchronous
    hook = spawner.options_from_form
    assert list(inspect.signature(hook).parameters) == ["formdata"]
    assert not inspect.iscoroutinefunction(hook)
    assert spawner.run_options_from_form({"profile": ["gpu"],
                                          "profile-option-gpu--gpu_gib": ["8"]}) == {
        "profile": "gpu", "gpu_gib": 8}
    # load_user_options on its own applies the options, as KubeSpawner's does
    spawner.user_options = {"cpu": 1}
    asyncio.run(spawner.load_user_options())
    assert spawner._options is not None and spawner._options.cpu_milli == 1000
    # users without .groups (KubeSpawner's tests' fake users)
    assert spawner.group_names() == []
    spawner.user = SimpleNamespace(name="bo", groups=[SimpleNamespace(name="ml")])
    assert spawner.group_names() == ["ml"]


def test_a_query_with_a_profile_is_checked_like_the_form(no_cluster: Fakes) -> None:
    spawner = _built(no_cluster, {"profile_list": GPU_PROFILES})
    options = asyncio.run(spawner.options_from_query(
        {"profile": ["gpu"], "profile-option-gpu--gpu_gib": ["6"]}))
    assert options == {"profile": "gpu", "gpu_gib": 6}
    with pytest.raises(SpawnException, match="gpu_gib: 60 GiB is out of range"):
        asyncio.run(spawner.options_from_query({"profile": ["gpu"], "gpu_gib": ["60"]}))


# --- sane without AISpike's extras ---------------------------------------------------------------


def test_a_plain_kubespawner_config_admits_in_process_and_gets_no_gpu(
        no_cluster: Fakes, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _built(no_cluster, {"image": "x"}).admission_class is InProcessAdmission
    pod, _ = _start(no_cluster, {"image": "x"}, {})
    assert not any(k.startswith("nvidia.com/") for k in _resources(pod)["limits"])
    assert "aispike.io/request" in pod["metadata"]["annotations"]
    assert '"gpuCount":0' in pod["metadata"]["annotations"]["aispike.io/request"]
    # ... unless the user asks for one
    pod, _ = _start(no_cluster, {"image": "x"}, {"gpu_gib": 4}, {"backend": "nvidia"})
    assert _resources(pod)["limits"]["nvidia.com/gpu"] == "1"
    # AISpike's own config proposes a slice, as before
    configured = _built(no_cluster, {}, {"images": [{"name": "a", "image": "a:1"}]})
    assert configured.default_gpu_count is None
    monkeypatch.setenv("AISPIKE_SERVICE_URL", "http://aispike:10101/services/aispike/")
    assert _built(no_cluster, {}).admission_class is AdmissionClient


def test_a_missing_priority_class_means_no_priority(no_cluster: Fakes) -> None:
    pod, _ = _start(no_cluster, {}, {})
    assert not pod["spec"].get("priorityClassName")
    no_cluster.priority_classes.add("aispike-normal")
    pod, _ = _start(no_cluster, {}, {})
    assert pod["spec"]["priorityClassName"] == "aispike-normal"


def test_priority_classes_are_looked_up_once(no_cluster: Fakes,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # the real lookup, over a made-up API
    answers = {"aispike-normal": 200, "aispike-high": 404, "aispike-low": 403}
    asked: list[str] = []

    class Api:
        async def read_priority_class(self, name: str) -> None:
            asked.append(name)
            if answers[name] != 200:
                raise ApiException(status=answers[name])

    monkeypatch.setattr(AISpikeSpawner, "_shared", {})
    monkeypatch.setattr(AISpikeSpawner, "scheduling_api", lambda self: Api())
    spawner = AISpikeSpawner.__new__(AISpikeSpawner)

    async def scenario() -> None:
        for _ in range(2):
            assert await spawner.priority_class_exists("aispike-normal")
            assert not await spawner.priority_class_exists("aispike-high")
            assert await spawner.priority_class_exists("aispike-low")  # may not read: trust

    asyncio.run(scenario())
    assert asked == ["aispike-normal", "aispike-high", "aispike-low"]


# --- the form ------------------------------------------------------------------------------------


def test_the_form_shows_kubespawners_profiles_with_the_slice_inside(no_cluster: Fakes) -> None:
    spawner = _built(no_cluster, {"profile_list": GPU_PROFILES})
    page = asyncio.run(spawner.render_options_form())
    assert re.search(r'name="profile" id="profile-item-cpu"\s+value="cpu" checked', page)
    assert 'name="profile-option-gpu--image"' in page
    gpu = page[page.index('id="profile-item-gpu"'):]
    cpu = page[page.index('id="profile-item-cpu"'):page.index('id="profile-item-gpu"')]
    assert 'name="profile-option-gpu--gpu_gib"' in gpu and 'min="4" max="20"' in gpu
    # the profile's own option "image" replaces AISpike's image field in that profile
    assert 'data-option="image"' in gpu and 'data-field="image"' not in gpu
    assert 'name="profile-option-cpu--image" data-field="image"' in cpu
    assert "gpu_gib" not in cpu and "GPU" not in cpu.split("CPU only", 1)[1][:200]
    assert "CPUs: at most 8 CPUs (the admin&#39;s limit); 25% of what you choose is " \
           "guaranteed" in gpu
    assert A100 in gpu


def test_the_form_renders_quickly_when_the_cluster_does_not_answer(
        no_cluster: Fakes, monkeypatch: pytest.MonkeyPatch) -> None:
    async def hangs(self: AISpikeSpawner, backend: str | None = None) -> Any:
        await asyncio.sleep(60)

    monkeypatch.setattr(AISpikeSpawner, "cluster_nodes", hangs)
    spawner = _built(no_cluster, {})
    began = time.monotonic()
    page = asyncio.run(spawner.render_options_form())
    assert time.monotonic() - began < 2.5
    assert "could not be read just now" in page


class _Minting(SimpleNamespace):
    def new_api_token(self, note: str, expires_in: int, scopes: list[str]) -> str:
        self.minted.append(expires_in)
        return f"tok-{len(self.minted)}"


def test_the_fit_preview_reuses_one_token_per_user(monkeypatch: pytest.MonkeyPatch) -> None:
    from aispike_hub.admission.hub import fit_preview

    user = _Minting(name="ada", minted=[])
    spawner = SimpleNamespace(fit_preview_service="aispike", admission_class=AdmissionClient,
                              hub=SimpleNamespace(base_url="/hub/"), user=user,
                              fit_token_seconds=900, log=None)
    assert [fit_preview(spawner).token for _ in range(5)] == ["tok-1"] * 5
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + 700)  # less than a third of its life left
    assert fit_preview(spawner).token == "tok-2"
    spawner.fit_preview_service = "other"
    assert fit_preview(spawner).token == "tok-3"
    assert user.minted == [900, 900, 900]
