"""Backends by name: ``backend_for("hami")`` is the hami backend; pure.

The spawner's ``backend`` setting names a backend; everything else asks the registry for its
object.  :mod:`aispike_hub.backends` registers the built-in classes in the order the setting
lists them; a plugin registers its own class with :func:`register` (usable as a decorator).
"""

from __future__ import annotations

from typing import TypeVar

from aispike_hub.backends.base import BackendError, BackendOptions, GpuBackend

SETTING = "c.AISpikeSpawner.backend"
"""The setting that names the backend (quoted in errors)."""

_REGISTRY: dict[str, type[GpuBackend]] = {}

B = TypeVar("B", bound=type[GpuBackend])


class UnknownBackendError(BackendError):
    """A backend name no backend is registered under (the message lists the valid ones)."""


def register(cls: B) -> B:
    """Class decorator: make ``cls`` available as ``backend_for(cls.name)``."""
    name = getattr(cls, "name", "")
    if not name or not isinstance(name, str):
        raise TypeError(f"{cls.__name__} needs a class attribute 'name' to be registered")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"backend name {name!r} is taken by {_REGISTRY[name].__name__}")
    _REGISTRY[name] = cls
    return cls


def backend_names() -> tuple[str, ...]:
    """Registered backend names, in registration order (the built-in ones first)."""
    return tuple(_REGISTRY)


def backend_class(name: str) -> type[GpuBackend]:
    """The class registered as ``name`` (raises :class:`UnknownBackendError`)."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise UnknownBackendError(
            f"unknown backend {name!r} (setting {SETTING}); choose one of "
            f"{', '.join(_REGISTRY)}") from None


def backend_for(name: str, options: BackendOptions | None = None) -> GpuBackend:
    """The backend named ``name`` with ``options`` (raises :class:`UnknownBackendError`,
    naming the setting and the valid names)."""
    return backend_class(name)(options)
