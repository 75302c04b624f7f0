"""Who may be preempted, in what order, and what they are told: the one preemption rule.

A request of tier *T* that is within quota but does not fit may preempt servers of tiers lower
than *T*, and borrowed servers (beyond their owner's nominal quota) of *T* or lower while it is
not borrowing itself; never a server of its own user, and nothing at all when *T* does not
preempt.  The placement core (:mod:`aispike_hub.placement.preemption`) then chooses which of the
eligible servers must stop for the request to fit; it has no rule of its own and takes
eligibility from here (:func:`victim_filter`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from aispike_hub.quota import messages
from aispike_hub.quota.admit import Server, User
from aispike_hub.quota.policy import Tier


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
    return messages.preempted(victim.name, victim.tier, victim.borrowed, requester.name,
                              tier.name)


class Keyed(Protocol):
    """Anything the placement core calls a running server: it has a ``key``."""

    @property
    def key(self) -> str: ...


def server_key(server: Server) -> str:
    """The key the service gives a server (``user/server``), as in placement's victims."""
    return f"{server.user}/{server.name}"


def victim_filter(
    requester: User,
    tier: Tier,
    borrowed: bool,
    usage: Iterable[Server],
    *,
    key: Callable[[Server], str] = server_key,
) -> Callable[[Keyed, int], bool]:
    """The ``may_preempt`` predicate for :func:`~aispike_hub.placement.preemption.
    preemption_candidates`: true for the running servers (matched by ``key``) of ``usage``
    that :func:`preemptible_by` allows, false for any other.

    The placement core passes its own tier number as the second argument; it is ignored, the
    rule already knows the request's tier.
    """
    allowed = {key(s) for s in usage if preemptible_by(requester, tier, borrowed, s)}

    def may_preempt(server: Keyed, _tier: int) -> bool:
        return server.key in allowed

    return may_preempt
