"""The GPU model of a node as its DRA devices name it (pure; one rule for every reader).

A node's GPU model is read from its labels first (ours, ``aispike.io/gpu-model``, else GPU feature
discovery's ``nvidia.com/gpu.product``: :data:`aispike_hub.contract.GPU_MODEL_LABELS`); a node with
neither is named by the devices it publishes in ResourceSlices: the first of
:data:`~aispike_hub.contract.DRA_MODEL_ATTRIBUTES` a device carries (our driver's ``model``,
NVIDIA's ``productName``), written with the driver's domain or without, as the API allows.

Why here and not in each reader: the coexistence rules (:mod:`aispike_hub.kube.coexist`) read the
model of another driver's devices and the spawner's node view (:mod:`aispike_hub.spawner.nodes`)
reads it for nodes without model labels; both must agree on which attribute names a model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aispike_hub.contract import DRA_MODEL_ATTRIBUTES, DRIVER, MEMORY_CAPACITY, NVIDIA_DRIVER
from aispike_hub.kube.nodespec import quantity_mib
from aispike_hub.kube.slices import label_value

__all__ = ["GPU_DRIVERS", "MIXED", "DraModel", "device_attribute", "device_model",
           "node_models"]

GPU_DRIVERS = (DRIVER, NVIDIA_DRIVER)
"""DRA drivers whose devices are GPUs named by :data:`DRA_MODEL_ATTRIBUTES`."""
MIXED = "mixed"
"""The model of a node whose devices name several (as our agent's node label says it)."""
WHOLE_GPU_TYPES = (None, "gpu")
"""A device's ``type`` attribute for a whole GPU (NVIDIA's ``mig`` devices are parts of one)."""


@dataclass(frozen=True, slots=True)
class DraModel:
    """A node's GPU model from its DRA devices, in label form (``NVIDIA-A100-SXM4-80GB``)."""

    model: str
    memory_mib: int = 0
    """The whole GPU's memory from the devices' ``memory`` capacity (0: not published)."""


def device_attribute(attributes: Mapping[str, Any], driver: str, name: str) -> Any:
    """An attribute's value whatever its type (``{"string": ...}``, ``{"int": ...}``...), under
    its plain name or qualified with the driver's domain; ``None`` when absent or malformed."""
    value = attributes.get(name)
    if value is None:
        value = attributes.get(f"{driver}/{name}")
    if not isinstance(value, Mapping) or len(value) != 1:
        return None
    return next(iter(value.values()))


def device_model(attributes: Mapping[str, Any], driver: str) -> str:
    """The model a device's attributes name (as published; ``""`` when none does)."""
    for name in DRA_MODEL_ATTRIBUTES:
        value = device_attribute(attributes, driver, name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return ""


def _memory_mib(device: Mapping[str, Any]) -> int:
    capacity = (device.get("capacity") or {}).get(MEMORY_CAPACITY)
    if not isinstance(capacity, Mapping) or "value" not in capacity:
        return 0
    try:
        return max(0, quantity_mib(str(capacity["value"])))
    except (ValueError, ArithmeticError):
        return 0


def node_models(slices: Iterable[Mapping[str, Any]], drivers: Sequence[str] = GPU_DRIVERS
                ) -> dict[str, DraModel]:
    """Node name -> the GPU model its devices in ``slices`` name (:data:`MIXED` when several),
    for slices of ``drivers`` bound to one node.  Memory is the largest whole GPU's of that
    model (MIG devices name their GPU's model but hold a part of its memory)."""
    found: dict[str, dict[str, int]] = {}
    for obj in slices:
        spec = obj.get("spec") if isinstance(obj, Mapping) else None
        if not isinstance(spec, Mapping):
            continue
        driver, node = spec.get("driver"), spec.get("nodeName")
        if driver not in drivers or not isinstance(node, str) or not node:
            continue
        for dev in spec.get("devices") or []:
            attributes = dev.get("attributes") if isinstance(dev, Mapping) else None
            if not isinstance(attributes, Mapping):
                continue
            model = label_value(device_model(attributes, str(driver)))
            if not model:
                continue
            models = found.setdefault(node, {})
            memory = (_memory_mib(dev) if device_attribute(attributes, str(driver), "type")
                      in WHOLE_GPU_TYPES else 0)
            models[model] = max(models.get(model, 0), memory)
    out: dict[str, DraModel] = {}
    for node, models in found.items():
        if len(models) == 1:
            (model, memory), = models.items()
            out[node] = DraModel(model, memory)
        else:
            out[node] = DraModel(MIXED)
    return out
