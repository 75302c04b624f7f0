"""A GPU model chosen on a cluster whose nodes carry NVIDIA GPU feature discovery's labels only.

No ``aispike.io/gpu-model`` on the node (our agent is not there), only ``nvidia.com/gpu.product``
and ``nvidia.com/gpu.memory``, as GPU feature discovery writes them.  A server started through
a real hub (``spawner_class = "aispike"``, the ``nvidia`` backend, in-process admission) with
that model chosen must get a node affinity on the label the node carries and be scheduled there
by the real kube-scheduler (issue 21; an affinity on our label alone leaves it unschedulable).
"""

from __future__ import annotations

import json
import secrets
import textwrap
from collections.abc import Callable
from typing import Any

from aispike_hub.contract import GFD_MEMORY_LABEL, GFD_MODEL_LABEL, GPU_MODEL_LABEL
from aispike_hub.kube.slices import label_value

from .conftest import GpuNodes, RunningHub, TestCluster
from .hubstack import ServiceHub
from .podrunner import PodRunner

MODEL = "NVIDIA H100 80GB HBM3"
IMAGE = "quay.io/jupyter/base-notebook:2026-01-05"


def test_a_chosen_model_lands_on_a_node_with_only_gfd_labels(
        cluster: TestCluster, hub_factory: Callable[..., RunningHub], hub_namespace: str,
        pod_runner: PodRunner) -> None:
    nodes = GpuNodes(cluster, f"g{secrets.token_hex(3)}")
    (node,) = nodes({"nodes": [{"name": "gfd", "cpu": "32", "memory": "256Gi",
                                "nvidiaGpu": True,
                                "gpus": [{"model": MODEL, "memory": "80Gi", "count": 2}]}]})
    try:
        cluster.kubectl("label", "node", node.name, "--overwrite", f"{GPU_MODEL_LABEL}-",
                        f"{GFD_MODEL_LABEL}={label_value(MODEL)}", f"{GFD_MEMORY_LABEL}=81920")
        labels = cluster.core.read_node(node.name).metadata.labels
        assert GPU_MODEL_LABEL not in labels and labels[GFD_MODEL_LABEL] == label_value(MODEL)
        hub = hub_factory("aispike-gfd", textwrap.dedent(f"""
            c.JupyterHub.spawner_class = "aispike"
            c.AISpikeSpawner.namespace = {hub_namespace!r}
            c.AISpikeSpawner.backend = "nvidia"
            c.AISpikeSpawner.node_selector = {nodes.selector!r}
            c.AISpikeSpawner.images = [{{"name": "base", "image": {IMAGE!r}}}]
            c.AISpikeSpawner.cmd = ["jupyterhub-singleuser"]
            c.AISpikeSpawner.start_timeout = 120
            c.AISpikeSpawner.http_timeout = 60
            c.AISpikeSpawner.unschedulable_timeout = 10
            """))
        stack = ServiceHub(hub, "")
        user = stack.user()
        r = stack.start(user, "", {"gpu_gib": 8, "gpu_model": label_value(MODEL), "cpu": 1,
                                   "memory_gib": 1})
        assert r.status_code in (201, 202), r.text
        stack.wait_ready(user)
        pod = cluster.core.read_namespaced_pod(f"jupyter-{user}", hub_namespace)
        assert pod.spec.node_name == node.name
        terms: list[Any] = pod.spec.affinity.node_affinity \
            .required_during_scheduling_ignored_during_execution.node_selector_terms
        matching = [t for t in terms if any(
            e.key == GFD_MODEL_LABEL and e.values == [label_value(MODEL)]
            for e in t.match_expressions)]
        assert matching, json.dumps(cluster.core.api_client.sanitize_for_serialization(terms))
        assert pod.spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"
        stack.stop(user, "", wait=True)
    finally:
        nodes.delete_all()
