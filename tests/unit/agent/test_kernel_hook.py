"""The kernel hook: framework memory limits set from the CDI environment, in a fresh interpreter.

PyTorch (even the CPU build, ~200 MB; the PyPI Linux wheel pulls ~3 GB of CUDA libraries) and
TensorFlow are too large for CI, so these tests import small stand-in ``torch`` and
``tensorflow`` packages that have the exact calls the hook makes, with PyTorch's lazy-init
semantics (``torch.cuda._lazy_call`` queues until CUDA initialises; without CUDA it never runs).
Each case runs in a subprocess, so the import hook sees a first import as in a new kernel.  The
real PyTorch check (allocation past the slice refused on an H200, and the no-CUDA path with the
real wheel) ran on the device: tests/fixtures/isolation/h200-torch-jax.txt.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from aispike_hub.agent import kernel_hook
from aispike_hub.agent.dra import install_kernel_hook

REPO = Path(__file__).resolve().parents[3]

STAND_IN_TORCH = '''
import os
_devices = [int(v) for v in os.environ.get("STANDIN_CUDA_TOTALS", "").split(",") if v]
'''
STAND_IN_TORCH_CUDA = '''
import os
_devices = [int(v) for v in os.environ.get("STANDIN_CUDA_TOTALS", "").split(",") if v]
_initialized = False
_queued = []
fractions = {}

class _Props:
    def __init__(self, total):
        self.total_memory = total

def is_available():
    return bool(_devices)

def is_initialized():
    return _initialized

def _lazy_call(fn):
    if _initialized:
        fn()
    else:
        _queued.append(fn)

def init():
    """The first CUDA use: like torch.cuda._lazy_init, runs the queued calls."""
    global _initialized
    if not _devices:
        raise AssertionError("Torch not compiled with CUDA enabled")
    _initialized = True
    for fn in _queued:
        fn()

def device_count():
    return len(_devices)

def get_device_properties(i):
    return _Props(_devices[i])

def set_per_process_memory_fraction(fraction, device=None):
    if not _initialized:
        raise AssertionError("called before CUDA initialised")
    if not 0 <= fraction <= 1:
        raise ValueError(fraction)
    fractions[device] = fraction
'''
STAND_IN_TF = '''
import os
class _Config:
    def __init__(self):
        self.logical = {}
        self.initialized = False
    def list_physical_devices(self, kind):
        n = len([v for v in os.environ.get("STANDIN_CUDA_TOTALS", "").split(",") if v])
        return [f"/physical_device:GPU:{i}" for i in range(n)]
    def set_logical_device_configuration(self, device, configs):
        if self.initialized:
            raise RuntimeError("Virtual devices cannot be modified after being initialized")
        self.logical[device] = [c.memory_limit for c in configs]
    class LogicalDeviceConfiguration:
        def __init__(self, memory_limit=None):
            self.memory_limit = memory_limit
config = _Config()
'''


@pytest.fixture
def stand_ins(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    (site / "torch").mkdir(parents=True)
    (site / "torch" / "__init__.py").write_text(STAND_IN_TORCH + "from torch import cuda\n")
    (site / "torch" / "cuda.py").write_text(STAND_IN_TORCH_CUDA)
    (site / "tensorflow").mkdir()
    (site / "tensorflow" / "__init__.py").write_text(STAND_IN_TF)
    return site


def run(code: str, env: dict[str, str], site: Path, repo: bool = True) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter (stand-ins on the path); its last JSON line."""
    paths = [str(site), str(REPO)] if repo else [str(site)]
    full_env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": os.pathsep.join(paths), **env}
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full_env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


SLICE_ENV = {"AISPIKE_GPU_MEMORY_LIMIT": "12288", "AISPIKE_FRAMEWORK_LIMITS": "torch,tensorflow"}
H200_TOTAL = 150754820096  # bytes, as NVML and PyTorch report the H200


def test_torch_fraction_is_set_when_cuda_initialises(stand_ins: Path) -> None:
    got = run("""
        import json
        from aispike_hub.agent import kernel_hook
        kernel_hook.install()
        import torch                              # the user's first import, after the hook
        queued = dict(torch.cuda.fractions)       # nothing yet: CUDA not initialised
        torch.cuda.init()                         # the first tensor on the GPU
        print(json.dumps({"queued": queued, "fractions": torch.cuda.fractions,
                          "status": kernel_hook.STATUS}))
    """, {**SLICE_ENV, "STANDIN_CUDA_TOTALS": f"{H200_TOTAL},{H200_TOTAL // 2}",
          "AISPIKE_GPU_MEMORY_LIMITS": "12288,4096"}, stand_ins)
    assert got["queued"] == {}
    fractions = {int(k): v for k, v in got["fractions"].items()}  # type: ignore[attr-defined]
    assert fractions == pytest.approx({0: 12288 * 2**20 / H200_TOTAL,
                                       1: 4096 * 2**20 / (H200_TOTAL // 2)})
    assert "fraction 0.0855,0.0570 on 2 GPU(s)" in got["status"]["torch"]  # type: ignore[index]


def test_no_cuda_sets_nothing_and_raises_nothing(stand_ins: Path) -> None:
    got = run("""
        import json
        from aispike_hub.agent import kernel_hook
        kernel_hook.install()
        import torch
        print(json.dumps({"available": torch.cuda.is_available(),
                          "fractions": torch.cuda.fractions, "status": kernel_hook.STATUS}))
    """, {**SLICE_ENV, "STANDIN_CUDA_TOTALS": ""}, stand_ins)
    assert got["available"] is False and got["fractions"] == {}
    assert got["status"]["torch"].startswith("queued until CUDA")  # type: ignore[index]


def test_torch_imported_before_the_hook_and_cuda_already_up(stand_ins: Path) -> None:
    got = run("""
        import json
        import torch
        torch.cuda.init()
        from aispike_hub.agent import kernel_hook
        kernel_hook.install()
        kernel_hook.install()                     # idempotent
        print(json.dumps({"fractions": torch.cuda.fractions}))
    """, {**SLICE_ENV, "STANDIN_CUDA_TOTALS": str(H200_TOTAL)}, stand_ins)
    assert got["fractions"] == {"0": pytest.approx(12288 * 2**20 / H200_TOTAL)}


def test_tensorflow_gets_a_logical_device_per_gpu(stand_ins: Path) -> None:
    got = run("""
        import json
        from aispike_hub.agent import kernel_hook
        kernel_hook.install()
        import tensorflow as tf
        print(json.dumps({"logical": tf.config.logical, "status": kernel_hook.STATUS}))
    """, {**SLICE_ENV, "STANDIN_CUDA_TOTALS": f"{H200_TOTAL},{H200_TOTAL}"}, stand_ins)
    assert got["logical"] == {"/physical_device:GPU:0": [12288], "/physical_device:GPU:1": [12288]}


def test_switches_and_missing_slices(stand_ins: Path) -> None:
    only_tf = run("""
        import json
        from aispike_hub.agent import kernel_hook
        kernel_hook.install()
        import torch, tensorflow as tf
        torch.cuda.init()
        print(json.dumps({"torch": torch.cuda.fractions, "tf": tf.config.logical}))
    """, {**SLICE_ENV, "AISPIKE_FRAMEWORK_LIMITS": "tensorflow",
          "STANDIN_CUDA_TOTALS": str(H200_TOTAL)}, stand_ins)
    assert only_tf["torch"] == {} and only_tf["tf"] == {"/physical_device:GPU:0": [12288]}
    assert kernel_hook.limits_mib({"AISPIKE_GPU_MEMORY_LIMIT": "lots"}) == []
    assert kernel_hook.limits_mib({"AISPIKE_GPU_MEMORY_LIMITS": "0"}) == []
    assert kernel_hook.install({}) == {"hook": "no slice in the environment: nothing to do"}
    assert kernel_hook.torch_fraction(2**20 * 200_000, H200_TOTAL) == 1.0
    assert kernel_hook.limit_for([1, 2], 5) == 2


def test_the_mounted_file_works_as_an_ipython_kernel_config(
    stand_ins: Path, tmp_path: Path
) -> None:
    """The DRA plugin mounts this file as /usr/local/etc/ipython/ipython_kernel_config.py;
    IPython loads config files with traitlets' PyFileConfigLoader, in the kernel process."""
    hook = install_kernel_hook(tmp_path / "state")
    assert hook.read_text() == Path(kernel_hook.__file__).read_text()
    got = run(f"""
        import json, sys
        from traitlets.config.loader import PyFileConfigLoader
        PyFileConfigLoader({hook.name!r}, path={str(hook.parent)!r}).load_config()
        assert "aispike_hub" not in sys.modules   # the image need not have aispike-hub
        import torch
        torch.cuda.init()
        print(json.dumps({{"fractions": torch.cuda.fractions}}))
    """, {**SLICE_ENV, "STANDIN_CUDA_TOTALS": str(H200_TOTAL)}, stand_ins, repo=False)
    assert got["fractions"] == {"0": pytest.approx(12288 * 2**20 / H200_TOTAL)}
