"""The pod runner's container mode on the real test cluster (tests/integration/containers.py).

Pods created through the real API server on a kwok node are started from the images
scripts/build-images made (looked up by the name the pod spec sets): the hub image behind the
proxy image answers ``/hub/health``, a Secret's and a ConfigMap's values reach it as env and
volumes, a crashing container is restarted (``restartCount`` in the pod's status) and
``kubectl logs`` (``--previous`` too) shows what each instance wrote, and a failing readiness
probe keeps its pod NotReady.  Without root, podman, runc or the images: a skip, a
failure under ``CI=true``.
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.images.test_images import IMAGES

from .conftest import SESSION_NAMESPACES, TestCluster, unavailable, wait_until
from .containers import ContainerMode, containers_unavailable
from .podrunner import Kubelet, PodRunner, kubelet_unavailable


@pytest.fixture
def container_runner(cluster: TestCluster, namespace: str) -> Iterator[PodRunner]:
    reason = kubelet_unavailable() or containers_unavailable((IMAGES["hub"], IMAGES["proxy"]))
    if reason:
        unavailable(reason)  # a skip, or under CI=true a failure
    SESSION_NAMESPACES.discard(namespace)
    mode = ContainerMode()
    runner = PodRunner(cluster.api, label_selector="", watch_namespace=namespace,
                       namespaces={namespace}.__contains__,
                       kubelet=Kubelet.for_api(cluster.api), containers=mode).start()
    yield runner
    runner.stop()
    left = [(p.name, p.process.pid) for p in runner.alive()]
    assert not left, f"the pod runner left processes behind: {left}"


def _pod(name: str, node: str, image: str, **container: Any) -> dict[str, Any]:
    spec = container.pop("spec", {})
    return {"metadata": {"name": name, "labels": {"app": name}},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 2, **spec,
                     "containers": [{"name": "main", "image": image, **container}]}}


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def test_hub_image_pod_in_container_mode(
    cluster: TestCluster, namespace: str, gpu_nodes: Any, container_runner: PodRunner
) -> None:
    (node,) = gpu_nodes({"nodes": [{"name": "img", "cpu": "8", "memory": "16Gi"}]})
    core = cluster.core
    core.create_namespaced_secret(namespace, {"metadata": {"name": "hub-secret"},
                                              "stringData": {"token": "s3cr3t-token"}})
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "hub-config"},
                                                  "data": {"greeting": "hello-from-configmap"}})
    core.create_namespaced_service(namespace, {
        "metadata": {"name": "proxy-api"},
        "spec": {"selector": {"app": "proxy"}, "ports": [{"port": 8001}]}})
    core.create_namespaced_pod(namespace, _pod(
        "proxy", node.name, IMAGES["proxy"],
        args=["--ip=", "--port=8000", "--api-ip=", "--api-port=8001",
              "--default-target=http://hub:8081"],
        env=[{"name": "CONFIGPROXY_AUTH_TOKEN",
              "valueFrom": {"secretKeyRef": {"name": "hub-secret", "key": "token"}}}],
        securityContext={"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                         "capabilities": {"drop": ["ALL"]}, "runAsUser": 1000}))
    core.create_namespaced_pod(namespace, _pod(
        "hub", node.name, IMAGES["hub"],
        command=["jupyterhub"],
        args=["--JupyterHub.authenticator_class=dummy",
              "--ConfigurableHTTPProxy.should_start=False",
              "--ConfigurableHTTPProxy.api_url=http://proxy-api:8001"],
        workingDir="/srv/hub",
        ports=[{"name": "hub", "containerPort": 8081}],
        env=[{"name": "CONFIGPROXY_AUTH_TOKEN",
              "valueFrom": {"secretKeyRef": {"name": "hub-secret", "key": "token"}}},
             {"name": "GREETING",
              "valueFrom": {"configMapKeyRef": {"name": "hub-config", "key": "greeting"}}}],
        volumeMounts=[{"name": "data", "mountPath": "/srv/hub"},
                      {"name": "secret", "mountPath": "/etc/hub-secret", "readOnly": True},
                      {"name": "config", "mountPath": "/etc/hub-config", "readOnly": True}],
        readinessProbe={"httpGet": {"path": "/hub/health", "port": "hub"},
                        "periodSeconds": 2},
        securityContext={"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                         "capabilities": {"drop": ["ALL"]}, "runAsUser": 1000,
                         "runAsGroup": 1000},
        spec={"volumes": [{"name": "data", "emptyDir": {}},
                          {"name": "secret", "secret": {"secretName": "hub-secret"}},
                          {"name": "config", "configMap": {"name": "hub-config"}}]}))
    hub = container_runner.wait_running(namespace, "hub", 90)
    assert container_runner.containers.started_from_image == {
        f"{namespace}/proxy": IMAGES["proxy"], f"{namespace}/hub": IMAGES["hub"]}
    url = f"http://{hub.ip}:8081/hub/health"
    wait_until(lambda: _answers(url), 120,
               f"{url} to answer\n{container_runner.logs()}")

    def ready(name: str) -> bool:
        pod = core.read_namespaced_pod(name, namespace)
        return any(c.type == "Ready" and c.status == "True"
                   for c in pod.status.conditions or [])

    wait_until(lambda: ready("hub"), 60, "the hub pod Ready (its readiness probe)")
    # The container's view: env from the Secret and ConfigMap, their volumes, its user, the
    # read-only root -- read with podman exec in the running container.
    from .containers import podman
    name = container_runner.containers.pods[
        core.read_namespaced_pod("hub", namespace).metadata.uid].container
    out = podman("exec", name, "sh", "-c",
                 'echo "$GREETING"; cat /etc/hub-secret/token; echo; '
                 'cat /etc/hub-config/greeting; echo; id -u; '
                 'touch /opt/x 2>/dev/null && echo writable || echo read-only; '
                 'grep proxy-api /etc/hosts').stdout.split("\n")
    assert out[:5] == ["hello-from-configmap", "s3cr3t-token", "hello-from-configmap",
                       "1000", "read-only"], out
    proxy_ip = core.read_namespaced_pod("proxy", namespace).status.pod_ip
    assert out[5].split()[0] == proxy_ip, out


def test_restarts_and_readiness_in_container_mode(
    cluster: TestCluster, namespace: str, gpu_nodes: Any, container_runner: PodRunner
) -> None:
    (node,) = gpu_nodes({"nodes": [{"name": "crash", "cpu": "8", "memory": "16Gi"}]})
    core = cluster.core
    core.create_namespaced_pod(namespace, _pod(
        "crash", node.name, IMAGES["hub"],
        command=["sh", "-c", "echo crashing $(cat /proc/sys/kernel/random/uuid); "
                 "echo to-stderr >&2; exit 3"]))
    core.create_namespaced_pod(namespace, _pod(
        "notready", node.name, IMAGES["hub"], command=["sleep", "3600"],
        readinessProbe={"tcpSocket": {"port": 9}, "periodSeconds": 1,
                        "failureThreshold": 1}))

    def status(name: str) -> Any:
        return core.read_namespaced_pod(name, namespace).status

    def restarts(name: str) -> int:
        return sum(c.restart_count or 0 for c in status(name).container_statuses or [])

    wait_until(lambda: restarts("crash") >= 2, 120,
               f"the crashing container restarted twice\n{container_runner.logs()}")
    assert "crashing" in container_runner.running(namespace, "crash").log_text()  # type: ignore
    # `kubectl logs` as an admin runs it: the API server asks the node's kubelet endpoint
    # (kwok's server), which reads the CRI log the runner wrote for this instance; --previous
    # is the instance before it, --timestamps shows the CRI times, -c names the container.
    # The pump reads stdout and stderr as they come: their order in the file may differ.
    seen: dict[str, list[str]] = {}

    def both_instances_logged() -> bool:
        for key, extra in (("current", ["-c", "main"]), ("previous", ["--previous"])):
            out = cluster.kubectl("logs", "-n", namespace, "crash", *extra, check=False)
            seen[key] = sorted(out.stdout.splitlines()) if out.returncode == 0 else [out.stderr]
        return all(len(lines) == 2 for lines in seen.values())

    try:
        wait_until(both_instances_logged, 60, "kubectl logs of both instances")
    except AssertionError as e:
        raise AssertionError(f"{e}: {seen}") from None
    for lines in seen.values():
        assert lines[0].startswith("crashing ") and lines[1] == "to-stderr", seen
    assert seen["current"][0] != seen["previous"][0], f"--previous is the current instance: {seen}"
    stamped = cluster.kubectl("logs", "-n", namespace, "crash", "--previous", "--timestamps",
                              "--tail=1").stdout
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z (to-stderr|crashing \S+)\n",
                        stamped), stamped
    # NotReady: the probe ran and failed (its status was written), and never turned Ready.
    wait_until(lambda: any(c.type == "Ready" and c.status == "False"
                           for c in status("notready").conditions or []), 60,
               "the pod with a failing readiness probe reported NotReady")
    running = container_runner.running(namespace, "notready")
    assert running is not None and running.process.poll() is None
    statuses = status("notready").container_statuses
    assert statuses and not statuses[0].ready
