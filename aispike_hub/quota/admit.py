"""Admission: whether a user may start a request now, must wait, or is refused, and why.

:func:`admit` runs the named checks of :data:`CHECKS` in order; the first that does not pass
decides the verdict, and its reasons are the answer.  Each check is a small pure function of an
:class:`Ask` (the user, the request, what runs, what placement said about the cluster), so the
order of the rule reads as a list and each step can be tested on its own:

1. ``request`` — what can never be admitted as asked (GPU models, image, largest slice, more than
   the user's whole ceiling): *refuse*, with every such reason at once;
2. ``user quota`` — the user's own quota is used up: *refuse* (only the user can free it);
   beyond the nominal quota but within borrowing marks the server *borrowed*;
3. ``group quota`` — a whole group's quota (:mod:`.report`) is in use by others: *queue*; more
   than the group may ever use: *refuse*; beyond its nominal quota: *borrowed*;
4. ``borrowing`` — a borrowed server needs idle capacity, it never preempts: *queue*;
5. ``cluster fit`` — the cluster has no room now: *queue* (the tier may preempt);

and otherwise *admit*.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from aispike_hub.model import SliceRequest
from aispike_hub.quota import messages
from aispike_hub.quota.policy import RESOURCES, Amounts, Policy, Tier
from aispike_hub.quota.report import group_report
from aispike_hub.quota.resolve import Limits, charge_of, per_gpu_mib, resolve_limits

WaitsFor = Literal["", "group", "cluster"]


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
    waits_for: WaitsFor = ""

    @property
    def admitted(self) -> bool:
        return self.verdict is Verdict.ADMIT


# --- the checks -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ask:
    """One request as the checks see it (everything :func:`admit` was given, resolved once)."""

    user: User
    request: SliceRequest
    usage: Sequence[Server]
    cluster: ClusterView
    policy: Policy
    server_name: str
    limits: Limits
    charge: Amounts

    @property
    def tier(self) -> Tier:
        return self.limits.tier


@dataclass(frozen=True, slots=True)
class Finding:
    """What one check says: pass (``verdict`` ADMIT), or refuse / queue with reasons.

    ``borrowed`` says the server would run beyond a nominal quota (a passing check may set it;
    a queueing one carries it into the answer).
    """

    verdict: Verdict = Verdict.ADMIT
    reasons: tuple[str, ...] = ()
    borrowed: bool = False
    may_preempt: bool = False
    waits_for: WaitsFor = ""


PASS = Finding()

Check = Callable[[Ask, bool], Finding]
"""A check: the request and whether earlier checks found it borrowed -> its finding."""


def check_gpu_models(ask: Ask) -> list[str]:
    """The user may use GPUs at all, and one of the models asked for."""
    limits, request = ask.limits, ask.request
    if not request.gpu_count or limits.allowed_models is None:
        return []
    wanted = request.allowed_models or limits.allowed_models
    if not limits.allowed_models:
        return [messages.no_gpus_allowed(limits.sources["allowed_models"])]
    if not wanted & limits.allowed_models:
        return [messages.models_not_allowed(limits.allowed_models,
                                            limits.sources["allowed_models"], wanted)]
    return []


def check_image(ask: Ask) -> list[str]:
    """The image is one the user may use."""
    allowed = ask.limits.allowed_images
    if allowed is not None and ask.request.image not in allowed:
        return [messages.image_not_allowed(ask.request.image, allowed,
                                           ask.limits.sources["allowed_images"])]
    return []


def check_largest_slice(ask: Ask) -> list[str]:
    """GPU memory on one GPU is within the user's largest slice."""
    limits = ask.limits
    slice_mib = per_gpu_mib(ask.request, ask.cluster.whole_gpu_mib)
    if limits.max_slice_mib is not None and slice_mib > limits.max_slice_mib:
        return [messages.slice_too_large(slice_mib, limits.max_slice_mib,
                                         limits.sources["max_slice_mib"])]
    return []


def check_request_size(ask: Ask) -> list[str]:
    """The request alone is within the user's ceiling (quota plus borrowing) of each resource."""
    out = []
    for r in RESOURCES:
        ceiling = ask.limits.ceiling(r)
        if ceiling is not None and ask.charge.get(r) > ceiling:
            out.append(messages.over_user_ceiling(r, ask.charge.get(r), ceiling,
                                                  ask.limits.sources[r]))
    return out


REQUEST_CHECKS: tuple[Callable[[Ask], list[str]], ...] = (
    check_gpu_models, check_image, check_largest_slice, check_request_size,
)
"""What can never be admitted as asked; all of their reasons are reported together."""


def check_request(ask: Ask, borrowed: bool) -> Finding:
    """1. Refuse what can never be admitted as asked (:data:`REQUEST_CHECKS`)."""
    refusals = [reason for check in REQUEST_CHECKS for reason in check(ask)]
    return Finding(Verdict.REFUSE, tuple(refusals)) if refusals else PASS


def check_user_quota(ask: Ask, borrowed: bool) -> Finding:
    """2. The user's own quota: only the user can free it, so a refusal says how."""
    limits, charge = ask.limits, ask.charge
    mine = [s for s in ask.usage if s.user == ask.user.name and s.name != ask.server_name]
    used = Amounts.total(s.charge for s in mine)
    refusals: list[str] = []
    for r in RESOURCES:
        q = limits.quota[r]
        if q is None:
            continue
        after = used.get(r) + charge.get(r)
        ceiling = q + limits.borrowing[r]
        if after > ceiling:
            holders = [s for s in mine if s.charge.get(r) > 0]
            refusals.append(messages.user_quota_used(r, used.get(r), ceiling, holders,
                                                     charge.get(r), q, limits.borrowing[r]))
        elif after > q:
            borrowed = True
    if refusals:
        return Finding(Verdict.REFUSE, tuple(refusals))
    return Finding(borrowed=borrowed)


def check_group_quota(ask: Ask, borrowed: bool) -> Finding:
    """3. Whole-group quotas: others may free them, so the request waits."""
    refusals: list[str] = []
    waits: list[str] = []
    charge = ask.charge
    for g in sorted(ask.user.groups):
        if g not in ask.policy.groups:
            continue
        report = group_report(ask.policy, g, ask.usage, exclude=(ask.user.name, ask.server_name))
        for r, use in report.resources.items():
            if use.quota is None or use.ceiling is None:
                continue
            after = use.used + charge.get(r)
            if charge.get(r) > use.ceiling:
                refusals.append(messages.over_group_ceiling(r, charge.get(r), g, use.ceiling))
            elif after > use.ceiling:
                waits.append(messages.group_quota_used(g, r, use.used, use.ceiling))
            elif after > use.quota:
                borrowed = True
    if refusals:
        return Finding(Verdict.REFUSE, tuple(refusals))
    if waits:
        return Finding(Verdict.QUEUE, tuple(waits), borrowed, waits_for="group")
    return Finding(borrowed=borrowed)


def check_borrowing(ask: Ask, borrowed: bool) -> Finding:
    """4. Borrowing needs idle capacity: it never preempts anyone."""
    if borrowed and not ask.cluster.fits_now:
        return Finding(Verdict.QUEUE, (messages.BORROW_NEEDS_IDLE, *ask.cluster.why_not),
                       borrowed, waits_for="cluster")
    return Finding(borrowed=borrowed)


def check_cluster_fit(ask: Ask, borrowed: bool) -> Finding:
    """5. The cluster has room now; else wait (and preempt, if the tier may)."""
    if not ask.cluster.fits_now:
        return Finding(Verdict.QUEUE, (messages.CLUSTER_FULL, *ask.cluster.why_not), borrowed,
                       may_preempt=ask.tier.preempts, waits_for="cluster")
    return Finding(borrowed=borrowed)


CHECKS: tuple[tuple[str, Check], ...] = (
    ("request", check_request),
    ("user quota", check_user_quota),
    ("group quota", check_group_quota),
    ("borrowing", check_borrowing),
    ("cluster fit", check_cluster_fit),
)
"""The checks :func:`admit` runs, in order; the first that does not pass decides."""


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
    ask = Ask(user, request, usage, cluster, policy, server_name, limits,
              charge_of(request, cluster.whole_gpu_mib))

    def answer(verdict: Verdict, reasons: Iterable[str], borrowed: bool = False,
               may_preempt: bool = False, waits_for: WaitsFor = "") -> Admission:
        return Admission(verdict, tuple(reasons), ask.charge, ask.tier, borrowed, limits,
                         may_preempt, waits_for)

    borrowed = False
    for _name, check in CHECKS:
        finding = check(ask, borrowed)
        if finding.verdict is not Verdict.ADMIT:
            return answer(finding.verdict, finding.reasons, finding.borrowed,
                          finding.may_preempt, finding.waits_for)
        borrowed = finding.borrowed
    return answer(Verdict.ADMIT, [messages.ADMITTED_BORROWED] if borrowed else [], borrowed)
