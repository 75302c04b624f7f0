"""Use against limits, per user and per group: the one place that says what a group's ceiling is.

Admission (:mod:`.admit`) asks it whether a whole group's quota has room; the admin panel shows
it as it is (the panel only formats).  A user's limits come from :func:`.resolve.resolve_limits`;
a group's quota and borrowing come from its own entry only (``quota`` + ``borrowing`` of the
whole group, counted over every server of its members).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

from aispike_hub.quota.policy import RESOURCES, UNLIMITED, Amounts, GroupEntry, Policy
from aispike_hub.quota.resolve import resolve_limits

if TYPE_CHECKING:  # admit imports this module; only the type is needed here
    from aispike_hub.quota.admit import Server


@dataclass(frozen=True, slots=True)
class Use:
    """One resource of a user or a group: what is used against which limits."""

    used: int
    quota: int | None
    """Nominal quota; None: unlimited."""
    ceiling: int | None
    """Nominal quota plus borrowing: the most ever allowed; None: unlimited."""
    source: str = ""
    """Where the limit comes from ("your user entry", "group 'ml101'", ...)."""

    @property
    def borrowing(self) -> bool:
        """Over the nominal quota (on borrowed capacity)."""
        return self.quota is not None and self.used > self.quota

    @property
    def over(self) -> bool:
        """Over the ceiling (possible only after a policy change)."""
        return self.ceiling is not None and self.used > self.ceiling


def _borrowing(resources: Mapping[str, Use]) -> tuple[str, ...]:
    return tuple(r for r, u in resources.items() if u.borrowing)


def _over(resources: Mapping[str, Use]) -> tuple[str, ...]:
    return tuple(r for r, u in resources.items() if u.over)


@dataclass(frozen=True, slots=True)
class UserReport:
    """A user's use of each resource against the user's resolved limits."""

    user: str
    groups: tuple[str, ...]
    tier: str
    servers: int
    resources: Mapping[str, Use]

    @property
    def borrowing(self) -> tuple[str, ...]:
        return _borrowing(self.resources)

    @property
    def over(self) -> tuple[str, ...]:
        return _over(self.resources)


@dataclass(frozen=True, slots=True)
class GroupReport:
    """A whole group's use of each resource against the group's own quota and ceiling."""

    group: str
    members_running: tuple[str, ...]
    resources: Mapping[str, Use]

    @property
    def borrowing(self) -> tuple[str, ...]:
        return _borrowing(self.resources)

    @property
    def over(self) -> tuple[str, ...]:
        return _over(self.resources)


@dataclass(frozen=True, slots=True)
class QuotaReport:
    """Every user and group of interest, sorted by name."""

    users: tuple[UserReport, ...]
    groups: tuple[GroupReport, ...]


def usage_of(servers: Iterable[Server], user: str) -> Amounts:
    """What ``user``'s servers take."""
    return Amounts.total(s.charge for s in servers if s.user == user)


def group_limits(entry: GroupEntry | None, resource: str) -> tuple[int | None, int | None]:
    """A whole group's ``(nominal quota, ceiling)`` of ``resource``; None: unlimited.

    No quota (or an unlimited one) means no limit at all; unlimited borrowing on a quota means
    no ceiling (the group may borrow without end, so it never waits for its members).
    """
    q = entry.quota.get(resource) if entry else None
    b = entry.borrowing.get(resource) if entry else None
    quota = None if q is None or q == UNLIMITED else q
    ceiling = None if quota is None or b == UNLIMITED else quota + (b or 0)
    return quota, ceiling


def group_report(policy: Policy, group: str, usage: Iterable[Server],
                 *, exclude: tuple[str, str] | None = None) -> GroupReport:
    """``group``'s use of its whole-group quota: every server of ``usage`` admitted in it.

    ``exclude`` is a ``(user, server)`` not to count (a server being admitted again).
    """
    members = [s for s in usage if group in s.groups
               and (exclude is None or (s.user, s.name) != exclude)]
    used = Amounts.total(s.charge for s in members)
    entry = policy.groups.get(group)
    resources = {}
    for r in RESOURCES:
        quota, ceiling = group_limits(entry, r)
        resources[r] = Use(used.get(r), quota, ceiling,
                           f"group '{group}'" if quota is not None else "")
    return GroupReport(group, tuple(sorted({s.user for s in members})),
                       MappingProxyType(resources))


def user_report(policy: Policy, user: str, groups: Iterable[str],
                servers: Sequence[Server]) -> UserReport:
    """``user``'s use (of ``servers``, the user's own) against the limits resolved for it."""
    names = tuple(sorted(set(groups)))
    limits = resolve_limits(policy, user, names)
    used = usage_of(servers, user)
    resources = {r: Use(used.get(r), limits.quota[r], limits.ceiling(r),
                        limits.sources.get(r, "")) for r in RESOURCES}
    return UserReport(user, names, limits.tier.name, len(servers), MappingProxyType(resources))


def quota_report(policy: Policy, usage: Sequence[Server],
                 groups_of: Mapping[str, Iterable[str]] | None = None) -> QuotaReport:
    """Every user with a policy entry, a server or known groups, and every group with an
    entry or a member's server: use against limits.

    ``groups_of`` adds what is known about users beyond their servers (e.g. the groups of a
    queued request); a user's groups are those plus the groups its servers were admitted in.
    """
    by_user: dict[str, list[Server]] = {}
    known: dict[str, set[str]] = {u: set(g) for u, g in (groups_of or {}).items()}
    for s in usage:
        by_user.setdefault(s.user, []).append(s)
        known.setdefault(s.user, set()).update(s.groups)
    users = tuple(user_report(policy, name, known.get(name, ()), by_user.get(name, []))
                  for name in sorted(set(policy.users) | set(by_user) | set(known)))
    in_use = {g for s in usage for g in s.groups}
    groups = tuple(group_report(policy, g, usage) for g in sorted(set(policy.groups) | in_use))
    return QuotaReport(users, groups)
