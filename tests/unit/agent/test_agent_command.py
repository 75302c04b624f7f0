"""The ``aispike-hub agent`` command: settings with help, one discovery tick on a fixture."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from agent_fixtures import NVML_FIXTURES

from aispike_hub.agent.main import AgentApp, main


def test_every_setting_has_help() -> None:
    traits = AgentApp.class_traits(config=True)
    own = {n for n, t in traits.items() if t.this_class is AgentApp}
    assert {"node_name", "nvml_fixture", "proc_root", "interval", "dataset_cache_dir",
            "dataset_cache_limit_bytes", "metrics_port", "publish", "kubeconfig", "once"} <= own
    for name in own:
        assert len(traits[name].help.strip()) > 20, name


def test_once_on_a_fixture_prints_discovery(capsys: pytest.CaptureFixture[str],
                                            tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    (cache / "imagenet").mkdir(parents=True)
    (cache / "imagenet" / "x").write_bytes(b"1" * 10)
    main(["--once", f"--nvml-fixture={NVML_FIXTURES / 'a100-pcie-4gpu.json'}",
          "--node-name=gpu-7", f"--dataset-cache-dir={cache}", f"--proc-root={tmp_path}"])
    out = json.loads(capsys.readouterr().out)
    assert out["usage"]["node"] == "gpu-7"
    assert len(out["usage"]["gpus"]) == 4 and out["usage"]["datasets"] == {"imagenet": 10}
    assert [d["name"] for d in out["resourceSlice"]["spec"]["devices"]] == [
        "gpu-0", "gpu-1", "gpu-2", "gpu-3"]
    assert out["labels"] == {"aispike.io/gpu-model": "NVIDIA-A100-80GB-PCIe"}


def test_tick_evicts_beyond_the_limit_and_serves_metrics(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    for name, size in (("old", 100), ("new", 100)):
        (cache / name).mkdir(parents=True)
        (cache / name / "data").write_bytes(b"x" * size)
        (cache / name / ".aispike-dataset.json").write_text(
            json.dumps({"last_used": 1.0 if name == "old" else 2.0}))
    app = AgentApp()
    app.initialize([f"--nvml-fixture={NVML_FIXTURES / 't4-2gpu.json'}", "--node-name=n",
                    f"--dataset-cache-dir={cache}", "--dataset-cache-limit-bytes=150",
                    "--metrics-address=127.0.0.1", "--metrics-port=0",
                    f"--proc-root={tmp_path}"])
    snap = app.tick()
    assert set(snap.datasets) == {"new"} and not (cache / "old").exists()
    app.metrics_port = 0
    server = app._serve()
    try:
        port = server.server_address[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/usage", timeout=5) as r:
            usage = json.loads(r.read())
    finally:
        server.shutdown()
        server.server_close()
    assert 'aispike_dataset_cache_bytes{Hostname="n",dataset="new"}' in metrics
    assert 'aispike_notebook_gpu_memory_used_bytes{Hostname="n",UUID="GPU-' in metrics
    assert usage["node"] == "n" and [g["model"] for g in usage["gpus"]] == ["Tesla T4"] * 2
