"""The quota core's seams: the group ceiling (one place, used by admission and the panel), the
named admission checks in order, and the preemption rule as placement takes it."""

from __future__ import annotations

from typing import Any

import pytest

from aispike_hub.model import SliceRequest
from aispike_hub.quota import (
    CHECKS,
    Amounts,
    ClusterView,
    Server,
    Tier,
    User,
    Verdict,
    admit,
    group_limits,
    group_report,
    policy_from_dict,
    preemptible_by,
    quota_report,
    victim_filter,
)

GIB = 1024
GROUPS = policy_from_dict({
    "groups": {
        "lab": {"quota": {"gpu_memory": "32Gi", "servers": 3},
                "borrowing": {"gpu_memory": "16Gi"}},
        "open": {"quota": {"gpu_memory": "8Gi"}, "borrowing": {"gpu_memory": "unlimited"}},
        "members-only": {"member": {"quota": {"gpu_memory": "24Gi"}}},
    },
    "users": {"alice": {"quota": {"gpu_memory": "64Gi"}, "borrowing": {"gpu_memory": "8Gi"}}},
})


def server(user: str, name: str, gib: int, *groups: str, priority: int = 100,
           borrowed: bool = False) -> Server:
    return Server(user, name, Amounts(gib * GIB, 1 if gib else 0, 0, 0, 1), "normal", priority,
                  borrowed, frozenset(groups))


def ask(user: User, gib: int, usage: list[Server], fits: bool = True, name: str = "") -> Any:
    return admit(user, SliceRequest(gpu_memory_mib=gib * GIB), usage,
                 ClusterView(fits, (), 80 * GIB), GROUPS, server_name=name)


def test_the_checks_run_in_this_order() -> None:
    assert [name for name, _ in CHECKS] == [
        "request", "user quota", "group quota", "borrowing", "cluster fit"]


def test_group_limits_quota_ceiling_and_unlimited() -> None:
    assert group_limits(GROUPS.groups["lab"], "gpu_memory_mib") == (32 * GIB, 48 * GIB)
    assert group_limits(GROUPS.groups["lab"], "servers") == (3, 3)
    assert group_limits(GROUPS.groups["open"], "gpu_memory_mib") == (8 * GIB, None)
    assert group_limits(GROUPS.groups["members-only"], "gpu_memory_mib") == (None, None)
    assert group_limits(None, "gpus") == (None, None)


def test_group_report_counts_members_and_can_leave_one_server_out() -> None:
    usage = [server("bob", "", 16, "lab"), server("carol", "x", 20, "lab"),
             server("dan", "", 30, "other")]
    report = group_report(GROUPS, "lab", usage)
    mem = report.resources["gpu_memory_mib"]
    assert (mem.used, mem.quota, mem.ceiling, mem.source) == (36 * GIB, 32 * GIB, 48 * GIB,
                                                             "group 'lab'")
    assert report.members_running == ("bob", "carol")
    assert report.borrowing == ("gpu_memory_mib",) and report.over == ()
    left_out = group_report(GROUPS, "lab", usage, exclude=("carol", "x"))
    assert left_out.resources["gpu_memory_mib"].used == 16 * GIB


def test_quota_report_users_and_groups() -> None:
    usage = [server("alice", "a", 70, "lab"), server("bob", "", 8, "lab", "open")]
    report = quota_report(GROUPS, usage, {"erin": {"members-only"}})
    assert [u.user for u in report.users] == ["alice", "bob", "erin"]
    alice = report.users[0]
    assert alice.groups == ("lab",) and alice.servers == 1 and alice.tier == "normal"
    mem = alice.resources["gpu_memory_mib"]
    assert (mem.used, mem.quota, mem.ceiling, mem.source) == (70 * GIB, 64 * GIB, 72 * GIB,
                                                             "your user entry")
    assert alice.borrowing == ("gpu_memory_mib",) and alice.over == ()
    assert report.users[2].resources["gpu_memory_mib"].quota == 24 * GIB
    assert [g.group for g in report.groups] == ["lab", "members-only", "open"]
    lab = report.groups[0]
    assert lab.over == ("gpu_memory_mib",) and lab.members_running == ("alice", "bob")


def test_admission_waits_and_refuses_at_the_reported_group_ceiling() -> None:
    bob = User("bob", frozenset({"lab"}))
    usage = [server("carol", "", 40, "lab")]
    waiting = ask(bob, 16, usage)
    assert waiting.verdict is Verdict.QUEUE and waiting.waits_for == "group"
    assert waiting.reasons == (
        "group 'lab' uses 40 of 48 GiB GPU memory; waiting for a member's server to stop",)
    refused = ask(bob, 50, [])
    assert refused.verdict is Verdict.REFUSE
    assert refused.reasons == (
        "50 GiB is more than group 'lab' may ever use (48 GiB); ask for less or ask an admin",)
    borrowing = ask(bob, 8, usage)
    assert borrowing.verdict is Verdict.ADMIT and borrowing.borrowed
    assert borrowing.reasons == ("admitted on borrowed capacity: it is the first to be "
                                 "preempted when others need their quota",)
    # Unlimited borrowing: the group never waits for its members, nor borrows.
    open_ = ask(User("erin", frozenset({"open"})), 30, [server("f", "", 40, "open")])
    assert open_.verdict is Verdict.ADMIT and not open_.borrowed


def test_borrowing_needs_idle_capacity() -> None:
    bob = User("bob", frozenset({"lab"}))
    queued = ask(bob, 8, [server("carol", "", 40, "lab")], fits=False)
    assert queued.verdict is Verdict.QUEUE and queued.borrowed and not queued.may_preempt
    assert queued.reasons[0].startswith("this server would borrow beyond your nominal quota")


@pytest.mark.parametrize(("victim", "borrowing", "allowed"), [
    (server("bob", "", 8, priority=0), False, True),
    (server("bob", "", 8), False, False),
    (server("bob", "", 8, borrowed=True), False, True),
    (server("bob", "", 8, borrowed=True), True, False),
    (server("alice", "x", 8, priority=0), False, False),
])
def test_victim_filter_is_the_quota_rule(victim: Server, borrowing: bool, allowed: bool) -> None:
    alice, tier = User("alice"), Tier("normal", 100)
    assert preemptible_by(alice, tier, borrowing, victim) is allowed

    class Running:
        key = f"{victim.user}/{victim.name}"

    may_preempt = victim_filter(alice, tier, borrowing, [victim])
    assert may_preempt(Running(), 100) is allowed
    assert victim_filter(alice, Tier("low", 0, preempts=False), borrowing, [victim])(
        Running(), 0) is False


def test_an_unlimited_group_quota_is_no_limit_and_names_no_source() -> None:
    policy = policy_from_dict({"groups": {"open": {"quota": {"gpu_memory": "unlimited",
                                                             "gpus": 4}}}})
    report = group_report(policy, "open", [])
    mem, gpus = report.resources["gpu_memory_mib"], report.resources["gpus"]
    assert (mem.quota, mem.ceiling, mem.source) == (None, None, "")
    assert (gpus.quota, gpus.ceiling, gpus.source) == (4, 4, "group 'open'")


def test_a_user_with_a_policy_entry_and_no_server_is_reported() -> None:
    policy = policy_from_dict({"users": {"prof": {"quota": {"servers": 4}}}})
    report = quota_report(policy, [])
    assert [u.user for u in report.users] == ["prof"]
    assert report.users[0].resources["servers"].quota == 4
