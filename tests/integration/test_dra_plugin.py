"""The node agent's kubelet DRA plugin over real gRPC unix sockets, for claims the real
kube-scheduler allocated on the test cluster.

The kubelet is played by :class:`KubeletHarness` (registration, then prepare/unprepare, as the
kubelet's plugin watcher and DRA manager call them).  The plugin reads the claims and the node's
ResourceSlice from the real API server.  Checked: the registration answer, the CDI specs (env
per the Kubernetes contract, the hook mount, valid CDI names), the kubelet's device answers
(pool, device, request, shareID), idempotence, and that a plugin restart in between changes
nothing.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aispike_hub.agent.dra import CDI_KIND, KubeletPlugin, KubernetesClaimSource, read_prepared
from aispike_hub.kube.api import KubeJson
from aispike_hub.kube.claims import PinnedGpu, Placement, apply_pin_to_pod, pinned_claim
from aispike_hub.kube.slices import resource_slice_name
from aispike_hub.model import GIB_IN_MIB, Node, SliceRequest

from .conftest import GpuNodes, TestCluster, wait_until
from .kubelet_harness import KubeletHarness, device_dicts
from .podrunner import gpu_env

GIB = GIB_IN_MIB
CDI_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
CDI_KIND_RE = re.compile(r"^[a-z0-9.-]+/[a-zA-Z0-9_.-]+$")


def pod_for(server: str, placement: Placement, selector: dict[str, str]) -> dict[str, Any]:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": server},
        "spec": {
            "nodeSelector": dict(selector),
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "notebook", "image": "registry.invalid/notebook:1"}],
        },
    }
    return apply_pin_to_pod(pod, server, placement)


def start_server(
    api: KubeJson, namespace: str, server: str, placement: Placement, gpu_nodes: GpuNodes
) -> dict[str, Any]:
    """Pinned claim + pod; wait until kube-scheduler allocated the claim and bound the pod."""
    request = SliceRequest(
        gpu_memory_mib=0 if placement.whole else placement.gpus[0].memory_mib,
        gpu_count=len(placement.gpus),
    )
    claim = api.create("resourceclaims", pinned_claim(server, placement, request), namespace)
    api.create("pods", pod_for(server, placement, gpu_nodes.selector), namespace)

    def allocated() -> dict[str, Any] | None:
        c = api.get("resourceclaims", claim["metadata"]["name"], namespace)
        status = c.get("status") or {}
        return c if status.get("allocation") and status.get("reservedFor") else None

    result: dict[str, Any] = wait_until(allocated, 60, f"claim of {server} allocated")
    return result


def ref(claim: dict[str, Any]) -> tuple[str, str, str]:
    m = claim["metadata"]
    return (m["namespace"], m["name"], m["uid"])


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.glob("*")) if p.is_file()}


@pytest.fixture
def dirs(tmp_path: Path) -> Iterator[dict[str, Path]]:
    # Unix socket paths are limited to 107 bytes: keep the kubelet dirs short.
    base = Path("/tmp") / f"dra-{secrets.token_hex(4)}"
    out = {
        "plugins": base / "plugins",
        "registry": base / "plugins_registry",
        "cdi": tmp_path / "cdi",
        "state": tmp_path / "state",
    }
    yield out
    shutil.rmtree(base, ignore_errors=True)


def start_plugin(cluster: TestCluster, node: Node, dirs: dict[str, Path]) -> KubeletPlugin:
    plugin = KubeletPlugin(
        enabled=True,
        plugins_dir=str(dirs["plugins"]),
        registry_dir=str(dirs["registry"]),
        cdi_dir=str(dirs["cdi"]),
        state_dir=str(dirs["state"]),
    )
    plugin.start(node.name, KubernetesClaimSource(cluster.api))
    return plugin


def test_kubelet_registers_the_plugin_and_prepares_allocated_claims_across_a_restart(
    cluster: TestCluster, namespace: str, gpu_nodes: GpuNodes, dirs: dict[str, Path]
) -> None:
    model = f"TEST-dra-{secrets.token_hex(3)}"
    (node,) = gpu_nodes({"nodes": [{
        "name": "dra", "cpu": "32", "memory": "256Gi",
        "gpus": [{"model": model, "memory": "80Gi", "count": 2, "nvlinkDomain": "nvl0"},
                 {"model": model, "memory": "141Gi", "count": 1}],
    }]})
    api = KubeJson(cluster.api)
    g0, g1, g2 = node.gpus

    def pin(gpus: list[Any], whole: bool, mib: int = 0) -> Placement:
        return Placement(node=node.name, whole=whole, gpus=tuple(
            PinnedGpu(g.uuid, g.index, mib or g.memory_mib, g.nvlink_domain) for g in gpus))

    # Two slices sharing GPU 0 (12 and 20 GiB), one slice on the H200-sized GPU 2, and a claim
    # the scheduler never allocates (no pod uses it).
    small = start_server(api, namespace, "small", pin([g0], False, 12 * GIB), gpu_nodes)
    medium = start_server(api, namespace, "medium", pin([g0], False, 20 * GIB), gpu_nodes)
    big = start_server(api, namespace, "big", pin([g2], False, 100 * GIB), gpu_nodes)
    lonely = api.create("resourceclaims", pinned_claim(
        "lonely", pin([g1], False, 8 * GIB), SliceRequest(gpu_memory_mib=8 * GIB)), namespace)

    plugin = start_plugin(cluster, node, dirs)
    kubelet = KubeletHarness(dirs["registry"])
    try:
        registered = kubelet.register()
        assert registered.name == "gpu.aispike.io"
        assert registered.versions == ["v1.DRAPlugin"]
        assert registered.endpoint == str(dirs["plugins"] / "gpu.aispike.io" / "dra.sock")
        assert plugin.registration["event"].wait(5) and plugin.registration["registered"]

        results = kubelet.prepare(ref(small), ref(medium), ref(big))
        assert all(r.error == "" for r in results.values()), results
        slices = [api.get("resourceslices", resource_slice_name(node.name))]
        for claim in (small, medium, big):
            uid = claim["metadata"]["uid"]
            (alloc,) = claim["status"]["allocation"]["devices"]["results"]
            (device,) = device_dicts(results[uid])
            assert device == {
                "request_names": ["gpu"],
                "pool_name": node.name,
                "device_name": alloc["device"],
                "cdi_device_ids": [f"{CDI_KIND}={uid}"],
                "share_id": alloc["shareID"],
            }
            spec = json.loads((dirs["cdi"] / f"aispike.io-gpu_{uid}.json").read_text())
            assert spec["cdiVersion"] == "0.6.0" and CDI_KIND_RE.match(spec["kind"])
            (cdi_device,) = spec["devices"]
            assert CDI_NAME.match(cdi_device["name"]) and cdi_device["name"] == uid
            env = dict(e.split("=", 1) for e in cdi_device["containerEdits"]["env"])
            # The test stack's pod runner gives the same variables for the same allocation.
            assert gpu_env([alloc], slices).items() <= env.items()
            (mount,) = cdi_device["containerEdits"]["mounts"]
            assert mount["containerPath"] == "/usr/local/etc/ipython/ipython_kernel_config.py"
            assert Path(mount["hostPath"]).read_text().startswith('"""Kernel hook')
            assert env["AISPIKE_FRAMEWORK_LIMITS"] == "torch,tensorflow"
        env_of = {
            c["metadata"]["name"]: dict(e.split("=", 1) for e in json.loads(
                (dirs["cdi"] / f"aispike.io-gpu_{c['metadata']['uid']}.json").read_text()
            )["devices"][0]["containerEdits"]["env"])
            for c in (small, medium, big)
        }
        assert env_of["small-gpu"]["NVIDIA_VISIBLE_DEVICES"] == g0.uuid
        assert env_of["small-gpu"]["AISPIKE_GPU_MEMORY_LIMIT"] == str(12 * GIB)
        assert env_of["small-gpu"]["CUDA_DEVICE_MEMORY_LIMIT_0"] == f"{12 * GIB}m"
        assert env_of["small-gpu"]["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.150"
        assert env_of["medium-gpu"]["AISPIKE_GPU_MEMORY_LIMIT"] == str(20 * GIB)
        assert env_of["medium-gpu"]["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.250"
        assert env_of["big-gpu"]["NVIDIA_VISIBLE_DEVICES"] == g2.uuid
        assert env_of["big-gpu"]["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.709"  # 100/141

        # The claim nobody allocated: an error the kubelet shows, and no spec.
        (lonely_result,) = kubelet.prepare(ref(lonely)).values()
        assert "not allocated yet" in lonely_result.error
        assert not (dirs["cdi"] / f"aispike.io-gpu_{lonely['metadata']['uid']}.json").exists()
        # A claim replaced under the same name (the kubelet's UID is stale): refused.
        stale = (namespace, small["metadata"]["name"], "00000000-0000-0000-0000-000000000000")
        assert "was replaced" in kubelet.prepare(stale)[stale[2]].error

        # Prepare is idempotent: the same answer, the same files.
        before = snapshot(dirs["cdi"])
        again = kubelet.prepare(ref(small), ref(medium), ref(big))
        assert {u: device_dicts(r) for u, r in again.items()} == {
            u: device_dicts(r) for u, r in results.items()
        }
        assert snapshot(dirs["cdi"]) == before

        # Restart: a new plugin on the same directories registers again and answers the same.
        plugin.stop()
        plugin = start_plugin(cluster, node, dirs)
        kubelet = KubeletHarness(dirs["registry"])
        kubelet.register()
        assert snapshot(dirs["cdi"]) == before
        uids = {c["metadata"]["uid"] for c in (small, medium, big)}
        assert set(read_prepared(dirs["state"])) == uids
        after = kubelet.prepare(ref(small), ref(medium), ref(big))
        assert {u: device_dicts(r) for u, r in after.items()} == {
            u: device_dicts(r) for u, r in results.items()
        }
        assert snapshot(dirs["cdi"]) == before
        # A CDI spec lost meanwhile (tmpfs /var/run/cdi after a reboot) comes back on restart.
        (dirs["cdi"] / f"aispike.io-gpu_{small['metadata']['uid']}.json").unlink()
        plugin.stop()
        plugin = start_plugin(cluster, node, dirs)
        kubelet.register()
        assert snapshot(dirs["cdi"]) == before

        # Enforcement reads the slices of prepared claims by pod.
        pods = {p.metadata.name: p.metadata.uid
                for p in cluster.core.list_namespaced_pod(namespace).items}
        assert plugin.preparer.limits_by_pod()[pods["small"]] == {g0.uuid: 12 * GIB}

        # Unprepare removes spec and state; a second unprepare (kubelet retry) is no error.
        done = kubelet.unprepare(ref(small), ref(medium))
        assert all(r.error == "" for r in done.values())
        assert set(snapshot(dirs["cdi"])) == {f"aispike.io-gpu_{big['metadata']['uid']}.json"}
        assert all(r.error == "" for r in kubelet.unprepare(ref(small)).values())
        assert set(read_prepared(dirs["state"])) == {big["metadata"]["uid"]}
        # ... and survives a restart too.
        plugin.stop()
        plugin = start_plugin(cluster, node, dirs)
        kubelet.register()
        assert set(snapshot(dirs["cdi"])) == {f"aispike.io-gpu_{big['metadata']['uid']}.json"}
        kubelet.unprepare(ref(big))
        assert snapshot(dirs["cdi"]) == {}
    finally:
        plugin.stop()


def test_a_two_gpu_claim_gets_both_uuids_and_one_cdi_device(
    cluster: TestCluster, namespace: str, gpu_nodes: GpuNodes, dirs: dict[str, Path]
) -> None:
    model = f"TEST-dra2-{secrets.token_hex(3)}"
    (node,) = gpu_nodes({"nodes": [{
        "name": "pair", "cpu": "32", "memory": "256Gi",
        "gpus": [{"model": model, "memory": "80Gi", "count": 2, "nvlinkDomain": "nvl0"}],
    }]})
    api = KubeJson(cluster.api)
    placement = Placement(node=node.name, whole=True, gpus=tuple(
        PinnedGpu(g.uuid, g.index, g.memory_mib, g.nvlink_domain) for g in node.gpus))
    claim = start_server(api, namespace, "pair", placement, gpu_nodes)
    plugin = start_plugin(cluster, node, dirs)
    try:
        kubelet = KubeletHarness(dirs["registry"])
        kubelet.register()
        uid = claim["metadata"]["uid"]
        result = kubelet.prepare(ref(claim))[uid]
        assert result.error == ""
        devices = device_dicts(result)
        allocated = [r["device"] for r in claim["status"]["allocation"]["devices"]["results"]]
        assert [d["device_name"] for d in devices] == allocated
        # The claim's one CDI device (both GPUs in one NVIDIA_VISIBLE_DEVICES) is named once.
        assert [d["cdi_device_ids"] for d in devices] == [[f"{CDI_KIND}={uid}"], []]
        spec = json.loads((dirs["cdi"] / f"aispike.io-gpu_{uid}.json").read_text())
        env = dict(e.split("=", 1) for e in spec["devices"][0]["containerEdits"]["env"])
        by_device = {f"gpu-{g.index}": g.uuid for g in node.gpus}
        assert env["NVIDIA_VISIBLE_DEVICES"] == ",".join(by_device[d] for d in allocated)
        assert env["CUDA_DEVICE_MEMORY_LIMIT_0"] == env["CUDA_DEVICE_MEMORY_LIMIT_1"] == "81920m"
        assert env["AISPIKE_GPU_MEMORY_LIMITS"] == "81920,81920"
        assert env["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "1.000"
    finally:
        plugin.stop()
