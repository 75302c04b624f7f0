"""Kernel hook: keep PyTorch and TensorFlow inside the notebook's GPU-memory slice.

This file uses only the standard library, because it runs inside notebook images that need not
have AISpike Hub installed.  It is loaded in one of three ways:

- the DRA plugin mounts it read-only as a system IPython config file
  (``/usr/local/etc/ipython/ipython_kernel_config.py``); IPython executes config files in the
  kernel process before any user code, and this file then calls :func:`install`;
- as an IPython extension, where the image has ``aispike-hub`` installed
  (``c.InteractiveShellApp.extensions = ["aispike_hub.agent.kernel_hook"]``, or
  ``%load_ext aispike_hub.agent.kernel_hook``);
- ``import aispike_hub.agent.kernel_hook as h; h.install()`` in a script.

:func:`install` reads the slice from the environment the CDI spec gave the container
(``AISPIKE_GPU_MEMORY_LIMITS``, MiB per visible GPU, else ``AISPIKE_GPU_MEMORY_LIMIT`` for every
GPU) and which frameworks to limit (``AISPIKE_FRAMEWORK_LIMITS``, e.g. ``torch,tensorflow``).
It imports nothing heavy: it waits until the user imports a framework, then

- **PyTorch**: ``torch.cuda.set_per_process_memory_fraction(slice / total, i)`` for every visible
  GPU, queued with ``torch.cuda._lazy_call`` so it runs when CUDA initialises (at once if it
  already has; never an error on a machine without CUDA).  PyTorch's caching allocator then
  refuses an allocation that would take its reserved memory past the fraction
  (``torch.OutOfMemoryError``);
- **TensorFlow**: ``tf.config.set_logical_device_configuration(gpu,
  [LogicalDeviceConfiguration(memory_limit=slice_mib)])`` for every visible GPU, before
  TensorFlow initialises them.

JAX needs no hook: ``XLA_PYTHON_CLIENT_MEM_FRACTION`` in the environment does it.  What this does
not cover (CUDA context memory, other libraries, code that resets the fraction) is in
docs/isolation.md.  ``STATUS`` records what was applied, for tests and for a curious user.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

# Spelled out, not imported from aispike_hub.contract / aispike_hub.units (the one MIB): the
# DRA plugin mounts this very file as an IPython kernel config in notebook images that need not
# have AISpike Hub, and runs it with the standard library only (tests/unit/agent/
# test_kernel_hook.py runs it so, without aispike_hub importable); tests/unit/
# test_isolation_env.py keeps these names and MIB equal to the contract's and units.MIB.
ENV_LIMITS = "AISPIKE_GPU_MEMORY_LIMITS"
ENV_LIMIT = "AISPIKE_GPU_MEMORY_LIMIT"
ENV_FRAMEWORKS = "AISPIKE_FRAMEWORK_LIMITS"
MIB = 2**20

STATUS: dict[str, str] = {}
"""Framework -> what the hook did (``fraction 0.0870 on 1 GPU``, ``queued ...``, an error)."""

_log = logging.getLogger("aispike_hub.kernel_hook")


def limits_mib(environ: Mapping[str, str]) -> list[int]:
    """MiB per visible GPU from the environment; [] when there is no slice (or it is garbled)."""
    raw = environ.get(ENV_LIMITS) or environ.get(ENV_LIMIT) or ""
    try:
        values = [int(v) for v in raw.split(",") if v.strip()]
    except ValueError:
        return []
    return values if values and all(v > 0 for v in values) else []


def frameworks(environ: Mapping[str, str]) -> set[str]:
    """Frameworks to limit, from ``AISPIKE_FRAMEWORK_LIMITS`` (empty or absent: none)."""
    return {f.strip().lower() for f in environ.get(ENV_FRAMEWORKS, "").split(",") if f.strip()}


def limit_for(limits: list[int], index: int) -> int:
    """The slice of visible GPU ``index``: its own entry, else the last one given."""
    return limits[index] if index < len(limits) else limits[-1]


def torch_fraction(limit_mib: int, total_bytes: int) -> float:
    """The per-process memory fraction for a slice of ``limit_mib`` on a GPU of ``total_bytes``."""
    if total_bytes <= 0:
        return 1.0
    return min(1.0, limit_mib * MIB / total_bytes)


def apply_torch(torch: Any, limits: list[int]) -> None:
    """Set PyTorch's per-process memory fraction on every visible GPU when CUDA initialises."""

    def set_fractions() -> None:
        try:
            done = []
            for i in range(torch.cuda.device_count()):
                total = int(torch.cuda.get_device_properties(i).total_memory)
                fraction = torch_fraction(limit_for(limits, i), total)
                torch.cuda.set_per_process_memory_fraction(fraction, i)
                done.append(f"{fraction:.4f}")
            STATUS["torch"] = f"fraction {','.join(done)} on {len(done)} GPU(s)"
        except Exception as e:  # never break the user's first CUDA call
            STATUS["torch"] = f"error: {e}"
            _log.warning("aispike: could not set PyTorch's memory fraction: %s", e)

    cuda = getattr(torch, "cuda", None)
    if cuda is None:
        STATUS["torch"] = "no torch.cuda"
        return
    lazy_call = getattr(cuda, "_lazy_call", None)
    if lazy_call is not None:
        # Runs now if CUDA is initialised, else at its initialisation; with no CUDA, never.
        STATUS["torch"] = f"queued until CUDA initialises ({limits} MiB)"
        lazy_call(set_fractions)
    elif cuda.is_available():
        set_fractions()
    else:
        STATUS["torch"] = "CUDA not available"


def apply_tensorflow(tf: Any, limits: list[int]) -> None:
    """Give every visible GPU a logical device limited to the slice, before TF initialises it."""
    try:
        gpus = tf.config.list_physical_devices("GPU")
        for i, gpu in enumerate(gpus):
            tf.config.set_logical_device_configuration(
                gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=limit_for(limits, i))]
            )
        STATUS["tensorflow"] = f"memory_limit {limits} MiB on {len(gpus)} GPU(s)"
    except Exception as e:  # e.g. "Virtual devices cannot be modified after being initialized"
        STATUS["tensorflow"] = f"error: {e}"
        _log.warning("aispike: could not set TensorFlow's memory limit: %s", e)


class _ProxyLoader(importlib.abc.Loader):
    """The real loader of a framework, plus an action once its module has executed."""

    def __init__(self, loader: Any, action: Callable[[Any], None]) -> None:
        self._loader = loader
        self._action = action

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._loader.exec_module(module)
        self._action(module)

    def __getattr__(self, name: str) -> Any:  # is_package, get_resource_reader, ...
        return getattr(self._loader, name)


class AfterImport(importlib.abc.MetaPathFinder):
    """Runs an action on a top-level module right after its first import (then steps aside)."""

    aispike_kernel_hook = True

    def __init__(self, actions: dict[str, Callable[[Any], None]]) -> None:
        self.actions = dict(actions)
        self._busy: set[str] = set()

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        action = self.actions.get(fullname)
        if action is None or fullname in self._busy:
            return None
        self._busy.add(fullname)
        try:
            spec = importlib.util.find_spec(fullname)  # the other finders
        finally:
            self._busy.discard(fullname)
        if spec is None or spec.loader is None:
            return None
        del self.actions[fullname]
        spec.loader = _ProxyLoader(spec.loader, action)
        return spec


def install(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Apply the slice to the frameworks named in the environment, now or at their import.

    Idempotent; returns ``STATUS``.  Does nothing without a slice or framework list.
    """
    env = os.environ if environ is None else environ
    limits = limits_mib(env)
    wanted = frameworks(env)
    if not limits or not wanted:
        STATUS.setdefault("hook", "no slice in the environment: nothing to do")
        return STATUS
    if any(getattr(f, "aispike_kernel_hook", False) for f in sys.meta_path):
        return STATUS
    STATUS["hook"] = f"slice {limits} MiB for {','.join(sorted(wanted))}"
    actions: dict[str, Callable[[Any], None]] = {}
    if "torch" in wanted:
        actions["torch"] = lambda module: apply_torch(module, limits)
    if "tensorflow" in wanted:
        actions["tensorflow"] = lambda module: apply_tensorflow(module, limits)
    for name in list(actions):
        if name in sys.modules:  # imported already (e.g. by another startup file)
            actions.pop(name)(sys.modules[name])
    sys.meta_path.insert(0, AfterImport(actions))
    return STATUS


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext aispike_hub.agent.kernel_hook`` / ``InteractiveShellApp.extensions``."""
    install()


if "get_config" in globals():  # executed as an IPython config file (the CDI mount)
    install()
