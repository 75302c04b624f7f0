"""What :func:`aispike_hub.quota.policy.validate_policy` refuses and accepts, exactly.

Every :class:`~aispike_hub.quota.policy.Policy` validates itself on construction, so a policy
the service holds is always usable; the admin who wrote a bad one reads the field and the
message.  These cases were written from the survivors of a mutation run over
``quota/policy.py`` (docs/testing.md): each refusal's field and text, each value just inside a
limit, and the small types (``Amounts``, ``Budget``, ``Tier``) the other modules compute with.
One found a bug: a largest slice above the GPU memory quota was refused even when borrowing was
unlimited (no quota at all, so any slice may start).
"""

from __future__ import annotations

from typing import Any

import pytest

from aispike_hub.quota import (
    DEFAULT_TIERS,
    UNLIMITED,
    Amounts,
    Budget,
    Entry,
    GroupEntry,
    Policy,
    PolicyError,
    Tier,
    entry_fields,
    policy_from_dict,
)

GIB = 1024
T = (Tier("low", 0), Tier("high", 10))

REFUSED: list[tuple[str, dict[str, Any], str, str]] = [
    ("no-tiers", {"tiers": ()}, "tiers", "at least one tier is needed"),
    ("tier-name-empty", {"tiers": (Tier("", 0),)}, "tiers[0].name",
     "use letters, digits, - and _; got ''"),
    ("tier-name-space", {"tiers": (Tier("ok", 0), Tier("a b", 1)), "default_tier": "ok"},
     "tiers[1].name", "use letters, digits, - and _; got 'a b'"),
    ("tier-name-only-dashes", {"tiers": (Tier("--", 0),)}, "tiers[0].name",
     "use letters, digits, - and _; got '--'"),
    ("tier-name-only-underscore", {"tiers": (Tier("_", 0),)}, "tiers[0].name",
     "use letters, digits, - and _; got '_'"),
    ("tier-name-dot", {"tiers": (Tier("a.b", 0),)}, "tiers[0].name",
     "use letters, digits, - and _; got 'a.b'"),
    ("tier-names-twice", {"tiers": (Tier("a", 0), Tier("a", 1)), "default_tier": "a"}, "tiers",
     "tier names must be unique, got ['a', 'a']"),
    ("tier-priorities-twice", {"tiers": (Tier("a", 0), Tier("b", 0)), "default_tier": "a"},
     "tiers", "tier priorities must be unique, got [0, 0]"),
    ("default-tier-unknown", {"tiers": T, "default_tier": "mid"}, "default_tier",
     "unknown tier 'mid'; tiers: ['low', 'high']"),
    ("combine-unknown", {"group_combine": "fair"}, "group_combine",
     "must be most_generous or least_generous"),
    ("quota-below-unlimited", {"defaults": Entry(quota=Budget(gpus=-2))}, "defaults.quota.gpus",
     "must be >= 0 or unlimited, got -2"),
    ("borrowing-negative", {"defaults": Entry(borrowing=Budget(memory_mib=-5))},
     "defaults.borrowing.memory", "must be >= 0 or unlimited, got -5"),
    ("max-slice-zero", {"defaults": Entry(max_slice_mib=0)}, "defaults.max_slice",
     "must be > 0 (use allowed_models: [] for no GPU)"),
    ("max-slice-negative", {"defaults": Entry(max_slice_mib=-2)}, "defaults.max_slice",
     "must be > 0, got -2"),
    ("model-name-blank", {"defaults": Entry(allowed_models=frozenset({"A100", " "}))},
     "defaults.allowed_models", "names must not be empty"),
    ("image-name-empty", {"defaults": Entry(allowed_images=frozenset({""}))},
     "defaults.allowed_images", "names must not be empty"),
    ("entry-tier-unknown", {"tiers": T, "default_tier": "low", "users": {"a": Entry(tier="x")}},
     "users.a.tier", "unknown tier 'x'; tiers: ['high', 'low']"),
    ("max-slice-over-quota", {"defaults": Entry(quota=Budget(gpu_memory_mib=8 * GIB),
                                                max_slice_mib=8 * GIB + 1)},
     "defaults.max_slice",
     "8.0 GiB is more than the GPU memory quota (8 GiB): no slice that large could ever start"),
    ("max-slice-over-quota-and-borrowing",
     {"defaults": Entry(quota=Budget(gpu_memory_mib=8 * GIB),
                        borrowing=Budget(gpu_memory_mib=8 * GIB), max_slice_mib=17 * GIB)},
     "defaults.max_slice",
     "17 GiB is more than the GPU memory quota (8 GiB): no slice that large could ever start"),
    ("group-name-empty", {"groups": {"": GroupEntry()}}, "groups",
     "group names must not be empty"),
    ("group-member", {"groups": {"ml": GroupEntry(member=Entry(quota=Budget(servers=-3)))}},
     "groups.ml.member.quota.servers", "must be >= 0 or unlimited, got -3"),
    ("group-quota", {"groups": {"ml": GroupEntry(quota=Budget(cpu_milli=-3))}},
     "groups.ml.quota.cpu", "must be >= 0 or unlimited, got -3"),
    ("group-borrowing", {"groups": {"ml": GroupEntry(borrowing=Budget(gpus=-3))}},
     "groups.ml.borrowing.gpus", "must be >= 0 or unlimited, got -3"),
    ("user-name-empty", {"users": {"": Entry()}}, "users", "user names must not be empty"),
    ("user-entry", {"users": {"al": Entry(max_slice_mib=0)}}, "users.al.max_slice",
     "must be > 0 (use allowed_models: [] for no GPU)"),
]


@pytest.mark.parametrize(("parts", "field", "message"), [r[1:] for r in REFUSED],
                         ids=[r[0] for r in REFUSED])
def test_an_unusable_policy_is_refused_naming_the_field(parts: dict[str, Any], field: str,
                                                        message: str) -> None:
    """Rule: validation refuses the first inconsistency with the field an admin wrote (the
    document's key, not the internal resource name) and a message that says what is wanted."""
    with pytest.raises(PolicyError) as e:
        Policy(**parts)
    assert (e.value.field, e.value.message, str(e.value)) == (field, message,
                                                              f"{field}: {message}")


ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    ("defaults", {}),
    ("tier-name-dash-underscore", {"tiers": (Tier("a-b_c9", 0),), "default_tier": "a-b_c9"}),
    ("least-generous", {"group_combine": "least_generous"}),
    ("unlimited-and-zero", {"defaults": Entry(quota=Budget(gpus=UNLIMITED, servers=0),
                                              borrowing=Budget(gpus=0))}),
    ("max-slice-unlimited", {"defaults": Entry(max_slice_mib=UNLIMITED)}),
    ("max-slice-equals-quota", {"defaults": Entry(quota=Budget(gpu_memory_mib=8 * GIB),
                                                  max_slice_mib=8 * GIB)}),
    ("max-slice-equals-quota-plus-borrowing",
     {"defaults": Entry(quota=Budget(gpu_memory_mib=8 * GIB),
                        borrowing=Budget(gpu_memory_mib=8 * GIB), max_slice_mib=16 * GIB)}),
    ("max-slice-with-unlimited-borrowing",
     {"defaults": Entry(quota=Budget(gpu_memory_mib=8 * GIB),
                        borrowing=Budget(gpu_memory_mib=UNLIMITED), max_slice_mib=40 * GIB)}),
    ("max-slice-with-unlimited-quota",
     {"defaults": Entry(quota=Budget(gpu_memory_mib=UNLIMITED), max_slice_mib=40 * GIB)}),
    ("max-slice-without-quota", {"defaults": Entry(max_slice_mib=40 * GIB)}),
    ("entry-tier-known", {"users": {"a": Entry(tier="high")}}),
    ("names", {"defaults": Entry(allowed_models=frozenset({"A100"}),
                                 allowed_images=frozenset())}),
]


@pytest.mark.parametrize("parts", [r[1] for r in ACCEPTED], ids=[r[0] for r in ACCEPTED])
def test_a_usable_policy_is_accepted(parts: dict[str, Any]) -> None:
    """Rule: values just inside each limit are accepted: -1 (unlimited) and 0 in a budget, a
    largest slice exactly the quota plus borrowing, and any slice when the quota or the
    borrowing is unlimited (the user then has no GPU memory ceiling to exceed)."""
    Policy(**parts)


def test_a_largest_slice_with_unlimited_borrowing_reads_from_a_document() -> None:
    """Rule (the bug fixed): ``borrowing: unlimited`` lifts the ceiling, so a largest slice
    above the nominal quota is usable and the policy document loads."""
    p = policy_from_dict({"defaults": {"quota": {"gpu_memory": "8Gi"},
                                       "borrowing": {"gpu_memory": "unlimited"},
                                       "max_slice": "40Gi"}})
    assert p.defaults.max_slice_mib == 40 * GIB


def test_amounts_add_subtract_total_and_read() -> None:
    """Rule: usage is summed and compared per resource, in RESOURCES order, never mixed."""
    a = Amounts(1, 2, 3, 4, 5)
    b = Amounts(10, 20, 30, 40, 50)
    assert a + b == Amounts(11, 22, 33, 44, 55)
    assert b - a == Amounts(9, 18, 27, 36, 45)
    assert Amounts.total([a, b, a]) == Amounts(12, 24, 36, 48, 60)
    assert Amounts.total([]) == Amounts()
    assert a.as_dict() == {"gpu_memory_mib": 1, "gpus": 2, "cpu_milli": 3, "memory_mib": 4,
                           "servers": 5}
    assert [a.get(r) for r in ("servers", "gpus")] == [5, 2]


def test_a_budget_is_empty_only_when_nothing_is_set() -> None:
    """Rule: an entry's budget is written out only when it sets something (0 is set)."""
    assert Budget().is_empty() is True
    assert Budget(servers=0).is_empty() is False
    assert Budget(gpu_memory_mib=UNLIMITED).is_empty() is False


def test_tiers_and_their_priority_classes() -> None:
    """Rule: a tier's PriorityClass is its own if given, else aispike-<name>; the default tiers
    are low (does not preempt), normal and high; an unknown tier name is a KeyError."""
    assert Tier("gold", 5).kube_priority_class == "aispike-gold"
    assert Tier("gold", 5, priority_class="pc").kube_priority_class == "pc"
    assert Tier("gold", 5).preempts is True
    assert [(t.name, t.priority, t.preempts) for t in DEFAULT_TIERS] == [
        ("low", 0, False), ("normal", 100, True), ("high", 200, True)]
    p = Policy()
    assert (p.default_tier, p.group_combine, p.tiers) == ("normal", "most_generous",
                                                          DEFAULT_TIERS)
    assert p.tier("high") == DEFAULT_TIERS[2]
    with pytest.raises(KeyError) as e:
        p.tier("gold")
    assert e.value.args == ("gold",)


def test_a_policy_holds_read_only_copies() -> None:
    """Rule: the policy the service holds cannot change under it: groups and users are
    read-only copies of what was passed."""
    users = {"a": Entry()}
    p = Policy(users=users, groups=None)  # type: ignore[arg-type]
    users["b"] = Entry()
    assert list(p.users) == ["a"] and dict(p.groups) == {}
    with pytest.raises(TypeError):
        p.users["c"] = Entry()  # type: ignore[index]


def test_entry_fields_in_order() -> None:
    """Rule: the API and docs list an entry's fields in the dataclass order."""
    assert entry_fields() == ("quota", "borrowing", "max_slice_mib", "allowed_models",
                              "allowed_images", "tier")
