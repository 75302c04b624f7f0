"""Charts from Prometheus: the service's gauges, PromQL range queries, parsing, and falling back
to the service's own history when Prometheus does not answer.

The "Prometheus" here is a stand-in: a small real HTTP server in this process that implements
``/api/v1/query_range`` with Prometheus' JSON answer format (a matrix of ``[time, "value"]``
pairs per series).  It is not Prometheus: it does not evaluate PromQL, it answers each query
with a fixed series chosen by the metric name in it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from aispike_hub.admission.controller import AdmissionController
from aispike_hub.admission.inventory import StaticInventory
from aispike_hub.model import GIB_IN_MIB, Gpu, Node, SliceRequest
from aispike_hub.quota import User, policy_from_dict
from aispike_hub.service.api import ServiceContext
from aispike_hub.service.idle import IdleMonitor
from aispike_hub.service.panel import AdminPanel
from aispike_hub.service.prometheus import (
    GAUGES,
    PrometheusError,
    exposition,
    metric_families,
    parse_matrix,
    range_queries,
    series_from_matrices,
    step_for,
)

GIB = GIB_IN_MIB
NOW = dt.datetime(2026, 11, 30, 12, 0, 0)

# What the stand-in answers per metric (and state label): a constant over the window.
ANSWERS = {"aispike_panel_gpus": 8.0, "aispike_panel_allocation_ratio": 0.625,
           "aispike_panel_fragmented_gpus": 0.5, "aispike_panel_free_gpus": 3.0,
           'state="busy"': 2.0, 'state="idle"': 1.5, 'state="unknown"': 0.5,
           'state="other"': 1.0, "aispike_queue_length": 4.0}


class StandInPrometheus:
    """A real HTTP server answering ``/api/v1/query_range`` like Prometheus (see module doc)."""

    def __init__(self) -> None:
        self.queries: list[dict[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                args = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path != "/api/v1/query_range":
                    self.send_error(404)
                    return
                outer.queries.append(args)
                q = args["query"]
                start, end, step = float(args["start"]), float(args["end"]), float(args["step"])
                # Held series name their state; check those before the bare metric names.
                value = next((v for k, v in sorted(ANSWERS.items(), key=lambda kv: -len(kv[0]))
                              if k in q), None)
                result = []
                if value is not None:
                    n = int((end - start) // step) + 1
                    result = [{"metric": {}, "values": [[start + i * step, str(value)]
                                                        for i in range(n)]}]
                body = json.dumps({"status": "success",
                                   "data": {"resultType": "matrix", "result": result}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def prometheus() -> Iterator[StandInPrometheus]:
    p = StandInPrometheus()
    yield p
    p.stop()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- pure -------------------------------------------------------------------------------------
def test_each_history_series_has_a_gauge_and_a_query() -> None:
    from aispike_hub.service.history import SERIES

    assert set(GAUGES) == set(SERIES)
    q = range_queries('job="aispike"')
    assert q["allocation"] == 'max(aispike_panel_allocation_ratio{job="aispike"})'
    assert q["idle_gpus"] == 'max(aispike_panel_held_gpus{state="idle", job="aispike"})'
    assert range_queries()["queued"] == "max(aispike_queue_length)"


def test_parse_matrix_reads_values_as_numbers_and_drops_nan() -> None:
    doc = {"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {"job": "aispike"}, "values": [[100, "1.5"], [115, "NaN"], [130, "2"]]}]}}
    assert parse_matrix(doc) == [({"job": "aispike"}, [(100.0, 1.5), (130.0, 2.0)])]
    with pytest.raises(PrometheusError, match="bad_data: parse error"):
        parse_matrix({"status": "error", "errorType": "bad_data", "error": "parse error"})
    with pytest.raises(PrometheusError, match="matrix"):
        parse_matrix({"status": "success", "data": {"resultType": "vector", "result": []}})
    with pytest.raises(PrometheusError):
        parse_matrix(["not", "an", "object"])


def test_series_from_matrices_gives_the_historys_document_with_gpu_hours() -> None:
    since, until = NOW - dt.timedelta(hours=1), NOW
    t0 = since.replace(tzinfo=dt.UTC).timestamp()
    pts = lambda v: [({}, [(t0 + i * 60, v) for i in range(60)])]  # noqa: E731
    out = series_from_matrices({"busy_gpus": pts(2.0), "idle_gpus": pts(1.0),
                                "allocation": pts(0.5), "queued": []}, since, until, 60.0)
    assert out["samples"] == 60 and out["points"][0]["at"] == "2026-11-30T11:00:00Z"
    assert out["points"][0]["busy_gpus"] == 2.0 and out["points"][0]["queued"] == 0.0
    assert out["gpu_hours"] == {"busy": 2.0, "idle": 1.0, "unknown": 0.0, "held": 3.0}
    assert step_for(since, until) == 15.0  # at least 15 s
    assert step_for(NOW - dt.timedelta(days=30), NOW) == 10800.0  # 240 points


def test_the_gauges_in_prometheus_text_format() -> None:
    values = {"gpus": 8.0, "allocation": 0.625, "busy_gpus": 2.0, "idle_gpus": 1.5,
              "queued": 4.0}
    families = {name: samples for name, _help, samples in metric_families(values)}
    assert families["aispike_panel_held_gpus"] == [({"state": "busy"}, 2.0),
                                                   ({"state": "idle"}, 1.5)]
    text, content_type = exposition(values)
    assert content_type.startswith("text/plain")
    lines = text.decode().splitlines()
    assert "aispike_panel_allocation_ratio 0.625" in lines
    assert 'aispike_panel_held_gpus{state="idle"} 1.5' in lines
    assert "aispike_queue_length 4.0" in lines


# -- the panel, against the stand-in ----------------------------------------------------------
@pytest.fixture
def panel(tmp_path: Path) -> AdminPanel:
    from aispike_hub.service.store import Store

    store = Store(f"sqlite:///{tmp_path}/s.sqlite")
    nodes = [Node("a-0", 64_000, 512 * GIB, (Gpu(0, "NVIDIA A100-SXM4-80GB", 80 * GIB),))]
    controller = AdmissionController(store, StaticInventory(nodes), policy_from_dict({}))
    ctx = ServiceContext(controller, "aispike")
    monitor = IdleMonitor(store, "http://127.0.0.1:1/hub/api", "t")
    return AdminPanel(ctx, monitor, "/services/aispike/", hub_prefix="/hub/",
                      history_interval=60)


def test_charts_come_from_prometheus_range_queries(panel: AdminPanel,
                                                   prometheus: StandInPrometheus) -> None:
    panel.prometheus_url = prometheus.url
    panel.prometheus_selector = 'job="aispike"'
    out = asyncio.run(panel.charts(6))
    assert out["source"] == "prometheus" and "note" not in out
    assert len(prometheus.queries) == len(GAUGES)
    sent = {q["query"] for q in prometheus.queries}
    assert 'max(aispike_panel_held_gpus{state="busy", job="aispike"})' in sent
    assert {q["step"] for q in prometheus.queries} == {"90"}  # 6 h in 240 steps
    last = out["points"][-1]
    assert (last["allocation"], last["busy_gpus"], last["idle_gpus"], last["queued"]) == (
        0.625, 2.0, 1.5, 4.0)
    # 241 points of 90 s: 6 h + one step.
    assert out["gpu_hours"]["busy"] == pytest.approx(2.0 * 241 * 90 / 3600)
    assert out["gpu_hours"]["held"] == pytest.approx(5.0 * 241 * 90 / 3600)


def test_prometheus_down_falls_back_to_the_history_with_a_note(panel: AdminPanel) -> None:
    panel.controller.admit(User("dave"), "", SliceRequest(gpu_memory_mib=40 * GIB), "t")
    panel.sample()
    panel.prometheus_url = f"http://127.0.0.1:{closed_port()}"
    panel.prometheus_timeout = 2
    out = asyncio.run(panel.charts(1))
    assert out["source"] == "history" and out["samples"] == 1
    assert out["points"][-1]["allocation"] == pytest.approx(0.5)
    assert panel.prometheus_url in out["note"] and "did not answer" in out["note"]


def test_prometheus_answering_an_error_falls_back_too(panel: AdminPanel,
                                                      prometheus: StandInPrometheus) -> None:
    panel.prometheus_url = prometheus.url + "/nothing-here"  # 404, not JSON
    out = asyncio.run(panel.charts(1))
    assert out["source"] == "history" and "HTTP 404" in out["note"]


def test_without_prometheus_the_charts_are_the_history(panel: AdminPanel) -> None:
    out = asyncio.run(panel.charts(1))
    assert out["source"] == "history" and "note" not in out


def test_current_sample_is_what_metrics_export(panel: AdminPanel) -> None:
    c = panel.controller
    assert c.admit(User("dave"), "", SliceRequest(gpu_memory_mib=40 * GIB), "t").state == (
        "admitted")
    assert c.admit(User("erin"), "", SliceRequest(gpu_memory_mib=60 * GIB), "t").state == (
        "queued")
    values = panel.current_sample()
    assert values["allocation"] == pytest.approx(0.5) and values["queued"] == 1.0
    text = exposition(values)[0].decode()
    assert "aispike_panel_allocation_ratio 0.5" in text
    assert 'aispike_panel_held_gpus{state="unknown"} 0.5' in text
