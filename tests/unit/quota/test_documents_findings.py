"""Policy documents as admins write them (:mod:`aispike_hub.quota.documents`), exactly.

An admin's policy is read from the config file or the REST API; a value read in the wrong unit
is a quota off by a factor of 1000 or 1024, and an error must name the field written.  These
cases pin each amount's parse (units, boundaries, refusals with their text), each document
error's field and message, and the round trip back to a document; they were written from the
survivors of a mutation run over ``quota/documents.py`` (docs/testing.md).  One found a bug: a
CPU amount in cores with a decimal part such as ``2.01`` was refused as "not a whole number"
(``2.01 * 1000`` is ``2009.9999999999998`` in floating point), though Kubernetes and the
chart's schema accept it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from aispike_hub.quota import (
    UNLIMITED,
    PolicyError,
    Tier,
    parse_amount,
    policy_from_dict,
    policy_to_dict,
)
from aispike_hub.quota.documents import check_name

GIB = 1024

AMOUNTS: list[tuple[str, object, int]] = [
    ("gpu_memory_mib", "16Gi", 16 * GIB),
    ("gpu_memory_mib", "512Mi", 512),
    ("gpu_memory_mib", "1Ti", 1024 * GIB),
    ("gpu_memory_mib", "1024Ki", 1),
    ("gpu_memory_mib", "1.5Gi", 1536),
    ("gpu_memory_mib", 8192, 8192),
    ("gpu_memory_mib", 8192.0, 8192),
    ("gpu_memory_mib", 0, 0),
    ("memory_mib", "64Gi", 64 * GIB),
    ("max_slice_mib", "40Gi", 40 * GIB),
    ("cpu_milli", 2, 2000),
    ("cpu_milli", "2", 2000),
    ("cpu_milli", "500m", 500),
    ("cpu_milli", 2.5, 2500),
    ("cpu_milli", 2.01, 2010),
    ("cpu_milli", "1.001", 1001),
    ("cpu_milli", 0.001, 1),
    ("gpus", 2, 2),
    ("gpus", "2", 2),
    ("gpus", 2.0, 2),
    ("gpus", 2**53, 2**53),
    ("servers", "unlimited", UNLIMITED),
    ("servers", 0, 0),
]


@pytest.mark.parametrize(("resource", "value", "amount"), AMOUNTS,
                         ids=[f"{r}-{v!r}" for r, v, _ in AMOUNTS])
def test_an_amount_is_read_in_the_admins_unit(resource: str, value: object, amount: int) -> None:
    """Rule: memory is MiB or a binary quantity (Ki/Mi/Gi/Ti); CPU is cores or millicores
    ("500m"), exact in decimal; counts are whole numbers up to 2**53; "unlimited" is -1."""
    assert parse_amount("p", resource, value) == amount


MEM = "expected MiB or a quantity like '16Gi', got "
CORES = "expected cores like 2 or '500m', got "
REFUSED: list[tuple[str, object, str]] = [
    ("gpu_memory_mib", "1Ki", "'1Ki' is not a whole number of MiB >= 0"),
    ("gpu_memory_mib", "8192", MEM + "'8192'"),
    ("gpu_memory_mib", "16G", MEM + "'16G'"),
    ("gpu_memory_mib", "Gi", MEM + "'Gi'"),
    ("gpu_memory_mib", "-1Gi", MEM + "'-1Gi'"),
    ("gpu_memory_mib", -1, "must be >= 0 or 'unlimited', got -1"),
    ("gpu_memory_mib", 1.5, "expected a whole number, got 1.5"),
    ("cpu_milli", "0.5m", "expected a whole number, got '0.5m'"),
    ("cpu_milli", "xm", CORES + "'xm'"),
    ("cpu_milli", "two", CORES + "'two'"),
    ("cpu_milli", -1, "must be >= 0 or 'unlimited', got -1"),
    ("cpu_milli", "1e400", "'1e400' is not a finite amount"),
    ("cpu_milli", "infm", "'infm' is not a finite amount"),
    ("cpu_milli", 0.0005, "expected a whole number, got 0.0005"),
    ("gpus", 1.5, "expected a whole number, got 1.5"),
    ("gpus", "x", "expected a whole number, got 'x'"),
    ("gpus", -1, "must be >= 0 or 'unlimited', got -1"),
    ("gpus", 2**53 + 2, "9007199254740994 is too large"),
    ("gpus", 2**62, "4611686018427387904 is too large"),
    ("gpus", "1e300", "'1e300' is too large"),
    ("gpus", "nan", "'nan' is not a finite amount"),
    ("gpus", float("inf"), "inf is not a finite amount"),
    ("servers", True, "expected a number or 'unlimited', got True"),
    ("servers", None, "expected a number or 'unlimited', got None"),
    ("servers", [1], "expected a number or 'unlimited', got [1]"),
]


@pytest.mark.parametrize(("resource", "value", "message"), REFUSED,
                         ids=[f"{r}-{v!r}" for r, v, _ in REFUSED])
def test_an_amount_that_is_not_one_is_refused_naming_the_field(resource: str, value: object,
                                                               message: str) -> None:
    """Rule: a wrong amount is a PolicyError at the field's path saying what was expected."""
    with pytest.raises(PolicyError) as e:
        parse_amount("a.b", resource, value)
    assert (e.value.field, e.value.message) == ("a.b", message)


def test_a_long_value_is_refused_before_it_is_parsed() -> None:
    """Rule: more than 64 characters (or an int of more than 62 bits) is too large, shown
    shortened, whatever it holds."""
    with pytest.raises(PolicyError) as e:
        parse_amount("p", "gpus", "9" * 65)
    assert e.value.message.endswith(" is too large") and len(e.value.message) < 80
    assert parse_amount("p", "gpus", "0" * 63 + "7") == 7
    with pytest.raises(PolicyError, match="is too large"):
        parse_amount("p", "gpus", "0" * 64 + "7")
    with pytest.raises(PolicyError, match="is too large"):
        parse_amount("p", "gpus", 2**63)


KEYS = "['cpu', 'gpu_memory', 'gpus', 'memory', 'servers']"
DOC_ERRORS: list[tuple[str, dict[str, Any], str, str]] = [
    ("unknown-top", {"x": 1}, "x",
     "unknown field; use defaults, groups, users, tiers, default_tier, group_combine"),
    ("entry-not-mapping", {"defaults": []}, "defaults", "expected a mapping, got []"),
    ("budget-not-mapping", {"defaults": {"quota": []}}, "defaults.quota",
     f"expected a mapping of {KEYS}, got []"),
    ("budget-unknown-key", {"defaults": {"quota": {"gpu": 1}}}, "defaults.quota.gpu",
     f"unknown limit; use one of {KEYS}"),
    ("borrowing-value", {"defaults": {"borrowing": {"memory": "1G"}}}, "defaults.borrowing.memory",
     "expected MiB or a quantity like '16Gi', got '1G'"),
    ("tier-not-text", {"defaults": {"tier": 3}}, "defaults.tier", "expected a tier name, got 3"),
    ("max-slice", {"defaults": {"max_slice": "1Gx"}}, "defaults.max_slice",
     "expected MiB or a quantity like '16Gi', got '1Gx'"),
    ("models-text", {"defaults": {"allowed_models": "A100"}}, "defaults.allowed_models",
     "expected a list of names, got 'A100'"),
    ("models-mapping", {"defaults": {"allowed_models": {"A100": 1}}}, "defaults.allowed_models",
     "expected a list of names, got {'A100': 1}"),
    ("model-not-text", {"defaults": {"allowed_models": ["A", 3]}}, "defaults.allowed_models[1]",
     "expected a non-empty name, got 3"),
    ("model-blank", {"defaults": {"allowed_models": ["A", " "]}}, "defaults.allowed_models[1]",
     "expected a non-empty name, got ' '"),
    ("image-too-long", {"defaults": {"allowed_images": ["x" * 254]}}, "defaults.allowed_images[0]",
     "expected a non-empty name, got 'xxxxxxxxxxxxxxxxxxxxxxxxxxxx...xxxxxxxxxxxxxxxxxxxxxxxxxxx…"),
    ("entry-unknown-key", {"users": {"al": {"colour": 1}}}, "users.al.colour",
     "unknown field; use one of ['quota', 'borrowing', 'max_slice', 'allowed_models', "
     "'allowed_images', 'tier']"),
    ("groups-not-mapping", {"groups": []}, "groups",
     "expected a mapping of name -> entry, got []"),
    ("users-not-mapping", {"users": "al"}, "users",
     "expected a mapping of name -> entry, got 'al'"),
    ("group-not-mapping", {"groups": {"ml": []}}, "groups.ml", "expected a mapping, got []"),
    ("group-unknown-key", {"groups": {"ml": {"members": {}}}}, "groups.ml.members",
     "unknown field; use member (limits of each member), quota and borrowing (of the whole "
     "group)"),
    ("group-member", {"groups": {"ml": {"member": {"quota": {"gpus": "x"}}}}},
     "groups.ml.member.quota.gpus", "expected a whole number, got 'x'"),
    ("group-quota", {"groups": {"ml": {"quota": {"gpus": "x"}}}}, "groups.ml.quota.gpus",
     "expected a whole number, got 'x'"),
    ("group-borrowing", {"groups": {"ml": {"borrowing": {"gpus": "x"}}}},
     "groups.ml.borrowing.gpus", "expected a whole number, got 'x'"),
    ("user-name-control", {"users": {"a\nb": {}}}, "users.a\nb",
     "'a\\nb' holds a control character"),
    ("user-name-blank", {"users": {" ": {}}}, "users", "the name is empty"),
    ("group-name-empty", {"groups": {"": {}}}, "groups", "the name is empty"),
    ("tiers-text", {"tiers": "low"}, "tiers", "expected a list of tiers, got 'low'"),
    ("tiers-mapping", {"tiers": {"name": "x"}}, "tiers",
     "expected a list of tiers, got {'name': 'x'}"),
    ("tier-not-mapping", {"tiers": [3]}, "tiers[0]",
     "expected a mapping with name and priority, got 3"),
    ("tier-unknown-key", {"tiers": [{"name": "x", "priority": 1, "colour": 1}]},
     "tiers[0].colour", "unknown field; use name, priority, preempts, priority_class"),
    ("tier-no-name", {"tiers": [{"priority": 1}]}, "tiers[0].name", "expected a name, got None"),
    ("tier-name-number", {"tiers": [{"name": 3, "priority": 1}]}, "tiers[0].name",
     "expected a name, got 3"),
    ("tier-second", {"tiers": [{"name": "a", "priority": 1}, {"name": "b"}]}, "tiers[1].priority",
     "expected an integer, got None"),
    ("tier-priority-bool", {"tiers": [{"name": "x", "priority": True}]}, "tiers[0].priority",
     "expected an integer, got True"),
    ("tier-preempts-text", {"tiers": [{"name": "x", "priority": 1, "preempts": "yes"}]},
     "tiers[0].preempts", "expected true or false, got 'yes'"),
    ("tier-class-not-text", {"tiers": [{"name": "x", "priority": 1, "priority_class": 3}]},
     "tiers[0].priority_class", "expected a name, got 3"),
    ("no-tiers", {"tiers": []}, "tiers", "at least one tier is needed"),
    ("default-tier-not-text", {"default_tier": 3}, "default_tier", "expected a tier name, got 3"),
    ("default-tier-unknown", {"default_tier": "gold"}, "default_tier",
     "unknown tier 'gold'; tiers: ['low', 'normal', 'high']"),
    ("combine-unknown", {"group_combine": "fair"}, "group_combine",
     "must be most_generous or least_generous, got 'fair'"),
    ("combine-null", {"group_combine": None}, "group_combine",
     "must be most_generous or least_generous, got None"),
]


@pytest.mark.parametrize(("doc", "field", "message"), [c[1:] for c in DOC_ERRORS],
                         ids=[c[0] for c in DOC_ERRORS])
def test_a_document_error_names_the_field_written(doc: dict[str, Any], field: str,
                                                  message: str) -> None:
    """Rule: every parse error is a PolicyError at the path the admin wrote (list items by
    index) with a message saying what is expected, values shortened."""
    with pytest.raises(PolicyError) as e:
        policy_from_dict(doc)
    assert (e.value.field, e.value.message) == (field, message)


def test_check_name_keeps_a_good_name_and_names_the_path() -> None:
    """Rule: user, group and tier names are 1 to 255 printable characters; the message does
    not repeat the path, which is the field."""
    assert check_name("users.al", "al") == "al"
    with pytest.raises(PolicyError) as e:
        check_name("users.x", "x" * 256)
    assert e.value.field == "users.x"
    assert e.value.message.endswith(" is longer than 255 characters")
    assert not e.value.message.startswith("users.x")


def test_defaults_of_a_document() -> None:
    """Rule: absent parts mean the default tiers, tier 'normal', most generous, no entries;
    with tiers given and no default tier, the first tier is the default; null parts are
    empty."""
    p = policy_from_dict({})
    assert (p.default_tier, p.group_combine, dict(p.groups), dict(p.users)) == (
        "normal", "most_generous", {}, {})
    assert [t.name for t in p.tiers] == ["low", "normal", "high"]
    q = policy_from_dict({"tiers": [{"name": "b", "priority": 1}, {"name": "a", "priority": 2}],
                          "groups": None, "users": None, "defaults": None})
    assert q.default_tier == "b"
    assert q.tiers == (Tier("b", 1, True, ""), Tier("a", 2, True, ""))
    assert policy_from_dict({"group_combine": "least_generous"}).group_combine == (
        "least_generous")
    g = policy_from_dict({"groups": {"ml": None, "cv": {"member": None, "quota": None}}})
    assert g.groups["ml"] == g.groups["cv"] and g.groups["ml"].member.tier is None


FULL = {
    "defaults": {"quota": {"gpu_memory": "16Gi", "cpu": "2500m", "memory": 1536, "gpus": 2,
                           "servers": "unlimited"},
                 "borrowing": {"gpu_memory": "8Gi", "cpu": 4}, "max_slice": "unlimited",
                 "allowed_models": ["b", "a"], "allowed_images": [], "tier": "low"},
    "groups": {"z": {}, "ml": {"member": {"max_slice": "8Gi"}, "quota": {"gpus": 8},
                               "borrowing": {"gpus": 0}}},
    "users": {"bo": {}, "al": {"quota": {"memory": "3Gi"}}},
    "tiers": [{"name": "low", "priority": 0, "preempts": False},
              {"name": "high", "priority": 9, "priority_class": "pc-high"}],
    "group_combine": "least_generous",
}


def test_a_policy_is_written_back_in_the_admins_units() -> None:
    """Rule: a policy is written back as a document in the admin's units (whole GiB as "Gi",
    else "Mi"; whole cores as a number, else "m"; -1 as "unlimited"), with only what is set,
    entries sorted by name, and reads back to an equal policy."""
    p = policy_from_dict(FULL)
    assert policy_to_dict(p) == {
        "defaults": {"quota": {"gpu_memory": "16Gi", "gpus": 2, "cpu": "2500m",
                               "memory": "1536Mi", "servers": "unlimited"},
                     "borrowing": {"gpu_memory": "8Gi", "cpu": 4}, "max_slice": "unlimited",
                     "allowed_models": ["a", "b"], "allowed_images": [], "tier": "low"},
        "groups": {"ml": {"member": {"max_slice": "8Gi"}, "quota": {"gpus": 8},
                          "borrowing": {"gpus": 0}}, "z": {}},
        "users": {"al": {"quota": {"memory": "3Gi"}}, "bo": {}},
        "tiers": [{"name": "low", "priority": 0, "preempts": False},
                  {"name": "high", "priority": 9, "preempts": True,
                   "priority_class": "pc-high"}],
        "default_tier": "low",
        "group_combine": "least_generous",
    }
    assert list(policy_to_dict(p)["groups"]) == ["ml", "z"]  # type: ignore[call-overload]
    assert policy_from_dict(policy_to_dict(p)) == p
    # whole cores stay an integer (JSON "4", not "4.0")
    assert json.dumps(policy_to_dict(p)["defaults"]) == json.dumps(  # type: ignore[index]
        {"quota": {"gpu_memory": "16Gi", "gpus": 2, "cpu": "2500m", "memory": "1536Mi",
                   "servers": "unlimited"}, "borrowing": {"gpu_memory": "8Gi", "cpu": 4},
         "max_slice": "unlimited", "allowed_models": ["a", "b"], "allowed_images": [],
         "tier": "low"})


def test_a_name_of_253_characters_is_accepted() -> None:
    """Rule: model and image names are 1 to 253 characters (a Kubernetes name's limit), both
    ends included."""
    p = policy_from_dict({"defaults": {"allowed_images": ["x" * 253], "allowed_models": ["A"]}})
    assert p.defaults.allowed_images == frozenset({"x" * 253})
