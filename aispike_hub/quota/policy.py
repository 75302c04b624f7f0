"""The policy: countable resources, limits per entry, tiers, and what makes a policy usable.

A policy is data an admin writes (see :mod:`.documents` for its document form); this module
holds its types and :func:`validate_policy`, which every :class:`Policy` runs on construction so
no inconsistent policy ever reaches :func:`~aispike_hub.quota.admit.admit`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Literal

from aispike_hub.quota.messages import _fmt

RESOURCES: tuple[str, ...] = ("gpu_memory_mib", "gpus", "cpu_milli", "memory_mib", "servers")
"""The countable resources a quota limits, in the order reasons list them."""

UNLIMITED = -1
"""In a policy entry: explicitly no limit (overrides a limit a group or the defaults set)."""

GroupCombine = Literal["most_generous", "least_generous"]

BUDGET_KEYS = {"gpu_memory": "gpu_memory_mib", "gpus": "gpus", "cpu": "cpu_milli",
               "memory": "memory_mib", "servers": "servers"}
"""Document keys of a budget -> the resource they set (documents use the admin's units); the
validation names fields by these keys, so an error points at what the admin wrote."""


class PolicyError(ValueError):
    """A policy that cannot be used; ``field`` names the offending field (dotted path)."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


# --- amounts ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Amounts:
    """How much of each countable resource something takes (a server, a user, a group)."""

    gpu_memory_mib: int = 0
    gpus: int = 0
    cpu_milli: int = 0
    memory_mib: int = 0
    servers: int = 0

    def get(self, resource: str) -> int:
        value: int = getattr(self, resource)
        return value

    def __add__(self, other: Amounts) -> Amounts:
        return Amounts(*(self.get(r) + other.get(r) for r in RESOURCES))

    def __sub__(self, other: Amounts) -> Amounts:
        return Amounts(*(self.get(r) - other.get(r) for r in RESOURCES))

    def as_dict(self) -> dict[str, int]:
        return {r: self.get(r) for r in RESOURCES}

    @staticmethod
    def total(items: Iterable[Amounts]) -> Amounts:
        out = Amounts()
        for a in items:
            out = out + a
        return out


@dataclass(frozen=True, slots=True)
class Budget:
    """A limit per countable resource, as written in a policy entry.

    ``None`` means "not set here" (inherit from the next layer), :data:`UNLIMITED` means "no
    limit", any other value is a limit ``>= 0``.
    """

    gpu_memory_mib: int | None = None
    gpus: int | None = None
    cpu_milli: int | None = None
    memory_mib: int | None = None
    servers: int | None = None

    def get(self, resource: str) -> int | None:
        value: int | None = getattr(self, resource)
        return value

    def is_empty(self) -> bool:
        return all(self.get(r) is None for r in RESOURCES)


@dataclass(frozen=True, slots=True)
class Entry:
    """The limits one policy entry sets (defaults, one user, or each member of a group)."""

    quota: Budget = field(default_factory=Budget)
    borrowing: Budget = field(default_factory=Budget)
    max_slice_mib: int | None = None
    """Largest GPU memory on one GPU (a whole GPU counts as its memory); None: not set."""
    allowed_models: frozenset[str] | None = None
    """GPU models this user may get; None: not set (any model if nothing else sets it)."""
    allowed_images: frozenset[str] | None = None
    tier: str | None = None


@dataclass(frozen=True, slots=True)
class GroupEntry:
    """A group: limits for each member, and optionally a quota for the whole group."""

    member: Entry = field(default_factory=Entry)
    quota: Budget = field(default_factory=Budget)
    borrowing: Budget = field(default_factory=Budget)


@dataclass(frozen=True, slots=True)
class Tier:
    """A priority tier.  Higher ``priority`` goes first in the queue and may preempt lower."""

    name: str
    priority: int
    preempts: bool = True
    """Whether requests of this tier may preempt servers of lower tiers (and borrowed ones)."""
    priority_class: str = ""
    """Kubernetes PriorityClass its pods carry (created by the chart); default aispike-<name>."""

    @property
    def kube_priority_class(self) -> str:
        return self.priority_class or f"aispike-{self.name}"


DEFAULT_TIERS: tuple[Tier, ...] = (
    Tier("low", 0, preempts=False),
    Tier("normal", 100),
    Tier("high", 200),
)


def _frozen(mapping: Mapping[str, object] | None) -> Mapping[str, object]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True, slots=True)
class Policy:
    """The whole quota and priority policy of a hub.  Validated on construction."""

    defaults: Entry = field(default_factory=Entry)
    groups: Mapping[str, GroupEntry] = field(default_factory=dict)
    users: Mapping[str, Entry] = field(default_factory=dict)
    tiers: tuple[Tier, ...] = DEFAULT_TIERS
    default_tier: str = "normal"
    group_combine: GroupCombine = "most_generous"

    def __post_init__(self) -> None:
        object.__setattr__(self, "groups", _frozen(self.groups))
        object.__setattr__(self, "users", _frozen(self.users))
        object.__setattr__(self, "tiers", tuple(self.tiers))
        validate_policy(self)

    def tier(self, name: str) -> Tier:
        for t in self.tiers:
            if t.name == name:
                return t
        raise KeyError(name)


def entry_fields() -> tuple[str, ...]:
    """Field names of a policy entry (for API validation and docs)."""
    return tuple(f.name for f in fields(Entry))


# --- validation ---------------------------------------------------------------------------------


def _check_budget(path: str, budget: Budget) -> None:
    for key, r in BUDGET_KEYS.items():
        v = budget.get(r)
        if v is not None and v != UNLIMITED and v < 0:
            raise PolicyError(f"{path}.{key}", f"must be >= 0 or unlimited, got {v}")


def _check_entry(path: str, entry: Entry, tiers: set[str]) -> None:
    _check_budget(f"{path}.quota", entry.quota)
    _check_budget(f"{path}.borrowing", entry.borrowing)
    if entry.max_slice_mib is not None and entry.max_slice_mib not in (UNLIMITED, 0) and (
        entry.max_slice_mib < 0
    ):
        raise PolicyError(f"{path}.max_slice", f"must be > 0, got {entry.max_slice_mib}")
    if entry.max_slice_mib == 0:
        raise PolicyError(f"{path}.max_slice", "must be > 0 (use allowed_models: [] for no GPU)")
    for name in ("allowed_models", "allowed_images"):
        values: frozenset[str] | None = getattr(entry, name)
        if values is not None and any(not v.strip() for v in values):
            raise PolicyError(f"{path}.{name}", "names must not be empty")
    if entry.tier is not None and entry.tier not in tiers:
        raise PolicyError(f"{path}.tier", f"unknown tier {entry.tier!r}; tiers: {sorted(tiers)}")
    # A slice larger than the GPU memory ceiling (quota plus borrowing) could never start; no
    # ceiling (no quota, or unlimited quota or borrowing) allows any slice.
    quota_mem, borrow_mem = entry.quota.gpu_memory_mib, entry.borrowing.gpu_memory_mib
    if (
        entry.max_slice_mib is not None
        and entry.max_slice_mib != UNLIMITED
        and quota_mem is not None
        and quota_mem != UNLIMITED
        and borrow_mem != UNLIMITED
        and entry.max_slice_mib > quota_mem + (borrow_mem or 0)
    ):
        raise PolicyError(
            f"{path}.max_slice",
            f"{_fmt('gpu_memory_mib', entry.max_slice_mib)} is more than the GPU memory quota "
            f"({_fmt('gpu_memory_mib', quota_mem)}): no slice that large could ever start",
        )


def validate_policy(policy: Policy) -> None:
    """Raise :class:`PolicyError` naming the field when ``policy`` is inconsistent."""
    names = [t.name for t in policy.tiers]
    if not names:
        raise PolicyError("tiers", "at least one tier is needed")
    for i, t in enumerate(policy.tiers):
        if not t.name or not t.name.replace("-", "").replace("_", "").isalnum():
            raise PolicyError(f"tiers[{i}].name", f"use letters, digits, - and _; got {t.name!r}")
    if len(set(names)) != len(names):
        raise PolicyError("tiers", f"tier names must be unique, got {names}")
    prios = [t.priority for t in policy.tiers]
    if len(set(prios)) != len(prios):
        raise PolicyError("tiers", f"tier priorities must be unique, got {prios}")
    if policy.default_tier not in names:
        raise PolicyError("default_tier", f"unknown tier {policy.default_tier!r}; tiers: {names}")
    if policy.group_combine not in ("most_generous", "least_generous"):
        raise PolicyError("group_combine", "must be most_generous or least_generous")
    tiers = set(names)
    _check_entry("defaults", policy.defaults, tiers)
    for name, g in policy.groups.items():
        if not name:
            raise PolicyError("groups", "group names must not be empty")
        _check_entry(f"groups.{name}.member", g.member, tiers)
        _check_budget(f"groups.{name}.quota", g.quota)
        _check_budget(f"groups.{name}.borrowing", g.borrowing)
    for name, u in policy.users.items():
        if not name:
            raise PolicyError("users", "user names must not be empty")
        _check_entry(f"users.{name}", u, tiers)
