"""What a GPU node looks like to Kubernetes: ResourceSlice, DeviceClass and Node manifests.

This module is the single place that turns :class:`aispike_hub.model.Node` / :class:`Gpu` into
the objects of the Kubernetes contract in docs/dra-contract.md ("Driver, pool, devices"):

- one ResourceSlice per node, driver ``gpu.aispike.io``, pool = node name, one device per GPU
  named ``gpu-<index>`` with ``allowMultipleAllocations: true`` and a consumable ``memory``
  capacity requested in 1 GiB steps (KEP-5075, beta and on by default in Kubernetes 1.36);
- the DeviceClass ``gpu.aispike.io`` that selects the driver;
- the node label ``aispike.io/gpu-model`` and annotation ``aispike.io/datasets``;
- for simulated nodes (kwok in tests and benchmarks) a whole Node object with capacity, images
  and, for the non-DRA backends, ``nvidia.com/gpu`` allocatable.

Every function is pure: it returns plain ``dict`` manifests (the API's camelCase JSON), so the
node agent can publish them with any client, the test stack can ``kubectl apply`` them, and
unit tests can compare them without a cluster.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aispike_hub import sanity
from aispike_hub.contract import (
    DATASETS_ANNOTATION,
    DEVICE_CLASS,
    DRIVER,
    GPU_MODEL_LABEL,
    MEMORY_CAPACITY,
    NVIDIA_GPU_RESOURCE,
    RESOURCE_API_VERSION,
)
from aispike_hub.model import GIB_IN_MIB, Gpu, Node
from aispike_hub.sanity import Rejected, loads_json, shorten

# The contract names (DRIVER, ...) are declared in aispike_hub.contract and re-exported here.
__all__ = [
    "DATASETS_ANNOTATION", "DEVICE_CLASS", "DRIVER", "GPU_MODEL_LABEL", "MAX_DEVICES_PER_SLICE",
    "MEMORY_CAPACITY", "NVIDIA_GPU_RESOURCE", "RESOURCE_API_VERSION", "cpu_quantity",
    "datasets_annotation", "device_class", "device_name", "gpu_device", "gpu_model_label",
    "label_value", "memory_quantity", "node_images", "node_labels", "node_manifests",
    "parse_datasets_annotation", "resource_slice", "resource_slice_name", "simulated_node",
    "uuid_selector",
]

MAX_DEVICES_PER_SLICE = sanity.MAX_DEVICES_PER_SLICE
"""API limit on devices in one ResourceSlice without taints, counters or list attributes."""

_LABEL_VALUE_BAD_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")


def device_name(gpu: Gpu) -> str:
    """Device name of ``gpu`` in its node's ResourceSlice: ``gpu-<index>``."""
    return f"gpu-{gpu.index}"


def resource_slice_name(node_name: str) -> str:
    """Name of the one ResourceSlice our driver publishes for ``node_name``."""
    return f"{node_name}-{DRIVER}"


def memory_quantity(mib: int) -> str:
    """A Kubernetes quantity for ``mib`` MiB, in ``Gi`` when it is a whole number of GiB."""
    if mib % GIB_IN_MIB == 0:
        return f"{mib // GIB_IN_MIB}Gi"
    return f"{mib}Mi"


def cpu_quantity(milli: int) -> str:
    """A Kubernetes CPU quantity for ``milli`` thousandths of a core."""
    if milli % 1000 == 0:
        return str(milli // 1000)
    return f"{milli}m"


def gpu_device(gpu: Gpu) -> dict[str, Any]:
    """The ResourceSlice device for one GPU.

    ``memory`` is consumable: the scheduler sums the ``consumedCapacity`` of every allocated
    claim on the device and never lets it pass ``value``.  The request policy rounds requests up
    to whole GiB (the step of a slice in the options form) and makes a claim that names no memory
    take the whole GPU, so a forgotten request can never squeeze in beside other users.  Default
    and maximum must be multiples of the step, so a GPU whose memory is not a whole number of GiB
    (an H100 reports 81559 MiB) offers its whole GiB only.
    """
    if not gpu.uuid:
        raise ValueError(
            f"GPU {gpu.index} ({gpu.model}) has no uuid; placement pins claims by uuid, "
            "so every published GPU needs one"
        )
    whole_gib = gpu.memory_mib // GIB_IN_MIB
    if whole_gib < 2:
        raise ValueError(
            f"GPU {gpu.index} ({gpu.model}) has {gpu.memory_mib} MiB; a shareable GPU needs at "
            "least 2 GiB (the API requires min + step <= capacity)"
        )
    return {
        "name": device_name(gpu),
        "allowMultipleAllocations": True,
        "attributes": {
            "uuid": {"string": gpu.uuid},
            "model": {"string": gpu.model},
            "index": {"int": gpu.index},
            "nvlinkDomain": {"string": gpu.nvlink_domain},
            "pcieSwitch": {"string": gpu.pcie_switch},
            "numaNode": {"int": gpu.numa_node},
            "mig": {"string": gpu.mig_profile},
        },
        "capacity": {
            MEMORY_CAPACITY: {
                "value": memory_quantity(gpu.memory_mib),
                "requestPolicy": {
                    "default": f"{whole_gib}Gi",
                    "validRange": {"min": "1Gi", "max": f"{whole_gib}Gi", "step": "1Gi"},
                },
            }
        },
    }


def resource_slice(node_name: str, gpus: Sequence[Gpu], *, generation: int = 1) -> dict[str, Any]:
    """The ResourceSlice that publishes ``gpus`` of ``node_name`` (one complete pool).

    ``generation`` must grow whenever the agent republishes a changed device list, so the
    scheduler drops the old one.  A node has one slice (``resourceSliceCount: 1``); more than 128
    GPUs on one node is not a machine that exists.
    """
    if len(gpus) > MAX_DEVICES_PER_SLICE:
        raise ValueError(f"{len(gpus)} GPUs on {node_name}: one slice holds at most 128 devices")
    return {
        "apiVersion": RESOURCE_API_VERSION,
        "kind": "ResourceSlice",
        "metadata": {"name": resource_slice_name(node_name)},
        "spec": {
            "driver": DRIVER,
            "nodeName": node_name,
            "pool": {"name": node_name, "generation": generation, "resourceSliceCount": 1},
            "devices": [gpu_device(g) for g in sorted(gpus, key=lambda g: g.index)],
        },
    }


def uuid_selector(gpu_uuid: str) -> str:
    """CEL expression that matches exactly the device published for the GPU ``gpu_uuid``.

    CEL sees a device's driver, attributes and capacity but not its name or pool, so the uuid
    attribute is the pin key; it also pins the node, since a slice belongs to one node.
    """
    return f'device.attributes["{DRIVER}"].uuid == {json.dumps(gpu_uuid)}'


def device_class() -> dict[str, Any]:
    """The DeviceClass ``gpu.aispike.io``: every device our driver publishes."""
    return {
        "apiVersion": RESOURCE_API_VERSION,
        "kind": "DeviceClass",
        "metadata": {"name": DEVICE_CLASS},
        "spec": {"selectors": [{"cel": {"expression": f'device.driver == "{DRIVER}"'}}]},
    }


def label_value(text: str) -> str:
    """``text`` made into a valid label value (63 chars of ``[A-Za-z0-9_.-]``, alphanumeric ends).

    >>> label_value("NVIDIA A100-SXM4-80GB")
    'NVIDIA-A100-SXM4-80GB'
    """
    value = _LABEL_VALUE_BAD_CHARS.sub("-", text)[:63]
    return value.strip("-_.")


def gpu_model_label(gpus: Iterable[Gpu]) -> str:
    """Value of ``aispike.io/gpu-model``: the model of the node's GPUs, ``mixed`` if several."""
    models = {label_value(g.model) for g in gpus}
    if not models:
        return ""
    return models.pop() if len(models) == 1 else "mixed"


def node_labels(node: Node) -> dict[str, str]:
    """Labels the agent sets on ``node``: its own labels plus the GPU model label."""
    labels = dict(node.labels)
    model = gpu_model_label(node.gpus)
    if model:
        labels[GPU_MODEL_LABEL] = model
    return labels


def datasets_annotation(
    datasets: Mapping[str, int], last_use: Mapping[str, str] | None = None
) -> str:
    """The ``aispike.io/datasets`` annotation value for a node's dataset cache.

    A JSON list sorted by name, each ``{"name", "bytes"}`` plus ``"lastUse"`` (RFC 3339) when
    known, so it is stable for equal input and readable with ``kubectl describe node``.
    """
    entries: list[dict[str, Any]] = []
    for name in sorted(datasets):
        entry: dict[str, Any] = {"name": name, "bytes": int(datasets[name])}
        if last_use and name in last_use:
            entry["lastUse"] = last_use[name]
        entries.append(entry)
    return json.dumps(entries, separators=(",", ":"))


def parse_datasets_annotation(value: object) -> dict[str, int]:
    """Dataset name -> bytes from an ``aispike.io/datasets`` annotation (``{}`` if absent).

    Raises :class:`~aispike_hub.sanity.Rejected` (a ``ValueError``) for anything but a JSON
    list of ``{"name", "bytes"}`` objects within the sane ranges (:mod:`aispike_hub.sanity`:
    at most 256 KiB and 4,096 entries, names of at most 253 characters, sizes in an int64, no
    ``Infinity``, no deep nesting); the caller then ignores the whole annotation.
    """
    if not value:
        return {}
    if not isinstance(value, str):
        raise Rejected("malformed", f"{DATASETS_ANNOTATION} is not a string")
    entries = loads_json(value, what=DATASETS_ANNOTATION)
    if not isinstance(entries, list):
        raise Rejected("malformed", f"{DATASETS_ANNOTATION}: expected a JSON list, got "
                       f"{shorten(entries)}")
    if len(entries) > sanity.MAX_LIST_ENTRIES:
        raise Rejected("too_large", f"{DATASETS_ANNOTATION}: {len(entries)} entries "
                       f"(at most {sanity.MAX_LIST_ENTRIES})")
    out: dict[str, int] = {}
    for entry in entries:
        if not isinstance(entry, Mapping):
            raise Rejected("malformed", f"{DATASETS_ANNOTATION}: entry {shorten(entry)} is not "
                           "an object")
        name = sanity.name(entry.get("name"), f"{DATASETS_ANNOTATION} name")
        out[name] = sanity.bounded_int(entry.get("bytes"), 0, sanity.MAX_BYTES,
                                       f"{DATASETS_ANNOTATION} {shorten(name)} bytes")
    return out


def node_images(images: Mapping[str, int]) -> list[dict[str, Any]]:
    """``status.images`` entries (what the kubelet reports as cached) for name -> bytes."""
    return [{"names": [name], "sizeBytes": int(images[name])} for name in sorted(images)]


def simulated_node(
    node: Node,
    *,
    internal_ip: str = "127.0.0.1",
    max_pods: int = 110,
    nvidia_gpu: bool = False,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A whole Node object for a node that has no kubelet (kwok in tests and benchmarks).

    Status is set on create (kwok keeps the given capacity and allocatable); ``internal_ip``
    stays on loopback so nothing ever dials a routed address.  ``nvidia_gpu`` adds whole-GPU
    ``nvidia.com/gpu`` allocatable for the non-DRA backends.
    """
    resources: dict[str, str] = {
        "cpu": cpu_quantity(node.cpu_milli),
        "memory": memory_quantity(node.memory_mib),
        "pods": str(max_pods),
        "ephemeral-storage": "1Ti",
    }
    if nvidia_gpu and node.gpus:
        resources[NVIDIA_GPU_RESOURCE] = str(len(node.gpus))
    node_annotations = {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"}
    if node.datasets:
        node_annotations[DATASETS_ANNOTATION] = datasets_annotation(node.datasets)
    node_annotations.update(annotations or {})
    labels = {
        "kubernetes.io/hostname": node.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
        **node_labels(node),
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node.name, "labels": labels, "annotations": node_annotations},
        "spec": {},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": internal_ip},
                {"type": "Hostname", "address": node.name},
            ],
            "capacity": dict(resources),
            "allocatable": dict(resources),
            "images": node_images(node.images),
        },
    }


def node_manifests(
    node: Node, *, internal_ip: str = "127.0.0.1", nvidia_gpu: bool = False
) -> list[dict[str, Any]]:
    """The simulated Node plus, if it has GPUs, its ResourceSlice: what a real node would show."""
    manifests = [simulated_node(node, internal_ip=internal_ip, nvidia_gpu=nvidia_gpu)]
    if node.gpus:
        manifests.append(resource_slice(node.name, node.gpus))
    return manifests
