"""Policy documents: the form admins write (traitlets config, REST API) and the store keeps.

Documents use the admin's units: memory as Kubernetes quantities (``"16Gi"``; a bare number is
MiB), CPU as cores (``2``, ``"500m"``), counts as integers, and ``"unlimited"``.  Every parse
error is a :class:`~aispike_hub.quota.policy.PolicyError` naming the field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from decimal import Decimal

from aispike_hub.model import GIB_IN_MIB
from aispike_hub.quota.policy import (
    BUDGET_KEYS,
    DEFAULT_TIERS,
    UNLIMITED,
    Budget,
    Entry,
    GroupEntry,
    Policy,
    PolicyError,
    Tier,
)
from aispike_hub.sanity import Rejected, shorten, shorten_text
from aispike_hub.sanity import name as sane_name
from aispike_hub.units import MIB, QuantityError, parse_quantity

_MEMORY_SUFFIXES = ("Ki", "Mi", "Gi", "Ti")
"""The suffixes a policy's memory amounts take (the schema's pattern says the same)."""


def parse_amount(path: str, resource: str, value: object) -> int:
    """A limit from a document: an int in the field's unit, ``"unlimited"``, or a quantity.

    Memory takes Kubernetes-style quantities (``"16Gi"``, ``"512Mi"``); CPU takes cores
    (``2``, ``"2"``, ``"500m"``) because ``cpu_milli`` in a config file is easy to get wrong by
    a factor of 1000; counts take plain integers.
    """
    if value == "unlimited":
        return UNLIMITED
    if isinstance(value, bool) or not isinstance(value, int | str | float):
        raise PolicyError(path, f"expected a number or 'unlimited', got {shorten(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise PolicyError(path, f"{shorten(value)} is not a finite amount")
    if (isinstance(value, int) and value.bit_length() > 62) or (
            isinstance(value, str) and len(value) > 64):
        raise PolicyError(path, f"{shorten(value)} is too large")
    try:
        return _amount(path, resource, value)
    except (OverflowError, ValueError) as e:
        if isinstance(e, PolicyError):
            raise
        raise PolicyError(path, f"{shorten(value)} is not an amount") from None


def _amount(path: str, resource: str, value: int | str | float) -> int:
    if resource in ("gpu_memory_mib", "memory_mib", "max_slice_mib"):
        if isinstance(value, str):
            # Kubernetes' quantity syntax, parsed once for the whole project (units.py); a
            # policy takes the binary suffixes, as memory limits are written.
            if not value.endswith(_MEMORY_SUFFIXES):
                raise PolicyError(path, "expected MiB or a quantity like '16Gi', got "
                                  f"{shorten(value)}")
            try:
                out = parse_quantity(value, what=path) / MIB
            except QuantityError:
                raise PolicyError(path, f"expected MiB or a quantity like '16Gi', "
                                  f"got {shorten(value)}") from None
            if out.denominator != 1:
                raise PolicyError(path, f"{shorten(value)} is not a whole number of MiB >= 0")
            return int(out)
        number = float(value)
    elif resource == "cpu_milli":
        if isinstance(value, str) and value.endswith("m"):
            try:
                number = float(value[:-1])
            except ValueError:
                raise PolicyError(path, "expected cores like 2 or '500m', got "
                                  f"{shorten(value)}") from None
        else:
            # cores to millicores in decimal: float(2.01) * 1000 is 2009.9999999999998, which
            # would refuse a CPU amount Kubernetes (and the chart's schema) accept
            try:
                number = float(Decimal(str(value)) * 1000)
            except (ValueError, ArithmeticError):
                raise PolicyError(path, "expected cores like 2 or '500m', got "
                                  f"{shorten(value)}") from None
    else:
        try:
            number = float(value)
        except ValueError:
            raise PolicyError(path, f"expected a whole number, got {shorten(value)}") from None
    if not math.isfinite(number):
        raise PolicyError(path, f"{shorten(value)} is not a finite amount")
    if number != int(number):
        raise PolicyError(path, f"expected a whole number, got {shorten(value)}")
    if number < 0:
        raise PolicyError(path, f"must be >= 0 or 'unlimited', got {shorten(value)}")
    if number > 2**53:
        raise PolicyError(path, f"{shorten(value)} is too large")
    return int(number)


def check_name(path: str, value: object) -> str:
    """A user, group or tier name: 1 to 255 printable characters (no NUL or newline)."""
    try:
        return sane_name(value, path, 255)
    except Rejected as e:
        raise PolicyError(path, e.message.removeprefix(f"{path}: ")) from None


def _budget_from(path: str, doc: object) -> Budget:
    if doc is None:
        return Budget()
    if not isinstance(doc, Mapping):
        raise PolicyError(path, f"expected a mapping of {sorted(BUDGET_KEYS)}, got {shorten(doc)}")
    values: dict[str, int] = {}
    for key, value in doc.items():
        if key not in BUDGET_KEYS:
            raise PolicyError(f"{path}.{key}", f"unknown limit; use one of {sorted(BUDGET_KEYS)}")
        resource = BUDGET_KEYS[key]
        values[resource] = parse_amount(f"{path}.{key}", resource, value)
    return Budget(**values)


def _names(path: str, doc: object) -> frozenset[str] | None:
    if doc is None:
        return None
    if isinstance(doc, str) or not isinstance(doc, Sequence | set | frozenset):
        raise PolicyError(path, f"expected a list of names, got {shorten(doc)}")
    out = []
    for i, v in enumerate(doc):
        if not isinstance(v, str) or not v.strip() or len(v) > 253:
            raise PolicyError(f"{path}[{i}]", f"expected a non-empty name, got {shorten(v)}")
        out.append(v)
    return frozenset(out)


ENTRY_KEYS = ("quota", "borrowing", "max_slice", "allowed_models", "allowed_images", "tier")
"""Fields of a user's (or a group member's) entry; the chart's JSON schema uses the same."""
GROUP_KEYS = ("member", "quota", "borrowing")
"""Fields of a group's entry."""
TIER_KEYS = ("name", "priority", "preempts", "priority_class")
"""Fields of a tier."""
POLICY_KEYS = ("defaults", "groups", "users", "tiers", "default_tier", "group_combine")
"""Fields of a whole policy document."""


def entry_from_dict(path: str, doc: object) -> Entry:
    """Parse one entry document, naming the field of any error."""
    if doc is None:
        return Entry()
    if not isinstance(doc, Mapping):
        raise PolicyError(path, f"expected a mapping, got {shorten(doc)}")
    for key in doc:
        if key not in ENTRY_KEYS:
            raise PolicyError(f"{path}.{key}", f"unknown field; use one of {list(ENTRY_KEYS)}")
    tier = doc.get("tier")
    if tier is not None and not isinstance(tier, str):
        raise PolicyError(f"{path}.tier", f"expected a tier name, got {shorten(tier)}")
    max_slice = doc.get("max_slice")
    return Entry(
        quota=_budget_from(f"{path}.quota", doc.get("quota")),
        borrowing=_budget_from(f"{path}.borrowing", doc.get("borrowing")),
        max_slice_mib=(None if max_slice is None
                       else parse_amount(f"{path}.max_slice", "max_slice_mib", max_slice)),
        allowed_models=_names(f"{path}.allowed_models", doc.get("allowed_models")),
        allowed_images=_names(f"{path}.allowed_images", doc.get("allowed_images")),
        tier=tier,
    )


def group_from_dict(path: str, doc: object) -> GroupEntry:
    if doc is None:
        return GroupEntry()
    if not isinstance(doc, Mapping):
        raise PolicyError(path, f"expected a mapping, got {shorten(doc)}")
    for key in doc:
        if key not in GROUP_KEYS:
            raise PolicyError(f"{path}.{key}",
                              "unknown field; use member (limits of each member), quota and "
                              "borrowing (of the whole group)")
    return GroupEntry(
        member=entry_from_dict(f"{path}.member", doc.get("member")),
        quota=_budget_from(f"{path}.quota", doc.get("quota")),
        borrowing=_budget_from(f"{path}.borrowing", doc.get("borrowing")),
    )


def tiers_from_list(path: str, doc: object) -> tuple[Tier, ...]:
    if not isinstance(doc, Sequence) or isinstance(doc, str):
        raise PolicyError(path, f"expected a list of tiers, got {shorten(doc)}")
    out = []
    for i, t in enumerate(doc):
        p = f"{path}[{i}]"
        if not isinstance(t, Mapping):
            raise PolicyError(p, f"expected a mapping with name and priority, got {shorten(t)}")
        for key in t:
            if key not in TIER_KEYS:
                raise PolicyError(f"{p}.{key}", "unknown field; use name, priority, preempts, "
                                  "priority_class")
        name, prio = t.get("name"), t.get("priority")
        if not isinstance(name, str):
            raise PolicyError(f"{p}.name", f"expected a name, got {shorten(name)}")
        if isinstance(prio, bool) or not isinstance(prio, int):
            raise PolicyError(f"{p}.priority", f"expected an integer, got {shorten(prio)}")
        preempts = t.get("preempts", True)
        if not isinstance(preempts, bool):
            raise PolicyError(f"{p}.preempts", f"expected true or false, got {shorten(preempts)}")
        pc = t.get("priority_class", "")
        if not isinstance(pc, str):
            raise PolicyError(f"{p}.priority_class", f"expected a name, got {shorten(pc)}")
        out.append(Tier(name, prio, preempts, pc))
    return tuple(out)


def policy_from_dict(doc: Mapping[str, object]) -> Policy:
    """Parse and validate a whole policy document; :class:`PolicyError` names the field."""
    for key in doc:
        if key not in POLICY_KEYS:
            raise PolicyError(key, "unknown field; use defaults, groups, users, tiers, "
                              "default_tier, group_combine")

    def mapping(key: str) -> Mapping[str, object]:
        value = doc.get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise PolicyError(key, f"expected a mapping of name -> entry, got {shorten(value)}")
        return value

    tiers = tiers_from_list("tiers", doc["tiers"]) if "tiers" in doc else DEFAULT_TIERS
    default_tier = doc.get("default_tier", tiers[0].name if "tiers" in doc and tiers else "normal")
    if not isinstance(default_tier, str):
        raise PolicyError("default_tier", f"expected a tier name, got {shorten(default_tier)}")
    combine = doc.get("group_combine", "most_generous")
    if combine not in ("most_generous", "least_generous"):
        raise PolicyError("group_combine", f"must be most_generous or least_generous, "
                          f"got {shorten(combine)}")
    for key in ("groups", "users"):
        for entry_name in mapping(key):
            shown = shorten_text(str(entry_name))
            check_name(f"{key}.{shown}" if shown.strip() else key, entry_name)
    return Policy(
        defaults=entry_from_dict("defaults", doc.get("defaults")),
        groups={str(k): group_from_dict(f"groups.{k}", v) for k, v in mapping("groups").items()},
        users={str(k): entry_from_dict(f"users.{k}", v) for k, v in mapping("users").items()},
        tiers=tiers,
        default_tier=default_tier,
        group_combine="most_generous" if combine == "most_generous" else "least_generous",
    )


def _amount_out(resource: str, value: int) -> int | str:
    if value == UNLIMITED:
        return "unlimited"
    if resource in ("gpu_memory_mib", "memory_mib", "max_slice_mib"):
        return f"{value // GIB_IN_MIB}Gi" if value % GIB_IN_MIB == 0 else f"{value}Mi"
    if resource == "cpu_milli":
        return value // 1000 if value % 1000 == 0 else f"{value}m"
    return value


def _budget_to(budget: Budget) -> dict[str, int | str]:
    return {key: _amount_out(r, v) for key, r in BUDGET_KEYS.items()
            if (v := budget.get(r)) is not None}


def entry_to_dict(entry: Entry) -> dict[str, object]:
    out: dict[str, object] = {}
    if not entry.quota.is_empty():
        out["quota"] = _budget_to(entry.quota)
    if not entry.borrowing.is_empty():
        out["borrowing"] = _budget_to(entry.borrowing)
    if entry.max_slice_mib is not None:
        out["max_slice"] = _amount_out("max_slice_mib", entry.max_slice_mib)
    if entry.allowed_models is not None:
        out["allowed_models"] = sorted(entry.allowed_models)
    if entry.allowed_images is not None:
        out["allowed_images"] = sorted(entry.allowed_images)
    if entry.tier is not None:
        out["tier"] = entry.tier
    return out


def group_to_dict(group: GroupEntry) -> dict[str, object]:
    out: dict[str, object] = {}
    member = entry_to_dict(group.member)
    if member:
        out["member"] = member
    if not group.quota.is_empty():
        out["quota"] = _budget_to(group.quota)
    if not group.borrowing.is_empty():
        out["borrowing"] = _budget_to(group.borrowing)
    return out


def tier_to_dict(tier: Tier) -> dict[str, object]:
    out: dict[str, object] = {"name": tier.name, "priority": tier.priority,
                              "preempts": tier.preempts}
    if tier.priority_class:
        out["priority_class"] = tier.priority_class
    return out


def policy_to_dict(policy: Policy) -> dict[str, object]:
    """The document :func:`policy_from_dict` reads back to an equal policy."""
    return {
        "defaults": entry_to_dict(policy.defaults),
        "groups": {k: group_to_dict(v) for k, v in sorted(policy.groups.items())},
        "users": {k: entry_to_dict(v) for k, v in sorted(policy.users.items())},
        "tiers": [tier_to_dict(t) for t in policy.tiers],
        "default_tier": policy.default_tier,
        "group_combine": policy.group_combine,
    }
