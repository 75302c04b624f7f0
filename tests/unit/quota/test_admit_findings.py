"""What :func:`aispike_hub.quota.admit` answers besides the verdict: the fields callers act on.

The case table (``test_quota_table.py``) checks verdicts and sentences.  The admission service,
the form's preview and the queue also read ``waits_for`` (what a queued spawn waits for: the
group or the cluster), ``borrowed`` (the server may be preempted first), ``limits`` and the exact
reasons; and the group check must leave out the very server being re-admitted.  These cases were
written from the survivors of a mutation run over ``quota/admit.py`` (docs/testing.md): each
one fails when one of those lines is changed.
"""

from __future__ import annotations

from typing import Any

from aispike_hub.model import SliceRequest
from aispike_hub.quota import Amounts, ClusterView, Server, User, Verdict, admit, policy_from_dict

GIB = 1024
FITS = ClusterView(fits_now=True)
FULL = ClusterView(fits_now=False, why_not=("no GPU has 8 GiB free",))


def gib(n: int) -> SliceRequest:
    return SliceRequest(gpu_count=1, gpu_memory_mib=n * GIB)


def server(user: str, name: str, gpu_gib: int, *, groups: tuple[str, ...] = ()) -> Server:
    return Server(user, name, Amounts(gpu_gib * GIB, 1 if gpu_gib else 0, 0, 0, 1),
                  "normal", 100, False, frozenset(groups))


def ask(policy: dict[str, Any], request: SliceRequest, *, usage: tuple[Server, ...] = (),
        cluster: ClusterView = FITS, groups: tuple[str, ...] = (), server_name: str | None = None,
        user: str = "alice"):  # type: ignore[no-untyped-def]
    kw = {} if server_name is None else {"server_name": server_name}
    return admit(User(user, frozenset(groups)), request, list(usage), cluster,
                 policy_from_dict(policy), **kw)


GROUP = {"groups": {"ml": {"quota": {"gpu_memory": "16Gi"}}}}


def test_a_plain_admission_has_no_reasons_waits_for_nothing_and_is_not_borrowed() -> None:
    a = ask({}, gib(8))
    assert a.verdict is Verdict.ADMIT
    assert a.reasons == ()
    assert a.waits_for == ""
    assert a.borrowed is False
    assert a.limits is not None and a.limits.tier.name


def test_a_full_group_queues_for_the_group() -> None:
    a = ask(GROUP, gib(8), groups=("ml",), usage=(server("bob", "", 16, groups=("ml",)),))
    assert (a.verdict, a.waits_for) == (Verdict.QUEUE, "group")


def test_a_full_cluster_queues_for_the_cluster() -> None:
    a = ask({}, gib(8), cluster=FULL)
    assert (a.verdict, a.waits_for) == (Verdict.QUEUE, "cluster")
    assert a.reasons[1:] == FULL.why_not


def test_a_borrowing_request_on_a_full_cluster_queues_for_the_cluster_and_stays_borrowed() -> None:
    policy = {"defaults": {"quota": {"gpu_memory": "8Gi"}, "borrowing": {"gpu_memory": "8Gi"}}}
    a = ask(policy, gib(8), cluster=FULL, usage=(server("alice", "a", 8),))
    assert (a.verdict, a.waits_for, a.borrowed) == (Verdict.QUEUE, "cluster", True)


def test_a_borrowing_request_behind_a_full_group_keeps_its_borrowed_mark() -> None:
    """Borrowed beyond the user's own quota, then queued by the group: still borrowed."""
    policy = {"defaults": {"quota": {"gpu_memory": "8Gi"}, "borrowing": {"gpu_memory": "8Gi"}},
              "groups": {"ml": {"quota": {"gpu_memory": "16Gi"}}}}
    a = ask(policy, gib(8), groups=("ml",),
            usage=(server("alice", "a", 8, groups=("ml",)), server("bob", "", 8, groups=("ml",))))
    assert (a.verdict, a.waits_for, a.borrowed) == (Verdict.QUEUE, "group", True)


def test_a_request_exactly_the_group_ceiling_is_admitted_not_refused() -> None:
    a = ask(GROUP, gib(16), groups=("ml",))
    assert a.verdict is Verdict.ADMIT, a.reasons


def test_one_byte_over_the_group_ceiling_is_refused() -> None:
    a = ask(GROUP, SliceRequest(gpu_count=1, gpu_memory_mib=16 * GIB + 1), groups=("ml",))
    assert a.verdict is Verdict.REFUSE


def test_re_admitting_a_server_does_not_count_it_against_its_group() -> None:
    usage = (server("alice", "s", 8, groups=("ml",)), server("bob", "", 8, groups=("ml",)))
    assert ask(GROUP, gib(8), groups=("ml",), usage=usage, server_name="s").admitted
    assert ask(GROUP, gib(8), groups=("ml",), usage=usage, server_name="t").waits_for == "group"


def test_the_default_server_is_the_one_re_admitted_when_no_name_is_given() -> None:
    policy = {"defaults": {"quota": {"gpu_memory": "8Gi"}}}
    assert ask(policy, gib(8), usage=(server("alice", "", 8),)).admitted


def test_a_group_unknown_to_the_policy_does_not_hide_the_next_group() -> None:
    a = ask(GROUP, gib(8), groups=("aaa-not-in-policy", "ml"),
            usage=(server("bob", "", 16, groups=("ml",)),))
    assert a.waits_for == "group"


def test_a_quota_refusal_names_only_the_servers_that_hold_the_resource() -> None:
    policy = {"defaults": {"quota": {"gpu_memory": "8Gi"}}}
    a = ask(policy, gib(4), usage=(server("alice", "cpu-only", 0), server("alice", "train", 8)))
    assert a.verdict is Verdict.REFUSE
    assert "'train'" in a.reasons[0] and "cpu-only" not in a.reasons[0]


def test_refusals_name_where_the_limit_comes_from() -> None:
    cases = [
        ({"groups": {"ml": {"member": {"allowed_models": []}}}}, gib(8)),
        ({"groups": {"ml": {"member": {"allowed_models": ["T4"]}}}},
         SliceRequest(gpu_count=1, gpu_memory_mib=8 * GIB, allowed_models=frozenset({"A100"}))),
        ({"groups": {"ml": {"member": {"allowed_images": ["lab"]}}}},
         SliceRequest(gpu_count=1, gpu_memory_mib=8 * GIB, image="other")),
        ({"groups": {"ml": {"member": {"max_slice": "4Gi"}}}}, gib(8)),
    ]
    for policy, request in cases:
        a = ask(policy, request, groups=("ml",))
        assert a.verdict is Verdict.REFUSE, policy
        assert "None" not in a.reasons[0] and "ml" in a.reasons[0], a.reasons
