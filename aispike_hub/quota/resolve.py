"""Resolution: the limits that apply to one user, and what one request counts against them.

Each limit of a user comes from the user's own entry if set there, else from the groups the user
belongs to (combined by ``policy.group_combine``), else from the defaults, else it is unlimited;
every limit is resolved on its own, and :class:`Limits` remembers where each value came from so
reasons can name it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from types import MappingProxyType

from aispike_hub.model import FULL_GPU_MILLI, SliceRequest
from aispike_hub.quota.policy import RESOURCES, UNLIMITED, Amounts, Entry, Policy, Tier


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
        # only the entries that set a list restrict: a reason names those, not "no limit set"
        sources[key] = ", ".join(dict.fromkeys(s for s, v in values if v is not None))
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


def restrict_request(request: SliceRequest, limits: Limits) -> SliceRequest | None:
    """The request narrowed to the GPU models the user may get (what placement must use);
    ``None`` when no model is left: the user may use no GPU model (``allowed_models: []``) or
    none of those the request allows, so it must not be placed at all.

    Why ``None`` and not an empty set: a :class:`SliceRequest` with no ``allowed_models``
    means "any model", so "none" narrowed to an empty set would have placed it anywhere.  A
    CPU-only request, or limits without ``allowed_models``, come back as they are."""
    if limits.allowed_models is None or request.gpu_count == 0:
        return request
    wanted = request.allowed_models or limits.allowed_models
    models = frozenset(wanted & limits.allowed_models)
    if not models:
        return None
    return replace(request, allowed_models=models)

