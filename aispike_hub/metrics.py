"""The AISpike events as Prometheus counters and histograms: one module, one line per call site.

Why a module of its own: admission (:mod:`aispike_hub.admission.controller`), the idle monitor
(:mod:`aispike_hub.service.idle.monitor`) and the hub's placer (:mod:`aispike_hub.kube.placer`)
each say what happened with one call here, and the names, labels and buckets live in one place
that the docs' metrics table, the chart's Grafana dashboard and its test read
(:data:`CATALOGUE`).

The metrics live in prometheus_client's default registry, so in the hub process (in-process
admission, the placer) they appear on JupyterHub's own ``/hub/metrics``; the AISpike service
serves them on its ``/metrics`` next to its gauges (:func:`aispike_hub.service.prometheus.
exposition`, which also carries every name of :data:`CATALOGUE`).  Without prometheus_client
every call is a no-op.

Names follow Prometheus' conventions: base units in the name (``_seconds``, ``_bytes``), ratios
0..1 (``_ratio``), ``_total`` on counters only.  Label values come from small fixed sets (no user
or server names: one series per user would grow without bound).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from aispike_hub.placement.engine import PlacementEngine

ADMISSIONS = "aispike_admissions_total"
QUEUE_WAIT = "aispike_queue_wait_seconds"
PREEMPTION_WARNINGS = "aispike_preemption_warnings_total"
PREEMPTIONS = "aispike_preemptions_total"
IDLE_WARNINGS = "aispike_idle_warnings_total"
IDLE_STOPS = "aispike_idle_stops_total"
PLACEMENT_SECONDS = "aispike_placement_decision_seconds"

# Spawns wait seconds to many minutes in the queue; placement decides in micro- to milliseconds.
QUEUE_BUCKETS = (0.1, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
PLACEMENT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                     0.25, 0.5, 1.0, 2.5)

CATALOGUE: dict[str, tuple[str, str, tuple[str, ...]]] = {
    ADMISSIONS: ("counter", "Spawn requests answered by admission, by verdict (admitted, queued, "
                 "refused) and reason class (fits, borrowed, cluster, group, quota)",
                 ("verdict", "reason")),
    QUEUE_WAIT: ("histogram", "Seconds from a spawn request to its way out of the queue "
                 "(admitted, expired, refused); about 0 for a spawn admitted at once",
                 ("outcome",)),
    PREEMPTION_WARNINGS: ("counter", "Servers warned that they will be preempted", ()),
    PREEMPTIONS: ("counter", "Servers stopped to make room for a higher tier", ()),
    IDLE_WARNINGS: ("counter", "Idle servers whose owners were warned, by reason "
                    "(idle, abandoned, max_age)", ("reason",)),
    IDLE_STOPS: ("counter", "Idle servers stopped, by reason (idle, abandoned, max_age)",
                 ("reason",)),
    PLACEMENT_SECONDS: ("histogram", "Seconds the placement core took to decide, by caller "
                        "(admission: the service's admission; hub: the hub's placer) and outcome "
                        "(placed, unplaced)", ("caller", "outcome")),
}
"""Every event metric: name -> (type, help, label names)."""

try:
    from prometheus_client import Counter, Histogram
except ImportError:  # pragma: no cover - every extra that runs admission installs it
    _METRICS: dict[str, Any] = {}
else:
    def _make(name: str) -> Any:
        kind, text, labels = CATALOGUE[name]
        if kind == "counter":
            # prometheus_client appends _total itself: give it the name without.
            return Counter(name.removesuffix("_total"), text, labels)
        buckets = QUEUE_BUCKETS if name == QUEUE_WAIT else PLACEMENT_BUCKETS
        return Histogram(name, text, labels, buckets=buckets)

    _METRICS = {name: _make(name) for name in CATALOGUE}


def collectors() -> Iterator[Any]:
    """The prometheus_client objects (to register in another registry, e.g. per scrape)."""
    return iter(_METRICS.values())


def _inc(name: str, *labels: str) -> None:
    metric = _METRICS.get(name)
    if metric is not None:
        (metric.labels(*labels) if labels else metric).inc()


def _observe(name: str, value: float, *labels: str) -> None:
    metric = _METRICS.get(name)
    if metric is not None:
        (metric.labels(*labels) if labels else metric).observe(max(value, 0.0))


# -- the call sites' one-liners --------------------------------------------------------------
def admission(state: str, result: Any) -> None:
    """Admission answered a request: ``state`` is the ticket's (admitted, queued, refused, ...),
    ``result`` the quota core's :class:`~aispike_hub.quota.Admission` it started from."""
    if state == "admitted":
        reason = "borrowed" if getattr(result, "borrowed", False) else "fits"
    elif state == "queued":
        reason = getattr(result, "waits_for", "") or "cluster"
    else:
        reason = "quota"
    _inc(ADMISSIONS, state, reason)


def queue_left(outcome: str, created_at: dt.datetime | None, now: dt.datetime) -> None:
    """A request left the queue (``outcome``: admitted, expired, refused) ``now``."""
    if created_at is not None:
        _observe(QUEUE_WAIT, (now - created_at).total_seconds(), outcome)


def preemption_warned() -> None:
    """A server was chosen as a preemption victim and its owner warned."""
    _inc(PREEMPTION_WARNINGS)


def preempted() -> None:
    """A preemption victim was stopped."""
    _inc(PREEMPTIONS)


def idle_warned(reason: str) -> None:
    """The idle monitor warned an owner (``reason``: idle, abandoned, max_age)."""
    _inc(IDLE_WARNINGS, reason)


def idle_stopped(reason: str) -> None:
    """The idle monitor stopped a server."""
    _inc(IDLE_STOPS, reason)


def placement_decided(caller: str, seconds: float, placed: bool) -> None:
    """One placement decision of ``caller`` (admission, hub) took ``seconds``."""
    _observe(PLACEMENT_SECONDS, seconds, caller, "placed" if placed else "unplaced")


class _TimedEngine:
    """A placement engine whose ``place`` is timed into :data:`PLACEMENT_SECONDS`; everything
    else is the wrapped engine's (the placement core stays free of clocks and metrics)."""

    def __init__(self, engine: PlacementEngine, caller: str) -> None:
        self._engine = engine
        self._caller = caller

    def place(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        decision = self._engine.place(*args, **kwargs)
        placement_decided(self._caller, time.perf_counter() - started,
                          decision.assignment is not None)
        return decision

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


def timed_engine(engine: PlacementEngine, caller: str) -> PlacementEngine:
    """``engine`` with each decision's time observed under ``caller``."""
    return cast("PlacementEngine", _TimedEngine(engine, caller))
