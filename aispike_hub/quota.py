"""Quotas, priority tiers and admission: who may start what, and if not, why not.

This is the one implementation of the quota rule.  The AISpike service calls it for every spawn
(under one lock, so concurrent starts cannot together pass a limit), the admin panel calls it to
show who is over quota, and the simulator calls it to replay a policy.  It is pure: the caller
passes the user, the request, what is already running and what the placement core said about
the cluster, and gets back a verdict with reasons a person can act on.

Semantics (written down precisely, as Kueue does, and tested as tables in
``tests/unit/quota/test_quota_table.py``):

- A **policy** has defaults, per-group entries and per-user entries.  Each limit of a user comes
  from the user's own entry if set there, else from the groups the user belongs to (the most
  generous value among them, or the least generous with ``group_combine="least_generous"``),
  else from the defaults, else it is unlimited.  Every limit is resolved on its own, and the
  resolved :class:`Limits` remember where each value came from, so reasons can name it.
- **Countable resources** (:data:`RESOURCES`): GPU memory, GPUs (devices touched: a slice counts
  as one), CPU, RAM and running servers.  Each has a **nominal quota** and an optional
  **borrowing** allowance on top.  A server beyond the nominal quota is admitted only while the
  cluster has idle capacity (the request fits now, without preempting anyone); it is marked
  *borrowed*, and borrowed servers are the first to be preempted.
- A group entry has limits for **each member** (``member``) and optionally a quota for **the
  whole group** (``quota`` + ``borrowing``), counted over every server of its members.
- **Per-request limits**: largest single slice (GPU memory on one GPU), allowed GPU models,
  allowed images.
- **Tiers** are ordered by priority.  A request that is within quota but does not fit may
  preempt servers of lower tiers, and borrowed servers of its own or lower tiers; never its own
  user's servers.
- **Verdicts**: *refuse* when the request can never be admitted as asked, or the user's own
  quota is used up (only the user can free it: waiting would not help); *queue* when it is
  admissible by quota but the group's quota is in use by others or the cluster is full;
  *admit* otherwise.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from functools import partial
from types import MappingProxyType
from typing import Literal

from aispike_hub.model import FULL_GPU_MILLI, GIB_IN_MIB, SliceRequest

RESOURCES: tuple[str, ...] = ("gpu_memory_mib", "gpus", "cpu_milli", "memory_mib", "servers")
"""The countable resources a quota limits, in the order reasons list them."""

UNLIMITED = -1
"""In a policy entry: explicitly no limit (overrides a limit a group or the defaults set)."""

GroupCombine = Literal["most_generous", "least_generous"]


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


def _check_budget(path: str, budget: Budget) -> None:
    for key, r in _BUDGET_KEYS.items():
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
    quota_mem = entry.quota.gpu_memory_mib
    if (
        entry.max_slice_mib not in (None, UNLIMITED)
        and quota_mem not in (None, UNLIMITED)
        and entry.max_slice_mib is not None
        and quota_mem is not None
        and entry.max_slice_mib > quota_mem + max(entry.borrowing.gpu_memory_mib or 0, 0)
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


# --- resolution -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Limits:
    """A user's resolved limits.  ``None`` in ``quota`` means unlimited."""

    quota: Mapping[str, int | None]
    borrowing: Mapping[str, int]
    max_slice_mib: int | None
    allowed_models: frozenset[str] | None
    allowed_images: frozenset[str] | None
    tier: Tier
    sources: Mapping[str, str]
    """Where each limit came from ("your user entry", "group 'ml101'", "the defaults")."""

    def ceiling(self, resource: str) -> int | None:
        """Nominal quota plus borrowing (None: unlimited)."""
        q = self.quota[resource]
        return None if q is None else q + self.borrowing[resource]


def _quota_of(entry: Entry, resource: str) -> int | None:
    return entry.quota.get(resource)


def _borrowing_of(entry: Entry, resource: str) -> int | None:
    return entry.borrowing.get(resource)


def resolve_limits(policy: Policy, user: str, groups: Iterable[str]) -> Limits:
    """The limits that apply to ``user`` in ``groups``.

    Each limit on its own: the user's entry if it sets it; else, for a user in groups with
    entries, each group's value (a group that does not set a limit gives the defaults' value:
    being in a group never takes away what the defaults give) combined by
    ``policy.group_combine``; else the defaults; else no limit.
    """
    member_of = sorted(g for g in set(groups) if g in policy.groups)
    user_entry = policy.users.get(user)
    sources: dict[str, str] = {}

    def layered(read: Callable[[Entry], object]) -> list[tuple[str, object]]:
        """[(source, value)] to combine; value None means no limit."""
        if user_entry is not None and read(user_entry) is not None:
            return [("your user entry", read(user_entry))]
        default = read(policy.defaults)
        default_src = "the defaults" if default is not None else "no limit set"
        if not member_of:
            return [(default_src, default)]
        out: list[tuple[str, object]] = []
        for g in member_of:
            v = read(policy.groups[g].member)
            out.append((f"group '{g}'", v) if v is not None else (default_src, default))
        return out

    def pick_int(key: str, read: Callable[[Entry], int | None], unset: int | None = None
                 ) -> int | None:
        """Combine one limit; ``unset`` is what "not set anywhere" means (None: no limit)."""
        values = [(s, unset if v is None else None if v == UNLIMITED else v)
                  for s, v in layered(read) if v is None or isinstance(v, int)]
        generous = policy.group_combine == "most_generous"
        best = values[0]
        for cand in values[1:]:
            a, b = cand[1], best[1]
            if a == b:
                continue
            a_more = a is None or (b is not None and a > b)
            if a_more == generous:
                best = cand
        sources[key] = best[0]
        return best[1]

    quota: dict[str, int | None] = {}
    borrowing: dict[str, int] = {}
    for r in RESOURCES:
        quota[r] = pick_int(r, partial(_quota_of, resource=r))
        b = pick_int(f"borrowing.{r}", partial(_borrowing_of, resource=r), unset=0)
        if b is None:
            quota[r] = None  # unlimited borrowing is no limit at all
        borrowing[r] = 0 if quota[r] is None or b is None else b
    max_slice = pick_int("max_slice_mib", lambda e: e.max_slice_mib)

    def pick_set(key: str, read: Callable[[Entry], frozenset[str] | None]) -> frozenset[str] | None:
        values = layered(read)
        sources[key] = ", ".join(dict.fromkeys(s for s, _ in values))
        sets = [v for _, v in values]
        if policy.group_combine == "most_generous":
            if any(v is None for v in sets):
                sources[key] = next(s for s, v in values if v is None)
                return None
            return frozenset().union(*[v for v in sets if isinstance(v, frozenset)])
        present = [v for v in sets if isinstance(v, frozenset)]
        if not present:
            return None
        out = present[0]
        for v in present[1:]:
            out = out & v
        return out

    models = pick_set("allowed_models", lambda e: e.allowed_models)
    images = pick_set("allowed_images", lambda e: e.allowed_images)

    def tier_of(e: Entry) -> str | None:
        return e.tier

    named = [(s, t if isinstance(t, str) else policy.default_tier) for s, t in layered(tier_of)]
    rank = max if policy.group_combine == "most_generous" else min
    src, tier_name = rank(named, key=lambda st: policy.tier(st[1]).priority)
    sources["tier"] = "the default tier" if src == "no limit set" else src
    return Limits(
        quota=MappingProxyType(quota),
        borrowing=MappingProxyType(borrowing),
        max_slice_mib=max_slice,
        allowed_models=models,
        allowed_images=images,
        tier=policy.tier(tier_name),
        sources=MappingProxyType(sources),
    )


# --- what a request takes -------------------------------------------------------------------------


def charge_of(request: SliceRequest, whole_gpu_mib: int) -> Amounts:
    """What ``request`` counts against a quota.

    ``whole_gpu_mib`` is the memory of the GPU the request takes (or would take) whole, or of
    which it takes a share: the caller knows it from the placement decision, or takes the
    largest GPU the request may land on.
    """
    if request.gpu_count == 0:
        gpu_mem = 0
    elif request.whole_gpus:
        gpu_mem = request.gpu_count * whole_gpu_mib
    elif request.gpu_memory_mib:
        gpu_mem = request.gpu_memory_mib
    else:
        gpu_mem = -(-request.gpu_share_milli * whole_gpu_mib // FULL_GPU_MILLI)
    return Amounts(
        gpu_memory_mib=gpu_mem,
        gpus=request.gpu_count,
        cpu_milli=request.cpu_milli,
        memory_mib=request.memory_mib,
        servers=1,
    )


def per_gpu_mib(request: SliceRequest, whole_gpu_mib: int) -> int:
    """GPU memory the request takes on one GPU (for the largest-slice limit)."""
    if request.gpu_count == 0:
        return 0
    return charge_of(request, whole_gpu_mib).gpu_memory_mib // request.gpu_count


def restrict_request(request: SliceRequest, limits: Limits) -> SliceRequest:
    """The request narrowed to the GPU models the user may get (what placement must use)."""
    if limits.allowed_models is None or request.gpu_count == 0:
        return request
    wanted = request.allowed_models or limits.allowed_models
    return replace(request, allowed_models=frozenset(wanted & limits.allowed_models))


# --- admission -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class User:
    """A hub user as the policy sees it."""

    name: str
    groups: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Server:
    """A server that holds (or has reserved) resources: what counts as usage."""

    user: str
    name: str
    charge: Amounts
    tier: str
    priority: int
    borrowed: bool = False
    groups: frozenset[str] = frozenset()
    """The user's groups when it was admitted (what group quotas count it against)."""
    seq: int = 0
    """Admission order: higher is newer (least work lost when preempted)."""


@dataclass(frozen=True, slots=True)
class ClusterView:
    """What the placement core said about the request on the cluster now."""

    fits_now: bool
    why_not: tuple[str, ...] = ()
    whole_gpu_mib: int = 0
    """Memory of the GPU a whole-GPU or share request takes (see :func:`charge_of`)."""


class Verdict(enum.StrEnum):
    ADMIT = "admit"
    QUEUE = "queue"
    REFUSE = "refuse"


@dataclass(frozen=True, slots=True)
class Admission:
    """The answer to one request."""

    verdict: Verdict
    reasons: tuple[str, ...]
    charge: Amounts
    tier: Tier
    borrowed: bool
    limits: Limits
    may_preempt: bool = False
    """Queued only because the cluster is full, and the tier may preempt to make room."""
    waits_for: Literal["", "group", "cluster"] = ""

    @property
    def admitted(self) -> bool:
        return self.verdict is Verdict.ADMIT


_LABELS = {
    "gpu_memory_mib": "GPU memory",
    "gpus": "GPUs",
    "cpu_milli": "CPU",
    "memory_mib": "RAM",
    "servers": "servers",
}


def _fmt(resource: str, amount: int) -> str:
    """An amount as a person reads it: 12 GiB, 2 CPUs, 3 servers."""
    if resource in ("gpu_memory_mib", "memory_mib"):
        unit = "" if resource == "gpu_memory_mib" else " RAM"
        if amount % GIB_IN_MIB == 0:
            return f"{amount // GIB_IN_MIB} GiB{unit}"
        if amount >= GIB_IN_MIB:
            return f"{amount / GIB_IN_MIB:.1f} GiB{unit}"
        return f"{amount} MiB{unit}"
    if resource == "cpu_milli":
        if amount % 1000 == 0:
            n = amount // 1000
            return f"{n} CPU" + ("" if n == 1 else "s")
        return f"{amount / 1000:g} CPUs"
    if resource == "gpus":
        return f"{amount} GPU" + ("" if amount == 1 else "s")
    return f"{amount} server" + ("" if amount == 1 else "s")


def _of(resource: str, used: int, limit: int) -> str:
    """'12 of 16 GiB GPU memory', '2 of 2 servers', '512 MiB of 16 GiB RAM'."""
    whole = _fmt(resource, limit) + (" GPU memory" if resource == "gpu_memory_mib" else "")
    part = _fmt(resource, used)
    head, _, unit = part.partition(" ")
    same_unit = unit.split(" ")[0] == _fmt(resource, limit).partition(" ")[2].split(" ")[0]
    if same_unit or resource in ("gpus", "servers", "cpu_milli"):
        return f"{head} of {whole}"
    return f"{part} of {whole}"


def _server_names(servers: Sequence[Server]) -> str:
    names = [f"'{s.name}'" if s.name else "your default server" for s in servers]
    if len(names) == 1:
        return names[0] if not servers[0].name else f"server {names[0]}"
    quoted = ", ".join(names[:-1]) + f" and {names[-1]}"
    return f"servers {quoted}"


def admit(
    user: User,
    request: SliceRequest,
    usage: Sequence[Server],
    cluster: ClusterView,
    policy: Policy,
    *,
    server_name: str = "",
) -> Admission:
    """Decide whether ``user`` may start ``request`` now, must wait, or is refused.

    ``usage`` is every server that holds or reserves resources on the hub (all users: group
    quotas count other members).  A server of the same user and name in ``usage`` is ignored,
    so asking again for a server being re-admitted does not count it twice.
    """
    limits = resolve_limits(policy, user.name, user.groups)
    charge = charge_of(request, cluster.whole_gpu_mib)
    tier = limits.tier

    def result(verdict: Verdict, reasons: Iterable[str], borrowed: bool = False,
               may_preempt: bool = False,
               waits_for: Literal["", "group", "cluster"] = "") -> Admission:
        return Admission(verdict, tuple(reasons), charge, tier, borrowed, limits, may_preempt,
                         waits_for)

    # 1. What can never be admitted as asked.
    refusals: list[str] = []
    if request.gpu_count and limits.allowed_models is not None:
        wanted = request.allowed_models or limits.allowed_models
        if not limits.allowed_models:
            refusals.append(f"you may not use GPUs ({limits.sources['allowed_models']}); "
                            "start a server without a GPU or ask an admin")
        elif not wanted & limits.allowed_models:
            refusals.append(
                f"you may use GPU models {', '.join(sorted(limits.allowed_models))} "
                f"({limits.sources['allowed_models']}), not {', '.join(sorted(wanted))}"
            )
    if limits.allowed_images is not None and request.image not in limits.allowed_images:
        refusals.append(
            f"image {request.image or '(none)'!r} is not one you may use; allowed: "
            f"{', '.join(sorted(limits.allowed_images))} ({limits.sources['allowed_images']})"
        )
    slice_mib = per_gpu_mib(request, cluster.whole_gpu_mib)
    if limits.max_slice_mib is not None and slice_mib > limits.max_slice_mib:
        refusals.append(
            f"{_fmt('gpu_memory_mib', slice_mib)} per GPU is more than your largest slice of "
            f"{_fmt('gpu_memory_mib', limits.max_slice_mib)} ({limits.sources['max_slice_mib']});"
            " ask for less or ask an admin"
        )
    for r in RESOURCES:
        ceiling = limits.ceiling(r)
        if ceiling is not None and charge.get(r) > ceiling:
            what = "a server" if r == "servers" else _fmt(r, charge.get(r))
            refusals.append(
                f"{what} is more than your quota of {_fmt(r, ceiling)}"
                f"{' GPU memory' if r == 'gpu_memory_mib' else ''}"
                f" ({limits.sources[r]}); ask for less or ask an admin"
            )
    if refusals:
        return result(Verdict.REFUSE, refusals)

    # 2. The user's own quota: only the user can free it, so a refusal says how.
    mine = [s for s in usage if s.user == user.name and s.name != server_name]
    used = Amounts.total(s.charge for s in mine)
    borrowed = False
    for r in RESOURCES:
        q = limits.quota[r]
        if q is None:
            continue
        after = used.get(r) + charge.get(r)
        ceiling = q + limits.borrowing[r]
        if after > ceiling:
            holders = [s for s in mine if s.charge.get(r) > 0]
            where = f" in {_server_names(holders)}" if holders else ""
            more = "another server" if r == "servers" else f"{_fmt(r, charge.get(r))} more"
            borrow = (f" (quota {_fmt(r, q)} + {_fmt(r, limits.borrowing[r])} borrowing)"
                      if limits.borrowing[r] else "")
            refusals.append(
                f"you use {_of(r, used.get(r), ceiling)}{where}{borrow}; {more} would exceed "
                f"it: stop a server or ask an admin"
            )
        elif after > q:
            borrowed = True
    if refusals:
        return result(Verdict.REFUSE, refusals)

    # 3. Whole-group quotas: others may free them, so the request waits.
    waits: list[str] = []
    for g in sorted(user.groups):
        entry = policy.groups.get(g)
        if entry is None or entry.quota.is_empty():
            continue
        members = [s for s in usage if g in s.groups
                   and not (s.user == user.name and s.name == server_name)]
        g_used = Amounts.total(s.charge for s in members)
        for r in RESOURCES:
            q = entry.quota.get(r)
            if q is None or q == UNLIMITED:
                continue
            b = entry.borrowing.get(r)
            if b == UNLIMITED:
                continue
            ceiling = q + (b or 0)
            after = g_used.get(r) + charge.get(r)
            if charge.get(r) > ceiling:
                refusals.append(
                    f"{_fmt(r, charge.get(r))} is more than group '{g}' may ever use "
                    f"({_fmt(r, ceiling)}); ask for less or ask an admin"
                )
            elif after > ceiling:
                waits.append(
                    f"group '{g}' uses {_of(r, g_used.get(r), ceiling)}; waiting for a "
                    f"member's server to stop"
                )
            elif after > q:
                borrowed = True
    if refusals:
        return result(Verdict.REFUSE, refusals)
    if waits:
        return result(Verdict.QUEUE, waits, borrowed, waits_for="group")

    # 4. Borrowing needs idle capacity: it never preempts anyone.
    if borrowed and not cluster.fits_now:
        return result(
            Verdict.QUEUE,
            ["this server would borrow beyond your nominal quota, which is only possible "
             "while the cluster has idle capacity; it has none now", *cluster.why_not],
            borrowed, waits_for="cluster",
        )
    if not cluster.fits_now:
        reasons = ["the cluster has no room for it now", *cluster.why_not]
        return result(Verdict.QUEUE, reasons, borrowed, may_preempt=tier.preempts,
                      waits_for="cluster")
    reasons = []
    if borrowed:
        reasons.append("admitted on borrowed capacity: it is the first to be preempted "
                       "when others need their quota")
    return result(Verdict.ADMIT, reasons, borrowed)


# --- preemption (who may be stopped, in what order) --------------------------------------------


def preemptible_by(requester: User, tier: Tier, borrowed: bool, server: Server) -> bool:
    """Whether a request (of ``requester`` in ``tier``) may preempt ``server``."""
    if not tier.preempts or server.user == requester.name:
        return False
    if server.priority < tier.priority:
        return True
    return server.borrowed and not borrowed and server.priority <= tier.priority


def preemption_order(
    requester: User, tier: Tier, borrowed: bool, usage: Sequence[Server]
) -> list[Server]:
    """Servers the request may preempt, the first to go first.

    Borrowed servers first, then lower tiers before higher, then the newest first (least work
    lost).  The placement side chooses how many of them must stop for the request to fit.
    """
    eligible = [s for s in usage if preemptible_by(requester, tier, borrowed, s)]
    return sorted(eligible, key=lambda s: (not s.borrowed, s.priority, -s.seq))


def preemption_reason(victim: Server, requester: User, tier: Tier) -> str:
    """What the preempted user is told."""
    why = ("it ran on borrowed capacity beyond your quota"
           if victim.borrowed else f"it runs in tier '{victim.tier}'")
    label = f"'{victim.name}'" if victim.name else "your default server"
    return (
        f"Your server {label} was stopped to make room for a tier '{tier.name}' server "
        f"of {requester.name}: {why}, and the cluster was full."
    )


def usage_of(servers: Iterable[Server], user: str) -> Amounts:
    """What ``user``'s servers take."""
    return Amounts.total(s.charge for s in servers if s.user == user)


def entry_fields() -> tuple[str, ...]:
    """Field names of a policy entry (for API validation and docs)."""
    return tuple(f.name for f in fields(Entry))


# --- policy documents (traitlets config, REST API, store) --------------------------------------

_QUANTITY = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024 * 1024}


def parse_amount(path: str, resource: str, value: object) -> int:
    """A limit from a document: an int in the field's unit, ``"unlimited"``, or a quantity.

    Memory takes Kubernetes-style quantities (``"16Gi"``, ``"512Mi"``); CPU takes cores
    (``2``, ``"2"``, ``"500m"``) because ``cpu_milli`` in a config file is easy to get wrong by
    a factor of 1000; counts take plain integers.
    """
    if value == "unlimited":
        return UNLIMITED
    if isinstance(value, bool) or not isinstance(value, int | str | float):
        raise PolicyError(path, f"expected a number or 'unlimited', got {value!r}")
    if resource in ("gpu_memory_mib", "memory_mib", "max_slice_mib"):
        if isinstance(value, str):
            for suffix, factor in _QUANTITY.items():
                if value.endswith(suffix):
                    try:
                        number = float(value[: -len(suffix)])
                    except ValueError:
                        break
                    out = number * factor
                    if out != int(out) or out < 0:
                        raise PolicyError(path, f"{value!r} is not a whole number of MiB >= 0")
                    return int(out)
            raise PolicyError(path, f"expected MiB or a quantity like '16Gi', got {value!r}")
        number = float(value)
    elif resource == "cpu_milli":
        if isinstance(value, str) and value.endswith("m"):
            try:
                number = float(value[:-1])
            except ValueError:
                raise PolicyError(path, f"expected cores like 2 or '500m', got {value!r}") from None
        else:
            try:
                number = float(value) * 1000
            except ValueError:
                raise PolicyError(path, f"expected cores like 2 or '500m', got {value!r}") from None
    else:
        try:
            number = float(value)
        except ValueError:
            raise PolicyError(path, f"expected a whole number, got {value!r}") from None
    if number != int(number):
        raise PolicyError(path, f"expected a whole number, got {value!r}")
    if number < 0:
        raise PolicyError(path, f"must be >= 0 or 'unlimited', got {value!r}")
    if number > 2**53:
        raise PolicyError(path, f"{value!r} is too large")
    return int(number)


_BUDGET_KEYS = {"gpu_memory": "gpu_memory_mib", "gpus": "gpus", "cpu": "cpu_milli",
                "memory": "memory_mib", "servers": "servers"}
"""Document keys of a budget -> the resource they set (documents use the admin's units)."""


def _budget_from(path: str, doc: object) -> Budget:
    if doc is None:
        return Budget()
    if not isinstance(doc, Mapping):
        raise PolicyError(path, f"expected a mapping of {sorted(_BUDGET_KEYS)}, got {doc!r}")
    values: dict[str, int] = {}
    for key, value in doc.items():
        if key not in _BUDGET_KEYS:
            raise PolicyError(f"{path}.{key}", f"unknown limit; use one of {sorted(_BUDGET_KEYS)}")
        resource = _BUDGET_KEYS[key]
        values[resource] = parse_amount(f"{path}.{key}", resource, value)
    return Budget(**values)


def _names(path: str, doc: object) -> frozenset[str] | None:
    if doc is None:
        return None
    if isinstance(doc, str) or not isinstance(doc, Sequence | set | frozenset):
        raise PolicyError(path, f"expected a list of names, got {doc!r}")
    out = []
    for i, v in enumerate(doc):
        if not isinstance(v, str) or not v.strip() or len(v) > 253:
            raise PolicyError(f"{path}[{i}]", f"expected a non-empty name, got {v!r}")
        out.append(v)
    return frozenset(out)


_ENTRY_KEYS = ("quota", "borrowing", "max_slice", "allowed_models", "allowed_images", "tier")


def entry_from_dict(path: str, doc: object) -> Entry:
    """Parse one entry document, naming the field of any error."""
    if doc is None:
        return Entry()
    if not isinstance(doc, Mapping):
        raise PolicyError(path, f"expected a mapping, got {doc!r}")
    for key in doc:
        if key not in _ENTRY_KEYS:
            raise PolicyError(f"{path}.{key}", f"unknown field; use one of {list(_ENTRY_KEYS)}")
    tier = doc.get("tier")
    if tier is not None and not isinstance(tier, str):
        raise PolicyError(f"{path}.tier", f"expected a tier name, got {tier!r}")
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
        raise PolicyError(path, f"expected a mapping, got {doc!r}")
    for key in doc:
        if key not in ("member", "quota", "borrowing"):
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
        raise PolicyError(path, f"expected a list of tiers, got {doc!r}")
    out = []
    for i, t in enumerate(doc):
        p = f"{path}[{i}]"
        if not isinstance(t, Mapping):
            raise PolicyError(p, f"expected a mapping with name and priority, got {t!r}")
        for key in t:
            if key not in ("name", "priority", "preempts", "priority_class"):
                raise PolicyError(f"{p}.{key}", "unknown field; use name, priority, preempts, "
                                  "priority_class")
        name, prio = t.get("name"), t.get("priority")
        if not isinstance(name, str):
            raise PolicyError(f"{p}.name", f"expected a name, got {name!r}")
        if isinstance(prio, bool) or not isinstance(prio, int):
            raise PolicyError(f"{p}.priority", f"expected an integer, got {prio!r}")
        preempts = t.get("preempts", True)
        if not isinstance(preempts, bool):
            raise PolicyError(f"{p}.preempts", f"expected true or false, got {preempts!r}")
        pc = t.get("priority_class", "")
        if not isinstance(pc, str):
            raise PolicyError(f"{p}.priority_class", f"expected a name, got {pc!r}")
        out.append(Tier(name, prio, preempts, pc))
    return tuple(out)


def policy_from_dict(doc: Mapping[str, object]) -> Policy:
    """Parse and validate a whole policy document; :class:`PolicyError` names the field."""
    for key in doc:
        if key not in ("defaults", "groups", "users", "tiers", "default_tier", "group_combine"):
            raise PolicyError(key, "unknown field; use defaults, groups, users, tiers, "
                              "default_tier, group_combine")

    def mapping(key: str) -> Mapping[str, object]:
        value = doc.get(key) or {}
        if not isinstance(value, Mapping):
            raise PolicyError(key, f"expected a mapping of name -> entry, got {value!r}")
        return value

    tiers = tiers_from_list("tiers", doc["tiers"]) if "tiers" in doc else DEFAULT_TIERS
    default_tier = doc.get("default_tier", tiers[0].name if "tiers" in doc and tiers else "normal")
    if not isinstance(default_tier, str):
        raise PolicyError("default_tier", f"expected a tier name, got {default_tier!r}")
    combine = doc.get("group_combine", "most_generous")
    if combine not in ("most_generous", "least_generous"):
        raise PolicyError("group_combine", f"must be most_generous or least_generous, "
                          f"got {combine!r}")
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
    return {key: _amount_out(r, v) for key, r in _BUDGET_KEYS.items()
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
