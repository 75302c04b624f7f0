"""Objects (or parts of them) the inventory refused: one log line each, and a counter.

The parsers (:mod:`aispike_hub.kube.objects`) and the list/watch loop
(:mod:`aispike_hub.kube.watch`) call :func:`record` for every object they skip or cut, so an
admin sees it twice: a warning in the log naming the object (once per object and message, not
at every re-list), and ``aispike_inventory_objects_rejected_total{kind, reason}`` going up on
``/metrics`` (the hub's, and the AISpike service's).  ``kind`` is the watched kind
(``nodes``, ``resourceslices``, ``resourceclaims``, ``pods``); ``reason`` is one of
:data:`aispike_hub.sanity.REASONS`.  The counter counts every time a bad object is read, so it
keeps rising while the object stays bad (each re-list reads it again).

The tally itself is plain Python (a lock and a dict); the Prometheus collector is built on
demand, so importing this module needs no ``prometheus_client``.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from aispike_hub.sanity import REASONS

log = logging.getLogger("aispike_hub.kube.inventory")

METRIC = "aispike_inventory_objects_rejected"
"""Counter name without ``_total`` (``prometheus_client`` adds it)."""
HELP = ("Kubernetes objects (or parts of them, e.g. one device of a slice) the inventory refused "
        "as malformed or out of range, by kind and reason")
KINDS = ("nodes", "resourceslices", "resourceclaims", "pods", "other")

_lock = threading.Lock()
_counts: dict[tuple[str, str], int] = {}
_warned: OrderedDict[tuple[str, str], None] = OrderedDict()
_MAX_WARNED = 10_000


def record(kind: str, reason: str, key: str, message: str) -> None:
    """Count one refused object of ``kind`` and log ``message`` (once per object and message)."""
    kind = kind if kind in KINDS else "other"
    reason = reason if reason in REASONS else "malformed"
    with _lock:
        _counts[(kind, reason)] = _counts.get((kind, reason), 0) + 1
        seen = (f"{kind}/{key}", message)
        first = seen not in _warned
        if first:
            _warned[seen] = None
            if len(_warned) > _MAX_WARNED:
                _warned.popitem(last=False)
    (log.warning if first else log.debug)("refused %s: %s", kind, message)


def counts() -> dict[tuple[str, str], int]:
    """(kind, reason) -> rejections so far in this process."""
    with _lock:
        return dict(_counts)


def reset() -> None:
    """Forget the counts and the warned set (tests)."""
    with _lock:
        _counts.clear()
        _warned.clear()


class Collector:
    """A ``prometheus_client`` collector of :func:`counts` (register it in a registry)."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        family = CounterMetricFamily(METRIC, HELP, labels=["kind", "reason"])
        for (kind, reason), value in sorted(counts().items()):
            family.add_metric([kind, reason], value)
        yield family


_registered = False
_register_lock = threading.Lock()


def register_default() -> None:
    """Put the counter in ``prometheus_client``'s default registry (the hub's ``/hub/metrics``
    serves it); does nothing without ``prometheus_client`` or when already done."""
    global _registered
    with _register_lock:  # not _lock: registering collects once, and collect takes _lock
        if _registered:
            return
        try:
            from prometheus_client import REGISTRY
        except ImportError:
            return
        REGISTRY.register(Collector())
        _registered = True


def exposition() -> bytes:
    """The counter alone in Prometheus' text format (the service appends it to its gauges)."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.exposition import generate_latest

    registry = CollectorRegistry()
    registry.register(Collector())
    return bytes(generate_latest(registry))
