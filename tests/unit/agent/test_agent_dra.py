"""The DRA plugin's pure parts (claim -> GPUs -> env -> CDI spec) and its committed gRPC stubs.

The plugin itself, over real sockets with claims the real kube-scheduler allocated, is tested in
tests/integration/test_dra_plugin.py.
"""

from __future__ import annotations

import filecmp
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from aispike_hub.agent.dra import (
    IsolationSettings,
    PrepareError,
    allocated_gpus,
    cdi_spec,
    isolation_env,
    node_devices,
    read_prepared,
    reserved_pods,
    response_devices,
    xla_fraction,
)
from aispike_hub.kube.slices import resource_slice
from aispike_hub.model import Gpu, Node

REPO = Path(__file__).resolve().parents[3]
GIB = 2**30


def node() -> Node:
    gpus = tuple(
        Gpu(index=i, model="NVIDIA H200", memory_mib=143771, uuid=f"GPU-{i:08d}")
        for i in range(2)
    )
    return Node(name="gpu-node-1", gpus=gpus, cpu_milli=64000, memory_mib=512 * 1024)


def claim(results: list[dict[str, Any]], allocated: bool = True) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if allocated:
        status = {
            "allocation": {"devices": {"results": results}},
            "reservedFor": [{"resource": "pods", "name": "jupyter-a", "uid": "pod-uid-1"}],
        }
    return {"metadata": {"namespace": "hub", "name": "jupyter-a-gpu", "uid": "u-1"},
            "status": status}


def result(device: str, memory: str | None = "12Gi", driver: str = "gpu.aispike.io",
           share: str = "s-1") -> dict[str, Any]:
    r: dict[str, Any] = {"request": "gpu", "driver": driver, "pool": "gpu-node-1",
                         "device": device, "shareID": share}
    if memory:
        r["consumedCapacity"] = {"memory": memory}
    return r


def devices() -> Any:
    return node_devices([resource_slice("gpu-node-1", node().gpus)], "gpu-node-1")


def test_node_devices_come_from_our_slice_of_this_node() -> None:
    table = devices()
    assert set(table) == {("gpu-node-1", "gpu-0"), ("gpu-node-1", "gpu-1")}
    assert table[("gpu-node-1", "gpu-1")].uuid == "GPU-00000001"
    assert table[("gpu-node-1", "gpu-0")].memory_bytes == 143771 * 2**20
    assert node_devices([resource_slice("gpu-node-1", node().gpus)], "another-node") == {}


def test_a_slice_claim_gives_its_gpu_and_limit() -> None:
    (gpu,) = allocated_gpus(claim([result("gpu-1")]), devices())
    assert (gpu.uuid, gpu.limit_mib, gpu.share_id) == ("GPU-00000001", 12 * 1024, "s-1")
    env = isolation_env([gpu], IsolationSettings())
    assert env == {
        "NVIDIA_VISIBLE_DEVICES": "GPU-00000001",
        "AISPIKE_GPU_MEMORY_LIMIT": "12288",
        "AISPIKE_GPU_MEMORY_LIMITS": "12288",
        "CUDA_DEVICE_MEMORY_LIMIT_0": "12288m",
        "XLA_PYTHON_CLIENT_MEM_FRACTION": "0.085",  # 12288 / 143771 = 0.0854..., rounded down
        "AISPIKE_FRAMEWORK_LIMITS": "torch,tensorflow",
    }
    assert reserved_pods(claim([result("gpu-1")])) == ["pod-uid-1"]


def test_layers_switch_off() -> None:
    gpus = allocated_gpus(claim([result("gpu-0", None), result("gpu-1", None)]), devices())
    assert [g.limit_mib for g in gpus] == [143771, 143771]  # whole GPUs: no consumedCapacity
    bare = isolation_env(gpus, IsolationSettings(framework_env=False, hami=False))
    assert bare == {"NVIDIA_VISIBLE_DEVICES": "GPU-00000000,GPU-00000001",
                    "AISPIKE_GPU_MEMORY_LIMIT": "143771",
                    "AISPIKE_GPU_MEMORY_LIMITS": "143771,143771"}
    spec = cdi_spec("u-1", "hub/x", bare, IsolationSettings(
        framework_env=False, kernel_hook_host_path="/var/lib/h.py"))
    assert "mounts" not in spec["devices"][0]["containerEdits"]


def test_response_names_the_claims_cdi_device_once_per_request() -> None:
    gpus = allocated_gpus(claim([result("gpu-0", None), result("gpu-1", None)]), devices())
    settings = IsolationSettings(extra_cdi_devices=("nvidia.com/gpu={uuid}",))
    out = response_devices("u-1", gpus, settings)
    assert [d["cdi_device_ids"] for d in out] == [
        ["aispike.io/gpu=u-1", "nvidia.com/gpu=GPU-00000000"],
        ["nvidia.com/gpu=GPU-00000001"],
    ]
    assert [d["device_name"] for d in out] == ["gpu-0", "gpu-1"]


def test_cdi_spec_with_the_hook_mount() -> None:
    settings = IsolationSettings(kernel_hook_host_path="/var/lib/aispike-hub/dra/hook.py")
    spec = cdi_spec("u-1", "hub/x", {"B": "2", "A": "1"}, settings)
    assert spec == {
        "cdiVersion": "0.6.0",
        "kind": "aispike.io/gpu",
        "annotations": {"aispike.io/claim": "hub/x"},
        "devices": [{"name": "u-1", "containerEdits": {
            "env": ["A=1", "B=2"],
            "mounts": [{"hostPath": "/var/lib/aispike-hub/dra/hook.py",
                        "containerPath": "/usr/local/etc/ipython/ipython_kernel_config.py",
                        "options": ["ro", "nosuid", "nodev", "bind"]}],
        }}],
    }
    with pytest.raises(PrepareError):
        cdi_spec("../etc", "hub/x", {}, settings)


@pytest.mark.parametrize(
    ("c", "message"),
    [
        (claim([], allocated=False), "is not allocated yet"),
        (claim([result("gpu-7")]), "device gpu-7 of pool gpu-node-1"),
        (claim([result("gpu-0", driver="other.example.com")]), "has no device of driver"),
    ],
)
def test_claims_that_cannot_be_prepared_say_why(c: dict[str, Any], message: str) -> None:
    with pytest.raises(PrepareError, match=message):
        allocated_gpus(c, devices())


def test_xla_fraction_never_rounds_up() -> None:
    # 143771 MiB GPU: 71885 MiB is just under half, 71886 just over.
    under = allocated_gpus(claim([result("gpu-0", "71885Mi")]), devices())
    assert xla_fraction(under) == "0.499"
    over = allocated_gpus(claim([result("gpu-0", "71886Mi")]), devices())
    assert xla_fraction(over) == "0.500"
    assert xla_fraction([]) == "1.000"


def test_unreadable_state_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "claims").mkdir()
    (tmp_path / "claims" / "bad.json").write_text("{")
    (tmp_path / "claims" / "odd.json").write_text(json.dumps({"uid": "x"}))
    assert read_prepared(tmp_path) == {}


def test_committed_stubs_are_what_the_script_generates(tmp_path: Path) -> None:
    subprocess.run([str(REPO / "scripts" / "gen-kubelet-protos"), str(tmp_path)], check=True,
                   cwd=REPO)
    generated = tmp_path / "aispike_hub" / "agent" / "kubeletapi"
    names = sorted(p.name for p in generated.iterdir())
    assert len(names) == 6
    _, mismatch, errors = filecmp.cmpfiles(
        generated, REPO / "aispike_hub" / "agent" / "kubeletapi", names, shallow=False)
    assert mismatch == [] and errors == []


def test_wire_names_are_the_kubelets() -> None:
    from aispike_hub.agent.kubeletapi import dra_v1_pb2, pluginregistration_v1_pb2

    dra = dra_v1_pb2.DESCRIPTOR.services_by_name["DRAPlugin"]
    assert dra.full_name == "k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin"
    assert [m.name for m in dra.methods] == ["NodePrepareResources", "NodeUnprepareResources"]
    reg = pluginregistration_v1_pb2.DESCRIPTOR.services_by_name["Registration"]
    assert reg.full_name == "pluginregistration.Registration"
    device = dra_v1_pb2.Device.DESCRIPTOR
    assert {f.name: f.number for f in device.fields} == {
        "request_names": 1, "pool_name": 2, "device_name": 3, "cdi_device_ids": 4, "share_id": 5}
