"""The admin panel's charts from Prometheus: the service's gauges, and range queries over them.

Two halves, kept apart:

- **exporting** (pure): :func:`metric_families` turns one sample of the cluster (what
  :meth:`~aispike_hub.service.gpumap.ClusterMap.sample` returns, plus the queue length) into
  gauges, and :func:`gpu_memory_families` the map's GPU memory (capacity and allocated, in the
  cluster and per GPU, labelled as dcgm-exporter labels GPUs); the service serves them on
  ``/services/<name>/metrics`` in Prometheus' text format (``prometheus_client``) with the event
  counters and histograms of :mod:`aispike_hub.metrics`, so Prometheus scrapes them next
  to the node agents' metrics (:mod:`aispike_hub.agent.metrics`: memory and utilisation per GPU
  and per notebook).
- **querying**: :func:`range_queries` (pure) says which PromQL gives each chart series;
  :func:`parse_matrix` and :func:`series_from_matrices` (pure) turn Prometheus'
  ``/api/v1/query_range`` answers into the same document the store's history gives
  (:meth:`aispike_hub.service.history.History.series`); :class:`PrometheusSource` does the HTTP.

GPU-hours are integrated from the range series the same way the history integrates its samples:
each point counts for one step.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from aispike_hub.units import MIB

METRIC_GPUS = "aispike_panel_gpus"
METRIC_ALLOCATION = "aispike_panel_allocation_ratio"
METRIC_FRAGMENTED = "aispike_panel_fragmented_gpus"
METRIC_FREE = "aispike_panel_free_gpus"
METRIC_HELD = "aispike_panel_held_gpus"
METRIC_QUEUED = "aispike_queue_length"

HELD_STATES = ("busy", "idle", "unknown", "other")

GAUGES: dict[str, tuple[str, str, dict[str, str]]] = {
    "gpus": (METRIC_GPUS, "GPUs in the cluster, as the AISpike service sees it", {}),
    "allocation": (METRIC_ALLOCATION,
                   "Share of the cluster's GPU memory held by slices (0..1)", {}),
    "fragmented_gpus": (METRIC_FRAGMENTED,
                        "Fragmented GPUs by the placement core's model", {}),
    "free_gpus": (METRIC_FREE, "Free GPU memory, in GPUs", {}),
    **{f"{s}_gpus": (METRIC_HELD, "GPUs held (memory share), by the holder's state",
                     {"state": s}) for s in HELD_STATES},
    "queued": (METRIC_QUEUED, "Spawns waiting in the AISpike queue", {}),
}
"""History series key -> (metric name, help, labels): one gauge family per metric name."""

METRIC_CAPACITY = "aispike_cluster_gpu_memory_capacity_bytes"
METRIC_ALLOCATED = "aispike_cluster_gpu_memory_allocated_bytes"
METRIC_GPU_ALLOCATED = "aispike_gpu_memory_allocated_bytes"
GPU_LABELS = ("Hostname", "gpu", "UUID", "modelName")
"""Per-GPU labels, named as dcgm-exporter names them, so that its series join without
relabelling (``... * on(UUID) group_left DCGM_FI_DEV_GPU_UTIL``)."""

GPU_MEMORY_GAUGES: dict[str, tuple[str, tuple[str, ...]]] = {
    METRIC_CAPACITY: ("GPU memory of the cluster's GPUs, as the AISpike service sees them", ()),
    METRIC_ALLOCATED: ("GPU memory held by slices (admitted servers and other workloads)", ()),
    METRIC_GPU_ALLOCATED: ("GPU memory held by slices on one GPU", GPU_LABELS),
}
"""The map's GPU memory gauges: name -> (help, label names)."""


class PrometheusError(Exception):
    """Prometheus did not answer, or answered something that is not a range result."""


# -- exporting (pure) -------------------------------------------------------------------------
def metric_families(values: Mapping[str, float]) -> list[tuple[str, str, list[tuple[dict[str, str],
                                                                                      float]]]]:
    """(name, help, [(labels, value)]) per metric, for the gauges of one sample."""
    families: dict[str, tuple[str, list[tuple[dict[str, str], float]]]] = {}
    for key, (name, text, labels) in GAUGES.items():
        if key in values:
            families.setdefault(name, (text, []))[1].append((labels, float(values[key])))
    return [(name, text, samples) for name, (text, samples) in families.items()]


def gpu_memory_families(cluster: Any) -> list[tuple[str, str, list[tuple[dict[str, str],
                                                                         float]]]]:
    """(name, help, [(labels, value)]) for the GPU memory of a
    :class:`~aispike_hub.service.gpumap.ClusterMap`: the cluster's capacity and allocation, and
    the allocation of each GPU (labels :data:`GPU_LABELS`)."""
    capacity = allocated = 0
    per_gpu: list[tuple[dict[str, str], float]] = []
    for node in cluster.nodes:
        for g in node.gpus:
            held = sum(h.memory_mib for h in cluster.by_gpu.get((node.name, g.index), ()))
            capacity += g.memory_mib
            allocated += held
            per_gpu.append(({"Hostname": node.name, "gpu": str(g.index), "UUID": g.uuid,
                             "modelName": g.model}, float(held * MIB)))
    return [
        (METRIC_CAPACITY, GPU_MEMORY_GAUGES[METRIC_CAPACITY][0], [({}, float(capacity * MIB))]),
        (METRIC_ALLOCATED, GPU_MEMORY_GAUGES[METRIC_ALLOCATED][0],
         [({}, float(allocated * MIB))]),
        (METRIC_GPU_ALLOCATED, GPU_MEMORY_GAUGES[METRIC_GPU_ALLOCATED][0], per_gpu),
    ]


def exposition(values: Mapping[str, float], cluster: Any = None) -> tuple[bytes, str]:
    """The service's metrics in Prometheus' text format (``prometheus_client``), and its content
    type: the gauges of one sample, the GPU memory of ``cluster`` (a
    :class:`~aispike_hub.service.gpumap.ClusterMap`, when given) and the event metrics of
    :mod:`aispike_hub.metrics`."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

    from aispike_hub import metrics

    families = metric_families(values)
    if cluster is not None:
        families += gpu_memory_families(cluster)

    class Collector:
        def collect(self) -> Any:
            for name, text, samples in families:
                names = sorted({k for labels, _ in samples for k in labels})
                if name == METRIC_GPU_ALLOCATED:
                    names = list(GPU_LABELS)
                family = GaugeMetricFamily(name, text, labels=names)
                for labels, value in samples:
                    family.add_metric([labels.get(k, "") for k in names], value)
                yield family

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector())
    for collector in metrics.collectors():
        registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE_LATEST


def metric_names() -> dict[str, str]:
    """Every metric name the service and the node agents export (as queried, with a counter's
    ``_total`` and a histogram's ``_bucket``/``_sum``/``_count``) -> its type: what the chart's
    Grafana dashboard may query."""
    from aispike_hub.agent.metrics import CATALOGUE as AGENT
    from aispike_hub.metrics import CATALOGUE as EVENTS

    out = {name: "gauge" for name, _text, _labels in GAUGES.values()}
    out.update({name: "gauge" for name in GPU_MEMORY_GAUGES})
    out.update({name: "gauge" for name in AGENT})
    for name, (kind, _text, _labels) in EVENTS.items():
        if kind == "histogram":
            out.update({f"{name}{suffix}": kind for suffix in ("_bucket", "_sum", "_count")})
        else:
            out[name] = kind
    return out


# -- querying (pure) --------------------------------------------------------------------------
def range_queries(selector: str = "") -> dict[str, str]:
    """PromQL per history series key; ``selector`` (e.g. ``job="aispike"``) picks the service's
    series.  ``max`` folds replicas and repeated scrape targets into one line."""
    out = {}
    for key, (name, _text, labels) in GAUGES.items():
        matchers = [f'{k}="{v}"' for k, v in labels.items()]
        if selector.strip():
            matchers.append(selector.strip().strip("{}"))
        out[key] = f"max({name}{{{', '.join(matchers)}}})" if matchers else f"max({name})"
    return out


def step_for(since: dt.datetime, until: dt.datetime, buckets: int = 240,
             minimum: float = 15.0) -> float:
    """The query step: about ``buckets`` points over the window, at least ``minimum`` seconds."""
    span = max((until - since).total_seconds(), 1.0)
    return float(max(minimum, math.ceil(span / max(buckets, 1))))


def parse_matrix(doc: Any) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
    """One ``/api/v1/query_range`` answer -> [(labels, [(unix time, value)])].

    Raises :class:`PrometheusError` for an error answer or anything that is not a matrix.
    """
    if not isinstance(doc, Mapping):
        raise PrometheusError("the answer is not a JSON object")
    if doc.get("status") != "success":
        raise PrometheusError(f"{doc.get('errorType', 'error')}: {doc.get('error', doc)}")
    data = doc.get("data")
    if not isinstance(data, Mapping) or data.get("resultType") != "matrix":
        raise PrometheusError("expected a range result (resultType matrix)")
    out = []
    for series in data.get("result") or ():
        points = []
        for at, value in series.get("values") or ():
            v = float(value)  # Prometheus sends values as strings ("NaN", "+Inf" included)
            if math.isfinite(v):
                points.append((float(at), v))
        out.append(({str(k): str(v) for k, v in (series.get("metric") or {}).items()}, points))
    return out


def series_from_matrices(matrices: Mapping[str, Sequence[tuple[dict[str, str],
                                                               list[tuple[float, float]]]]],
                         since: dt.datetime, until: dt.datetime, step: float) -> dict[str, Any]:
    """Range results per series key -> the history's document (``points``, ``gpu_hours``).

    A key without data is 0 at that time (as the history writes 0); a time where no series has
    data is left out.  GPU-hours: each point of the held series counts for one step.
    """
    by_time: dict[float, dict[str, float]] = {}
    for key, results in matrices.items():
        for _labels, points in results[:1]:  # max(...) answers one series
            for at, v in points:
                by_time.setdefault(at, {})[key] = v
    points_out = []
    hours = {"busy": 0.0, "idle": 0.0, "unknown": 0.0, "held": 0.0}
    for at in sorted(by_time):
        row = by_time[at]
        values = {k: round(row.get(k, 0.0), 4) for k in GAUGES}
        points_out.append({"at": _iso(dt.datetime.fromtimestamp(at, dt.UTC)), **values})
        h = step / 3600.0
        for s in ("busy", "idle", "unknown"):
            hours[s] += values[f"{s}_gpus"] * h
        hours["held"] += sum(values[f"{s}_gpus"] for s in HELD_STATES) * h
    return {"since": _iso(since), "until": _iso(until), "interval_seconds": step,
            "samples": len(points_out), "points": points_out,
            "gpu_hours": {k: round(v, 3) for k, v in hours.items()}}


def _iso(t: dt.datetime) -> str:
    return t.replace(tzinfo=None).isoformat() + "Z"


def _unix(t: dt.datetime) -> float:
    """Naive datetimes are UTC (the store's convention)."""
    return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp()


# -- querying (I/O) ---------------------------------------------------------------------------
class PrometheusSource:
    """Range queries against one Prometheus server (its HTTP API, ``/api/v1/query_range``)."""

    def __init__(self, url: str, selector: str = "", timeout: float = 5.0,
                 headers: Mapping[str, str] | None = None) -> None:
        self.url = url.rstrip("/")
        self.selector = selector
        self.timeout = timeout
        self.headers = dict(headers or {})

    async def query_range(self, query: str, since: dt.datetime, until: dt.datetime,
                          step: float) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
        from tornado import httpclient

        params = urlencode({"query": query, "start": f"{_unix(since):.3f}",
                            "end": f"{_unix(until):.3f}", "step": f"{step:g}"})
        client = httpclient.AsyncHTTPClient()
        try:
            r = await client.fetch(f"{self.url}/api/v1/query_range?{params}",
                                   headers=self.headers, request_timeout=self.timeout,
                                   connect_timeout=self.timeout, raise_error=False)
        except Exception as e:  # refused, DNS, timeout: all "did not answer"
            raise PrometheusError(f"{type(e).__name__}: {e}") from e
        try:
            doc = json.loads(r.body or b"")
        except ValueError:
            raise PrometheusError(f"HTTP {r.code}: the answer is not JSON") from None
        return parse_matrix(doc)

    async def series(self, since: dt.datetime, until: dt.datetime,
                     buckets: int = 240) -> dict[str, Any]:
        """The history's document for the window, from Prometheus (one query per series)."""
        step = step_for(since, until, buckets)
        queries = range_queries(self.selector)
        answers = await asyncio.gather(*(self.query_range(q, since, until, step)
                                         for q in queries.values()))
        out = series_from_matrices(dict(zip(queries, answers, strict=True)), since, until, step)
        out["queries"] = queries
        return out
