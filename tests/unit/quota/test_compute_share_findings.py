"""The compute share of a slice (:mod:`aispike_hub.quota.compute_share`), on its boundaries.

The form, the spawner and the agent must agree on one number per slice, and a user's choice is
checked against the admin's bounds, so each boundary (a slice of 0 MiB, a slice of the whole
GPU, bounds at 1 and 100, a choice exactly at a bound) and each refusal's text is pinned.
These cases were written from the survivors of a mutation run over ``quota/compute_share.py``
(docs/testing.md); the older ``tests/unit/test_compute_share.py`` is outside the folders the
mutation run tests.
"""

from __future__ import annotations

import pytest

from aispike_hub.quota.compute_share import (
    FIELD,
    ComputeShareBounds,
    ComputeShareError,
    compute_percent,
    proportional_percent,
)

GIB = 1024
GPU = 80 * GIB

PROPORTIONAL = [
    ("quarter", 20 * GIB, GPU, 25),
    ("rounds-up", 10 * GIB, 81559, 13),
    ("tiny-is-at-least-1", 1, GPU, 1),
    ("just-under-whole", GPU - 1, GPU, 100),
    ("whole", GPU, GPU, 100),
    ("more-than-whole", GPU + 1, GPU, 100),
    ("zero-is-whole", 0, GPU, 100),
    ("negative-is-whole", -5, GPU, 100),
    ("one-of-100", 1, 100, 1),
    ("99-of-100", 99, 100, 99),
    ("gpu-of-1-mib", 0, 1, 100),
]


@pytest.mark.parametrize(("slice_mib", "gpu_mib", "percent"), [c[1:] for c in PROPORTIONAL],
                         ids=[c[0] for c in PROPORTIONAL])
def test_the_default_share_is_the_memory_share_rounded_up(slice_mib: int, gpu_mib: int,
                                                          percent: int) -> None:
    """Rule: the memory share in whole percent, rounded up, between 1 and 100; no slice (0)
    or the whole GPU is 100."""
    assert proportional_percent(slice_mib, gpu_mib) == percent


@pytest.mark.parametrize("gpu_mib", [0, -1])
def test_a_gpu_of_no_memory_is_an_error(gpu_mib: int) -> None:
    """Rule: a share of a GPU with no memory is meaningless: say so, do not divide by zero."""
    with pytest.raises(ValueError) as e:
        proportional_percent(10, gpu_mib)
    assert str(e.value) == f"GPU memory must be > 0 MiB, got {gpu_mib}"


B = ComputeShareBounds(min_percent=10, max_percent=50)
CHOSEN = [
    ("whole-ignores-a-choice", GPU, 5, B, 100),
    ("zero-slice-ignores-a-choice", 0, 5, B, 100),
    ("default-in-bounds", 20 * GIB, None, B, 25),
    ("default-clamped-up", 2 * GIB, None, B, 10),
    ("default-clamped-down", 60 * GIB, None, B, 50),
    ("default-no-bounds", 20 * GIB, None, None, 25),
    ("default-of-a-1-mib-slice", 1, None, None, 1),
    ("choice-at-min", 20 * GIB, 10, B, 10),
    ("choice-at-max", 20 * GIB, 50, B, 50),
    ("choice-1-by-default", 20 * GIB, 1, None, 1),
    ("choice-100-by-default", 20 * GIB, 100, None, 100),
]


@pytest.mark.parametrize(("slice_mib", "chosen", "bounds", "percent"), [c[1:] for c in CHOSEN],
                         ids=[c[0] for c in CHOSEN])
def test_the_share_a_slice_gets(slice_mib: int, chosen: int | None,
                                bounds: ComputeShareBounds | None, percent: int) -> None:
    """Rule: a whole GPU gets 100 whatever was chosen; no choice gives the default clamped into
    the bounds; a choice within the bounds (both ends included) is kept."""
    assert compute_percent(slice_mib, GPU, chosen, bounds) == percent


REFUSED = [
    ("under-min", 9, B, "compute_percent must be between 10 and 50 percent, got 9"),
    ("over-max", 51, B, "compute_percent must be between 10 and 50 percent, got 51"),
    ("zero", 0, None, "compute_percent must be between 1 and 100 percent, got 0"),
    ("over-100", 101, None, "compute_percent must be between 1 and 100 percent, got 101"),
    ("bool", True, B, "compute_percent must be a whole number of percent, got True"),
    ("float", 20.0, B, "compute_percent must be a whole number of percent, got 20.0"),
    ("text", "20", B, "compute_percent must be a whole number of percent, got '20'"),
    ("no-choice-allowed", 20, ComputeShareBounds(user_choice=False),
     "compute_percent: this hub sets the compute share itself (in proportion to the memory "
     "slice); leave it out"),
]


@pytest.mark.parametrize(("chosen", "bounds", "message"), [c[1:] for c in REFUSED],
                         ids=[c[0] for c in REFUSED])
def test_a_choice_outside_the_policy_is_refused_by_field(
        chosen: object, bounds: ComputeShareBounds | None, message: str) -> None:
    """Rule: the refusal names the request field and what it accepts."""
    with pytest.raises(ComputeShareError) as e:
        compute_percent(20 * GIB, GPU, chosen, bounds)  # type: ignore[arg-type]
    assert str(e.value) == message


def test_a_fixed_share_still_gives_the_default() -> None:
    """Rule: without user choice the default (clamped) is the only value, and asking for
    nothing is no error."""
    fixed = ComputeShareBounds(min_percent=30, max_percent=40, user_choice=False)
    assert compute_percent(20 * GIB, GPU, None, fixed) == 30


BOUNDS = [((1, 100), None), ((100, 100), None), ((1, 1), None), ((50, 50), None),
          ((0, 50), "0..50"), ((60, 50), "60..50"), ((1, 101), "1..101")]


@pytest.mark.parametrize(("bounds", "bad"), BOUNDS, ids=[f"{a}-{b}" for (a, b), _ in BOUNDS])
def test_bounds_are_within_1_and_100(bounds: tuple[int, int], bad: str | None) -> None:
    """Rule: 1 <= min <= max <= 100 (equal ends allowed), else the admin's error names both."""
    if bad is None:
        b = ComputeShareBounds(*bounds)
        assert (b.min_percent, b.max_percent, b.user_choice) == (*bounds, True)
        return
    with pytest.raises(ComputeShareError) as e:
        ComputeShareBounds(*bounds)
    assert str(e.value) == ("compute share bounds need 1 <= min_percent <= max_percent <= 100, "
                            f"got {bad}")


def test_the_defaults_and_the_field() -> None:
    """Rule: by default any whole percent may be chosen, and errors name ``compute_percent``."""
    assert ComputeShareBounds() == ComputeShareBounds(1, 100, True)
    assert FIELD == "compute_percent"
