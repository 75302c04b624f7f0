"""The idle policy of the chart's default install stops an idle GPU notebook, and the user's file
survives on her home volume; the node agents the chart runs answer the service's polls.

Installed by Helm on the real test control plane as in test_helm_chart.py (kwok GPU nodes, every
pod of the release and the notebooks run from their images by tests/integration/podrunner.py in
container mode), with the agents of the chart's DaemonSet reading a recorded NVML machine
(tests/fixtures/nvml/h200-1gpu.json, mounted from a ConfigMap through ``aispike.agent.extraVolumes``
and named by the chart's own ``aispike.agent.config``: ``AgentApp.nvml_fixture``), as an admin of
simulated nodes would; ``publish`` and the DRA kubelet plugin are off (test_helm_chart.values says
why).  The service
finds the agents by itself through the chart's headless Service (the runner's /etc/hosts gives
one line per agent pod, as cluster DNS gives one record) and reads their /usage: the notebook's
GPU is idle, so the default policy (culling on: warn, then stop after the grace) acts.  Only the
timeouts are short, set through values as an admin would (``cull.timeout``, ``cull.every``,
``aispike.idle.grace``, and the idle monitor's GPU window through ``aispike.service.config``).

Also here, on the same stack: a queued spawn outlives JupyterHub's default start timeout under
the chart's timeouts (start timeout > queue timeout) and then starts, or ends with the queue's
own reason."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

import requests

from .conftest import TEST_GROUP_LABEL, GpuNodes, TestCluster, wait_until
from .podrunner import PodRunner
from .test_helm_chart import (
    A100,
    ADMIN,
    CHART,
    HubUser,
    adopt_device_class,
    agent_recording,
    answers,
    chart_pods,
    home_volume,
    image_runner,  # noqa: F401  (the fixture)
    only_pod,
    proxy_url,
    release_claims,
    restore_device_class,
    values,
)

AGENT_PORT = 9402  # the chart's aispike.agent.metrics.port


def idle_values(release: str, group: str) -> dict[str, Any]:
    """test_helm_chart's kwok values, the agents run on a recording, short idle timeouts (the
    policy itself, mode and warning included, is the default install's)."""
    v = values(release, 16, group)
    v["cull"] = {"timeout": 30, "every": 5}
    v["aispike"]["idle"] = {"grace": 15}
    v["aispike"]["service"]["config"] = {"IdleMonitor": {"gpu_window": 10}}
    v["aispike"]["agent"]["interval"] = 2
    return v


def usage(ip: str) -> dict[str, Any] | None:
    try:
        r = requests.get(f"http://{ip}:{AGENT_PORT}/usage", timeout=5)
    except requests.RequestException:
        return None
    return dict(r.json()) if r.status_code == 200 else None


def test_default_idle_policy_stops_an_idle_gpu_notebook_and_her_file_stays(
    cluster: TestCluster, namespace: str, gpu_nodes: GpuNodes, tmp_path: Path,
    image_runner: PodRunner | None,  # noqa: F811
) -> None:
    runner = image_runner
    assert runner is not None, "needs root, podman and the images; CI has them"
    a100, h100 = gpu_nodes({"nodes": [
        {"name": "a100", "cpu": "32", "memory": "128Gi",
         "gpus": [{"model": A100, "memory": "80Gi", "count": 2}]},
        {"name": "h100", "cpu": "32", "memory": "128Gi",
         "gpus": [{"model": "NVIDIA H100 80GB HBM3", "memory": "80Gi", "count": 2}]},
    ]})
    release = f"idle{secrets.token_hex(2)}"
    runner.accept = chart_pods(release)
    runner.start()
    values_file = tmp_path / "values.json"
    values_file.write_text(json.dumps(idle_values(release, gpu_nodes.group)))
    adopt_device_class(cluster, namespace, release)
    agent_recording(cluster, namespace)
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


# --- a queued spawn outlives JupyterHub's start timeout -----------------------------------------

JUPYTERHUB_START_TIMEOUT = 60
"""JupyterHub's own default ``Spawner.start_timeout``: a queued spawn waiting longer than this
would have been ended with JupyterHub's generic timeout."""

QUEUE_TIMEOUT, START_TIMEOUT = 90, 120
"""Shortened from the chart's defaults (600, 900), the relation kept (start > queue)."""


def progress_end(user: HubUser) -> dict[str, Any]:
    """The last event of the user's spawn progress (JupyterHub's event stream): ready or
    failed, with the message the user reads."""
    last: dict[str, Any] = {}
    with user.api("GET", f"/users/{user.name}/server/progress", stream=True,
                  timeout=(10, START_TIMEOUT + 60)) as events:
        assert events.status_code == 200, (events.status_code, events.text[:300])
        for line in events.iter_lines():
            if line.startswith(b"data:"):
                last = json.loads(line[5:])
                if last.get("ready") or last.get("failed"):
                    break
    return last


def progress_messages(user: HubUser, until: str) -> list[str]:
    """The user's spawn progress messages, up to the first that contains ``until``."""
    said: list[str] = []
    with user.api("GET", f"/users/{user.name}/server/progress", stream=True,
                  timeout=(10, 60)) as events:
        for line in events.iter_lines():
            if line.startswith(b"data:"):
                said.append(str(json.loads(line[5:]).get("message", "")))
                if until in said[-1]:
                    break
    return said


def test_a_queued_spawn_outlives_the_start_timeout_and_ends_by_the_queue(
    cluster: TestCluster, namespace: str, gpu_nodes: GpuNodes, tmp_path: Path,
    image_runner: PodRunner | None,  # noqa: F811
) -> None:
    """One A100 (80 GiB), taken whole by a first user; two more ask for all of it and queue.
    After longer than JupyterHub's default start timeout the first stops: the second starts
    (she waited longer than that timeout, within the chart's start timeout), and the third ends
    with the queue's own reason when the queue timeout passes, not with JupyterHub's."""
    runner = image_runner
    assert runner is not None, "needs root, podman and the images; CI has them"
    gpu_nodes({"nodes": [{"name": "a100", "cpu": "32", "memory": "128Gi",
                          "gpus": [{"model": A100, "memory": "80Gi", "count": 1}]}]})
    release = f"queue{secrets.token_hex(2)}"
    runner.accept = chart_pods(release)
    runner.start()
    v = values(release, 80, gpu_nodes.group)
    v["singleuser"].update({"startTimeout": START_TIMEOUT, "storage": {"type": "none"}})
    del v["hub"]["config"]["KubeSpawner"]["working_dir"]  # no home volume to work in
    # Only this test's A100 holds notebooks (the session's cluster has other GPU nodes): the
    # notebook pool as an admin sets it, one value; the chart gives it to the spawner, the hub's
    # placer and the service (without the last two, admission places on other tests' nodes).
    pool = {TEST_GROUP_LABEL: gpu_nodes.group}
    v["singleuser"]["nodeSelector"] = pool
    v["aispike"]["service"]["queueTimeout"] = QUEUE_TIMEOUT
    values_file = tmp_path / "values.json"
    values_file.write_text(json.dumps(v))
    adopt_device_class(cluster, namespace, release)
    agent_recording(cluster, namespace)
    whole = {"image": "pytorch", "gpu_gib": 80, "cpu": 1, "memory_gib": 1}
    try:
        cluster.helm("install", release, str(CHART), "--namespace", namespace,
                     "--values", str(values_file), "--wait", "--timeout", "180s", timeout=240)
        url = proxy_url(cluster, runner, namespace, release)
        wait_until(lambda: answers(f"{url}hub/health"), 120, "the hub to answer")
        wait_until(lambda: answers(f"{url}services/aispike/api/health"), 90,
                   "the AISpike service to answer")
        first, second, third = (HubUser(url, f"q{i}-{secrets.token_hex(3)}") for i in range(3))
        for u in (first, second, third):
            u.login()
        r = first.api("POST", f"/users/{first.name}/server", json=whole)
        assert r.status_code in (201, 202), (r.status_code, r.text[:500])
        wait_until(lambda: first.server().get("ready"), 150, "the first server ready")

        for u in (second, third):  # in this order: the second is first in the queue
            r = u.api("POST", f"/users/{u.name}/server", json=whole)
            assert r.status_code == 202, (r.status_code, r.text[:500])
            said = progress_messages(u, "Waiting in the queue")
            assert "Waiting in the queue: position" in said[-1], said

        # Longer than JupyterHub's default start timeout: both still pending in the queue.
        time.sleep(JUPYTERHUB_START_TIMEOUT + 5)  # (a wait, not a timed assertion)
        for u in (second, third):
            assert u.server().get("pending") == "spawn", (u.name, u.server())

        # The room frees: the second starts, within the chart's start timeout.
        r = first.api("DELETE", f"/users/{first.name}/server")
        assert r.status_code in (202, 204), (r.status_code, r.text[:500])
        end = progress_end(second)
        assert end.get("ready"), end
        assert second.server().get("ready"), second.server()

        # The third, still without room, ends with the queue's own reason.
        end = progress_end(third)
        assert end.get("failed"), end
        message = end.get("message", "")
        assert f"gave up after {QUEUE_TIMEOUT} s in the queue" in message, message
        assert "Timeout" not in message and "within" not in message, message
        assert not third.server(), third.server()

        r = second.api("DELETE", f"/users/{second.name}/server")
        assert r.status_code in (202, 204), (r.status_code, r.text[:500])
        wait_until(lambda: not second.server(), 90, "the second server stopped")
    except BaseException:
        print(runner.logs())
        raise
    finally:
        cluster.helm("uninstall", release, "--namespace", namespace, "--wait", check=False)
        restore_device_class(cluster)
        release_claims(cluster, namespace)

