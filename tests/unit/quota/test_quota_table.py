"""The quota policy as a table of cases (Kueue-style): policy, user, request, usage -> verdict.

Each row is one situation an admin could describe in a sentence; the ids say which.  Policies are
written as the documents an admin writes (traitlets config / REST API), so the parser is exercised
by every row too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from aispike_hub.model import SliceRequest
from aispike_hub.quota import (
    Amounts,
    ClusterView,
    Server,
    User,
    Verdict,
    admit,
    policy_from_dict,
    preemption_order,
    resolve_limits,
)

GIB = 1024
A100 = 80 * GIB


def gib(n: int, **kw: Any) -> SliceRequest:
    return SliceRequest(gpu_count=1, gpu_memory_mib=n * GIB, **kw)


def running(user: str, name: str, gpu_gib: int = 0, *, tier: str = "normal", prio: int = 100,
            borrowed: bool = False, groups: tuple[str, ...] = (), gpus: int | None = None,
            cpu: int = 0, mem: int = 0, seq: int = 0) -> Server:
    return Server(user, name,
                  Amounts(gpu_gib * GIB, (1 if gpu_gib else 0) if gpus is None else gpus,
                          cpu, mem, 1),
                  tier, prio, borrowed, frozenset(groups), seq)


@dataclass
class Case:
    id: str
    policy: dict[str, Any]
    request: SliceRequest
    verdict: Verdict
    user: str = "alice"
    groups: tuple[str, ...] = ()
    usage: list[Server] = field(default_factory=list)
    fits: bool = True
    says: tuple[str, ...] = ()
    borrowed: bool = False
    may_preempt: bool = False


COURSE = {
    "defaults": {"quota": {"gpu_memory": "8Gi", "servers": 1}, "tier": "low"},
    "groups": {
        "ml101": {"member": {"quota": {"gpu_memory": "8Gi", "servers": 1}, "max_slice": "8Gi"},
                  "quota": {"gpu_memory": "32Gi"}, "borrowing": {"gpu_memory": "16Gi"}},
        "tas": {"member": {"quota": {"gpu_memory": "24Gi", "servers": 2}, "tier": "normal"}},
    },
    "users": {"prof": {"quota": {"gpu_memory": "unlimited", "servers": 4}, "tier": "high"}},
}

LAB = {
    "defaults": {"quota": {"gpus": 0}},
    "groups": {
        "vision": {"member": {"quota": {"gpus": 2, "gpu_memory": "160Gi"},
                              "borrowing": {"gpus": 2, "gpu_memory": "160Gi"},
                              "allowed_models": ["NVIDIA A100-SXM4-80GB"]},
                   "quota": {"gpus": 4}, "borrowing": {"gpus": 2}},
        "nlp": {"member": {"quota": {"gpus": 1, "gpu_memory": "80Gi"},
                           "allowed_models": ["NVIDIA H100 80GB HBM3"]}},
    },
}

CASES: list[Case] = [
    # --- no policy at all -------------------------------------------------------------------
    Case("empty-policy-admits", {}, gib(8), Verdict.ADMIT),
    Case("empty-policy-full-cluster-queues", {}, gib(8), Verdict.QUEUE, fits=False,
         says=("no room",), may_preempt=True),
    Case("cpu-only-needs-no-gpu-quota", {"defaults": {"quota": {"gpu_memory": 0}}},
         SliceRequest(gpu_count=0, cpu_milli=1000), Verdict.ADMIT),
    # --- per-user GPU memory ------------------------------------------------------------------
    Case("within-default-quota", {"defaults": {"quota": {"gpu_memory": "16Gi"}}}, gib(8),
         Verdict.ADMIT),
    Case("exactly-at-quota", {"defaults": {"quota": {"gpu_memory": "16Gi"}}}, gib(8),
         Verdict.ADMIT, usage=[running("alice", "a", 8)]),
    Case("over-quota-names-servers", {"defaults": {"quota": {"gpu_memory": "16Gi"}}}, gib(8),
         Verdict.REFUSE, usage=[running("alice", "train", 8), running("alice", "eda", 4)],
         says=("you use 12 of 16 GiB GPU memory in servers 'train' and 'eda'",
               "stop a server or ask an admin")),
    Case("single-request-over-quota", {"defaults": {"quota": {"gpu_memory": "16Gi"}}}, gib(20),
         Verdict.REFUSE, says=("20 GiB is more than your quota of 16 GiB GPU memory",)),
    Case("others-usage-does-not-count", {"defaults": {"quota": {"gpu_memory": "16Gi"}}},
         gib(16), Verdict.ADMIT, usage=[running("bob", "x", 16)]),
    Case("same-server-not-counted-twice", {"defaults": {"quota": {"gpu_memory": "16Gi"}}},
         gib(16), Verdict.ADMIT, usage=[running("alice", "", 16)]),
    Case("whole-gpu-counts-its-memory", {"defaults": {"quota": {"gpu_memory": "40Gi"}}},
         SliceRequest(gpu_count=1), Verdict.REFUSE, says=("80 GiB is more than",)),
    Case("share-counts-its-part", {"defaults": {"quota": {"gpu_memory": "40Gi"}}},
         SliceRequest(gpu_count=1, gpu_share_milli=500), Verdict.ADMIT),
    Case("share-over-quota", {"defaults": {"quota": {"gpu_memory": "30Gi"}}},
         SliceRequest(gpu_count=1, gpu_share_milli=500), Verdict.REFUSE),
    Case("default-server-named", {"defaults": {"quota": {"gpu_memory": "8Gi"}}}, gib(8),
         Verdict.REFUSE, usage=[running("alice", "", 8)], says=("your default server",)),
    # --- other resources ----------------------------------------------------------------------
    Case("server-count-limit", {"defaults": {"quota": {"servers": 2}}}, gib(1), Verdict.REFUSE,
         usage=[running("alice", "a", 1), running("alice", "b", 1)],
         says=("you use 2 of 2 servers", "another server would exceed")),
    Case("gpu-count-limit", {"defaults": {"quota": {"gpus": 2}}},
         SliceRequest(gpu_count=2), Verdict.REFUSE, usage=[running("alice", "a", 8)],
         says=("you use 1 of 2 GPUs in server 'a'",)),
    Case("cpu-limit-in-cores", {"defaults": {"quota": {"cpu": 4}}},
         SliceRequest(gpu_count=0, cpu_milli=3000), Verdict.REFUSE,
         usage=[running("alice", "a", cpu=2000)], says=("you use 2 of 4 CPUs",)),
    Case("cpu-limit-millicores", {"defaults": {"quota": {"cpu": "4500m"}}},
         SliceRequest(gpu_count=0, cpu_milli=2500), Verdict.ADMIT,
         usage=[running("alice", "a", cpu=2000)]),
    Case("ram-limit", {"defaults": {"quota": {"memory": "32Gi"}}},
         SliceRequest(gpu_count=0, memory_mib=24 * GIB), Verdict.REFUSE,
         usage=[running("alice", "a", mem=16 * GIB)], says=("16 of 32 GiB RAM",)),
    Case("all-limits-listed", {"defaults": {"quota": {"servers": 1, "gpu_memory": "8Gi"}}},
         gib(8), Verdict.REFUSE, usage=[running("alice", "a", 8)],
         says=("8 of 8 GiB GPU memory", "1 of 1 server")),
    # --- per-request limits -------------------------------------------------------------------
    Case("largest-slice", {"defaults": {"max_slice": "20Gi"}}, gib(24), Verdict.REFUSE,
         says=("24 GiB per GPU is more than your largest slice of 20 GiB",)),
    Case("largest-slice-whole-gpu", {"defaults": {"max_slice": "40Gi"}},
         SliceRequest(gpu_count=2), Verdict.REFUSE, says=("80 GiB per GPU",)),
    Case("model-not-allowed", {"defaults": {"allowed_models": ["T4"]}},
         gib(8, allowed_models=frozenset({"A100"})), Verdict.REFUSE,
         says=("you may use GPU models T4",)),
    Case("any-model-narrowed-to-allowed", {"defaults": {"allowed_models": ["T4"]}}, gib(8),
         Verdict.ADMIT),
    Case("no-gpu-at-all", {"defaults": {"allowed_models": []}}, gib(8), Verdict.REFUSE,
         says=("you may not use GPUs",)),
    Case("image-allowed", {"defaults": {"allowed_images": ["jupyter/scipy"]}},
         gib(8, image="jupyter/scipy"), Verdict.ADMIT),
    Case("image-not-allowed", {"defaults": {"allowed_images": ["jupyter/scipy"]}},
         gib(8, image="evil/miner"), Verdict.REFUSE, says=("image 'evil/miner'",)),
    # --- user over group over defaults --------------------------------------------------------
    Case("course-student-1-server", COURSE, gib(8), Verdict.REFUSE, groups=("ml101",),
         usage=[running("alice", "hw1", 8, groups=("ml101",))], says=("1 of 1 server",)),
    Case("course-student-slice-cap", COURSE, gib(12), Verdict.REFUSE, groups=("ml101",),
         says=("largest slice of 8 GiB", "group 'ml101'")),
    Case("course-ta-gets-group-quota", COURSE, gib(12), Verdict.ADMIT, groups=("ml101", "tas"),
         usage=[running("alice", "grading", 8, groups=("ml101", "tas"))]),
    Case("course-ta-most-generous-slice", COURSE, gib(16), Verdict.ADMIT,
         groups=("ml101", "tas")),
    Case("user-entry-beats-group", COURSE, gib(60), Verdict.ADMIT, user="prof",
         groups=("tas",)),
    Case("user-entry-server-limit", COURSE, gib(1), Verdict.REFUSE, user="prof",
         usage=[running("prof", str(i), 1) for i in range(4)], says=("4 of 4 servers",)),
    Case("non-member-gets-defaults", COURSE, gib(12), Verdict.REFUSE, user="guest",
         says=("12 GiB is more than your quota of 8 GiB GPU memory (the defaults)",)),
    Case("least-generous-configured",
         {**COURSE, "group_combine": "least_generous"}, gib(12), Verdict.REFUSE,
         groups=("ml101", "tas"), says=("largest slice of 8 GiB",)),
    Case("explicit-unlimited-overrides-group",
         {"groups": {"g": {"member": {"quota": {"gpu_memory": "8Gi"}}}},
          "users": {"alice": {"quota": {"gpu_memory": "unlimited"}}}},
         gib(64), Verdict.ADMIT, groups=("g",)),
    Case("unknown-group-ignored", COURSE, gib(8), Verdict.ADMIT, user="x",
         groups=("no-such-group",)),
    # --- whole-group quotas -------------------------------------------------------------------
    Case("group-quota-full-queues", COURSE, gib(8), Verdict.QUEUE, groups=("ml101",),
         usage=[running(f"s{i}", "", 8, groups=("ml101",)) for i in range(6)],
         says=("group 'ml101' uses 48 of 48 GiB GPU memory", "waiting for a member")),
    Case("group-quota-counts-all-members", COURSE, gib(8), Verdict.ADMIT, groups=("ml101",),
         usage=[running(f"s{i}", "", 8, groups=("ml101",)) for i in range(3)]),
    Case("group-nonmembers-not-counted", COURSE, gib(8), Verdict.ADMIT, groups=("ml101",),
         usage=[running(f"s{i}", "", 8, groups=("other",)) for i in range(10)]),
    # --- borrowing ----------------------------------------------------------------------------
    Case("group-borrows-when-idle", COURSE, gib(8), Verdict.ADMIT, groups=("ml101",),
         usage=[running(f"s{i}", "", 8, groups=("ml101",)) for i in range(4)], borrowed=True,
         says=("borrowed capacity",)),
    Case("group-borrow-needs-idle-capacity", COURSE, gib(8), Verdict.QUEUE, groups=("ml101",),
         usage=[running(f"s{i}", "", 8, groups=("ml101",)) for i in range(4)], fits=False,
         borrowed=True, says=("only possible while the cluster has idle capacity",)),
    Case("borrowing-never-preempts", COURSE, gib(8), Verdict.QUEUE, groups=("ml101",),
         usage=[running(f"s{i}", "", 8, groups=("ml101",)) for i in range(4)], fits=False,
         borrowed=True, may_preempt=False),
    Case("user-borrows-beyond-nominal", LAB, SliceRequest(gpu_count=1), Verdict.ADMIT,
         groups=("vision",), usage=[running("alice", "a", 80, gpus=2, groups=("vision",))],
         borrowed=True),
    Case("user-borrow-ceiling", LAB, SliceRequest(gpu_count=1), Verdict.REFUSE,
         groups=("vision",), usage=[running("alice", "a", 80, gpus=4, groups=("vision",))],
         says=("you use 4 of 4 GPUs", "quota 2 GPUs + 2 GPUs borrowing")),
    Case("lab-group-borrow-ceiling", LAB, SliceRequest(gpu_count=1), Verdict.QUEUE,
         user="carol", groups=("vision",),
         usage=[running("alice", "a", 160, gpus=3, groups=("vision",)),
                running("bob", "b", 160, gpus=3, groups=("vision",))],
         says=("group 'vision' uses 6 of 6 GPUs",)),
    Case("lab-wrong-model", LAB, SliceRequest(gpu_count=1,
                                              allowed_models=frozenset({"NVIDIA H100 80GB HBM3"})),
         Verdict.REFUSE, groups=("vision",), says=("NVIDIA A100-SXM4-80GB",)),
    Case("lab-two-groups-union-of-models", LAB,
         SliceRequest(gpu_count=1, allowed_models=frozenset({"NVIDIA H100 80GB HBM3"})),
         Verdict.ADMIT, groups=("vision", "nlp")),
    Case("lab-outsider-no-gpus", LAB, SliceRequest(gpu_count=1), Verdict.REFUSE, user="eve",
         says=("1 GPU is more than your quota of 0 GPUs",)),
    # --- tiers --------------------------------------------------------------------------------
    Case("high-tier-may-preempt", COURSE, gib(8), Verdict.QUEUE, user="prof", fits=False,
         may_preempt=True),
    Case("low-tier-never-preempts", COURSE, gib(8), Verdict.QUEUE, user="guest", fits=False,
         may_preempt=False),
    Case("cluster-reasons-passed-on", {}, gib(8), Verdict.QUEUE, fits=False,
         says=("no GPU has 8 GiB free",), may_preempt=True),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_admission_table(case: Case) -> None:
    policy = policy_from_dict(case.policy)
    cluster = ClusterView(case.fits, () if case.fits else ("no GPU has 8 GiB free",), A100)
    result = admit(User(case.user, frozenset(case.groups)), case.request, case.usage, cluster,
                   policy, server_name="" if case.id == "same-server-not-counted-twice" else "new")
    text = " | ".join(result.reasons)
    assert result.verdict is case.verdict, text
    for phrase in case.says:
        assert phrase in text, f"{phrase!r} not in {text!r}"
    assert result.borrowed == case.borrowed, text
    assert result.may_preempt == case.may_preempt, text


def test_resolution_names_sources() -> None:
    limits = resolve_limits(policy_from_dict(COURSE), "alice", {"ml101", "tas"})
    assert limits.quota["gpu_memory_mib"] == 24 * GIB
    assert limits.sources["gpu_memory_mib"] == "group 'tas'"
    assert limits.tier.name == "normal" and limits.sources["tier"] == "group 'tas'"
    assert limits.quota["cpu_milli"] is None
    prof = resolve_limits(policy_from_dict(COURSE), "prof", set())
    assert prof.quota["gpu_memory_mib"] is None and prof.tier.name == "high"


PREEMPT_CASES = [
    # requester tier, requester borrowed, servers -> expected order of names
    ("high", False, [("b", "normal", 100, False, 1), ("a", "low", 0, False, 2),
                     ("c", "high", 200, False, 3)], ["a", "b"]),
    ("normal", False, [("b", "normal", 100, True, 1), ("a", "low", 0, False, 2)], ["b", "a"]),
    ("normal", True, [("b", "normal", 100, True, 1), ("a", "low", 0, False, 2)], ["a"]),
    ("normal", False, [("old", "low", 0, False, 1), ("new", "low", 0, False, 9)],
     ["new", "old"]),
    ("low", False, [("a", "low", 0, True, 1)], []),  # low does not preempt at all
    ("high", False, [("mine", "low", 0, False, 1)], []),  # never the requester's own
]


@pytest.mark.parametrize("tier,borrowed,servers,expected", PREEMPT_CASES)
def test_preemption_order(tier: str, borrowed: bool, servers: list[tuple[Any, ...]],
                          expected: list[str]) -> None:
    policy = policy_from_dict({})
    usage = [Server("alice" if name == "mine" else f"u-{name}", name, Amounts(servers=1), t, p,
                    b, frozenset(), seq) for name, t, p, b, seq in servers]
    order = preemption_order(User("alice"), policy.tier(tier), borrowed, usage)
    assert [s.name for s in order] == expected


def test_borrowing_unset_in_one_group_is_zero_not_unlimited() -> None:
    policy = policy_from_dict({"groups": {
        "a": {"member": {"quota": {"gpus": 1}, "borrowing": {"gpus": 2}}},
        "b": {"member": {"quota": {"gpus": 1}}},
    }})
    limits = resolve_limits(policy, "u", {"a", "b"})
    assert limits.quota["gpus"] == 1 and limits.borrowing["gpus"] == 2
    assert limits.ceiling("gpus") == 3
    unlimited = policy_from_dict({"defaults": {"quota": {"gpus": 1},
                                               "borrowing": {"gpus": "unlimited"}}})
    assert resolve_limits(unlimited, "u", set()).quota["gpus"] is None


BAD_POLICIES = [
    ({"defaults": {"quota": {"gpu_memory": -5}}}, "defaults.quota.gpu_memory"),
    ({"defaults": {"quota": {"gpu_memory": "lots"}}}, "defaults.quota.gpu_memory"),
    ({"defaults": {"quota": {"gpu_memory": "1.5Mi"}}}, "defaults.quota.gpu_memory"),
    ({"defaults": {"quota": {"gpux": 1}}}, "defaults.quota.gpux"),
    ({"defaults": {"quota": {"servers": 1.5}}}, "defaults.quota.servers"),
    ({"defaults": {"quota": {"servers": True}}}, "defaults.quota.servers"),
    ({"defaults": {"quota": {"cpu": "2x"}}}, "defaults.quota.cpu"),
    ({"defaults": {"quota": {"gpus": 10**30}}}, "defaults.quota.gpus"),
    ({"defaults": {"tier": "vip"}}, "defaults.tier"),
    ({"defaults": {"colour": "red"}}, "defaults.colour"),
    ({"defaults": "everything"}, "defaults"),
    ({"users": {"bob": {"max_slice": 0}}}, "users.bob.max_slice"),
    ({"users": {"bob": {"quota": {"gpu_memory": "8Gi"}, "max_slice": "16Gi"}}},
     "users.bob.max_slice"),
    ({"users": {"bob": {"allowed_models": "A100"}}}, "users.bob.allowed_models"),
    ({"users": {"bob": {"allowed_images": [""]}}}, "users.bob.allowed_images[0]"),
    ({"users": {"": {}}}, "users"),
    ({"groups": {"g": {"members": {}}}}, "groups.g.members"),
    ({"groups": {"g": {"quota": {"gpus": -2}}}}, "groups.g.quota.gpus"),
    ({"tiers": [{"name": "a", "priority": 1}, {"name": "a", "priority": 2}]}, "tiers"),
    ({"tiers": [{"name": "a", "priority": 1}, {"name": "b", "priority": 1}]}, "tiers"),
    ({"tiers": [{"name": "a b", "priority": 1}]}, "tiers[0].name"),
    ({"tiers": [{"name": "a", "priority": "high"}]}, "tiers[0].priority"),
    ({"tiers": []}, "tiers"),
    ({"tiers": [{"name": "a", "priority": 1}], "default_tier": "b"}, "default_tier"),
    ({"group_combine": "average"}, "group_combine"),
    ({"surprise": 1}, "surprise"),
]


@pytest.mark.parametrize("doc,field_name", BAD_POLICIES)
def test_bad_policy_names_the_field(doc: dict[str, Any], field_name: str) -> None:
    from aispike_hub.quota import PolicyError

    with pytest.raises(PolicyError) as err:
        policy_from_dict(doc)
    assert err.value.field == field_name, str(err.value)


@pytest.mark.parametrize("doc", [COURSE, LAB, {}])
def test_policy_document_round_trip(doc: dict[str, Any]) -> None:
    from aispike_hub.quota import policy_to_dict

    policy = policy_from_dict(doc)
    assert policy_from_dict(policy_to_dict(policy)) == policy
