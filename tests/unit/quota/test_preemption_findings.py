"""The one preemption rule (:mod:`aispike_hub.quota.preemption`), case by case.

Who may be stopped for whom decides whose work is lost, so each side of every comparison is
pinned: a lower tier always, the same tier only when the victim borrowed and the request does
not, never a higher tier, never the requester's own servers, nothing for a tier that does not
preempt.  These cases were written from the survivors of a mutation run over
``quota/preemption.py`` (docs/testing.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from aispike_hub.quota import (
    Amounts,
    Server,
    Tier,
    User,
    preemptible_by,
    preemption_order,
    preemption_reason,
    victim_filter,
)
from aispike_hub.quota.preemption import server_key

ANA = User("ana")
NORMAL = Tier("normal", 100)


def srv(user: str, name: str = "", prio: int = 100, *, borrowed: bool = False,
        seq: int = 0) -> Server:
    return Server(user, name, Amounts(), f"p{prio}", prio, borrowed, seq=seq)


RULE: list[tuple[str, Tier, bool, Server, bool]] = [
    ("lower-tier", NORMAL, False, srv("bo", prio=99), True),
    ("lower-tier-while-borrowing", NORMAL, True, srv("bo", prio=0), True),
    ("same-tier", NORMAL, False, srv("bo"), False),
    ("same-tier-borrowed", NORMAL, False, srv("bo", borrowed=True), True),
    ("same-tier-borrowed-while-borrowing", NORMAL, True, srv("bo", borrowed=True), False),
    ("higher-tier", NORMAL, False, srv("bo", prio=101), False),
    ("higher-tier-borrowed", NORMAL, False, srv("bo", prio=101, borrowed=True), False),
    ("own-server", NORMAL, False, srv("ana", prio=0, borrowed=True), False),
    ("tier-does-not-preempt", Tier("low", 100, preempts=False), False,
     srv("bo", prio=0, borrowed=True), False),
]


@pytest.mark.parametrize(("tier", "borrowed", "server", "may"), [r[1:] for r in RULE],
                         ids=[r[0] for r in RULE])
def test_who_may_be_preempted(tier: Tier, borrowed: bool, server: Server, may: bool) -> None:
    """Rule: a preempting tier may stop a lower tier, or a borrowed server of its own tier when
    it is not borrowing itself; never a higher tier or its own user's server."""
    assert preemptible_by(ANA, tier, borrowed, server) is may


def test_the_order_borrowed_then_lower_tiers_then_newest() -> None:
    """Rule: the first to go are borrowed servers, then lower tiers before higher, then the
    newest (least work lost); servers that may not be preempted are left out."""
    usage = [srv("a", "old-low", 0, seq=1), srv("b", "new-low", 0, seq=5),
             srv("c", "mid", 50, seq=9), srv("d", "borrowed", 100, borrowed=True, seq=2),
             srv("e", "borrowed-low", 0, borrowed=True, seq=1), srv("ana", "mine", 0),
             srv("f", "same", 100), srv("g", "high", 200, borrowed=True)]
    order = preemption_order(ANA, NORMAL, False, usage)
    assert [s.name for s in order] == ["borrowed-low", "borrowed", "new-low", "old-low", "mid"]


def test_what_the_preempted_user_is_told() -> None:
    """Rule: the notice names the victim's server and tier (or its borrowing) and the
    requester's name and tier, not the other way round."""
    assert preemption_reason(srv("bo", "train", 0), ANA, Tier("high", 200)) == (
        "Your server 'train' was stopped to make room for a tier 'high' server of ana: it ran "
        "in the lower tier 'p0', and the cluster was full.")
    assert preemption_reason(srv("bo", "", 100, borrowed=True), ANA, NORMAL) == (
        "Your server 'default' was stopped to make room for a tier 'normal' server of ana: it "
        "ran on borrowed capacity beyond your quota, and the cluster was full.")


@dataclass(frozen=True)
class Running:
    key: str


def test_the_victim_filter_matches_eligible_servers_by_key() -> None:
    """Rule: placement may preempt exactly the eligible servers, matched by the service's key
    ``user/server``; the tier number placement passes is ignored (the rule knows the tier)."""
    usage = [srv("bo", "train", 0), srv("cy", "", 200), srv("ana", "x", 0)]
    may = victim_filter(ANA, NORMAL, False, usage)
    assert server_key(usage[0]) == "bo/train"
    assert [may(Running(k), 0) for k in ("bo/train", "cy/", "ana/x", "zz/q")] == [
        True, False, False, False]
    assert may(Running("bo/train"), 10**6) is True
    by_user = victim_filter(ANA, NORMAL, False, usage, key=lambda s: s.user)
    assert (by_user(Running("bo"), 0), by_user(Running("bo/train"), 0)) == (True, False)
