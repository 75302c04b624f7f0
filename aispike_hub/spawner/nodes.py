"""The cluster's Nodes as the spawner sees them, for backends without our ResourceSlices.

Nodes are cluster-scoped; KubeSpawner's reflectors key objects by ``namespace/name``, so Nodes
get a watcher of their own (:class:`NodeWatcher`: list, then watch, re-list on any error),
keyed by name.  :func:`node_from_object` turns one into a :class:`aispike_hub.model.Node`:
CPU, RAM, labels, cached images and datasets as the inventory parses them
(:func:`aispike_hub.kube.inventory.parse_node`), plus whole GPUs from the ``nvidia.com/gpu``
allocatable, their model from a label and their memory from a label or the admin's table.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from aispike_hub.kube.inventory import parse_node
from aispike_hub.kube.slices import GPU_MODEL_LABEL, NVIDIA_GPU_RESOURCE
from aispike_hub.model import GIB_IN_MIB, Gpu, Node

log = logging.getLogger(__name__)

GFD_MODEL_LABEL = "nvidia.com/gpu.product"
GFD_MEMORY_LABEL = "nvidia.com/gpu.memory"
"""GPU feature discovery's labels: model name and memory per GPU in MiB."""


def node_from_object(
    obj: Mapping[str, Any],
    gpu_memory_gib: Mapping[str, int] | None = None,
    model_labels: Sequence[str] = (GPU_MODEL_LABEL, GFD_MODEL_LABEL),
) -> Node | None:
    """The model :class:`Node` of a Node object; ``None`` when pods cannot go there.

    GPUs without a known memory size (no ``nvidia.com/gpu.memory`` label, model not in
    ``gpu_memory_gib``) are left out: the form cannot offer slices of an unknown size.
    """
    info = parse_node(obj)
    if info.unschedulable:
        return None
    labels = dict(info.labels)
    allocatable = (obj.get("status") or {}).get("allocatable") or {}
    try:
        count = int(str(allocatable.get(NVIDIA_GPU_RESOURCE, "0")))
    except ValueError:
        count = 0
    model = next((labels[k] for k in model_labels if labels.get(k)), "")
    memory_mib = 0
    if labels.get(GFD_MEMORY_LABEL, "").isdigit():
        memory_mib = int(labels[GFD_MEMORY_LABEL])
    elif model and model in (gpu_memory_gib or {}):
        memory_mib = int((gpu_memory_gib or {})[model]) * GIB_IN_MIB
    gpus: tuple[Gpu, ...] = ()
    if count > 0 and model and memory_mib > 0:
        gpus = tuple(Gpu(i, model, memory_mib) for i in range(count))
    return Node(info.name, info.cpu_milli, info.memory_mib, gpus, labels,
                dict(info.images), dict(info.datasets))


class NodeWatcher:
    """Nodes by name, kept current by list + watch with ``kubernetes_asyncio``."""

    def __init__(self, api: Any, watch_timeout: int = 300) -> None:
        self.api = api  # kubernetes_asyncio CoreV1Api
        self.watch_timeout = watch_timeout
        self.objects: dict[str, dict[str, Any]] = {}
        self.first_load: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> NodeWatcher:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _list(self) -> str:
        response = await self.api.list_node(_preload_content=False)
        doc = json.loads(await response.read())
        self.objects = {o["metadata"]["name"]: o for o in doc.get("items", [])}
        if not self.first_load.done():
            self.first_load.set_result(None)
        return str(doc["metadata"]["resourceVersion"])

    async def _run(self) -> None:
        from kubernetes_asyncio import watch

        delay = 0.5
        while True:
            try:
                version = await self._list()
                w = watch.Watch()
                async with w.stream(self.api.list_node, resource_version=version,
                                    timeout_seconds=self.watch_timeout,
                                    _preload_content=False) as stream:
                    async for event in stream:
                        obj = event["raw_object"]
                        if event["type"] == "ERROR":
                            break  # e.g. 410 Gone: list again
                        name = obj["metadata"]["name"]
                        if event["type"] == "DELETED":
                            self.objects.pop(name, None)
                        else:
                            self.objects[name] = obj
                delay = 0.5
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("node watch failed (%s); listing again in %.1f s", e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    def nodes(self, gpu_memory_gib: Mapping[str, int] | None = None,
              model_labels: Sequence[str] = (GPU_MODEL_LABEL, GFD_MODEL_LABEL)) -> list[Node]:
        out = []
        for obj in list(self.objects.values()):
            try:
                node = node_from_object(obj, gpu_memory_gib, model_labels)
            except (ValueError, KeyError, TypeError) as e:
                log.warning("skipping node %s: %s", obj.get("metadata", {}).get("name"), e)
                continue
            if node is not None:
                out.append(node)
        return out
