"""A user's resolved limits and what one request counts, exactly (:mod:`.quota.resolve`).

Every admission decision starts here: which value of each limit applies, where it came from
(the reasons name it), and how much GPU memory a request counts.  The table
(``test_quota_table.py``) checks verdicts; these cases pin the whole :class:`Limits` and each
charge, and were written from the survivors of a mutation run over ``quota/resolve.py``
(docs/testing.md).
"""

from __future__ import annotations

from typing import Any

import pytest

from aispike_hub.model import SliceRequest
from aispike_hub.quota import Amounts, policy_from_dict, resolve_limits, restrict_request
from aispike_hub.quota.resolve import charge_of, per_gpu_mib

GIB = 1024
NONE5 = dict.fromkeys(("gpu_memory_mib", "gpus", "cpu_milli", "memory_mib", "servers"))
NO_LIMIT = "no limit set"


def limits_of(doc: dict[str, Any], groups: tuple[str, ...] = (), user: str = "al"
              ) -> dict[str, Any]:
    """The resolved limits as one plain dict, so a case compares all of them at once."""
    lim = resolve_limits(policy_from_dict(doc), user, groups)
    return {"quota": {k: v for k, v in lim.quota.items() if v is not None},
            "borrowing": {k: v for k, v in lim.borrowing.items() if v},
            "max_slice": lim.max_slice_mib, "models": lim.allowed_models,
            "images": lim.allowed_images, "tier": lim.tier.name,
            "sources": {k: v for k, v in lim.sources.items() if v != NO_LIMIT}}


ML = {"member": {"quota": {"gpu_memory": "16Gi", "servers": 2}, "tier": "high",
                 "allowed_models": ["A100"], "max_slice": "8Gi"}}
CV = {"member": {"quota": {"gpu_memory": "24Gi"}, "tier": "low",
                 "allowed_models": ["A100", "H100"], "max_slice": "4Gi"}}
DEFAULTS = {"quota": {"gpu_memory": "8Gi", "servers": 1}, "allowed_images": ["a", "b"]}

CASES: list[tuple[str, dict[str, Any], tuple[str, ...], dict[str, Any]]] = [
    ("nothing-set", {}, (), {
        "quota": {}, "borrowing": {}, "max_slice": None, "models": None, "images": None,
        "tier": "normal", "sources": {"tier": "the default tier"}}),
    ("defaults", {"defaults": DEFAULTS}, (), {
        "quota": {"gpu_memory_mib": 8 * GIB, "servers": 1}, "borrowing": {}, "max_slice": None,
        "models": None, "images": frozenset({"a", "b"}), "tier": "normal",
        "sources": {"gpu_memory_mib": "the defaults", "servers": "the defaults",
                    "allowed_images": "the defaults", "tier": "the default tier"}}),
    ("user-entry-wins", {"defaults": DEFAULTS, "users": {"al": {
        "quota": {"servers": "unlimited", "gpus": 3}, "tier": "low"}}}, (), {
        "quota": {"gpu_memory_mib": 8 * GIB, "gpus": 3}, "borrowing": {}, "max_slice": None,
        "models": None, "images": frozenset({"a", "b"}), "tier": "low",
        "sources": {"gpu_memory_mib": "the defaults", "gpus": "your user entry",
                    "servers": "your user entry", "allowed_images": "the defaults",
                    "tier": "your user entry"}}),
    ("another-users-entry-ignored", {"users": {"bo": {"quota": {"gpus": 1}}}}, (), {
        "quota": {}, "borrowing": {}, "max_slice": None, "models": None, "images": None,
        "tier": "normal", "sources": {"tier": "the default tier"}}),
    ("groups-most-generous", {"defaults": DEFAULTS, "groups": {"ml": ML, "cv": CV}},
     ("ml", "cv", "unknown"), {
        "quota": {"gpu_memory_mib": 24 * GIB, "servers": 2}, "borrowing": {},
        "max_slice": 8 * GIB, "models": frozenset({"A100", "H100"}),
        "images": frozenset({"a", "b"}), "tier": "high",
        "sources": {"gpu_memory_mib": "group 'cv'", "servers": "group 'ml'",
                    "max_slice_mib": "group 'ml'", "allowed_models": "group 'cv', group 'ml'",
                    "allowed_images": "the defaults", "tier": "group 'ml'"}}),
    ("groups-least-generous", {"defaults": DEFAULTS, "groups": {"ml": ML, "cv": CV},
                               "group_combine": "least_generous"}, ("ml", "cv"), {
        "quota": {"gpu_memory_mib": 16 * GIB, "servers": 1}, "borrowing": {},
        "max_slice": 4 * GIB, "models": frozenset({"A100"}),
        "images": frozenset({"a", "b"}), "tier": "low",
        "sources": {"gpu_memory_mib": "group 'ml'", "servers": "the defaults",
                    "max_slice_mib": "group 'cv'", "allowed_models": "group 'cv', group 'ml'",
                    "allowed_images": "the defaults", "tier": "group 'cv'"}}),
    ("equal-groups-name-the-first-alphabetically",
     {"groups": {"b": {"member": {"quota": {"gpus": 2}}}, "a": {"member": {"quota": {"gpus": 2}}}}},
     ("b", "a"), {
        "quota": {"gpus": 2}, "borrowing": {}, "max_slice": None, "models": None,
        "images": None, "tier": "normal",
        "sources": {"gpus": "group 'a'", "tier": "the default tier"}}),
    ("a-tie-does-not-stop-the-search",
     {"groups": {"a": {"member": {"quota": {"gpus": 2}}}, "b": {"member": {"quota": {"gpus": 2}}},
                 "c": {"member": {"quota": {"gpus": 4}}}}},
     ("a", "b", "c"), {
        "quota": {"gpus": 4}, "borrowing": {}, "max_slice": None, "models": None,
        "images": None, "tier": "normal",
        "sources": {"gpus": "group 'c'", "tier": "the default tier"}}),
    ("a-group-unlimited-beats-a-limit", {"defaults": {"quota": {"gpus": 1}}, "groups": {
        "a": {"member": {"quota": {"gpus": "unlimited"}}},
        "b": {"member": {"quota": {"gpus": 4}}}}},
     ("a", "b"), {
        "quota": {}, "borrowing": {}, "max_slice": None, "models": None, "images": None,
        "tier": "normal", "sources": {"gpus": "group 'a'", "tier": "the default tier"}}),
    ("least-generous-limit-beats-unlimited", {"group_combine": "least_generous", "groups": {
        "a": {"member": {"quota": {"gpus": "unlimited"}}},
        "b": {"member": {"quota": {"gpus": 4}}}}},
     ("a", "b"), {
        "quota": {"gpus": 4}, "borrowing": {}, "max_slice": None, "models": None,
        "images": None, "tier": "normal",
        "sources": {"gpus": "group 'b'", "tier": "the default tier"}}),
    ("least-generous-a-group-without-models-does-not-widen",
     {"group_combine": "least_generous", "groups": {"a": {"member": {"tier": "high"}},
                                                    "b": {"member": {"allowed_models": ["L4"]}}}},
     ("a", "b"), {
        "quota": {}, "borrowing": {}, "max_slice": None, "models": frozenset({"L4"}),
        "images": None, "tier": "normal",
        "sources": {"allowed_models": "group 'b'",
                    "tier": "the default tier"}}),
    ("most-generous-a-group-without-models-allows-any",
     {"defaults": {"allowed_models": ["T4"]},
      "groups": {"a": {"member": {"allowed_models": ["L4"]}}, "b": {"member": {"tier": "low"}}}},
     ("a", "b"), {
        "quota": {}, "borrowing": {}, "max_slice": None, "models": frozenset({"L4", "T4"}),
        "images": None, "tier": "normal",
        "sources": {"allowed_models": "group 'a', the defaults",
                    "tier": "the default tier"}}),
    ("most-generous-no-models-anywhere-in-a-group",
     {"groups": {"a": {"member": {"allowed_models": ["L4"]}}, "b": {"member": {"tier": "low"}}}},
     ("a", "b"), {
        "quota": {}, "borrowing": {}, "max_slice": None, "models": None,
        "images": None, "tier": "normal", "sources": {"tier": "the default tier"}}),
    ("borrowing", {"defaults": {"quota": {"gpus": 2, "servers": 1},
                                "borrowing": {"gpus": 1, "cpu": 4}}}, (), {
        "quota": {"gpus": 2, "servers": 1}, "borrowing": {"gpus": 1}, "max_slice": None,
        "models": None, "images": None, "tier": "normal",
        "sources": {"gpus": "the defaults", "servers": "the defaults",
                    "borrowing.gpus": "the defaults", "borrowing.cpu_milli": "the defaults",
                    "tier": "the default tier"}}),
    ("unlimited-borrowing-is-no-limit", {"defaults": {"quota": {"gpus": 2},
                                                      "borrowing": {"gpus": "unlimited"}}}, (), {
        "quota": {}, "borrowing": {}, "max_slice": None, "models": None, "images": None,
        "tier": "normal", "sources": {"gpus": "the defaults", "borrowing.gpus": "the defaults",
                                      "tier": "the default tier"}}),
]


@pytest.mark.parametrize(("doc", "groups", "want"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_each_limit_resolves_on_its_own_and_names_its_source(
        doc: dict[str, Any], groups: tuple[str, ...], want: dict[str, Any]) -> None:
    """Rule: each limit comes from the user's entry, else the user's groups (a group that does
    not set it gives the defaults' value) combined most or least generously, else the
    defaults, else none; ties name the first group alphabetically; unlimited borrowing is no
    limit at all; borrowing counts only where there is a quota; the tier is the highest (or
    lowest) of those that apply."""
    assert limits_of(doc, groups) == want


def test_the_ceiling_is_quota_plus_borrowing() -> None:
    """Rule: a user may hold up to the nominal quota plus borrowing; no quota is no ceiling."""
    lim = resolve_limits(policy_from_dict({"defaults": {"quota": {"gpus": 2},
                                                        "borrowing": {"gpus": 3}}}), "al", ())
    assert (lim.ceiling("gpus"), lim.ceiling("servers")) == (5, None)
    assert lim.borrowing["servers"] == 0 and lim.quota["servers"] is None


A100 = 80 * GIB
CHARGES: list[tuple[str, SliceRequest, int, Amounts, int]] = [
    ("cpu-only", SliceRequest(gpu_count=0, cpu_milli=500, memory_mib=GIB), A100,
     Amounts(0, 0, 500, GIB, 1), 0),
    ("two-whole-gpus", SliceRequest(gpu_count=2), A100, Amounts(2 * A100, 2, 0, 0, 1), A100),
    ("one-whole-gpu-as-share", SliceRequest(gpu_count=1, gpu_share_milli=1000), A100,
     Amounts(A100, 1, 0, 0, 1), A100),
    ("memory-slice", SliceRequest(gpu_count=1, gpu_memory_mib=8 * GIB, cpu_milli=2000), A100,
     Amounts(8 * GIB, 1, 2000, 0, 1), 8 * GIB),
    ("half-share", SliceRequest(gpu_count=1, gpu_share_milli=500), A100,
     Amounts(40 * GIB, 1, 0, 0, 1), 40 * GIB),
    ("share-rounds-up", SliceRequest(gpu_count=1, gpu_share_milli=1), 1500,
     Amounts(2, 1, 0, 0, 1), 2),
    ("share-exact", SliceRequest(gpu_count=1, gpu_share_milli=250), 1000,
     Amounts(250, 1, 0, 0, 1), 250),
]


@pytest.mark.parametrize(("request_", "whole", "charge", "per_gpu"), [c[1:] for c in CHARGES],
                         ids=[c[0] for c in CHARGES])
def test_what_a_request_counts(request_: SliceRequest, whole: int, charge: Amounts,
                               per_gpu: int) -> None:
    """Rule: a whole GPU counts its memory, a slice its memory, a share its part of the GPU
    rounded up to the MiB (never less than it may use); every server counts one server; the
    largest-slice limit reads the memory per GPU."""
    assert charge_of(request_, whole) == charge
    assert per_gpu_mib(request_, whole) == per_gpu


RESTRICT: list[tuple[str, dict[str, Any], SliceRequest, SliceRequest | None]] = [
    ("no-model-limit", {}, SliceRequest(allowed_models=frozenset({"L4"})),
     SliceRequest(allowed_models=frozenset({"L4"}))),
    ("cpu-only-untouched", {"defaults": {"allowed_models": []}}, SliceRequest(gpu_count=0),
     SliceRequest(gpu_count=0)),
    ("any-becomes-allowed", {"defaults": {"allowed_models": ["A100", "L4"]}}, SliceRequest(),
     SliceRequest(allowed_models=frozenset({"A100", "L4"}))),
    ("narrowed", {"defaults": {"allowed_models": ["A100", "L4"]}},
     SliceRequest(allowed_models=frozenset({"L4", "T4"})),
     SliceRequest(allowed_models=frozenset({"L4"}))),
    ("none-left", {"defaults": {"allowed_models": ["A100"]}},
     SliceRequest(allowed_models=frozenset({"T4"})), None),
    ("no-model-allowed", {"defaults": {"allowed_models": []}}, SliceRequest(), None),
]


@pytest.mark.parametrize(("doc", "request_", "placed"), [c[1:] for c in RESTRICT],
                         ids=[c[0] for c in RESTRICT])
def test_a_request_is_narrowed_to_the_allowed_models(doc: dict[str, Any], request_: SliceRequest,
                                                     placed: SliceRequest | None) -> None:
    """Rule: placement gets only models both the request and the policy allow; none left
    means do not place at all (an empty set would mean any model)."""
    lim = resolve_limits(policy_from_dict(doc), "al", ())
    assert restrict_request(request_, lim) == placed
