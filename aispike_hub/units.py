"""Units of memory and the one parser of Kubernetes quantities; pure, no I/O.

Every module that turns bytes into MiB (NVML readings, CDI limits, metrics) uses these constants,
and every place that reads a quantity (``80Gi`` in a node spec, ``16Gi`` in a quota document, a
ResourceSlice's ``memory`` capacity, a CPU of ``500m``) uses :func:`parse_quantity`, so "what
does 1.5Gi mean" has one answer.

The syntax is Kubernetes' (``k8s.io/apimachinery/pkg/api/resource``)::

    quantity = [sign] number [suffix]
    number   = digits | digits "." [digits] | "." digits
    suffix   = Ki | Mi | Gi | Ti | Pi | Ei          (powers of 1024)
             | n | u | m | "" | k | M | G | T | P | E   (powers of 1000)
             | (e | E) [sign] digits                (a decimal exponent)

A number without a suffix is counted in ``bare_unit``: bytes for Kubernetes objects (a bare
``64`` is 64 bytes, as the API server reads it), MiB for the admin's policy documents.  The
value is exact (a :class:`~fractions.Fraction`); the caller decides how to round.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

from aispike_hub.sanity import shorten

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30
TIB = 1 << 40
GIB_IN_MIB = GIB // MIB
"""MiB in a GiB (also :data:`aispike_hub.model.GIB_IN_MIB`)."""

BINARY_SUFFIXES: dict[str, int] = {
    "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "Pi": 1 << 50, "Ei": 1 << 60,
}
DECIMAL_SUFFIXES: dict[str, Fraction] = {
    "n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000), "": Fraction(1),
    "k": Fraction(10**3), "M": Fraction(10**6), "G": Fraction(10**9), "T": Fraction(10**12),
    "P": Fraction(10**15), "E": Fraction(10**18),
}

MAX_QUANTITY = (1 << 63) - 1
"""Largest amount accepted (in the result's units): Kubernetes keeps quantities in an int64."""
MAX_EXPONENT = 30
"""Largest decimal exponent, either sign (``1e30``, ``1e-30``): beyond it no amount fits
:data:`MAX_QUANTITY` (or none is above a nano-unit), and refusing early keeps ``1e999999999``
from costing a huge integer."""
MAX_LENGTH = 64
"""Longest quantity text read (Kubernetes' own limit on the number part is similar)."""

_QUANTITY = re.compile(
    r"^(?P<sign>[+-]?)(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
    r"(?:(?P<exp>[eE][+-]?[0-9]+)|(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]?))$"
)
_EXAMPLES = "write e.g. 80Gi, 512Mi, 1.5G, 500m or 64"


class QuantityError(ValueError):
    """Not a quantity we accept; the message quotes it and says what to write instead."""


def parse_quantity(
    text: str | int | float, bare_unit: int | Fraction = 1, *, what: str = "quantity"
) -> Fraction:
    """The exact amount of ``text`` in base units (bytes, cores, ...).

    ``bare_unit`` is what a number without suffix counts (1: bytes, as Kubernetes reads a
    bare number; :data:`MIB`: MiB, as the admin's policy documents do).  An ``int`` or
    ``float`` (a YAML number) is a bare number.  Suffixed values are unaffected by it:
    ``16Gi`` is always 16 * 2**30.

    Raises :class:`QuantityError` for text that is not a quantity, for negative amounts, for
    ``nan``/``inf`` and for amounts beyond :data:`MAX_QUANTITY` in base units.  ``what`` names
    the value in the message (e.g. a setting or a document path).
    """
    if isinstance(text, bool):
        raise QuantityError(f"{what}: expected a quantity, got {shorten(text)} ({_EXAMPLES})")
    if isinstance(text, int):
        amount = Fraction(text) * bare_unit
    elif isinstance(text, float):
        if not math.isfinite(text):
            raise QuantityError(f"{what}: {shorten(text)} is not a finite amount ({_EXAMPLES})")
        amount = Fraction(text) * bare_unit
    elif isinstance(text, str):
        amount = _parse_text(text, bare_unit, what)
    else:
        raise QuantityError(f"{what}: expected a quantity, got {shorten(text)} ({_EXAMPLES})")
    if amount < 0:
        raise QuantityError(f"{what}: {shorten(text)} is negative; amounts are >= 0")
    if amount > MAX_QUANTITY:
        raise QuantityError(f"{what}: {shorten(text)} is too large (at most {MAX_QUANTITY})")
    return amount


def _parse_text(text: str, bare_unit: int | Fraction, what: str) -> Fraction:
    value = text.strip()
    if len(value) > MAX_LENGTH:
        raise QuantityError(f"{what}: {shorten(text)} is too long for a quantity")
    match = _QUANTITY.match(value)
    if match is None:
        raise QuantityError(f"{what}: {shorten(text)} is not a quantity ({_EXAMPLES})")
    number = Fraction(match["number"] if not match["number"].endswith(".")
                      else match["number"][:-1])
    if match["sign"] == "-":
        number = -number
    if match["exp"] is not None:
        exponent = int(match["exp"][1:])
        if number == 0:
            return number
        if abs(exponent) > MAX_EXPONENT:
            raise QuantityError(f"{what}: the exponent of {shorten(text)} is out of range "
                                f"(-{MAX_EXPONENT}..{MAX_EXPONENT})")
        return number * Fraction(10) ** exponent
    suffix = match["suffix"] or ""
    if suffix in BINARY_SUFFIXES:
        return number * BINARY_SUFFIXES[suffix]
    if suffix == "":
        return number * bare_unit
    return number * DECIMAL_SUFFIXES[suffix]


def quantity_int(text: str | int | float, bare_unit: int | Fraction = 1, *,
                 unit: int = 1, what: str = "quantity") -> int:
    """:func:`parse_quantity` in whole ``unit`` (bytes by default), truncated toward zero."""
    return int(parse_quantity(text, bare_unit, what=what) / unit)
