"""Sane ranges, and the safe reading of values that come from outside: one place, pure, no I/O.

Everything AISpike reads from someone else (Kubernetes objects and the annotations our node
agents write on them, the service's REST bodies and query arguments, policy documents) goes
through these checks, so a hostile or broken value is refused with a short message instead of
raising something unexpected deep inside placement:

- :func:`loads_json`: JSON with bounded size and nesting, no ``NaN``/``Infinity``, no
  5,000-digit numbers;
- :func:`bounded_int`, :func:`name`: an integer within a range, a printable name of bounded
  length (no NUL or other control characters);
- :func:`shorten`: a value for an error message, at most :data:`SHORT` characters with an
  ellipsis (a 300-digit number or a 5,000-character name is never repeated whole);
- the ranges below, which the Kubernetes parsers (:mod:`aispike_hub.kube.objects`) apply to
  nodes, ResourceSlices, claims and pods (docs/dra-contract.md, "Values the inventory
  refuses").

Errors are :class:`Rejected` (a ``ValueError``) with a short machine-readable ``reason`` (one of
:data:`REASONS`, used as a metric label) and a message for people.
"""

from __future__ import annotations

import json
import math
import reprlib
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

SHORT = 60
"""Most characters of a value quoted in a message (:func:`shorten`)."""

MAX_NAME_LENGTH = 253
"""Longest object, dataset or image name read (a DNS subdomain; image names are shorter)."""
MAX_NODE_CPU_MILLI = 65_536 * 1000
"""Largest CPU a node may offer: 65,536 cores (the largest machines have a few thousand)."""
MAX_NODE_MEMORY_MIB = 256 << 20
"""Largest RAM a node may offer: 256 TiB (the largest single machines have 48 TiB)."""
MAX_GPU_MEMORY_MIB = 4 << 20
"""Largest memory of one GPU: 4 TiB (today's largest have under 300 GiB)."""
MIN_GPU_MEMORY_MIB = 1
"""A GPU without memory cannot hold a slice."""
MAX_GPU_INDEX = 1023
"""Largest GPU index on a node (NVML counts from 0; a slice holds at most 128 devices)."""
MAX_NUMA_NODE = 1023
"""Largest NUMA node number kept; larger (or below -1) reads as unknown (-1)."""
MAX_DEVICES_PER_SLICE = 128
"""Devices in one ResourceSlice (the API's own limit); devices past it are refused."""
MAX_BYTES = (1 << 63) - 1
"""Largest size in bytes of a cached image or dataset (Kubernetes keeps sizes in an int64)."""
MAX_LIST_ENTRIES = 4096
"""Most entries read from one list of a node (images, datasets, taints, conditions)."""
MAX_ANNOTATION_LENGTH = 256 * 1024
"""Longest annotation value parsed (Kubernetes limits all annotations together to 256 KiB)."""
MAX_JSON_DEPTH = 32
"""Deepest nesting of a JSON document read (a policy document needs 5 levels)."""
MAX_NUMBER_DIGITS = 40
"""Most digits of a JSON number (an int64 has 19)."""

REASONS = ("malformed", "out_of_range", "bad_quantity", "bad_json", "duplicate", "too_large",
           "consumer_error")
"""Why a value was refused; the closed set of the ``reason`` label of
``aispike_inventory_objects_rejected_total``."""


class Rejected(ValueError):
    """A value outside its sane range or shape; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason if reason in REASONS else "malformed"
        self.message = message


def reject(reason: str, message: str) -> NoReturn:
    """Raise :class:`Rejected` (a helper that type checkers know never returns)."""
    raise Rejected(reason, message)


class _Brief(reprlib.Repr):
    """``reprlib`` that also bounds integers (``repr`` of a 5,000-digit int raises)."""

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 128:
            digits = int(x.bit_length() * math.log10(2)) + 1
            return f"{'-' if x < 0 else ''}<a {digits}-digit number>"
        return super().repr_int(x, level)


_BRIEF = _Brief()
_BRIEF.maxlevel = 3
_BRIEF.maxstring = SHORT + 2
_BRIEF.maxother = SHORT
_BRIEF.maxlong = SHORT


def shorten(value: object, limit: int = SHORT) -> str:
    """``value`` as a ``repr`` for a message: at most ``limit`` characters, ``…`` when cut.

    Safe for anything (a 5,000-digit int, a deeply nested list, a megabyte string).
    """
    try:
        text = _BRIEF.repr(value)
    except Exception:  # a hostile __repr__: name the type only
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def shorten_text(text: str, limit: int = SHORT) -> str:
    """``text`` itself (no quotes), at most ``limit`` characters, ``…`` when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_NUMBER_DIGITS:
        reject("out_of_range", f"a {len(text)}-digit number (at most {MAX_NUMBER_DIGITS})")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or len(text) > 2 * MAX_NUMBER_DIGITS:
        reject("out_of_range", f"the number {shorten_text(text)} is out of range")
    return value


def _no_constant(text: str) -> NoReturn:
    reject("bad_json", f"{text} is not a number JSON allows")


def depth(value: object, limit: int = MAX_JSON_DEPTH) -> int:
    """Nesting depth of a JSON-like value (a scalar is 0), counted up to ``limit + 1``."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        level += 1
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        stack.extend((child, level) for child in children)
    return deepest


def loads_json(text: str | bytes, *, what: str = "JSON", max_length: int = MAX_ANNOTATION_LENGTH,
               max_depth: int = MAX_JSON_DEPTH) -> Any:
    """The JSON value of ``text``, or :class:`Rejected`.

    Refused: more than ``max_length`` characters, nesting deeper than ``max_depth``, ``NaN`` and
    ``Infinity``, numbers with more than :data:`MAX_NUMBER_DIGITS` digits or beyond a float,
    and anything that is not JSON.
    """
    if len(text) > max_length:
        reject("too_large", f"{what}: {len(text)} characters (at most {max_length})")
    try:
        value = json.loads(text, parse_int=_parse_int, parse_float=_parse_float,
                           parse_constant=_no_constant)
    except Rejected as e:
        reject(e.reason, f"{what}: {e.message}")
    except RecursionError:
        reject("too_large", f"{what}: nested deeper than {max_depth} levels")
    except (ValueError, UnicodeDecodeError) as e:
        reject("bad_json", f"{what} is not JSON: {shorten_text(str(e))}")
    if depth(value, max_depth) > max_depth:
        reject("too_large", f"{what}: nested deeper than {max_depth} levels")
    return value


def bounded_int(value: object, lo: int, hi: int, what: str) -> int:
    """``value`` when it is an int (not a bool) in ``lo..hi``; else :class:`Rejected`."""
    if isinstance(value, bool) or not isinstance(value, int):
        reject("malformed", f"{what}: expected a whole number, got {shorten(value)}")
    if not lo <= value <= hi:
        reject("out_of_range", f"{what}: {shorten(value)} is out of range ({lo}..{hi})")
    return value


def name(value: object, what: str, max_length: int = MAX_NAME_LENGTH) -> str:
    """``value`` when it is a printable name of 1 to ``max_length`` characters.

    Refused: non-strings, empty or blank names, control characters (NUL, newline...) and
    unpaired surrogates, which no hub, Kubernetes or database name holds.
    """
    if not isinstance(value, str):
        reject("malformed", f"{what}: expected a name, got {shorten(value)}")
    if not value.strip():
        reject("malformed", f"{what}: the name is empty")
    if len(value) > max_length:
        reject("too_large", f"{what}: {shorten(value)} is longer than {max_length} characters")
    if any(ord(c) < 32 or 127 <= ord(c) < 160 or 0xD800 <= ord(c) < 0xE000 for c in value):
        reject("malformed", f"{what}: {shorten(value)} holds a control character")
    return value


def mapping(value: object, what: str) -> Mapping[str, Any]:
    """``value`` when it is a mapping (a JSON object); ``None`` reads as empty."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        reject("malformed", f"{what}: expected an object, got {shorten(value)}")
    return value


def entries(value: object, what: str, limit: int = MAX_LIST_ENTRIES) -> Sequence[Any]:
    """``value`` when it is a list (a JSON array), cut to ``limit`` entries; ``None`` is empty."""
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        reject("malformed", f"{what}: expected a list, got {shorten(value)}")
    return value[:limit]
