"""Observability in the chart (issue 20, item 9): the Grafana dashboard ConfigMap queries only
metrics the code exports, the Prometheus Operator monitors, the agent's port (not
dcgm-exporter's 9400) wherever the chart names it, and Prometheus' way in through the
NetworkPolicies."""

from __future__ import annotations

import json
import re
from typing import Any

from aispike_hub.service.prometheus import metric_names

from .chart import CHART, by_kind, one, render

DASHBOARD = CHART / "files" / "aispike-dashboard.json"
AGENT_PORT = 9402
DCGM_PORT = 9400
# dcgm-exporter's metrics the dashboard joins with (by UUID); not ours to export.
DCGM = {"DCGM_FI_DEV_GPU_UTIL"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
                "unless", "bool", "offset", "le", "inf", "nan"}


def queried_metrics(expr: str) -> set[str]:
    """The metric names in a PromQL expression: label matchers, ranges, groupings, strings and
    function calls removed, what is left that looks like a name."""
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        rest = expr[m.end():].lstrip()
        if rest.startswith("(") or m.group().lower() in PROMQL_WORDS:
            continue  # a function or a keyword
        names.add(m.group())
    return names


def dashboard_exprs(doc: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in doc["panels"] for t in p.get("targets", ())]


def test_the_dashboard_queries_only_metrics_the_code_exports() -> None:
    doc = json.loads(DASHBOARD.read_text())
    exported = metric_names()
    queried = set().union(*(queried_metrics(e) for e in dashboard_exprs(doc)))
    assert queried - DCGM, "the dashboard queries nothing of ours?"
    unknown = queried - DCGM - set(exported)
    assert not unknown, f"the dashboard queries metrics no code exports: {sorted(unknown)}"
    # What issue 20 asks the dashboard to show.
    for needed in ("aispike_cluster_gpu_memory_allocated_bytes",
                   "aispike_cluster_gpu_memory_capacity_bytes", "aispike_admissions_total",
                   "aispike_queue_wait_seconds_bucket", "aispike_idle_stops_total",
                   "aispike_placement_decision_seconds_bucket", "DCGM_FI_DEV_GPU_UTIL"):
        assert needed in queried, needed
    # Joined with dcgm-exporter on its own label, no relabelling.
    (join,) = [e for e in dashboard_exprs(doc) if "DCGM_FI_DEV_GPU_UTIL" in e]
    assert "on (UUID)" in join
    assert {p["id"] for p in doc["panels"]} == set(range(1, len(doc["panels"]) + 1))


def test_the_queried_names_parser() -> None:
    assert queried_metrics(
        'histogram_quantile(0.5, sum by (le) (rate(a_bucket{outcome="x"}[5m])))') == {"a_bucket"}
    assert queried_metrics("max by (UUID) (a) / on (UUID) group_left max by (UUID) (b)") == {
        "a", "b"}


def test_the_dashboard_ships_as_a_configmap_for_grafanas_sidecar() -> None:
    docs = render()
    cm = one(docs, "ConfigMap", "rel-aispike-hub-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["aispike-hub.json"]) == json.loads(DASHBOARD.read_text())
    moved = render(sets=["aispike.metrics.dashboard.namespace=monitoring",
                         "aispike.metrics.dashboard.annotations.grafana_folder=GPUs"])
    cm = one(moved, "ConfigMap", "rel-aispike-hub-dashboard")
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "GPUs"}
    off = render(sets=["aispike.metrics.dashboard.enabled=false"])
    assert not [d for d in by_kind(off, "ConfigMap")
                if d["metadata"]["name"] == "rel-aispike-hub-dashboard"]


def test_service_monitors_are_optional_and_scrape_with_a_read_metrics_token() -> None:
    assert not list(by_kind(render(), "ServiceMonitor"))
    agent_only = render(sets=["aispike.metrics.serviceMonitor.enabled=true"])
    assert [d["metadata"]["name"] for d in by_kind(agent_only, "ServiceMonitor")] == [
        "rel-aispike-hub-agent"]
    docs = render(sets=["aispike.metrics.serviceMonitor.enabled=true",
                        "aispike.metrics.serviceMonitor.labels.release=prom",
                        "aispike.metrics.serviceMonitor.tokenSecret.name=prom-token"])
    monitors = {d["metadata"]["name"]: d for d in by_kind(docs, "ServiceMonitor")}
    assert set(monitors) == {f"rel-aispike-hub-{c}" for c in ("agent", "hub", "service")}
    services = {d["metadata"]["name"]: d for d in by_kind(docs, "Service")}
    for name, sm in monitors.items():
        assert sm["metadata"]["labels"]["release"] == "prom"
        (endpoint,) = sm["spec"]["endpoints"]
        # The monitor finds exactly its component's Service, on a port that Service names.
        selected = [s for s in services.values() if sm["spec"]["selector"]["matchLabels"].items()
                    <= s["metadata"]["labels"].items()]
        assert [s["metadata"]["name"] for s in selected] == [name], name
        assert endpoint["port"] in {p["name"] for p in selected[0]["spec"]["ports"]}
        if name.endswith("-agent"):
            assert endpoint["path"] == "/metrics" and "authorization" not in endpoint
        else:
            assert endpoint["authorization"]["credentials"] == {"name": "prom-token",
                                                               "key": "token"}
    assert monitors["rel-aispike-hub-service"]["spec"]["endpoints"][0]["path"] == (
        "/services/aispike/metrics")
    assert monitors["rel-aispike-hub-hub"]["spec"]["endpoints"][0]["path"] == "/hub/metrics"


def test_the_agent_port_is_not_dcgm_exporters_anywhere_in_the_chart() -> None:
    docs = render()
    text = json.dumps(docs)
    assert str(DCGM_PORT) not in re.sub(r"GPU-[0-9a-f-]+", "", text)
    ds = one(docs, "DaemonSet", "rel-aispike-hub-agent")
    (container,) = ds["spec"]["template"]["spec"]["containers"]
    assert container["ports"] == [{"name": "metrics", "containerPort": AGENT_PORT}]
    assert f"--metrics-port={AGENT_PORT}" in container["command"]
    svc = one(docs, "Service", "rel-aispike-hub-agent")
    assert svc["spec"]["ports"][0]["port"] == AGENT_PORT
    policy = one(docs, "NetworkPolicy", "rel-aispike-hub-agent")
    assert policy["spec"]["ingress"][0]["ports"] == [{"port": AGENT_PORT}]
    config = json.loads(one(docs, "ConfigMap", "rel-aispike-hub-service")["data"][
        "aispike_service_config.json"])
    assert config["IdleMonitor"]["agent_service"] == f"rel-aispike-hub-agent.hubns.svc:{AGENT_PORT}"
    from aispike_hub.agent.main import AgentApp

    assert AgentApp.class_traits()["metrics_port"].default_value == AGENT_PORT


def test_prometheus_reaches_the_hubs_and_the_services_metrics_through_their_policies() -> None:
    docs = render()
    prometheus = {"namespaceSelector": {},
                  "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}
    for name in ("rel-aispike-hub-hub", "rel-aispike-hub-service", "rel-aispike-hub-agent"):
        policy = one(docs, "NetworkPolicy", name)
        assert prometheus in policy["spec"]["ingress"][0]["from"], name
