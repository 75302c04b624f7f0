"""The node agent publishing on the real control plane (issue 7, "Must show").

A bare kwok node (no GPUs, no ResourceSlice) gets its GPUs only from ``aispike-hub agent
--publish --once`` run against a recorded NVML machine: 4x A100 PCIe, two behind each PCIe switch,
here with an NVLink bridge joining the two GPUs of each switch (the common way such cards are
fitted), so the machine has two NVLink domains.  The test checks what the agent wrote (slice,
model label, datasets annotation), that a second run (a restarted agent) writes nothing, and that
a 2-GPU request placed by the placer and allocated by the real kube-scheduler gets two GPUs of one
NVLink domain: the other domain's pair is broken up by a small slice placed first, so a choice
that ignored the published topology could not pass.

The recorded GPU name gets a suffix unique to the run, so the placer's model filter can only pick
this node.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aispike_hub.kube.claims import claim_name
from aispike_hub.kube.inventory import Inventory
from aispike_hub.kube.placer import Placer
from aispike_hub.kube.slices import (
    DATASETS_ANNOTATION,
    DRIVER,
    GPU_MODEL_LABEL,
    datasets_annotation,
    label_value,
    resource_slice_name,
)
from aispike_hub.model import GIB_IN_MIB, SliceRequest

from . import dra_burst
from .conftest import REPO, GpuNodes, TestCluster, wait_until

FIXTURE = REPO / "tests" / "fixtures" / "nvml" / "a100-pcie-4gpu.json"
NVLINK_GPU = 0
"""nvmlDeviceGetNvLinkRemoteDeviceType: the link's far end is a GPU (a bridge)."""
BRIDGED = {0: 1, 1: 0, 2: 3, 3: 2}


def bridged_fixture(path: Path, model: str) -> list[dict[str, Any]]:
    """Write the A100 PCIe fixture with NVLink bridges (0-1, 2-3) and GPU name ``model``.

    Returns the fixture's devices (UUID, bus id) in index order.
    """
    machine = json.loads(FIXTURE.read_text())
    devices = machine["devices"]
    buses = [d["nvmlDeviceGetPciInfo"]["busId"] for d in devices]
    for i, dev in enumerate(devices):
        links = len(dev["nvmlDeviceGetNvLinkRemotePciInfo"])  # 12: three bridges of 4 links
        dev["nvmlDeviceGetName"] = model
        dev["nvmlDeviceGetNvLinkState"][:links] = [1] * links
        dev["nvmlDeviceGetNvLinkRemotePciInfo"] = [{"busId": buses[BRIDGED[i]]}] * links
        dev["nvmlDeviceGetNvLinkRemoteDeviceType"] = [NVLINK_GPU] * links
    machine["description"] += f"; NVLink bridges 0-1 and 2-3; renamed {model}"
    path.write_text(json.dumps(machine, indent=1))
    return list(devices)


def dataset_cache(root: Path) -> dict[str, tuple[int, str]]:
    """A small cache: a dataset directory with a manifest, a single-file dataset, a download in
    progress (not published).  Returns name -> (bytes, lastUse) as the annotation should say."""
    root.mkdir()
    (root / "imagenet-mini" / "train").mkdir(parents=True)
    (root / "imagenet-mini" / "train" / "part-0").write_bytes(b"x" * 3000)
    (root / "imagenet-mini" / ".aispike-dataset.json").write_text('{"last_used": 1700000000}')
    (root / "glue.tar").write_bytes(b"y" * 1234)
    (root / "wiki.partial").write_bytes(b"z" * 99)
    mtime = int((root / "glue.tar").stat().st_mtime)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(mtime))
    manifest = len((root / "imagenet-mini" / ".aispike-dataset.json").read_bytes())
    return {"imagenet-mini": (3000 + manifest, "2023-11-14T22:13:20Z"), "glue.tar": (1234, stamp)}


def run_agent(cluster: TestCluster, node: str, fixture: Path, cache: Path, procs: Path) -> Any:
    """``aispike-hub agent --publish --once`` for ``node``; returns (printed JSON, its log)."""
    proc = subprocess.run(
        [sys.executable, "-m", "aispike_hub.cli", "agent", "--publish", "--once",
         f"--node-name={node}", f"--nvml-fixture={fixture}", f"--kubeconfig={cluster.kubeconfig}",
         f"--dataset-cache-dir={cache}", f"--proc-root={procs}", "--metrics-port=0",
         "--log-level=INFO"],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )
    assert proc.returncode == 0, f"agent failed:\n{proc.stdout}\n{proc.stderr}"
    assert "publishing" not in proc.stderr, proc.stderr  # "publishing <node> failed: ..."
    return json.loads(proc.stdout), proc.stderr


@pytest.fixture
def placer(cluster: TestCluster) -> Iterator[Placer]:
    inventory = Inventory(cluster.api).start()
    yield Placer(inventory, unschedulable_seconds=5)
    inventory.stop()


def test_agent_publishes_the_node_and_a_two_gpu_request_lands_in_one_nvlink_domain(
    cluster: TestCluster, namespace: str, gpu_nodes: GpuNodes, placer: Placer, tmp_path: Path
) -> None:
    model = f"NVIDIA A100 80GB PCIe TEST-{secrets.token_hex(3)}"
    fixture = tmp_path / "a100-pcie-4gpu-nvlink.json"
    recorded = bridged_fixture(fixture, model)
    cache = tmp_path / "datasets"
    expected_datasets = dataset_cache(cache)
    procs = tmp_path / "proc"
    procs.mkdir()
    # A bare node: no GPUs, no slice, no model label; whatever GPUs it gets come from the agent.
    (node,) = gpu_nodes({"nodes": [{"name": "agent", "cpu": "32", "memory": "256Gi"}]})
    name = node.name
    slice_name = resource_slice_name(name)
    assert GPU_MODEL_LABEL not in (cluster.core.read_node(name).metadata.labels or {})

    printed, log = run_agent(cluster, name, fixture, cache, procs)
    assert f"ResourceSlice {slice_name}: create" in log and f"Node {name}: patched" in log, log

    # The ResourceSlice.
    live = placer.api.get("resourceslices", slice_name)
    spec = live["spec"]
    assert (spec["driver"], spec["nodeName"], spec["pool"]["name"]) == (DRIVER, name, name)
    assert spec["pool"]["generation"] == 1 and spec["pool"]["resourceSliceCount"] == 1
    owner = live["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"]) == ("Node", cluster.core.read_node(name).metadata.uid)
    devices = {d["name"]: d for d in spec["devices"]}
    assert sorted(devices) == ["gpu-0", "gpu-1", "gpu-2", "gpu-3"]
    attrs = {n: {k: next(iter(v.values())) for k, v in d["attributes"].items()}
             for n, d in devices.items()}
    for i, rec in enumerate(recorded):
        a = attrs[f"gpu-{i}"]
        assert a["uuid"] == rec["nvmlDeviceGetUUID"] and a["model"] == model and a["index"] == i
        assert devices[f"gpu-{i}"]["capacity"]["memory"]["value"] == "80Gi"
        assert devices[f"gpu-{i}"]["allowMultipleAllocations"] is True
    domains = [attrs[f"gpu-{i}"]["nvlinkDomain"] for i in range(4)]
    switches = [attrs[f"gpu-{i}"]["pcieSwitch"] for i in range(4)]
    assert domains == ["nvlink-0", "nvlink-0", "nvlink-2", "nvlink-2"], domains
    assert switches == ["pcie-0", "pcie-0", "pcie-2", "pcie-2"], switches
    assert printed["resourceSlice"]["spec"]["devices"] == spec["devices"]

    # The Node's label and annotation.
    meta = cluster.core.read_node(name).metadata
    assert meta.labels[GPU_MODEL_LABEL] == label_value(model)
    assert meta.annotations[DATASETS_ANNOTATION] == datasets_annotation(
        {n: b for n, (b, _) in expected_datasets.items()},
        {n: t for n, (_, t) in expected_datasets.items()},
    )
    published = json.loads(meta.annotations[DATASETS_ANNOTATION])
    assert [d["name"] for d in published] == ["glue.tar", "imagenet-mini"]

    # A restarted agent finds everything current and writes nothing.
    _, log = run_agent(cluster, name, fixture, cache, procs)
    assert "ResourceSlice" not in log and "patched" not in log, log
    again = placer.api.get("resourceslices", slice_name)
    assert again["metadata"]["resourceVersion"] == live["metadata"]["resourceVersion"]
    meta = cluster.core.read_node(name).metadata
    assert meta.labels[GPU_MODEL_LABEL] == label_value(model)
    assert json.loads(meta.annotations[DATASETS_ANNOTATION]) == published

    # Placement through what the agent published.
    def inventory_sees_the_gpus() -> bool:
        with placer.inventory.lock:
            state = placer.inventory.state()
            return bool(state is not None and name in state.node_index
                        and int(state.gpu_count[state.node_index[name]]) == 4)

    wait_until(inventory_sees_the_gpus, 30, "the inventory to see the agent's GPUs")
    models = frozenset({model})
    small = SliceRequest(gpu_memory_mib=8 * GIB_IN_MIB, allowed_models=models)
    placer.start_server(namespace, "small", small,
                        dra_burst.pod_manifest(small, gpu_nodes.selector), timeout=60)
    (taken,) = placer.api.get("resourceclaims", claim_name("small"), namespace)["status"][
        "allocation"]["devices"]["results"]
    pair = SliceRequest(gpu_count=2, allowed_models=models, cpu_milli=1000)
    result = placer.start_server(namespace, "pair", pair,
                                 dra_burst.pod_manifest(pair, gpu_nodes.selector), timeout=60)
    claim = placer.api.get("resourceclaims", claim_name("pair"), namespace)
    assert claim["spec"]["devices"]["constraints"] == [
        {"requests": ["gpu"], "matchAttribute": f"{DRIVER}/nvlinkDomain"}
    ]
    results = claim["status"]["allocation"]["devices"]["results"]
    assert {(r["driver"], r["pool"]) for r in results} == {(DRIVER, name)}
    got = sorted(r["device"] for r in results)
    assert len(got) == 2 and taken["device"] not in got, (got, taken)
    assert len({attrs[d]["nvlinkDomain"] for d in got}) == 1, got
    # The small slice broke up one domain's pair: the pair is the other domain, both GPUs whole.
    assert {attrs[d]["nvlinkDomain"] for d in got} != {attrs[taken["device"]]["nvlinkDomain"]}
    assert result.pod is not None and result.pod.node == name
    assert result.pin.placement is not None and result.pin.placement.whole
