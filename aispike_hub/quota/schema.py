"""The policy document as a JSON schema, from the same tables the parser uses.

The Helm chart validates ``aispike.service.policy`` at install with this schema (embedded in
``helm/aispike-hub/values.schema.json``), so a bad policy fails ``helm install`` naming the field
instead of failing when the service starts. The schema is generated, never hand-edited: a unit
test compares the chart's copy with :func:`policy_schema`, and
``python -m aispike_hub.quota.schema helm/aispike-hub/values.schema.json`` rewrites it.

The schema checks shapes and units (field names, quantities, counts, tier fields); what needs the
whole document (a tier name that exists, borrowing without a quota) stays with
:func:`~aispike_hub.quota.policy.validate_policy`, which the service runs at start.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from aispike_hub.quota.documents import ENTRY_KEYS, GROUP_KEYS, POLICY_KEYS, TIER_KEYS
from aispike_hub.quota.policy import BUDGET_KEYS

_UNLIMITED: dict[str, Any] = {"const": "unlimited"}
_NUMBER = "[0-9]+(\\.[0-9]+)?"

AMOUNTS: dict[str, dict[str, Any]] = {
    # memory: MiB as a number, or a quantity (Ki, Mi, Gi, Ti)
    "gpu_memory_mib": {"anyOf": [{"type": "integer", "minimum": 0},
                                 {"type": "string", "pattern": f"^{_NUMBER}(Ki|Mi|Gi|Ti)$"},
                                 _UNLIMITED]},
    "memory_mib": {"anyOf": [{"type": "integer", "minimum": 0},
                             {"type": "string", "pattern": f"^{_NUMBER}(Ki|Mi|Gi|Ti)$"},
                             _UNLIMITED]},
    # cpu: cores as a number, or millicores ("500m")
    "cpu_milli": {"anyOf": [{"type": "number", "minimum": 0},
                            {"type": "string", "pattern": f"^{_NUMBER}m?$"}, _UNLIMITED]},
    # counts
    "gpus": {"anyOf": [{"type": "integer", "minimum": 0},
                       {"type": "string", "pattern": "^[0-9]+$"}, _UNLIMITED]},
    "servers": {"anyOf": [{"type": "integer", "minimum": 0},
                          {"type": "string", "pattern": "^[0-9]+$"}, _UNLIMITED]},
}
DESCRIPTIONS = {
    "gpu_memory": "GPU memory: MiB, or a quantity like 16Gi, or unlimited.",
    "gpus": "Whole GPUs (a slice counts as one GPU), or unlimited.",
    "cpu": "CPU cores (2, '500m'), or unlimited.",
    "memory": "RAM: MiB, or a quantity like 64Gi, or unlimited.",
    "servers": "Running servers, or unlimited.",
}


def _budget(what: str) -> dict[str, Any]:
    return {
        "type": ["object", "null"], "additionalProperties": False, "description": what,
        "properties": {key: {**AMOUNTS[resource], "description": DESCRIPTIONS[key]}
                       for key, resource in BUDGET_KEYS.items()},
    }


def _names(what: str) -> dict[str, Any]:
    return {"type": ["array", "null"], "description": what,
            "items": {"type": "string", "minLength": 1, "maxLength": 253, "pattern": "\\S"}}


def _entry(what: str) -> dict[str, Any]:
    props: dict[str, Any] = {
        "quota": _budget("Limits of this user (each member, for a group's member entry)."),
        "borrowing": _budget("How far beyond the quota idle capacity may be borrowed."),
        "max_slice": {**AMOUNTS["gpu_memory_mib"], "description": "The largest slice."},
        "allowed_models": _names("GPU models this entry may use; absent: any."),
        "allowed_images": _names("Images this entry may use; absent: any."),
        "tier": {"type": ["string", "null"], "description": "Priority tier by name."},
    }
    assert set(props) == set(ENTRY_KEYS), "the schema and the parser disagree on entry fields"
    return {"type": ["object", "null"], "additionalProperties": False, "description": what,
            "properties": props}


def policy_schema() -> dict[str, Any]:
    """JSON schema (draft 7 subset, as Helm validates) of a policy document."""
    group: dict[str, Any] = {
        "type": ["object", "null"], "additionalProperties": False,
        "description": "A group: limits of each member, and of the whole group.",
        "properties": {
            "member": _entry("Limits of each member of the group."),
            "quota": _budget("Limits of the whole group (all members together)."),
            "borrowing": _budget("How far beyond its quota the group may borrow."),
        },
    }
    assert set(group["properties"]) == set(GROUP_KEYS)
    tier: dict[str, Any] = {
        "type": "object", "additionalProperties": False, "required": ["name", "priority"],
        "properties": {
            "name": {"type": "string", "pattern": "^[A-Za-z0-9_-]+$",
                     "description": "Tier name."},
            "priority": {"type": "integer", "description": "Higher runs first and preempts."},
            "preempts": {"type": "boolean", "description": "May preempt lower tiers."},
            "priority_class": {"type": "string",
                               "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
                               "description": "PriorityClass name (default aispike-<name>)."},
        },
    }
    assert set(tier["properties"]) == set(TIER_KEYS)
    props: dict[str, Any] = {
        "defaults": _entry("Entry for every user without one of their own."),
        "groups": {"type": ["object", "null"], "additionalProperties": group,
                   "description": "Entries per hub group."},
        "users": {"type": ["object", "null"],
                  "additionalProperties": _entry("Entry of one hub user."),
                  "description": "Entries per hub user."},
        "tiers": {"type": "array", "minItems": 1, "items": tier,
                  "description": "Priority tiers; each becomes a PriorityClass."},
        "default_tier": {"type": "string", "description": "Tier of users without one."},
        "group_combine": {"enum": ["most_generous", "least_generous"],
                          "description": "How a user in several groups is limited."},
    }
    assert set(props) == set(POLICY_KEYS)
    return {"type": "object", "additionalProperties": False, "properties": props}


def embed(chart_schema: dict[str, Any]) -> dict[str, Any]:
    """The chart's values schema with ``aispike.service.policy`` replaced by the policy schema
    (its description kept)."""
    service = chart_schema["properties"]["aispike"]["properties"]["service"]["properties"]
    description = service.get("policy", {}).get("description", "")
    service["policy"] = {**policy_schema(), "description": description}
    return chart_schema


def main(argv: list[str]) -> int:
    """Rewrite the policy part of a chart's values.schema.json."""
    if len(argv) != 1:
        print("usage: python -m aispike_hub.quota.schema PATH/values.schema.json",
              file=sys.stderr)
        return 2
    path = Path(argv[0])
    doc = embed(json.loads(path.read_text()))
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
