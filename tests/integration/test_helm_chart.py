"""The aispike-hub chart on the real test control plane: `helm install --wait` with kwok GPU nodes
brings every Deployment to ready and every DaemonSet pod onto the nodes it belongs on (agent: GPU
nodes only; pre-pullers: per image, GPU images only on their GPU models); `helm upgrade` with a
changed quota rolls the service; `helm uninstall` leaves no object of the release behind,
cluster-scoped ones included.

kwok runs no containers: readiness comes from kwok's simulated pod lifecycle, so this proves the
manifests (API validation, RBAC objects, scheduling, affinity, rollout), not the processes. The
processes' config is checked by tests/unit/helm (loaded as JupyterHub and the service load it)."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from kubernetes.client.rest import ApiException

from aispike_hub.kube.slices import DEVICE_CLASS, GPU_MODEL_LABEL, device_class

from .conftest import REPO, TEST_GROUP_LABEL, GpuNodes, TestCluster, wait_until

CHART = REPO / "helm" / "aispike-hub"
A100 = "NVIDIA A100-SXM4-80GB"

# Cluster-scoped kinds the chart creates, with how to list them (all carry the release label).
CLUSTER_KINDS = {
    "clusterroles": "rbac.authorization.k8s.io",
    "clusterrolebindings": "rbac.authorization.k8s.io",
    "priorityclasses": "scheduling.k8s.io",
    "deviceclasses": "resource.k8s.io",
}
NAMESPACED_KINDS = [
    "deployments", "daemonsets", "replicasets", "pods", "services", "configmaps", "secrets",
    "serviceaccounts", "roles", "rolebindings", "networkpolicies", "poddisruptionbudgets",
    "persistentvolumeclaims",
]


def values(release: str, quota_gib: int, group: str) -> dict[str, Any]:
    """Values for kwok: no PVCs (nothing binds volumes here), no LoadBalancer (`--wait` waits for
    an external IP no controller gives here), tiers with per-release PriorityClass names, and the
    agent and pre-pullers kept to this test's nodes (the shared cluster holds other tests' nodes,
    hundreds after the burst and panel tests, whose DaemonSet pods kwok would have to start)."""
    return {
        "prePuller": {"nodeSelector": {TEST_GROUP_LABEL: group}},
        "hub": {"db": {"type": "sqlite-memory"}},
        "proxy": {"service": {"type": "NodePort"}},
        "singleuser": {
            "images": [
                {"name": "pytorch", "image": "quay.io/jupyter/pytorch-notebook:cuda12-2026-01-05",
                 "gpu": True, "gpuModels": [A100]},
                {"name": "minimal", "image": "quay.io/jupyter/minimal-notebook:2026-01-05"},
            ],
        },
        "aispike": {
            "agent": {"gpuNodeSelectorTerms": [{"matchExpressions": [
                {"key": GPU_MODEL_LABEL, "operator": "Exists"},
                {"key": TEST_GROUP_LABEL, "operator": "In", "values": [group]},
            ]}]},
            "service": {
                "persistence": {"enabled": False},
                "policy": {
                    "defaults": {"quota": {"servers": 2, "gpu_memory": f"{quota_gib}Gi"}},
                    "tiers": [
                        {"name": "low", "priority": 0, "preempts": False,
                         "priority_class": f"{release}-low"},
                        {"name": "normal", "priority": 100, "priority_class": f"{release}-normal"},
                    ],
                    "default_tier": "normal",
                },
            },
        },
    }


def release_objects(cluster: TestCluster, namespace: str, release: str) -> list[str]:
    selector = f"app.kubernetes.io/instance={release}"
    found = []
    for kind in NAMESPACED_KINDS:
        out = cluster.kubectl("get", kind, "-n", namespace, "-l", selector, "-o", "name").stdout
        found += out.split()
    for kind, group in CLUSTER_KINDS.items():
        out = cluster.kubectl("get", f"{kind}.{group}", "-l", selector, "-o", "name").stdout
        found += out.split()
    return found


def adopt_device_class(cluster: TestCluster, namespace: str, release: str) -> None:
    """The test cluster made gpu.aispike.io at start; hand it to the release as Helm adopts."""
    patch = {"metadata": {
        "labels": {"app.kubernetes.io/managed-by": "Helm"},
        "annotations": {"meta.helm.sh/release-name": release,
                        "meta.helm.sh/release-namespace": namespace}}}
    try:
        cluster.custom.patch_cluster_custom_object(
            "resource.k8s.io", "v1", "deviceclasses", DEVICE_CLASS, patch)
    except ApiException as e:
        if e.status != 404:  # absent: the release simply creates it
            raise


def restore_device_class(cluster: TestCluster) -> None:
    try:
        cluster.custom.create_cluster_custom_object(
            "resource.k8s.io", "v1", "deviceclasses", device_class())
    except ApiException as e:
        if e.status != 409:
            raise


def pods_by_node(cluster: TestCluster, namespace: str, selector: str) -> dict[str, str]:
    pods = cluster.core.list_namespaced_pod(namespace, label_selector=selector).items
    return {p.metadata.name: p.spec.node_name for p in pods}


def test_helm_install_upgrade_uninstall_on_kwok_gpu_nodes(
    cluster: TestCluster, namespace: str, gpu_nodes: GpuNodes, tmp_path: Path
) -> None:
    a100, h100, cpu = gpu_nodes({"nodes": [
        {"name": "a100", "cpu": "32", "memory": "128Gi",
         "gpus": [{"model": A100, "memory": "80Gi", "count": 2}]},
        {"name": "h100", "cpu": "32", "memory": "128Gi",
         "gpus": [{"model": "NVIDIA H100 80GB HBM3", "memory": "80Gi", "count": 2}]},
        {"name": "cpu", "cpu": "16", "memory": "64Gi"},
    ]})
    release = f"hub{secrets.token_hex(2)}"
    values_file = tmp_path / "values.json"
    values_file.write_text(json.dumps(values(release, 16, gpu_nodes.group)))
    helm_args = [str(CHART), "--namespace", namespace, "--values", str(values_file),
                 "--wait", "--timeout", "180s"]
    adopt_device_class(cluster, namespace, release)
    try:
        cluster.helm("install", release, *helm_args, timeout=240)

        # Every Deployment ready.
        deployments = cluster.apps.list_namespaced_deployment(namespace).items
        assert {d.metadata.name for d in deployments} == {
            f"{release}-aispike-hub-{c}" for c in ("hub", "proxy", "service")}
        for d in deployments:
            assert d.status.ready_replicas == d.spec.replicas == 1, d.metadata.name

        # Every DaemonSet pod scheduled and ready, each on the nodes it belongs on.
        nodes = {n.metadata.name: n.metadata.labels or {} for n in cluster.core.list_node().items}
        for ds in cluster.apps.list_namespaced_daemon_set(namespace).items:
            s = ds.status
            assert s.desired_number_scheduled == s.number_ready > 0, ds.metadata.name
            assert not s.number_misscheduled, ds.metadata.name
        base = f"app.kubernetes.io/instance={release}"
        agent = pods_by_node(cluster, namespace, f"{base},app.kubernetes.io/component=agent")
        on = set(agent.values())
        assert {a100.name, h100.name} <= on and cpu.name not in on
        assert all(GPU_MODEL_LABEL in nodes[n] for n in on), on
        pytorch = set(pods_by_node(cluster, namespace, f"{base},aispike.io/image=pytorch").values())
        assert a100.name in pytorch and h100.name not in pytorch and cpu.name not in pytorch
        assert {nodes[n][GPU_MODEL_LABEL] for n in pytorch} == {"NVIDIA-A100-SXM4-80GB"}
        minimal = set(pods_by_node(cluster, namespace, f"{base},aispike.io/image=minimal").values())
        assert {a100.name, h100.name, cpu.name} <= minimal

        # Cluster-wide objects: the DeviceClass and one PriorityClass per tier.
        assert cluster.scheduling.read_priority_class(f"{release}-normal").value == 100
        low = cluster.scheduling.read_priority_class(f"{release}-low")
        assert (low.value, low.preemption_policy) == (0, "Never")
        dc = cluster.custom.get_cluster_custom_object(
            "resource.k8s.io", "v1", "deviceclasses", DEVICE_CLASS)
        assert dc["metadata"]["labels"]["app.kubernetes.io/instance"] == release

        # Upgrade with a changed quota: new service config, the service rolled, still ready.
        service_name = f"{release}-aispike-hub-service"
        before = cluster.apps.read_namespaced_deployment(service_name, namespace)
        values_file.write_text(json.dumps(values(release, 40, gpu_nodes.group)))
        cluster.helm("upgrade", release, *helm_args, timeout=240)
        cm = cluster.core.read_namespaced_config_map(service_name, namespace)
        config = json.loads(cm.data["aispike_service_config.json"])
        assert config["AISpikeService"]["policy"]["defaults"]["quota"]["gpu_memory"] == "40Gi"
        after = cluster.apps.read_namespaced_deployment(service_name, namespace)
        assert after.metadata.generation > before.metadata.generation
        assert (after.spec.template.metadata.annotations["checksum/config"]
                != before.spec.template.metadata.annotations["checksum/config"])
        wait_until(lambda: (d := cluster.apps.read_namespaced_deployment(service_name, namespace))
                   .status.updated_replicas == 1 and d.status.ready_replicas == 1
                   and d.status.observed_generation == d.metadata.generation,
                   60, "service rolled out")
        # The Secret's generated tokens survive the upgrade (looked up, not regenerated).
        secret = cluster.core.read_namespaced_secret(f"{release}-aispike-hub-secret", namespace)
        assert len(secret.data["serviceToken"]) > 40

        # Uninstall: nothing of the release is left, cluster-scoped objects included.
        cluster.helm("uninstall", release, "--namespace", namespace, "--wait",
                     "--timeout", "120s", timeout=180)
        wait_until(lambda: not release_objects(cluster, namespace, release), 60,
                   "every object of the release gone")
    finally:
        if release in cluster.helm("list", "-n", namespace, "--short", check=False).stdout:
            cluster.helm("uninstall", release, "--namespace", namespace, "--wait", check=False)
        restore_device_class(cluster)
