"""The test cluster never asks the machine's DNS resolver for a node's name.

``kubectl logs`` of a pod on a kwok node makes kube-apiserver dial that node's kubelet. With
``--kubelet-preferred-address-types=InternalIP`` (scripts/test-cluster) it dials the node's
loopback InternalIP and the kubelet port kwok's server listens on, so the call is answered at once
by kwok on this machine, never after a lookup of the node's host name.
"""

from __future__ import annotations

import time
from typing import Any

from .conftest import TestCluster, wait_until


def test_logs_of_a_kwok_pod_dial_the_nodes_loopback_ip(
    cluster: TestCluster, namespace: str, gpu_nodes: Any
) -> None:
    (node,) = gpu_nodes({"nodes": [{"name": "dns", "cpu": "2", "memory": "4Gi"}]})
    addresses = {a.type: a.address
                 for a in cluster.core.read_node(node.name).status.addresses}
    assert addresses["InternalIP"].startswith("127."), addresses
    cluster.core.create_namespaced_pod(namespace, {
        "metadata": {"name": "logs"},
        "spec": {"nodeName": node.name,
                 "containers": [{"name": "c", "image": "busybox", "command": ["true"]}]},
    })
    wait_until(lambda: cluster.core.read_namespaced_pod("logs", namespace).status.phase
               in ("Running", "Succeeded"), 60, "the pod to run on the kwok node")
    started = time.monotonic()
    proc = cluster.kubectl("logs", "-n", namespace, "logs", check=False, timeout=60)
    took = time.monotonic() - started
    said = proc.stdout + proc.stderr
    assert took < 20, f"kubectl logs took {took:.1f} s: {said}"
    assert "lookup" not in said and "no such host" not in said, said
    # The node's kubelet endpoint is kwok's server on loopback: it answered, and has no log
    # for a pod no runner runs (the runner's pods get a Logs object: test_podrunner_containers).
    assert proc.returncode != 0 and 'no logs found for container "c"' in said, said
