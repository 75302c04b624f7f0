"""Smoke tests that prove the test stack is a real cluster: real scheduling, admission,
preemption, DRA consumable capacity and Helm, all on loopback."""

from __future__ import annotations

import ipaddress
import json
import secrets
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from aispike_hub.kube.slices import DEVICE_CLASS, DRIVER, resource_slice_name, uuid_selector

from .conftest import REPO, GpuNodes, TestCluster, stack_paths, unavailable, wait_until
from .sockets import non_loopback

POD_NETWORK = ipaddress.ip_network("127.1.0.0/16")
CHART = REPO / "tests" / "fixtures" / "charts" / "tiny"


def pod(
    name: str, *, cpu: str = "100m", node_selector: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    """A pod manifest; kwok never pulls the image, so any name will do."""
    container: dict[str, Any] = {
        "name": "main",
        "image": "registry.invalid/smoke:1",
        "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}},
    }
    if "claims" in spec:
        container["resources"]["claims"] = [{"name": c} for c in spec.pop("claims")]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [container], "nodeSelector": node_selector or {}, **spec},
    }


def read_pod(cluster: TestCluster, namespace: str, name: str) -> Any | None:
    try:
        return cluster.core.read_namespaced_pod(name, namespace)
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def running(cluster: TestCluster, namespace: str, name: str) -> Any | None:
    p = read_pod(cluster, namespace, name)
    return p if p is not None and p.status.phase == "Running" and p.status.pod_ip else None


# --- the control plane itself ------------------------------------------------------------------


def test_control_plane_reports_pinned_version_and_gpu_nodes(cluster: TestCluster) -> None:
    assert cluster.kubernetes_version == stack_paths()["kubernetes_version"]
    nodes = {
        n["metadata"]["name"]: n
        for n in json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    }
    a100 = nodes["kwok-a100-0"]
    assert a100["status"]["allocatable"]["nvidia.com/gpu"] == "4"
    assert a100["metadata"]["labels"]["aispike.io/gpu-model"] == "NVIDIA-A100-SXM4-80GB"
    assert json.loads(a100["metadata"]["annotations"]["aispike.io/datasets"]) == [
        {"name": "imagenet-1k", "bytes": 150000000000}
    ]
    assert a100["status"]["images"][0]["names"] == [
        "quay.io/jupyter/pytorch-notebook:cuda12-2026-01-05"
    ]
    assert {"type": "InternalIP", "address": "127.0.0.1"} in a100["status"]["addresses"]
    assert any(c["type"] == "Ready" and c["status"] == "True" for c in a100["status"]["conditions"])
    assert "nvidia.com/gpu" not in nodes["kwok-h100-0"]["status"]["allocatable"]

    slices = cluster.custom.list_cluster_custom_object("resource.k8s.io", "v1", "resourceslices")
    by_name = {s["metadata"]["name"]: s for s in slices["items"]}
    a100_slice = by_name[resource_slice_name("kwok-a100-0")]["spec"]
    assert a100_slice["driver"] == DRIVER
    assert [d["name"] for d in a100_slice["devices"]] == ["gpu-0", "gpu-1", "gpu-2", "gpu-3"]
    device = a100_slice["devices"][2]
    assert device["allowMultipleAllocations"] is True
    assert device["attributes"]["nvlinkDomain"] == {"string": "nvl1"}
    assert device["capacity"]["memory"]["value"] == "80Gi"
    # 81559 MiB is not whole GiB: the API server accepted a policy capped at the whole 79 GiB.
    h100 = by_name[resource_slice_name("kwok-h100-0")]["spec"]["devices"][0]["capacity"]
    assert h100["memory"]["value"] == "81559Mi"
    assert h100["memory"]["requestPolicy"]["validRange"]["max"] == "79Gi"
    cluster.custom.get_cluster_custom_object("resource.k8s.io", "v1", "deviceclasses", DEVICE_CLASS)


def test_control_plane_processes_use_loopback_only(cluster: TestCluster) -> None:
    processes = cluster.processes()
    if not processes:
        unavailable("reused a cluster whose processes this session cannot see")
    names = {p["name"] for p in processes}
    assert names == {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"}
    for p in processes:
        assert non_loopback(p["pid"]) == [], f"{p['name']} uses a non-loopback address"


# --- scheduling, admission, preemption --------------------------------------------------------


def test_deployment_pods_are_scheduled_to_kwok_nodes_with_loopback_ips(
    cluster: TestCluster, namespace: str, gpu_nodes: GpuNodes
) -> None:
    nodes = gpu_nodes({"nodes": [{"name": "cpu-{i}", "count": 2, "cpu": "4", "memory": "8Gi"}]})
    node_names = {n.name for n in nodes}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": pod("x", node_selector=gpu_nodes.selector)["spec"],
            },
        },
    }
    cluster.apps.create_namespaced_deployment(namespace, deployment)
    wait_until(
        lambda: (
            cluster.apps.read_namespaced_deployment("web", namespace).status.available_replicas or 0
        )
        == 3,
        90,
        "3 available replicas",
    )

    pods = cluster.core.list_namespaced_pod(namespace, label_selector="app=web").items
    assert len(pods) == 3
    ips = set()
    for p in pods:
        assert p.spec.node_name in node_names
        assert p.status.phase == "Running"
        ip = ipaddress.ip_address(p.status.pod_ip)
        assert ip in POD_NETWORK, f"{p.metadata.name} got {ip}, outside {POD_NETWORK}"
        ips.add(ip)
        scheduled = [
            e for e in cluster.events(namespace, p.metadata.name) if e.reason == "Scheduled"
        ]
        assert scheduled, f"no Scheduled event for {p.metadata.name}"
        assert p.spec.node_name in scheduled[0].message
    assert len(ips) == 3, "pod IPs must be unique"


def test_resource_quota_rejects_an_over_quota_pod(cluster: TestCluster, namespace: str) -> None:
    quota = {"metadata": {"name": "small"}, "spec": {"hard": {"requests.cpu": "1", "pods": "5"}}}
    cluster.core.create_namespaced_resource_quota(namespace, quota)
    # Admission needs the quota's status, which kube-controller-manager computes.
    wait_until(
        lambda: cluster.core.read_namespaced_resource_quota("small", namespace).status.hard,
        30,
        "quota status",
    )

    cluster.core.create_namespaced_pod(namespace, pod("fits", cpu="600m"))
    with pytest.raises(ApiException) as refused:
        cluster.core.create_namespaced_pod(namespace, pod("too-much", cpu="600m"))
    assert refused.value.status == 403
    assert "exceeded quota: small" in refused.value.body
    assert read_pod(cluster, namespace, "too-much") is None
    wait_until(
        lambda: cluster.core.read_namespaced_resource_quota("small", namespace).status.used.get(
            "requests.cpu"
        )
        == "600m",
        30,
        "quota usage 600m",
    )


def test_priority_class_preempts_lower_priority_pod(
    cluster: TestCluster, namespace: str, gpu_nodes: GpuNodes
) -> None:
    (node,) = gpu_nodes({"nodes": [{"name": "small", "cpu": "2", "memory": "8Gi"}]})
    low, high = f"{namespace}-low", f"{namespace}-high"
    for name, value in ((low, 100), (high, 100000)):
        cluster.scheduling.create_priority_class(
            {"metadata": {"name": name}, "value": value, "preemptionPolicy": "PreemptLowerPriority"}
        )
    try:
        cluster.core.create_namespaced_pod(
            namespace,
            pod("victim", cpu="1500m", node_selector=gpu_nodes.selector, priorityClassName=low),
        )
        wait_until(lambda: running(cluster, namespace, "victim"), 60, "victim Running")

        cluster.core.create_namespaced_pod(
            namespace,
            pod("important", cpu="1500m", node_selector=gpu_nodes.selector, priorityClassName=high),
        )
        winner = wait_until(
            lambda: running(cluster, namespace, "important"), 90, "important Running"
        )
        assert winner.spec.node_name == node.name
        wait_until(lambda: read_pod(cluster, namespace, "victim") is None, 60, "victim deleted")
        reasons = [e.reason for e in cluster.events(namespace, "victim")]
        assert "Preempted" in reasons, reasons
    finally:
        for name in (low, high):
            cluster.scheduling.delete_priority_class(name)


# --- DRA: GPU memory as consumable capacity ---------------------------------------------------


def pinned_claim(name: str, gpu_uuid: str, memory: str) -> dict[str, Any]:
    """A claim for ``memory`` of the GPU with ``gpu_uuid`` (the shape placement will create)."""
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name},
        "spec": {
            "devices": {
                "requests": [
                    {
                        "name": "gpu",
                        "exactly": {
                            "deviceClassName": DEVICE_CLASS,
                            "allocationMode": "ExactCount",
                            "count": 1,
                            "selectors": [{"cel": {"expression": uuid_selector(gpu_uuid)}}],
                            "capacity": {"requests": {"memory": memory}},
                        },
                    }
                ]
            }
        },
    }


def claim(cluster: TestCluster, namespace: str, name: str) -> dict[str, Any]:
    return dict(
        cluster.custom.get_namespaced_custom_object(
            "resource.k8s.io", "v1", namespace, "resourceclaims", name
        )
    )


def allocation(cluster: TestCluster, namespace: str, name: str) -> dict[str, Any] | None:
    results = (
        (claim(cluster, namespace, name).get("status", {}).get("allocation") or {})
        .get("devices", {})
        .get("results")
    )
    return results[0] if results else None


def test_two_claims_share_a_gpu_by_memory_and_a_third_waits(
    cluster: TestCluster, namespace: str, gpu_nodes: GpuNodes
) -> None:
    (node,) = gpu_nodes(
        {
            "nodes": [
                {
                    "name": "one-gpu",
                    "cpu": "16",
                    "memory": "64Gi",
                    "gpus": [{"model": "NVIDIA A100-SXM4-80GB", "memory": "80Gi"}],
                }
            ]
        }
    )
    gpu = node.gpus[0]
    sizes = {"a": "40Gi", "b": "30Gi", "c": "11Gi"}  # 40 + 30 + 11 > 80
    for key, size in sizes.items():
        cluster.custom.create_namespaced_custom_object(
            "resource.k8s.io",
            "v1",
            namespace,
            "resourceclaims",
            pinned_claim(f"claim-{key}", gpu.uuid, size),
        )
    for key in ("a", "b"):
        cluster.core.create_namespaced_pod(
            namespace,
            pod(
                f"nb-{key}",
                claims=["gpu"],
                resourceClaims=[{"name": "gpu", "resourceClaimName": f"claim-{key}"}],
            ),
        )
        wait_until(lambda k=key: running(cluster, namespace, f"nb-{k}"), 60, f"nb-{key} Running")

    a, b = allocation(cluster, namespace, "claim-a"), allocation(cluster, namespace, "claim-b")
    assert a and b
    assert (a["pool"], a["device"]) == (b["pool"], b["device"]) == (node.name, "gpu-0")
    assert a["consumedCapacity"] == {"memory": "40Gi"}
    assert b["consumedCapacity"] == {"memory": "30Gi"}
    assert a["shareID"] != b["shareID"]
    assert read_pod(cluster, namespace, "nb-a").spec.node_name == node.name

    cluster.core.create_namespaced_pod(
        namespace,
        pod(
            "nb-c", claims=["gpu"], resourceClaims=[{"name": "gpu", "resourceClaimName": "claim-c"}]
        ),
    )
    failed = wait_until(
        lambda: [e for e in cluster.events(namespace, "nb-c") if e.reason == "FailedScheduling"],
        60,
        "FailedScheduling",
    )
    assert "cannot allocate all claims" in failed[-1].message, failed[-1].message
    assert read_pod(cluster, namespace, "nb-c").status.phase == "Pending"
    assert allocation(cluster, namespace, "claim-c") is None

    # Freeing 40 GiB lets the third in: the scheduler really counted memory, not devices.
    cluster.core.delete_namespaced_pod("nb-a", namespace)
    wait_until(lambda: running(cluster, namespace, "nb-c"), 90, "nb-c Running after nb-a left")
    c = allocation(cluster, namespace, "claim-c")
    assert c and c["device"] == "gpu-0" and c["consumedCapacity"] == {"memory": "11Gi"}


# --- Helm -----------------------------------------------------------------------------------------


def test_helm_installs_and_uninstalls_a_chart(
    cluster: TestCluster, namespace: str, gpu_nodes: GpuNodes, tmp_path: Path
) -> None:
    gpu_nodes({"nodes": [{"name": "helm", "cpu": "4", "memory": "8Gi"}]})
    values = tmp_path / "values.yaml"
    values.write_text(json.dumps({"nodeSelector": gpu_nodes.selector}))
    release = f"tiny-{secrets.token_hex(2)}"
    cluster.helm(
        "install",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--values",
        str(values),
        "--wait",
        "--timeout",
        "120s",
    )

    config = cluster.core.read_namespaced_config_map(f"{release}-config", namespace)
    assert config.data["kubeVersion"] == cluster.kubernetes_version
    web = cluster.apps.read_namespaced_deployment(f"{release}-web", namespace)
    assert web.status.available_replicas == 2
    assert release in cluster.helm("list", "--namespace", namespace, "--short").stdout

    cluster.helm("uninstall", release, "--namespace", namespace, "--wait", "--timeout", "120s")
    with pytest.raises(ApiException) as gone:
        cluster.core.read_namespaced_config_map(f"{release}-config", namespace)
    assert gone.value.status == 404
    wait_until(
        lambda: not cluster.core.list_namespaced_pod(
            namespace, label_selector=f"app.kubernetes.io/instance={release}"
        ).items,
        60,
        "chart pods gone",
    )
