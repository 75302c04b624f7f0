"""The options form model as tables of good, bad and hostile inputs (no cluster, no kubeconfig)."""

from __future__ import annotations

import html
import json
import re
from decimal import Decimal
from typing import Any

import pytest

from aispike_hub.kube.resources import (
    BackendError,
    dataset_volumes,
    gpu_resources,
    locality_preference,
    mig_profile_for,
    model_affinity,
    notebook_env,
)
from aispike_hub.model import GIB_IN_MIB, Gpu, Node, SliceRequest
from aispike_hub.spawner.form import (
    FormError,
    Options,
    check_server_name,
    parse_options,
    render_form,
    settings_from_config,
    to_request,
)

A100 = "NVIDIA A100-SXM4-80GB"
T4 = "Tesla T4"

SETTINGS = settings_from_config(
    [{"name": "minimal", "image": "quay.io/jupyter/minimal-notebook:2026-01-05",
      "description": "Python only"},
     {"name": "pytorch", "image": "quay.io/jupyter/pytorch-notebook:cuda12-2026-01-05"}],
    {"imagenet": {"mount_path": "/datasets/imagenet", "description": "ImageNet-1k",
                  "volume": {"persistentVolumeClaim": {"claimName": "imagenet"}}},
     "mnist": {"mount_path": "/datasets/mnist",
               "volume": {"hostPath": {"path": "/data/mnist"}}, "read_only": False}},
    {A100: 80 * GIB_IN_MIB, T4: 15 * GIB_IN_MIB + 360},
    max_gpus=4, cpu_max=Decimal(8), memory_gib_max=64,
)

DEFAULT = Options("minimal", "any", 8, 1, 2000, 8, ())

GOOD: list[tuple[str, Any, Options]] = [
    ("nothing: the defaults", {}, DEFAULT),
    ("None: the defaults", None, DEFAULT),
    ("form lists of strings",
     {"image": ["pytorch"], "gpu_model": [A100], "gpu_gib": ["40"], "gpu_count": ["1"],
      "cpu": ["4"], "memory_gib": ["32"], "datasets": ["imagenet", "mnist"],
      "_xsrf": ["2|abc"]},
     Options("pytorch", A100, 40, 1, 4000, 32, ("imagenet", "mnist"))),
    ("JSON types (REST)",
     {"image": "pytorch", "gpu_gib": 4, "gpu_count": 1, "cpu": 0.5, "memory_gib": 2,
      "datasets": ["mnist"]},
     Options("pytorch", "any", 4, 1, 500, 2, ("mnist",))),
    ("query strings (opt- prefix), datasets comma-separated",
     {"gpu_gib": "12", "cpu": "1.5", "datasets": "imagenet,mnist"},
     Options("minimal", "any", 12, 1, 1500, 8, ("imagenet", "mnist"))),
    ("whole GPUs: no memory", {"gpu_count": 4}, Options("minimal", "any", 0, 4, 2000, 8, ())),
    ("whole GPUs with an empty memory field", {"gpu_count": ["2"], "gpu_gib": [""]},
     Options("minimal", "any", 0, 2, 2000, 8, ())),
    ("CPU-only", {"gpu_count": "0"}, Options("minimal", "any", 0, 0, 2000, 8, ())),
    ("largest slice of a T4 (15 GiB, rounded down)", {"gpu_model": T4, "gpu_gib": 15},
     Options("minimal", T4, 15, 1, 2000, 8, ())),
    ("whitespace around values", {"gpu_gib": " 16 ", "image": " pytorch"},
     Options("pytorch", "any", 16, 1, 2000, 8, ())),
    ("integral float", {"gpu_gib": 8.0}, DEFAULT),
]


@pytest.mark.parametrize(("case", "raw", "expected"), GOOD, ids=[c[0] for c in GOOD])
def test_good_inputs_parse(case: str, raw: Any, expected: Options) -> None:
    assert parse_options(raw, SETTINGS) == expected


@pytest.mark.parametrize(("case", "raw", "expected"), GOOD, ids=[c[0] for c in GOOD])
def test_parsed_options_round_trip_through_user_options(case: str, raw: Any,
                                                        expected: Options) -> None:
    stored = json.loads(json.dumps(expected.as_user_options()))
    assert parse_options(stored, SETTINGS) == expected


BAD: list[tuple[str, Any, str, str]] = [
    # (case, input, field named, words in the message)
    ("unknown image", {"image": "evil/miner:latest"}, "image", "not offered"),
    ("image reference instead of name",
     {"image": "quay.io/jupyter/minimal-notebook:2026-01-05"}, "image", "not offered"),
    ("unknown GPU model", {"gpu_model": "H100"}, "gpu_model", "not a GPU model"),
    ("slice over the largest GPU", {"gpu_gib": 81}, "gpu_gib", "out of range"),
    ("slice over the chosen model", {"gpu_model": T4, "gpu_gib": 16}, "gpu_gib",
     "out of range: choose 1 GiB to 15 GiB"),
    ("zero GiB slice", {"gpu_gib": 0, "gpu_count": 1}, "gpu_gib", "out of range"),
    ("negative GiB", {"gpu_gib": "-8"}, "gpu_gib", "whole number"),
    ("fractional GiB", {"gpu_gib": 7.5}, "gpu_gib", "whole number"),
    ("GiB as words", {"gpu_gib": "eight"}, "gpu_gib", "whole number"),
    ("huge number", {"gpu_gib": "99999999999"}, "gpu_gib", "whole number"),
    ("too many GPUs", {"gpu_count": 5}, "gpu_count", "out of range"),
    ("memory with several GPUs", {"gpu_count": 2, "gpu_gib": 8}, "gpu_gib", "whole GPUs"),
    ("memory without a GPU", {"gpu_count": 0, "gpu_gib": 8}, "gpu_gib", "without a GPU"),
    ("model without a GPU", {"gpu_count": 0, "gpu_model": A100}, "gpu_model",
     "without a GPU"),
    ("too few CPUs", {"cpu": "0.2"}, "cpu", "out of range"),
    ("too many CPUs", {"cpu": 64}, "cpu", "out of range"),
    ("CPU finer than 0.1", {"cpu": "0.55"}, "cpu", "steps of 0.1"),
    ("CPU not a number", {"cpu": "two"}, "cpu", "number of CPUs"),
    ("CPU infinity", {"cpu": "Infinity"}, "cpu", "steps of 0.1"),
    ("CPU NaN", {"cpu": "NaN"}, "cpu", "steps of 0.1"),
    ("RAM over the limit", {"memory_gib": 65}, "memory_gib", "out of range"),
    ("unknown dataset", {"datasets": ["secrets"]}, "datasets", "not offered"),
    ("dataset twice", {"datasets": ["mnist", "mnist"]}, "datasets", "twice"),
    ("dataset path traversal", {"datasets": ["../etc"]}, "datasets", "not a name"),
    ("datasets not a list", {"datasets": {"a": 1}}, "datasets", "list of names"),
    ("unknown option", {"gpu_gib": 8, "privileged": True}, "privileged", "unknown option"),
    ("pod spec injection", {"extra_pod_config": {"hostNetwork": True}}, "extra_pod_config",
     "unknown option"),
    ("two values for one field", {"gpu_gib": ["8", "16"]}, "gpu_gib", "one value"),
    ("boolean for a number", {"gpu_gib": True}, "gpu_gib", "expected a value"),
    ("object for a number", {"gpu_gib": {"$gt": 1}}, "gpu_gib", "expected a value"),
    ("null for a name", {"image": None}, "image", "expected a value"),
    ("newline injection", {"image": "minimal\nprivileged: true"}, "image",
     "control characters"),
    ("NUL byte", {"gpu_model": "any\x00"}, "gpu_model", "control characters"),
    ("over-long string", {"image": "x" * 10_000}, "image", "too long"),
    ("bytes", {"image": b"minimal"}, "image", "bytes"),
    ("template expression", {"image": "{{ config }}"}, "image", "not offered"),
    ("script in the model", {"gpu_model": "<script>alert(1)</script>"}, "gpu_model",
     "not a GPU model"),
]


@pytest.mark.parametrize(("case", "raw", "field", "words"), BAD, ids=[c[0] for c in BAD])
def test_bad_and_hostile_inputs_are_refused_with_the_field_named(
        case: str, raw: Any, field: str, words: str) -> None:
    with pytest.raises(FormError) as info:
        parse_options(raw, SETTINGS)
    assert field in info.value.fields, info.value.errors
    message = dict(info.value.errors)[field]
    assert words in message, message
    assert str(info.value).startswith(f"{info.value.errors[0][0]}: ")


def test_every_bad_field_is_reported_at_once() -> None:
    with pytest.raises(FormError) as info:
        parse_options({"image": "nope", "gpu_gib": 500, "cpu": "lots"}, SETTINGS)
    assert set(info.value.fields) == {"image", "gpu_gib", "cpu"}


def test_not_a_mapping_is_refused() -> None:
    with pytest.raises(FormError) as info:
        parse_options(["gpu_gib", 8], SETTINGS)  # type: ignore[arg-type]
    assert info.value.fields == ["user_options"]


@pytest.mark.parametrize("name", ["", "train", "a", "run-2", "x" * 63])
def test_usable_server_names(name: str) -> None:
    assert check_server_name(name) == name


@pytest.mark.parametrize("name", ["Train", "-x", "x-", "a_b", "a.b", "x" * 64, "a b", "ü"])
def test_unusable_server_names(name: str) -> None:
    with pytest.raises(FormError) as info:
        check_server_name(name)
    assert info.value.fields == ["server_name"]


def test_requests_carry_the_image_reference_and_slice() -> None:
    slice_request = to_request(Options("pytorch", A100, 40, 1, 4000, 32, ("mnist",)), SETTINGS)
    assert slice_request == SliceRequest(
        gpu_count=1, gpu_memory_mib=40 * GIB_IN_MIB, allowed_models=frozenset({A100}),
        cpu_milli=4000, memory_mib=32 * GIB_IN_MIB,
        image="quay.io/jupyter/pytorch-notebook:cuda12-2026-01-05", datasets=("mnist",))
    whole = to_request(Options("minimal", "any", 0, 2, 1000, 4, ()), SETTINGS)
    assert whole.whole_gpus and whole.gpu_memory_mib == 0 and not whole.allowed_models
    cpu_only = to_request(Options("minimal", "any", 0, 0, 1000, 4, ()), SETTINGS)
    assert cpu_only.gpu_count == 0


@pytest.mark.parametrize(("entry", "words"), [
    ({"name": "ok"}, "needs a name"),
    ({"name": "bad name", "image": "x"}, "needs a name"),
    ({"image": "x"}, "needs a name"),
])
def test_bad_admin_images_name_the_setting(entry: dict[str, str], words: str) -> None:
    with pytest.raises(ValueError, match=r"AISpikeSpawner.images\[0\]"):
        settings_from_config([entry], {}, {})


def test_bad_admin_dataset_names_the_setting() -> None:
    with pytest.raises(ValueError, match=r"AISpikeSpawner.datasets\['x'\]"):
        settings_from_config([{"name": "a", "image": "b"}], {"x": {"mount_path": "rel"}}, {})


def test_a_cluster_without_gpus_defaults_to_cpu_only() -> None:
    settings = settings_from_config([{"name": "a", "image": "b"}], {}, {})
    assert settings.defaults().gpu_count == 0
    assert parse_options({}, settings).gpu_count == 0
    with pytest.raises(FormError):
        parse_options({"gpu_count": 1}, settings)


# --- rendering ----------------------------------------------------------------------------------


def test_render_shows_the_choices_and_escapes_everything() -> None:
    hostile = settings_from_config(
        [{"name": "safe", "image": "x", "description": "<img src=x onerror=alert(1)>"}],
        {}, {"</script><script>alert(1)</script>": 16 * GIB_IN_MIB})
    page = render_form(hostile, fit_url="/services/aispike/api/fit", fit_token="t0k",
                       server_name="train", note="<b>hi</b>")
    assert "<img src=x" not in page and "&lt;img src=x" in page
    assert "<b>hi</b>" not in page
    config = re.search(r'id="aispike-form-config">(.*?)</script>', page, re.S)
    assert config is not None and "</script><script>" not in config.group(1)
    assert json.loads(config.group(1))["fitUrl"] == "/services/aispike/api/fit"
    assert 'id="aispike-server-name">train<' in page


def test_render_preselects_previous_choices() -> None:
    chosen = Options("pytorch", A100, 40, 1, 1500, 16, ("mnist",))
    page = html.unescape(render_form(SETTINGS, chosen=chosen, quota_gib=32))
    assert re.search(r'<option value="pytorch"\s+selected>', page)
    assert re.search(rf'<option value="{A100}"\s+selected>', page)
    assert 'name="gpu_gib"' in page and 'value="40"' in page and 'value="1.5"' in page
    assert re.search(r'value="mnist"\s+id="aispike-ds-\d"\s+checked', page)
    assert "your quota: 32 GiB" in page
    for field in ("image", "gpu_model", "gpu_gib", "gpu_count", "cpu", "memory_gib",
                  "datasets"):
        assert f'name="{field}"' in page


# --- backends -----------------------------------------------------------------------------------

SLICE8 = SliceRequest(gpu_count=1, gpu_memory_mib=8 * GIB_IN_MIB)
SLICE12 = SliceRequest(gpu_count=1, gpu_memory_mib=12 * GIB_IN_MIB)
WHOLE2 = SliceRequest(gpu_count=2)
CPU = SliceRequest(gpu_count=0)

BACKEND_TABLE: list[tuple[str, SliceRequest, dict[str, str]]] = [
    ("aispike", SLICE8, {}),
    ("aispike", WHOLE2, {}),
    ("hami", SLICE8, {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "8192"}),
    ("hami", WHOLE2, {"nvidia.com/gpu": "2"}),
    ("gpushare", SLICE8, {"aliyun.com/gpu-mem": "8"}),
    ("mig", SLICE8, {"nvidia.com/mig-1g.10gb": "1"}),
    ("mig", SLICE12, {"nvidia.com/mig-2g.20gb": "1"}),
    ("mig", WHOLE2, {"nvidia.com/gpu": "2"}),
    ("nvidia", SLICE8, {"nvidia.com/gpu": "1"}),
    ("nvidia", WHOLE2, {"nvidia.com/gpu": "2"}),
    ("hami", CPU, {}),
    ("nvidia", CPU, {}),
]


@pytest.mark.parametrize(("backend", "request_", "limits"), BACKEND_TABLE)
def test_each_backend_has_its_documented_resources(
        backend: str, request_: SliceRequest, limits: dict[str, str]) -> None:
    assert dict(gpu_resources(backend, request_).limits) == limits


def test_backends_say_when_they_round() -> None:
    assert "whole GPU" in gpu_resources("nvidia", SLICE8).note
    assert "2g.20gb" in gpu_resources("mig", SLICE12).note
    assert gpu_resources("gpushare", SLICE8, gpushare_unit="MiB").limits == {
        "aliyun.com/gpu-mem": "8192"}


@pytest.mark.parametrize(("backend", "request_", "words"), [
    ("gpushare", WHOLE2, "one GPU"),
    ("mig", SliceRequest(gpu_count=1, gpu_memory_mib=81 * GIB_IN_MIB), "no MIG profile"),
    ("rocm", SLICE8, "unknown backend"),
])
def test_impossible_backend_requests_say_why(backend: str, request_: SliceRequest,
                                             words: str) -> None:
    with pytest.raises(BackendError, match=words):
        gpu_resources(backend, request_)


def test_mig_profile_is_the_smallest_that_holds_the_slice() -> None:
    assert mig_profile_for(10) == "1g.10gb"
    assert mig_profile_for(40) == "3g.40gb"  # fewer compute slices than 4g.40gb
    assert mig_profile_for(5, ["3g.20gb", "1g.5gb"]) == "1g.5gb"
    with pytest.raises(BackendError, match="not a MIG profile"):
        mig_profile_for(5, ["big"])


def test_model_affinity_uses_label_values() -> None:
    term = model_affinity([A100])
    assert term == {"matchExpressions": [{"key": "aispike.io/gpu-model", "operator": "In",
                                          "values": ["NVIDIA-A100-SXM4-80GB"]}]}
    assert model_affinity([]) is None


def test_locality_prefers_nodes_caching_the_most() -> None:
    gpu = (Gpu(0, A100, 80 * GIB_IN_MIB),)
    nodes = [
        Node("both", 1000, 1024, gpu, images={"img": 5}, datasets={"ds": 100}),
        Node("image-only", 1000, 1024, gpu, images={"img": 5}),
        Node("none", 1000, 1024, gpu),
    ]
    terms = locality_preference(nodes, "img", ["ds"], weight=70)
    assert terms == [{"weight": 70, "preference": {"matchFields": [
        {"key": "metadata.name", "operator": "In", "values": ["both"]}]}}]
    # the API server takes one node name per field selector: ties become one term each
    tied = locality_preference(nodes, "img", [], weight=50)
    assert [t["preference"]["matchFields"][0]["values"] for t in tied] == [["both"],
                                                                            ["image-only"]]
    assert locality_preference(nodes, "other", [], 50) == []


def test_dataset_volumes_and_env() -> None:
    volumes, mounts = dataset_volumes(
        [("ImageNet 1k", "/datasets/imagenet", {"persistentVolumeClaim": {"claimName": "i"}},
          True)])
    assert volumes == [{"name": "dataset-imagenet-1k",
                        "persistentVolumeClaim": {"claimName": "i"}}]
    assert mounts == [{"name": "dataset-imagenet-1k", "mountPath": "/datasets/imagenet",
                       "readOnly": True}]
    env = notebook_env(SliceRequest(gpu_count=1, gpu_memory_mib=4096,
                                    allowed_models=frozenset({A100})), 4096, "aispike",
                       {"mnist": "/datasets/mnist"})
    assert env == {"AISPIKE_BACKEND": "aispike", "AISPIKE_GPU_COUNT": "1",
                   "AISPIKE_GPU_MODEL": A100, "AISPIKE_GPU_MEMORY_MIB": "4096",
                   "AISPIKE_DATASETS": "mnist=/datasets/mnist"}
