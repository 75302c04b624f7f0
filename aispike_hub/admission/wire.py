"""Admission's wire format: the one codec for requests, assignments and tickets as JSON.

Every document admission exchanges is written and read here, so a field has one name and one
check wherever it travels:

- a :class:`SliceRequest` in the REST API (``POST api/admissions``, ``api/fit``: the spawner,
  the options form's live preview, scripts), in the service's store, and on Kubernetes objects
  (the ``aispike.io/request`` annotation on our ResourceClaims and notebook pods);
- an :class:`Assignment` (where an admitted server goes) in tickets and in the store;
- a :class:`Ticket`, what the spawner and the form are told about a server's admission.

Field names are snake_case (``gpu_memory_mib``), the names the REST API has always accepted and
docs/quotas.md documents.  Kubernetes annotations are camelCase (``gpuMemoryMiB``), like the
rest of a Kubernetes object, and objects already in clusters carry them: the same codec writes
them with ``style=KeyStyle.CAMEL`` and reads either style (see :data:`ANY_STYLE`), so one table
of fields, defaults and checks serves both.

Reading is for untrusted input: an unknown field, a wrong type or an out-of-range number is a
:class:`RequestError` that names the field as the document spelled it (``request.gpu_count``),
so the API can answer ``{"error": ..., "field": ...}`` and a form can point at it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aispike_hub.model import Assignment, SliceRequest

__all__ = [
    "ANY_STYLE",
    "REQUEST_FIELDS",
    "KeyStyle",
    "RequestError",
    "Ticket",
    "assignment_from_dict",
    "assignment_to_dict",
    "request_from_dict",
    "request_to_dict",
]


class RequestError(ValueError):
    """A request document that cannot be used; ``field`` names the offending field."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


class KeyStyle(enum.Enum):
    """How a document spells its field names."""

    SNAKE = "snake"
    """``gpu_memory_mib``: the REST API, the store, tickets."""
    CAMEL = "camel"
    """``gpuMemoryMiB``: annotations on Kubernetes objects."""


ANY_STYLE: tuple[KeyStyle, ...] = (KeyStyle.SNAKE, KeyStyle.CAMEL)
"""Read a document in either style (the claim annotation: written camelCase, snake accepted)."""


@dataclass(frozen=True)
class _Field:
    snake: str
    camel: str

    def name(self, style: KeyStyle) -> str:
        return self.snake if style is KeyStyle.SNAKE else self.camel


_INT_FIELDS = (
    _Field("gpu_count", "gpuCount"),
    _Field("gpu_memory_mib", "gpuMemoryMiB"),
    _Field("gpu_share_milli", "gpuShareMilli"),
    _Field("cpu_milli", "cpuMilli"),
    _Field("memory_mib", "memoryMiB"),
)
_MODELS = _Field("allowed_models", "allowedModels")
_IMAGE = _Field("image", "image")
_DATASETS = _Field("datasets", "datasets")

REQUEST_FIELDS: tuple[tuple[str, str], ...] = tuple(
    (f.snake, f.camel) for f in (*_INT_FIELDS, _MODELS, _IMAGE, _DATASETS))
"""Every field of a request document: (snake_case name, camelCase name)."""

_MAX_INT = 2**40
_MAX_GPUS = 64
_MAX_IMAGE = 512


def request_to_dict(request: SliceRequest, style: KeyStyle = KeyStyle.SNAKE) -> dict[str, Any]:
    """``request`` as a JSON-ready document (every field, lists sorted where order is moot)."""
    out: dict[str, Any] = {f.name(style): getattr(request, f.snake) for f in _INT_FIELDS}
    out[_MODELS.name(style)] = sorted(request.allowed_models)
    out[_IMAGE.name(style)] = request.image
    out[_DATASETS.name(style)] = list(request.datasets)
    return out


def request_from_dict(doc: object, styles: Sequence[KeyStyle] = (KeyStyle.SNAKE,),
                      *, where: str = "request") -> SliceRequest:
    """A :class:`SliceRequest` from a document sent by the spawner, the form or a script.

    ``styles`` are the key styles accepted (the REST API: snake_case only); a field given in
    two styles at once is an error.  Missing fields take the defaults (one GPU, nothing else).
    ``where`` prefixes the field in errors (``request.gpu_count``).
    """
    if not isinstance(doc, Mapping):
        raise RequestError(where, f"expected a mapping, got {type(doc).__name__}")
    fields = (*_INT_FIELDS, _MODELS, _IMAGE, _DATASETS)
    by_key = {f.name(style): f for f in fields for style in styles}
    found: dict[str, tuple[str, object]] = {}
    for key, value in doc.items():
        spec = by_key.get(key) if isinstance(key, str) else None
        if spec is None:
            raise RequestError(f"{where}.{key}",
                               f"unknown field; use one of {sorted(by_key)}")
        if spec.snake in found:
            raise RequestError(f"{where}.{key}",
                               f"given twice (also as {found[spec.snake][0]!r})")
        found[spec.snake] = (key, value)

    def get(spec: _Field, default: object) -> tuple[str, object]:
        return found.get(spec.snake, (spec.name(styles[0]), default))

    ints: dict[str, int] = {}
    for spec in _INT_FIELDS:
        key, value = get(spec, 1 if spec.snake == "gpu_count" else 0)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _MAX_INT:
            raise RequestError(f"{where}.{key}", f"expected a whole number >= 0, got {value!r}")
        ints[spec.snake] = value
    if ints["gpu_count"] > _MAX_GPUS:
        raise RequestError(f"{where}.{get(_INT_FIELDS[0], 1)[0]}",
                           f"at most {_MAX_GPUS} GPUs in one server")
    key, models = get(_MODELS, [])
    if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
        raise RequestError(f"{where}.{key}", "expected a list of model names")
    key, image = get(_IMAGE, "")
    if not isinstance(image, str) or len(image) > _MAX_IMAGE:
        raise RequestError(f"{where}.{key}", "expected an image name")
    key, datasets = get(_DATASETS, [])
    if not isinstance(datasets, list) or not all(isinstance(d, str) for d in datasets):
        raise RequestError(f"{where}.{key}", "expected a list of dataset names")
    try:
        return SliceRequest(allowed_models=frozenset(models), image=image,
                            datasets=tuple(datasets), **ints)
    except ValueError as e:
        raise RequestError(where, str(e)) from None


def assignment_to_dict(a: Assignment) -> dict[str, Any]:
    """An :class:`Assignment` as JSON (tickets, the store)."""
    return {"node": a.node, "gpu_indices": list(a.gpu_indices),
            "gpu_memory_mib": list(a.gpu_memory_mib), "cpu_milli": a.cpu_milli,
            "memory_mib": a.memory_mib, "owner": a.owner}


def assignment_from_dict(d: Mapping[str, Any]) -> Assignment:
    """Inverse of :func:`assignment_to_dict` (trusted input: our own store and tickets)."""
    return Assignment(node=d["node"], gpu_indices=tuple(d["gpu_indices"]),
                      gpu_memory_mib=tuple(d["gpu_memory_mib"]), cpu_milli=d["cpu_milli"],
                      memory_mib=d["memory_mib"], owner=d.get("owner", ""))


@dataclass
class Ticket:
    """Where a server's admission stands: what the spawner and the form are told.

    It travels as :meth:`as_dict` (the REST answer, the in-process adapter's answer alike).
    """

    user: str
    server: str
    state: str
    """admitted | queued | refused | expired | unknown"""
    reasons: list[str] = field(default_factory=list)
    position: int = 0
    queue_length: int = 0
    tier: str = ""
    priority_class: str = ""
    borrowed: bool = False
    assignment: dict[str, Any] | None = None
    charge: dict[str, int] = field(default_factory=dict)
    preempting: list[str] = field(default_factory=list)
    ceiling: dict[str, int | None] = field(default_factory=dict)
    """The user's ceilings (quota plus borrowing; None: unlimited), for the namespace's
    ResourceQuota when servers run in user namespaces."""

    def as_dict(self) -> dict[str, Any]:
        """The ticket as JSON (the fields above, by name)."""
        return dict(self.__dict__)
