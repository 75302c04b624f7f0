"""KubeSpawner's ``profile_list`` as AISpike reads it, and the rule for CPU and RAM (pure).

Why its own module: ``AISpikeSpawner`` is a drop-in for KubeSpawner, so a ``profile_list`` an
admin grew for KubeSpawner must mean the same thing here; the parts that need no spawner and no
cluster live here and are tested as tables (``tests/unit/spawner/``):

- which profile ``user_options`` select, and whether the choices made inside it are valid
  (:func:`select_profile`, :func:`check_choices`): KubeSpawner's rules, but refused with the
  option named (a :class:`~aispike_hub.spawner.form.FormError`) instead of a bare ``ValueError``;
- which ``kubespawner_override`` dicts a start applies, in KubeSpawner's order (the profile's,
  then each profile option's choice, its unlisted value formatted into ``{value}``, or its
  default) (:func:`profile_overrides`), and how they merge into values
  (:func:`merge_overrides`: dicts are updated recursively, ``None`` removes a key);
- which ``user_options`` keys belong to the profile and which to the AISpike form
  (:func:`split_options`);
- the admin's CPU and RAM settings as bounds of what a user may choose, and what the pod then
  gets (:func:`resources_for`, :func:`bounds_of`): an admin's overcommit (guarantee below limit)
  is kept, and a guarantee never ends above its limit (:func:`no_request_above_limit`).

The spawner (``aispike_hub.spawner.kube_options``) evaluates callables and applies the overrides
with KubeSpawner's own ``_apply_overrides``; nothing here does I/O.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aispike_hub.spawner.form import FIELDS, FormError

PROFILE_KEY = "profile"
"""The ``user_options`` key naming the chosen profile (KubeSpawner's)."""
UNLISTED_SUFFIX = "--unlisted-choice"
"""``user_options`` key suffix of a free-form value for a profile option (KubeSpawner's)."""
FORM_PREFIX = "profile-option-"
"""Form fields of a profile are named ``profile-option-<profile slug>--<option>``."""

FORM_KEYS = frozenset({
    "backend", "images", "image", "datasets", "max_gpus", "max_gpu_gib", "min_gpu_gib",
    "default_gpu_gib", "default_gpu_count", "gpu_models", "allow_cpu_only", "cpu_min",
    "cpu_max", "cpu_default", "memory_gib_min", "memory_gib_max", "memory_gib_default",
    "cpu_limit", "cpu_guarantee", "mem_limit", "mem_guarantee",
})
"""Spawner settings a profile may override that change what the AISpike form offers."""


def select_profile(profiles: Sequence[Mapping[str, Any]], slug: Any) -> Mapping[str, Any] | None:
    """The profile ``slug`` names, the default one when ``slug`` is empty, None without
    profiles.  ``profiles`` is initialized (every profile has a slug, one is the default)."""
    if not profiles:
        return None
    if slug in (None, ""):
        return next((p for p in profiles if p.get("default")), profiles[0])
    if not isinstance(slug, str):
        raise FormError([(PROFILE_KEY, "expected the slug of a profile")])
    for profile in profiles:
        if profile.get("slug") == slug:
            return profile
    raise FormError([(PROFILE_KEY, f"no such profile {slug[:40]!r}; choose one of "
                                   f"{', '.join(str(p.get('slug')) for p in profiles)}")])


def option_keys(profile: Mapping[str, Any] | None) -> set[str]:
    """``user_options`` keys that belong to ``profile`` (its options and unlisted values)."""
    keys = {PROFILE_KEY}
    for name in (profile or {}).get("profile_options") or {}:
        keys |= {str(name), f"{name}{UNLISTED_SUFFIX}"}
    return keys


def split_options(user_options: Mapping[str, Any], profile: Mapping[str, Any] | None
                  ) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(profile part, AISpike part)`` of ``user_options``.

    A profile option named like an AISpike field (e.g. ``image``) belongs to the profile: the
    profile decides it, and the form does not offer the AISpike field inside that profile.
    """
    mine = option_keys(profile)
    ours = {k: v for k, v in user_options.items() if k in mine}
    rest = {k: v for k, v in user_options.items() if k not in mine}
    return ours, rest


def profile_fields(profile: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The AISpike fields the form offers inside ``profile`` (those it has no option for)."""
    mine = option_keys(profile)
    return tuple(f for f in FIELDS if f not in mine)


def check_choices(profile: Mapping[str, Any], user_options: Mapping[str, Any]) -> None:
    """Refuse choices ``profile`` does not offer (raises :class:`FormError`, options named).

    KubeSpawner's rules: a listed choice must be one of ``choices``; a free-form value needs
    ``unlisted_choice.enabled`` and must match its ``validation_regex``; an option without
    any choice must be given.
    """
    errors: list[tuple[str, str]] = []
    for name, option in (profile.get("profile_options") or {}).items():
        unlisted = user_options.get(f"{name}{UNLISTED_SUFFIX}")
        choice = user_options.get(name)
        spec = option.get("unlisted_choice") or {}
        choices = option.get("choices") or {}
        if unlisted not in (None, ""):
            if not isinstance(unlisted, str):
                errors.append((f"{name}{UNLISTED_SUFFIX}", "expected text"))
            elif not spec.get("enabled"):
                errors.append((f"{name}{UNLISTED_SUFFIX}",
                               f"{name} takes no value of your own; choose one of "
                               f"{', '.join(map(str, choices))}"))
            elif spec.get("validation_regex") and not re.match(spec["validation_regex"],
                                                               unlisted):
                errors.append((f"{name}{UNLISTED_SUFFIX}", str(
                    spec.get("validation_message")
                    or f"must match {spec['validation_regex']}")))
        elif choice not in (None, ""):
            if not isinstance(choice, str) or choice not in choices:
                errors.append((str(name), f"{str(choice)[:40]!r} is not a choice; choose one "
                                          f"of {', '.join(map(str, choices))}"))
        elif not choices:
            errors.append((f"{name}{UNLISTED_SUFFIX}", f"{name} needs a value"))
    if errors:
        raise FormError(errors)


def profile_overrides(profile: Mapping[str, Any], user_options: Mapping[str, Any]
                      ) -> list[dict[str, Any]]:
    """The ``kubespawner_override`` dicts a start applies, first to last (KubeSpawner's order):
    the profile's own, then per profile option the chosen one's (an unlisted value formatted
    into ``{value}``), or the default choice's.  Deep copies: applying them mutates nothing
    of the configuration.  Call :func:`check_choices` first."""
    out = [copy.deepcopy(dict(profile.get("kubespawner_override") or {}))]
    for name, option in (profile.get("profile_options") or {}).items():
        unlisted = user_options.get(f"{name}{UNLISTED_SUFFIX}")
        choice = user_options.get(name)
        choices = option.get("choices") or {}
        if unlisted not in (None, ""):
            spec = (option.get("unlisted_choice") or {}).get("kubespawner_override") or {}
            out.append({k: format_value(copy.deepcopy(v), str(unlisted))
                        for k, v in spec.items()})
            continue
        if choice in (None, ""):
            choice = next((k for k, c in choices.items() if c.get("default")),
                          next(iter(choices), None))
        if choice is not None:
            out.append(copy.deepcopy(dict(choices[choice].get("kubespawner_override") or {})))
    return out


class _Keep(dict[str, Any]):
    """``format_map`` helper: an unknown ``{name}`` stays as it is (``{username}`` etc.)."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def format_value(value: Any, text: str) -> Any:
    """``value`` with ``{value}`` replaced by ``text`` in every string inside it."""
    if isinstance(value, str):
        return value.format_map(_Keep(value=text))
    if isinstance(value, list):
        return [format_value(v, text) for v in value]
    if isinstance(value, dict):
        return {format_value(k, text): format_value(v, text) for k, v in value.items()}
    return value


def merge_overrides(values: Mapping[str, Any], overrides: Iterable[Mapping[str, Any]],
                    keys: Iterable[str] = FORM_KEYS) -> dict[str, Any]:
    """``values`` (a copy) with ``overrides`` applied for ``keys``, as KubeSpawner applies
    them to a spawner: a dict updates a dict recursively (``None`` deletes), anything else
    replaces.  Callables must have been evaluated by the caller."""
    wanted = set(keys)
    out = copy.deepcopy(dict(values))
    for override in overrides:
        for key, value in override.items():
            if key not in wanted:
                continue
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                _update(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out


def _update(target: dict[str, Any], new: Mapping[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, dict):
            if not isinstance(target.get(key), dict):
                target[key] = {}
            _update(target[key], value)
        elif value is None:
            target.pop(key, None)
        else:
            target[key] = value


# --- CPU and RAM: the admin's settings are bounds ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bound:
    """What the form offers for one resource, from the admin's range and limit."""

    low: float
    high: float
    default: float


def bounds_of(low: float, high: float, default: float, limit: float | None) -> Bound:
    """The form's range for a resource: the admin's ``low..high`` capped by ``limit``
    (``cpu_limit`` or ``mem_limit``, in the form's unit); the default is the limit when the
    admin set one (a start without a choice then gets exactly the admin's values)."""
    if limit is not None and limit > 0:
        high = min(high, limit)
        default = limit
    low = min(low, high)
    return Bound(low, high, min(max(default, low), high))


@dataclass(frozen=True, slots=True)
class Resource:
    """What the pod gets for one resource: ``limit`` and ``guarantee`` (None: not set), and
    ``amount``, what admission and placement count."""

    limit: float | None
    guarantee: float | None
    amount: float


def resources_for(choice: float | None, limit: float | None, guarantee: float | None,
                  default: float) -> Resource:
    """The one rule for CPU and for RAM (units as given), whatever came before:

    - no choice and the admin set a limit or a guarantee: exactly the admin's values;
    - no choice and nothing set: ``default`` as guarantee and limit;
    - a choice: the limit; the guarantee keeps the admin's ratio (guarantee/limit) when the
      admin set both with guarantee < limit, is the admin's guarantee when only that is set
      (capped by the choice), else equals the choice.

    A guarantee never exceeds its limit.
    """
    if choice is None:
        if limit is None and guarantee is None:
            return Resource(default, default, default)
        if limit is not None and guarantee is not None and guarantee > limit:
            guarantee = limit
        return Resource(limit, guarantee, limit if limit is not None else guarantee or default)
    if limit is not None and guarantee is not None and 0 <= guarantee < limit and limit > 0:
        return Resource(choice, choice * guarantee / limit, choice)
    if limit is None and guarantee is not None:
        return Resource(choice, min(guarantee, choice), choice)
    return Resource(choice, choice, choice)


def no_request_above_limit(guarantees: Mapping[str, Any], limits: Mapping[str, Any],
                           quantity: Any) -> dict[str, Any]:
    """``guarantees`` with every entry above its limit lowered to the limit (a pod whose
    request exceeds its limit is refused by the API server).  ``quantity`` parses a
    Kubernetes quantity to a number (or raises ``ValueError``); unparsable entries stay."""
    out = dict(guarantees)
    for key, wanted in guarantees.items():
        if key not in limits:
            continue
        try:
            if quantity(wanted) > quantity(limits[key]):
                out[key] = limits[key]
        except (TypeError, ValueError):
            continue
    return out


def _amount(value: float, unit: str) -> str:
    if unit == "GiB":
        value = value / (1 << 30)
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return f"{text} GiB" if unit == "GiB" else f"{text} CPU{'s' if value != 1 else ''}"


def bound_notes(values: Mapping[str, Any]) -> list[str]:
    """The admin's CPU and RAM settings in words, for the form ("CPUs: at most 4 (the
    admin's limit); 25% of what you choose is guaranteed")."""
    notes = []
    for what, unit, limit, guarantee in (
            ("CPUs", "", values.get("cpu_limit"), values.get("cpu_guarantee")),
            ("RAM", "GiB", values.get("mem_limit"), values.get("mem_guarantee"))):
        if limit:
            line = f"{what}: at most {_amount(limit, unit)} (the admin's limit)"
            if guarantee is not None and 0 <= guarantee < limit:
                line += (f"; {round(100 * guarantee / limit)}% of what you choose is "
                         "guaranteed, the rest is shared")
            notes.append(line + ".")
        elif guarantee:
            notes.append(f"{what}: up to {_amount(guarantee, unit)} of what you choose is "
                         "guaranteed (the admin's setting).")
    return notes
