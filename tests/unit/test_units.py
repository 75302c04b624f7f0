"""The one Kubernetes quantity parser: syntax, bare units, boundaries and what it refuses."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import pytest

from aispike_hub.kube.nodespec import cpu_milli, quantity_bytes, quantity_mib
from aispike_hub.units import (
    BINARY_SUFFIXES,
    DECIMAL_SUFFIXES,
    GIB,
    GIB_IN_MIB,
    KIB,
    MAX_EXPONENT,
    MAX_QUANTITY,
    MIB,
    QuantityError,
    parse_quantity,
    quantity_int,
)


def test_constants() -> None:
    assert (KIB, MIB, GIB) == (1024, 1024**2, 1024**3)
    assert GIB_IN_MIB == 1024


@pytest.mark.parametrize(("text", "expected"), [
    ("0", 0), ("64", 64), ("1Ki", 1024), ("80Gi", 80 * GIB), ("512Mi", 512 * MIB),
    ("1Ti", 2**40), ("1Pi", 2**50), ("1Ei", 2**60), ("1.5Gi", 3 * GIB // 2), ("1k", 1000),
    ("512M", 512 * 10**6), ("1G", 10**9), ("2T", 2 * 10**12), ("1P", 10**15), ("1E", 10**18),
    ("500m", Fraction(1, 2)), ("1500m", Fraction(3, 2)), ("1u", Fraction(1, 10**6)),
    ("1n", Fraction(1, 10**9)), ("1e3", 1000), ("1E3", 1000), ("1.5e3", 1500),
    ("12e-1", Fraction(6, 5)), ("+5", 5), (".5Ki", 512), ("5.", 5), ("  8Gi ", 8 * GIB),
    ("0.0Gi", 0), ("-0", 0),
])
def test_kubernetes_syntax(text: str, expected: int | Fraction) -> None:
    assert parse_quantity(text) == expected


def test_bare_unit_only_scales_bare_numbers() -> None:
    assert parse_quantity("16", bare_unit=MIB) == 16 * MIB
    assert parse_quantity(16, bare_unit=MIB) == 16 * MIB
    assert parse_quantity(1.5, bare_unit=MIB) == 3 * MIB // 2
    assert parse_quantity("16Gi", bare_unit=MIB) == 16 * GIB
    assert parse_quantity("1k", bare_unit=MIB) == 1000
    assert parse_quantity("1e3", bare_unit=MIB) == 1000  # an exponent is a suffix


def test_yaml_numbers_are_bare_numbers() -> None:
    assert parse_quantity(85899345920) == 80 * GIB
    assert parse_quantity(0.5) == Fraction(1, 2)


@pytest.mark.parametrize("text", [
    "", " ", "Gi", "80 Gi", "80gi", "80GB", "80K", "1.2.3", "0x10", "1e", "1e+", "--1", "1Gi1",
    "one", "1_000", "∞", "nan", "inf", "NaN", "1ee3", "1Kii",
])
def test_what_is_not_a_quantity(text: str) -> None:
    with pytest.raises(QuantityError, match="not a quantity"):
        parse_quantity(text)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_refused(value: float) -> None:
    with pytest.raises(QuantityError, match="not a finite amount"):
        parse_quantity(value)


@pytest.mark.parametrize("value", [True, None, [1], {"a": 1}, b"1Gi"])
def test_other_types_are_refused(value: object) -> None:
    with pytest.raises(QuantityError, match="expected a quantity"):
        parse_quantity(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["-1", "-1Gi", -1, -0.5, "-1e3"])
def test_negative_amounts_are_refused(value: str | int | float) -> None:
    with pytest.raises(QuantityError, match="negative"):
        parse_quantity(value)


def test_the_largest_amount_is_int64() -> None:
    assert parse_quantity(str(MAX_QUANTITY)) == MAX_QUANTITY
    assert parse_quantity("7Ei") == 7 * 2**60
    for too_big in (str(MAX_QUANTITY + 1), "8Ei", "9223372036854775808", "10E", MAX_QUANTITY + 1,
                    1e300, "1e30"):
        with pytest.raises(QuantityError, match="too large"):
            parse_quantity(too_big)
    with pytest.raises(QuantityError, match="too large"):
        parse_quantity(str(MAX_QUANTITY // MIB + 1), bare_unit=MIB)


def test_huge_exponents_are_refused_without_computing_them() -> None:
    for text in ("1e999999999", "1e-999999999", f"1e{MAX_EXPONENT + 1}"):
        with pytest.raises(QuantityError, match="exponent"):
            parse_quantity(text)
    assert parse_quantity("0e999999999") == 0
    assert parse_quantity(f"1e-{MAX_EXPONENT}") == Fraction(1, 10**MAX_EXPONENT)


def test_very_long_text_is_refused() -> None:
    with pytest.raises(QuantityError, match="too long"):
        parse_quantity("1" * 1000)


def test_errors_name_the_value_and_say_what_to_write() -> None:
    with pytest.raises(QuantityError) as info:
        parse_quantity("80 GB", what="nodes[0].gpus[0].memory")
    assert "nodes[0].gpus[0].memory" in str(info.value) and "80Gi" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_every_suffix_round_trips_with_random_numbers() -> None:
    rng = random.Random(18)
    for _ in range(500):
        whole = rng.randrange(0, 10**6)
        frac = rng.randrange(0, 1000)
        number = Fraction(whole) + Fraction(frac, 1000)
        text_number = f"{whole}.{frac:03d}"
        suffix = rng.choice([*BINARY_SUFFIXES, *DECIMAL_SUFFIXES])
        factor = BINARY_SUFFIXES.get(suffix) or DECIMAL_SUFFIXES[suffix]
        expected = number * factor
        if expected > MAX_QUANTITY:
            with pytest.raises(QuantityError):
                parse_quantity(text_number + suffix)
        else:
            assert parse_quantity(text_number + suffix) == expected


def test_integers_and_their_text_agree() -> None:
    rng = random.Random(5)
    for _ in range(500):
        n = rng.randrange(0, 2**62)
        assert parse_quantity(str(n)) == parse_quantity(n) == n


def test_quantity_int_truncates_in_the_unit() -> None:
    assert quantity_int("1.5Gi", unit=MIB) == 1536
    assert quantity_int("1023", unit=KIB) == 0
    assert quantity_int("1500m") == 1


def test_nodespec_wrappers_keep_their_meaning() -> None:
    assert quantity_bytes("80Gi") == 80 * GIB
    assert quantity_bytes("64") == 64 and quantity_bytes(64) == 64
    assert quantity_bytes("1.5Gi") == int(1.5 * GIB)
    assert quantity_bytes(1.9) == 1  # truncated, like int()
    assert quantity_mib("80Gi") == 80 * 1024 and quantity_mib("1Mi") == 1
    assert quantity_mib(str(MIB - 1)) == 0
    assert cpu_milli("500m") == 500 and cpu_milli("1.5") == 1500 and cpu_milli(64) == 64000
    assert cpu_milli("2") == 2000
    with pytest.raises(ValueError, match="not a quantity"):
        quantity_bytes("80 GB")
