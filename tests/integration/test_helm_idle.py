"""The idle policy of the chart's default install stops an idle GPU notebook, and the user's file
survives on her home volume; the node agents the chart runs answer the service's polls.

Installed by Helm on the real test control plane as in test_helm_chart.py (kwok GPU nodes, the
chart's hub, proxy and AISpike service run by tests/integration/podrunner.py in kubelet mode).
Here the runner also runs the agent DaemonSet's pods: the agent command the chart sets, with the
GPUs read from a recorded NVML machine (tests/fixtures/nvml/h200-1gpu.json) passed through the
chart's own ``aispike.agent.config`` (``AgentApp.nvml_fixture``), as an admin of simulated nodes
would.  Two things of the agent's default are turned off, with the reason: ``publish`` (the test
cluster's ResourceSlices stand for the kwok nodes' GPUs; an agent on a recording would replace
them with the recorded H200) and the DRA kubelet plugin (no kubelet registers it).  The service
finds the agents by itself through the chart's headless Service (the runner's /etc/hosts gives
one line per agent pod, as cluster DNS gives one record) and reads their /usage: the notebook's
GPU is idle, so the default policy (culling on: warn, then stop after the grace) acts.  Only the
timeouts are short, set through values as an admin would (``cull.timeout``, ``cull.every``,
``aispike.idle.grace``, and the idle monitor's GPU window through ``aispike.service.config``)."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import requests

from .conftest import GpuNodes, TestCluster, wait_until
from .podrunner import PodRunner
from .test_helm_chart import (
    A100,
    ADMIN,
    CHART,
    HubUser,
    adopt_device_class,
    answers,
    chart_pods,
    home_volume,
    kubelet_runner,  # noqa: F401  (the fixture)
    only_pod,
    proxy_url,
    release_claims,
    restore_device_class,
    values,
)

NVML_RECORDING = Path(__file__).resolve().parents[1] / "fixtures" / "nvml" / "h200-1gpu.json"
AGENT_PORT = 9402  # the chart's aispike.agent.metrics.port


def idle_values(release: str, group: str) -> dict[str, Any]:
    """test_helm_chart's kwok values, the agents run on a recording, short idle timeouts (the
    policy itself, mode and warning included, is the default install's)."""
    v = values(release, 16, group)
    v["cull"] = {"timeout": 30, "every": 5}
    v["aispike"]["idle"] = {"grace": 15}
    v["aispike"]["service"]["config"] = {"IdleMonitor": {"gpu_window": 10}}
    v["aispike"]["agent"].update({
        "publish": False, "draPlugin": "false", "interval": 2,
        "config": {"AgentApp": {"nvml_fixture": str(NVML_RECORDING)}}})
    return v


def with_agents(release: str) -> Any:
    """The pods test_helm_chart runs, and the release's agent pods."""
    base = chart_pods(release)

    def accept(pod: Any) -> bool:
        labels = pod.metadata.labels or {}
        return base(pod) or (labels.get("app.kubernetes.io/instance") == release
                             and labels.get("app.kubernetes.io/component") == "agent")

    return accept


def usage(ip: str) -> dict[str, Any] | None:
    try:
        r = requests.get(f"http://{ip}:{AGENT_PORT}/usage", timeout=5)
    except requests.RequestException:
        return None
    return dict(r.json()) if r.status_code == 200 else None


def test_default_idle_policy_stops_an_idle_gpu_notebook_and_her_file_stays(
    cluster: TestCluster, namespace: str, gpu_nodes: GpuNodes, tmp_path: Path,
    kubelet_runner: PodRunner | None,  # noqa: F811
) -> None:
    runner = kubelet_runner
    assert runner is not None, "needs root (kubelet mode); CI runs as root"
    a100, h100 = gpu_nodes({"nodes": [
        {"name": "a100", "cpu": "32", "memory": "128Gi",
         "gpus": [{"model": A100, "memory": "80Gi", "count": 2}]},
        {"name": "h100", "cpu": "32", "memory": "128Gi",
         "gpus": [{"model": "NVIDIA H100 80GB HBM3", "memory": "80Gi", "count": 2}]},
    ]})
    release = f"idle{secrets.token_hex(2)}"
    runner.accept = with_agents(release)
    runner.start()
    values_file = tmp_path / "values.json"
    values_file.write_text(json.dumps(idle_values(release, gpu_nodes.group)))
    adopt_device_class(cluster, namespace, release)
    base = f"app.kubernetes.io/instance={release}"
    try:
        cluster.helm("install", release, str(CHART), "--namespace", namespace,
                     "--values", str(values_file), "--wait", "--timeout", "180s", timeout=240)

        # The chart's agent pods run on both GPU nodes, each serving its own node's /usage
        # (the recorded H200, no notebook process yet).
        agents = {}
        for pod in cluster.core.list_namespaced_pod(
                namespace, label_selector=f"{base},app.kubernetes.io/component=agent").items:
            running = runner.wait_running(namespace, pod.metadata.name, 60)
            assert running.argv[1] == "agent", running.argv
            doc = wait_until(lambda ip=running.ip: usage(ip), 60,
                             f"agent on {pod.spec.node_name} to answer")
            assert doc["node"] == pod.spec.node_name, doc
            assert [g["model"] for g in doc["gpus"]] == ["NVIDIA H200"], doc["gpus"]
            agents[pod.spec.node_name] = running.ip
        assert set(agents) == {a100.name, h100.name}, agents

        url = proxy_url(cluster, runner, namespace, release)
        wait_until(lambda: answers(f"{url}hub/health"), 120, "the hub to answer")
        wait_until(lambda: answers(f"{url}services/aispike/api/health"), 90,
                   "the AISpike service to answer")

        # A user starts a GPU notebook and writes a file in her home directory.
        user = HubUser(url, f"idle-{secrets.token_hex(3)}")
        user.login()
        pv = home_volume(cluster, namespace, f"claim-{user.name}")
        options = {"image": "pytorch", "gpu_gib": 8, "cpu": 1, "memory_gib": 1}
        r = user.api("POST", f"/users/{user.name}/server", json=options)
        assert r.status_code in (201, 202), (r.status_code, r.text[:500])
        wait_until(lambda: user.server().get("ready"), 150, f"{user.name}'s notebook ready")
        r = user.session.get(f"{url}user/{user.name}/lab", timeout=60)
        assert r.status_code == 200, (r.status_code, r.url)
        xsrf = {"X-XSRFToken": user.session.cookies.get("_xsrf", path=f"/user/{user.name}/")
                or ""}
        r = user.session.put(f"{url}user/{user.name}/api/contents/kept.txt", timeout=60,
                             headers=xsrf,
                             json={"type": "file", "format": "text", "content": "still here"})
        assert r.status_code in (200, 201), (r.status_code, r.text[:300])

        # The service found both agents through the headless Service and judges her server
        # with their answers (an idle GPU: no sample of hers holds memory or computes).  An admin
        # reads its report and audit log (OAuth through the admin panel first).
        admin = HubUser(url, ADMIN)
        admin.login()
        r = admin.session.get(f"{url}services/aispike/admin/", timeout=60)
        assert r.status_code == 200, (r.status_code, r.url)

        def service_api(path: str) -> dict[str, Any] | None:
            r = admin.session.get(f"{url}services/aispike/api/{path}", timeout=30)
            return dict(r.json()) if r.status_code == 200 else None

        def sources_ok() -> Any:
            rep = service_api("idle/report") or {}
            ok = {s["node"] for s in rep.get("sources", []) if s["ok"]}
            mine = [e for e in rep.get("servers", []) if e["user"] == user.name]
            return rep if ok == set(agents) and mine else None

        rep = wait_until(sources_ok, 90, "the service to read both agents and judge her server")
        assert {s["url"] for s in rep["sources"]} == {
            f"http://{ip}:{AGENT_PORT}/usage" for ip in agents.values()}, rep["sources"]

        # The default policy warns her, then stops the server after the grace.
        wait_until(lambda: not user.server(), 180, f"{user.name}'s server stopped by the policy")
        target = f"{user.name}/"

        def audited(action: str) -> list[dict[str, Any]]:
            entries = (service_api(f"audit?action={action}") or {}).get("entries", [])
            return [e for e in entries if e["target"] == target]

        (warn,) = audited("idle.warn")
        (stop,) = audited("idle.stop")
        assert warn["id"] < stop["id"], (warn, stop)
        assert stop["detail"]["mode"] == "stop" and stop["detail"]["verdict"] == "idle", stop
        # Judged with the agents' answers: a GPU sample of hers (idle), none missing.
        evidence = " ".join(stop["detail"]["evidence"])
        assert "GPU: holds 0 MiB, peak utilisation 0%" in evidence, evidence
        assert "no answer" not in evidence, evidence
        wait_until(lambda: only_pod(cluster, namespace, "component=singleuser-server") is None
                   and not cluster.core.list_namespaced_pod(
                       namespace, label_selector="component=singleuser-server").items,
                   90, "notebook pod deleted")
        pvc = cluster.core.read_namespaced_persistent_volume_claim(f"claim-{user.name}",
                                                                   namespace)
        assert pvc.status.phase == "Bound" and pvc.spec.volume_name == pv

        # Started again, her file is there.
        r = user.api("POST", f"/users/{user.name}/server", json=options)
        assert r.status_code in (201, 202), (r.status_code, r.text[:500])
        wait_until(lambda: user.server().get("ready"), 150, f"{user.name}'s notebook again")
        user.session.get(f"{url}user/{user.name}/lab", timeout=60)
        xsrf = {"X-XSRFToken": user.session.cookies.get("_xsrf", path=f"/user/{user.name}/")
                or ""}
        r = user.session.get(f"{url}user/{user.name}/api/contents/kept.txt", timeout=60,
                             headers=xsrf)
        assert r.status_code == 200 and r.json()["content"] == "still here", (
            r.status_code, r.text[:300])
        r = user.api("DELETE", f"/users/{user.name}/server")
        assert r.status_code in (202, 204), (r.status_code, r.text[:500])
        wait_until(lambda: not user.server(), 90, f"{user.name}'s notebook stopped")
        service = runner.running(namespace, only_pod(
            cluster, namespace, f"{base},app.kubernetes.io/component=service").metadata.name)
        assert service is not None and service.restarts == 0, service and service.log_text()
        cluster.core.delete_namespaced_persistent_volume_claim(f"claim-{user.name}", namespace)
        cluster.core.delete_persistent_volume(pv)
    except BaseException:
        print(runner.logs())
        raise
    finally:
        cluster.helm("uninstall", release, "--namespace", namespace, "--wait", check=False)
        restore_device_class(cluster)
        release_claims(cluster, namespace)
