"""Every sentence of :mod:`aispike_hub.quota.messages`, byte for byte.

A refused, queued or preempted user acts on these texts, so an amount in the wrong unit, a
server named wrongly or a mangled sentence is a bug a person reads.  The table tests elsewhere
check that a reason *contains* a phrase; these cases pin the whole sentence of each helper.
They were written from the survivors of a mutation run over ``quota/messages.py``
(docs/testing.md), and three of them found bugs: RAM used was shown with its unit twice
("512 MiB RAM of 16 GiB RAM"), a list of servers named the default server wherever it came,
and the preempted notice of a default server read "Your server your default server".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from aispike_hub.quota import messages
from aispike_hub.quota.messages import _fmt, _of, _server_names

GIB = 1024


@dataclass(frozen=True)
class Named:
    """A server as the messages see it: only its name ("" is the user's default server)."""

    name: str


FMT = [
    # memory: whole GiB, a tenth of a GiB from 1 GiB up, MiB below
    ("gpu_memory_mib", 16 * GIB, "16 GiB"),
    ("gpu_memory_mib", GIB, "1 GiB"),
    ("gpu_memory_mib", GIB + 512, "1.5 GiB"),
    ("gpu_memory_mib", GIB + 1, "1.0 GiB"),
    ("gpu_memory_mib", GIB - 1, "1023 MiB"),
    ("gpu_memory_mib", 0, "0 GiB"),
    ("memory_mib", 2 * GIB, "2 GiB RAM"),
    ("memory_mib", 1100, "1.1 GiB RAM"),
    ("memory_mib", 512, "512 MiB RAM"),
    # CPU: cores, one CPU singular, fractions as cores
    ("cpu_milli", 1000, "1 CPU"),
    ("cpu_milli", 2000, "2 CPUs"),
    ("cpu_milli", 0, "0 CPUs"),
    ("cpu_milli", 500, "0.5 CPUs"),
    ("cpu_milli", 2500, "2.5 CPUs"),
    # counts
    ("gpus", 1, "1 GPU"),
    ("gpus", 0, "0 GPUs"),
    ("gpus", 4, "4 GPUs"),
    ("servers", 1, "1 server"),
    ("servers", 3, "3 servers"),
]


@pytest.mark.parametrize(("resource", "amount", "text"), FMT,
                         ids=[f"{r}-{a}" for r, a, _ in FMT])
def test_an_amount_reads_in_the_unit_a_person_uses(resource: str, amount: int, text: str) -> None:
    """Rule: memory in GiB when it is 1 GiB or more (one decimal unless whole), else MiB, RAM
    marked as RAM; CPU in cores; counts with a singular for exactly one."""
    assert _fmt(resource, amount) == text


OF = [
    ("gpu_memory_mib", 12 * GIB, 16 * GIB, "12 of 16 GiB GPU memory"),
    ("gpu_memory_mib", GIB + 512, 16 * GIB, "1.5 of 16 GiB GPU memory"),
    ("gpu_memory_mib", 512, 16 * GIB, "512 MiB of 16 GiB GPU memory"),
    ("gpu_memory_mib", 256, 512, "256 of 512 MiB GPU memory"),
    ("gpu_memory_mib", 0, 512, "0 of 512 MiB GPU memory"),
    ("memory_mib", 16 * GIB, 32 * GIB, "16 of 32 GiB RAM"),
    ("memory_mib", 512, 16 * GIB, "512 MiB of 16 GiB RAM"),
    ("memory_mib", 0, 16 * GIB, "0 of 16 GiB RAM"),
    ("cpu_milli", 1500, 4000, "1.5 of 4 CPUs"),
    ("cpu_milli", 1000, 1000, "1 of 1 CPU"),
    ("gpus", 1, 2, "1 of 2 GPUs"),
    ("servers", 2, 2, "2 of 2 servers"),
    ("servers", 1, 1, "1 of 1 server"),
]


@pytest.mark.parametrize(("resource", "used", "limit", "text"), OF,
                         ids=[f"{r}-{u}-of-{lim}" for r, u, lim, _ in OF])
def test_use_against_a_limit_names_the_unit_once(resource: str, used: int, limit: int,
                                                 text: str) -> None:
    """Rule: "<used> of <limit>" says the unit after the limit only, and repeats a unit for the
    amount used only where it differs (MiB of GiB); RAM is said once, at the end."""
    assert _of(resource, used, limit) == text


NAMES = [
    (("train",), "server 'train'"),
    (("",), "your default server"),
    (("train", "eda"), "servers 'train' and 'eda'"),
    (("", "train"), "servers 'train' and your default server"),
    (("a", "", "b"), "servers 'a', 'b' and your default server"),
    (("a", "b", "c"), "servers 'a', 'b' and 'c'"),
]


@pytest.mark.parametrize(("names", "text"), NAMES, ids=["+".join(n) or "default"
                                                        for n, _ in NAMES])
def test_servers_are_listed_in_order_with_the_default_server_last(names: tuple[str, ...],
                                                                  text: str) -> None:
    """Rule: named servers in the order given, quoted, joined by commas and a final "and"; the
    default (unnamed) server last, as "your default server"."""
    assert _server_names([Named(n) for n in names]) == text


SENTENCES: list[tuple[Callable[[], str], str]] = [
    # called inside the test, so the mutation tool sees which test reaches each helper
    (lambda: messages.no_gpus_allowed("the defaults"),
     "you may not use GPUs (the defaults); start a server without a GPU or ask an admin"),
    (lambda: messages.models_not_allowed(["H100", "A100"], "group 'ml'", ["L4", "T4"]),
     "you may use GPU models A100, H100 (group 'ml'), not L4, T4"),
    (lambda: messages.image_not_allowed("", ["b", "a"], "your user entry"),
     "image '(none)' is not one you may use; allowed: a, b (your user entry)"),
    (lambda: messages.image_not_allowed("x:1", ["a"], "the defaults"),
     "image 'x:1' is not one you may use; allowed: a (the defaults)"),
    (lambda: messages.slice_too_large(20 * GIB, 10 * GIB, "the defaults"),
     "20 GiB per GPU is more than your largest slice of 10 GiB (the defaults); "
     "ask for less or ask an admin"),
    (lambda: messages.over_user_ceiling("gpu_memory_mib", 20 * GIB, 16 * GIB, "your user entry"),
     "20 GiB is more than your quota of 16 GiB GPU memory (your user entry); "
     "ask for less or ask an admin"),
    (lambda: messages.over_user_ceiling("servers", 1, 0, "the defaults"),
     "a server is more than your quota of 0 servers (the defaults); ask for less or ask an admin"),
    (lambda: messages.over_user_ceiling("memory_mib", 8 * GIB, 4 * GIB, "the defaults"),
     "8 GiB RAM is more than your quota of 4 GiB RAM (the defaults); "
     "ask for less or ask an admin"),
    (lambda: messages.over_group_ceiling("gpus", 3, "ml", 2),
     "3 GPUs is more than group 'ml' may ever use (2 GPUs); ask for less or ask an admin"),
    (lambda: messages.user_quota_used("gpu_memory_mib", 12 * GIB, 16 * GIB,
                              [Named("train"), Named("eda")], 8 * GIB, 16 * GIB, 0),
     "you use 12 of 16 GiB GPU memory in servers 'train' and 'eda'; 8 GiB more would exceed "
     "it: stop a server or ask an admin"),
    (lambda: messages.user_quota_used("servers", 1, 1, [Named("")], 1, 1, 0),
     "you use 1 of 1 server in your default server; another server would exceed it: "
     "stop a server or ask an admin"),
    (lambda: messages.user_quota_used("memory_mib", 512, 3 * GIB, [], GIB * 3, 2 * GIB, GIB),
     "you use 512 MiB of 3 GiB RAM (quota 2 GiB RAM + 1 GiB RAM borrowing); 3 GiB RAM more "
     "would exceed it: stop a server or ask an admin"),
    (lambda: messages.group_quota_used("ml", "gpu_memory_mib", 16 * GIB, 16 * GIB),
     "group 'ml' uses 16 of 16 GiB GPU memory; waiting for a member's server to stop"),
    (lambda: messages.preempted("train", "interactive", False, "ana", "deadline"),
     "Your server 'train' was stopped to make room for a tier 'deadline' server of ana: it ran "
     "in the lower tier 'interactive', and the cluster was full."),
    (lambda: messages.preempted("", "low", False, "ana", "high"),
     "Your server 'default' was stopped to make room for a tier 'high' server of ana: it ran "
     "in the lower tier 'low', and the cluster was full."),
    (lambda: messages.preempted("big", "normal", True, "bob", "normal"),
     "Your server 'big' was stopped to make room for a tier 'normal' server of bob: it ran on "
     "borrowed capacity beyond your quota, and the cluster was full."),
]


@pytest.mark.parametrize(("say", "text"), SENTENCES, ids=[t[:40] for _, t in SENTENCES])
def test_each_sentence_reads_exactly(say: Callable[[], str], text: str) -> None:
    """Rule: each reason says what was asked, the limit, where it comes from and what would
    help; the preempted notice names the server as the warning before it did ('default' for
    the default server) and says why it was this one (a lower tier, or borrowed capacity)."""
    assert say() == text


def test_the_fixed_texts() -> None:
    """Rule: the three fixed reasons (borrowing without idle capacity, a full cluster, a
    borrowed admission) are the sentences the docs quote."""
    assert messages.BORROW_NEEDS_IDLE == (
        "this server would borrow beyond your nominal quota, which is only possible while the "
        "cluster has idle capacity; it has none now")
    assert messages.CLUSTER_FULL == "the cluster has no room for it now"
    assert messages.ADMITTED_BORROWED == (
        "admitted on borrowed capacity: it is the first to be preempted when others need their "
        "quota")
