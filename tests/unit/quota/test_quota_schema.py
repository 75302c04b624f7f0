"""The policy's JSON schema (what ``helm install`` checks) agrees with the parser the service runs.

The chart embeds :func:`aispike_hub.quota.schema.policy_schema`; these cases are documents the
parser accepts or refuses, and the schema must say the same, so a bad policy fails at install
with its field named, and a good one is never refused there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from aispike_hub.quota import PolicyError, policy_from_dict, validate_policy
from aispike_hub.quota.schema import embed, policy_schema

REPO = Path(__file__).resolve().parents[3]
CHART_SCHEMA = REPO / "helm" / "aispike-hub" / "values.schema.json"

GOOD: list[dict[str, Any]] = [
    {},
    {"defaults": {"quota": {"servers": 1, "gpu_memory": "8Gi"}, "tier": "low"}},
    {"defaults": {"quota": {"gpu_memory": 8192, "memory": "64Gi", "cpu": "500m", "gpus": 2}}},
    {"defaults": {"quota": {"cpu": 2.5, "servers": "unlimited"}, "max_slice": "40Gi"}},
    {"groups": {"lab": {"member": {"quota": {"gpus": 2}, "tier": "normal"},
                        "quota": {"gpus": 8}, "borrowing": {"gpus": 4}}}},
    {"users": {"ada": {"allowed_models": ["NVIDIA A100-SXM4-80GB"], "allowed_images": ["py"]}}},
    {"tiers": [{"name": "low", "priority": 0, "preempts": False},
               {"name": "high", "priority": 100, "priority_class": "aispike-high"}],
     "default_tier": "low", "group_combine": "least_generous"},
]
BAD: list[tuple[dict[str, Any], str]] = [
    ({"defaults": {"quota": {"gpu_memory": "lots"}}}, "defaults.quota.gpu_memory"),
    ({"defaults": {"quota": {"gpu_memory": -1}}}, "defaults.quota.gpu_memory"),
    ({"defaults": {"quota": {"gpus": 1.5}}}, "defaults.quota.gpus"),
    ({"defaults": {"quota": {"cpu": "two"}}}, "defaults.quota.cpu"),
    ({"defaults": {"quota": {"gpu": 1}}}, "defaults.quota.gpu"),
    ({"defaults": {"quoat": {}}}, "defaults.quoat"),
    ({"groups": {"lab": {"members": {}}}}, "groups.lab.members"),
    ({"users": {"ada": {"allowed_models": "A100"}}}, "users.ada.allowed_models"),
    ({"users": {"ada": {"allowed_images": [""]}}}, "users.ada.allowed_images[0]"),
    ({"tiers": [{"name": "x"}]}, "tiers[0].priority"),
    ({"tiers": [{"name": "x", "priority": "high"}]}, "tiers[0].priority"),
    ({"group_combine": "fair"}, "group_combine"),
    ({"extra": 1}, "extra"),
]


def parser_accepts(doc: dict[str, Any]) -> bool:
    try:
        policy_from_dict(doc)
    except PolicyError:
        return False
    return True


def schema_errors(doc: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(policy_schema())
    return [".".join(str(p) for p in e.absolute_path) or "<root>"
            for e in validator.iter_errors(doc)]


@pytest.mark.parametrize("doc", GOOD)
def test_what_the_parser_accepts_the_schema_accepts(doc: dict[str, Any]) -> None:
    assert parser_accepts(doc)
    validate_policy(policy_from_dict(doc))
    assert schema_errors(doc) == []


@pytest.mark.parametrize(("doc", "field"), BAD)
def test_what_the_parser_refuses_the_schema_refuses_at_the_same_field(
    doc: dict[str, Any], field: str
) -> None:
    with pytest.raises(PolicyError) as refused:
        policy_from_dict(doc)
    assert refused.value.field.startswith(field.split("[")[0])
    errors = schema_errors(doc)
    assert errors, f"the schema accepts {doc}"
    top = field.split(".")[0].split("[")[0]
    assert any(e == "<root>" or e.startswith(top) for e in errors), errors


def test_the_chart_embeds_the_generated_policy_schema() -> None:
    chart = json.loads(CHART_SCHEMA.read_text())
    assert embed(json.loads(CHART_SCHEMA.read_text())) == chart, (
        "values.schema.json is stale: python -m aispike_hub.quota.schema "
        "helm/aispike-hub/values.schema.json")
