"""A spawn through a real JupyterHub reaches a real single-user server on a kwok pod."""

from __future__ import annotations

import ipaddress
from typing import Any

from kubernetes.client.rest import ApiException

from aispike_hub.kube.slices import DEVICE_CLASS, uuid_selector

from .conftest import GpuNodes, RunningHub, TestCluster, new_username, wait_until
from .podrunner import PodRunner
from .sockets import children, non_loopback

POD_NETWORK = ipaddress.ip_network("127.1.0.0/16")


def user_pod(cluster: TestCluster, namespace: str, user: str) -> Any | None:
    pods = cluster.core.list_namespaced_pod(
        namespace, label_selector=f"hub.jupyter.org/username={user}"
    ).items
    return pods[0] if pods else None


def server_ready(hub: RunningHub, user: str) -> dict[str, Any] | None:
    model = hub.api("GET", f"/users/{user}").json()
    server = model.get("servers", {}).get("")
    return server if server and server.get("ready") else None


def test_spawn_reaches_a_real_singleuser_server(
    cluster: TestCluster, kube_hub: RunningHub, pod_runner: PodRunner, hub_namespace: str
) -> None:
    user = new_username()
    assert kube_hub.api("POST", f"/users/{user}").status_code == 201
    started = kube_hub.api("POST", f"/users/{user}/server")
    assert started.status_code in (201, 202), started.text
    try:
        wait_until(lambda: server_ready(kube_hub, user), 120, f"{user}'s server ready")
    except AssertionError:
        raise AssertionError(f"spawn failed; hub log:\n{kube_hub.log_text()[-6000:]}") from None

    pod = user_pod(cluster, hub_namespace, user)
    assert pod is not None and pod.status.phase == "Running"
    assert ipaddress.ip_address(pod.status.pod_ip) in POD_NETWORK
    process = pod_runner.wait_running(hub_namespace, pod.metadata.name)
    assert process.ip == pod.status.pod_ip
    assert process.env["JUPYTERHUB_USER"] == user
    assert process.env["JUPYTERHUB_API_TOKEN"], "the hub's token reached the server"

    # Through the proxy to the server, which authenticates the request with the hub.
    me = kube_hub.get(f"user/{user}/api/me")
    assert me.status_code == 200, me.text
    assert me.json()["identity"]["name"] == "tests"  # the service that asked, not the owner
    routes = kube_hub.api("GET", "/proxy").json()
    assert routes[f"/user/{user}/"]["target"] == f"http://{pod.status.pod_ip}:{process.port}"
    assert kube_hub.get(f"user/{user}/api/status").json()["started"]

    for pid in [kube_hub.process.pid, *children(kube_hub.process.pid), process.process.pid]:
        assert non_loopback(pid) == [], f"pid {pid} uses a non-loopback address"

    stopped = kube_hub.api("DELETE", f"/users/{user}/server")
    assert stopped.status_code in (202, 204), stopped.text
    wait_until(lambda: user_pod(cluster, hub_namespace, user) is None, 60, "pod deleted")
    wait_until(lambda: process.process.poll() is not None, 30, "server process stopped")
    assert kube_hub.get(f"user/{user}/api/status", allow_redirects=False).status_code != 200


def test_pod_runner_gives_allocated_gpu_to_the_process(
    cluster: TestCluster, namespace: str, gpu_nodes: GpuNodes, pod_runner: PodRunner
) -> None:
    """A notebook pod with a DRA claim gets the env a CDI spec of our driver would give it."""
    (node,) = gpu_nodes(
        {
            "nodes": [
                {
                    "name": "gpu",
                    "gpus": [{"model": "NVIDIA A100-SXM4-80GB", "memory": "80Gi", "count": 2}],
                }
            ]
        }
    )
    gpu = node.gpus[1]
    cluster.custom.create_namespaced_custom_object(
        "resource.k8s.io",
        "v1",
        namespace,
        "resourceclaims",
        {
            "metadata": {"name": "gpu"},
            "spec": {
                "devices": {
                    "requests": [
                        {
                            "name": "gpu",
                            "exactly": {
                                "deviceClassName": DEVICE_CLASS,
                                "selectors": [{"cel": {"expression": uuid_selector(gpu.uuid)}}],
                                "capacity": {"requests": {"memory": "12Gi"}},
                            },
                        }
                    ]
                }
            },
        },
    )
    script = "import os, time; time.sleep(300)"
    cluster.core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "notebook", "labels": {"component": "singleuser-server"}},
            "spec": {
                "resourceClaims": [{"name": "gpu", "resourceClaimName": "gpu"}],
                "containers": [
                    {
                        "name": "notebook",
                        "image": "registry.invalid/nb:1",
                        "command": ["python", "-c", script],
                        "env": [{"name": "GREETING", "value": "hi"}],
                        "resources": {"claims": [{"name": "gpu"}]},
                    }
                ],
            },
        },
    )
    process = pod_runner.wait_running(namespace, "notebook", 60)
    assert process.env["GREETING"] == "hi"
    assert process.env["NVIDIA_VISIBLE_DEVICES"] == gpu.uuid
    assert process.env["AISPIKE_GPU_MEMORY_LIMIT"] == str(12 * 1024)
    assert process.env["CUDA_DEVICE_MEMORY_LIMIT_0"] == f"{12 * 1024}m"
    assert process.process.poll() is None

    cluster.core.delete_namespaced_pod("notebook", namespace)
    wait_until(lambda: process.process.poll() is not None, 30, "process stopped with its pod")
    try:
        cluster.core.read_namespaced_pod("notebook", namespace)
    except ApiException as e:
        assert e.status == 404
