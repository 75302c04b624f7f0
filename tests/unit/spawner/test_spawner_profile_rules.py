"""The pure rules of profiles and resources (``aispike_hub.spawner.profiles``) as tables."""

from __future__ import annotations

from typing import Any

import pytest

from aispike_hub.spawner.form import FormError, options_from_formdata
from aispike_hub.spawner.profiles import (
    bound_notes,
    bounds_of,
    check_choices,
    merge_overrides,
    no_request_above_limit,
    profile_fields,
    profile_overrides,
    resources_for,
    select_profile,
    split_options,
)

PROFILES: list[dict[str, Any]] = [
    {"slug": "cpu", "display_name": "CPU", "kubespawner_override": {"max_gpus": 0}},
    {"slug": "gpu", "display_name": "GPU", "default": True,
     "kubespawner_override": {"max_gpu_gib": 40, "environment": {"A": "1", "B": "2"}},
     "profile_options": {
         "image": {"display_name": "Image", "choices": {
             "torch": {"display_name": "PyTorch",
                       "kubespawner_override": {"image": "torch:1"}},
             "jax": {"display_name": "JAX", "default": True,
                     "kubespawner_override": {"image": "jax:1",
                                              "environment": {"B": None, "C": "3"}}}},
             "unlisted_choice": {"enabled": True, "validation_regex": "^quay.io/.+$",
                                 "validation_message": "an image on quay.io",
                                 "kubespawner_override": {
                                     "image": "{value}",
                                     "extra_labels": {"by": "{username}", "img": "{value}"}}}},
         "size": {"display_name": "Size", "choices": {
             "s": {"display_name": "S", "kubespawner_override": {"mem_limit": "4G"}}},
             "unlisted_choice": {"enabled": False}},
     }},
]


def test_the_profile_is_the_named_one_or_the_default() -> None:
    assert select_profile(PROFILES, "cpu") is PROFILES[0]
    assert select_profile(PROFILES, None) is PROFILES[1]
    assert select_profile(PROFILES, "") is PROFILES[1]
    assert select_profile([], "gpu") is None
    with pytest.raises(FormError) as e:
        select_profile(PROFILES, "tpu")
    assert e.value.fields == ["profile"] and "choose one of cpu, gpu" in str(e.value)


@pytest.mark.parametrize(("options", "field", "words"), [
    ({"image": "tensorflow"}, "image", "is not a choice; choose one of torch, jax"),
    ({"image--unlisted-choice": "docker.io/evil"}, "image--unlisted-choice",
     "an image on quay.io"),
    ({"size--unlisted-choice": "XL"}, "size--unlisted-choice", "takes no value of your own"),
    ({"image": ["torch"]}, "image", "is not a choice"),
])
def test_choices_the_profile_does_not_offer_are_refused(options: dict[str, Any], field: str,
                                                        words: str) -> None:
    with pytest.raises(FormError) as e:
        check_choices(PROFILES[1], options)
    assert e.value.fields == [field] and words in str(e.value)


def test_overrides_apply_in_kubespawners_order_with_the_unlisted_value() -> None:
    check_choices(PROFILES[1], {"image": "torch"})
    assert profile_overrides(PROFILES[1], {"image": "torch"}) == [
        PROFILES[1]["kubespawner_override"], {"image": "torch:1"}, {"mem_limit": "4G"}]
    # defaults: the default choice of each option
    assert profile_overrides(PROFILES[1], {})[1]["image"] == "jax:1"
    unlisted = profile_overrides(PROFILES[1], {"image--unlisted-choice": "quay.io/me/x:1"})
    # {value} is the user's text; KubeSpawner's own {username} expansion stays for later
    assert unlisted[1] == {"image": "quay.io/me/x:1",
                           "extra_labels": {"by": "{username}", "img": "quay.io/me/x:1"}}
    # the configuration is never changed by applying overrides
    assert PROFILES[1]["profile_options"]["image"]["unlisted_choice"][
        "kubespawner_override"]["image"] == "{value}"


def test_overrides_merge_dicts_recursively_and_none_removes() -> None:
    values = {"environment": {"A": "0", "Z": "9"}, "image": "base", "max_gpus": 8}
    merged = merge_overrides(values, profile_overrides(PROFILES[1], {}),
                             keys={"environment", "image", "max_gpu_gib"})
    assert merged == {"environment": {"A": "1", "C": "3", "Z": "9"}, "image": "jax:1",
                      "max_gpus": 8, "max_gpu_gib": 40}
    assert values["environment"] == {"A": "0", "Z": "9"}  # a copy


def test_profile_options_and_aispike_fields_are_split() -> None:
    raw = {"profile": "gpu", "image": "torch", "gpu_gib": 8, "size": "s"}
    assert split_options(raw, PROFILES[1]) == ({"profile": "gpu", "image": "torch",
                                                "size": "s"}, {"gpu_gib": 8})
    # a profile option named like an AISpike field takes its place in that profile's form
    assert "image" not in profile_fields(PROFILES[1]) and "image" in profile_fields(None)
    assert split_options({"gpu_gib": 8}, None) == ({}, {"gpu_gib": 8})


@pytest.mark.parametrize(("formdata", "expected"), [
    ({"profile": ["gpu"], "profile-option-gpu--image": ["torch"],
      "profile-option-gpu--gpu_gib": ["8"], "profile-option-gpu--cpu": ["1.5"],
      "profile-option-gpu--datasets": ["a", "b"], "profile-option-cpu--cpu": ["4"],
      "_xsrf": ["x"]},
     {"profile": "gpu", "image": "torch", "gpu_gib": 8, "cpu": 1.5, "datasets": ["a", "b"]}),
    ({"profile": ["gpu"], "profile-option-gpu--image--unlisted-choice": ["quay.io/x:1"]},
     {"profile": "gpu", "image--unlisted-choice": "quay.io/x:1"}),
    ({"gpu_gib": ["6"], "gpu_count": ["1"], "memory_gib": [""], "cpu": ["2"]},
     {"gpu_gib": 6, "gpu_count": 1, "cpu": 2}),
    ({"gpu_gib": ["4; rm -rf /"], "privileged": ["on"]},
     {"gpu_gib": "4; rm -rf /", "privileged": "on"}),  # refused later, by name
])
def test_form_data_becomes_kubespawner_shaped_user_options(formdata: dict[str, Any],
                                                           expected: dict[str, Any]) -> None:
    assert options_from_formdata(formdata) == expected


# --- CPU and RAM ---------------------------------------------------------------------------------

# (choice, limit, guarantee, default) -> (limit, guarantee, amount)
RESOURCES = [
    ("nothing set, no choice: the default", (None, None, None, 2), (2, 2, 2)),
    ("nothing set, a choice", (3, None, None, 2), (3, 3, 3)),
    ("admin overcommit, no choice: the admin's", (None, 4, 1, 2), (4, 1, 4)),
    ("admin overcommit, a choice: ratio kept", (2, 4, 1, 2), (2, 0.5, 2)),
    ("admin limit only, a choice", (2, 4, None, 2), (2, 2, 2)),
    ("admin limit only, no choice", (None, 4, None, 2), (4, None, 4)),
    ("admin guarantee only, a choice above it", (3, None, 1, 2), (3, 1, 3)),
    ("admin guarantee only, a choice below it", (0.5, None, 1, 2), (0.5, 0.5, 0.5)),
    ("admin guarantee above limit: never above", (None, 4, 8, 2), (4, 4, 4)),
]


@pytest.mark.parametrize(("case", "given", "expected"), RESOURCES, ids=[r[0] for r in RESOURCES])
def test_admin_settings_are_bounds_and_overcommit_survives(
        case: str, given: tuple[Any, ...], expected: tuple[Any, ...]) -> None:
    got = resources_for(*given)
    assert (got.limit, got.guarantee, got.amount) == expected
    assert got.guarantee is None or got.limit is None or got.guarantee <= got.limit


def test_the_form_range_is_capped_by_the_admins_limit() -> None:
    assert bounds_of(0.5, 16, 2, 4) == bounds_of(0.5, 4, 4, None)
    assert bounds_of(0.5, 16, 2, None).default == 2
    assert bounds_of(1, 128, 8, 0.5).low == 0.5  # a tiny limit still gives a range


def test_requests_never_exceed_limits() -> None:
    def qty(v: Any) -> float:
        return float(str(v).removesuffix("Gi"))

    assert no_request_above_limit({"nvidia.com/gpu": "2", "x": "1", "y": "bad"},
                                  {"nvidia.com/gpu": "1", "y": "1"}, qty) == {
        "nvidia.com/gpu": "1", "x": "1", "y": "bad"}


def test_the_bounds_are_stated() -> None:
    notes = bound_notes({"cpu_limit": 4.0, "cpu_guarantee": 1.0, "mem_limit": 8 << 30,
                         "mem_guarantee": None})
    assert notes == ["CPUs: at most 4 CPUs (the admin's limit); 25% of what you choose is "
                     "guaranteed, the rest is shared.",
                     "RAM: at most 8 GiB (the admin's limit)."]
    assert bound_notes({}) == []
