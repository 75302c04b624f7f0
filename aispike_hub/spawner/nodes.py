"""The cluster's Nodes as the spawner sees them, for backends without our ResourceSlices.

:class:`NodeWatcher` keeps the Node objects by name with the inventory's list + watch loop
(:class:`aispike_hub.kube.watch.ListWatch`); :func:`node_from_object` turns one into a
:class:`aispike_hub.model.Node`: CPU, RAM, labels, cached images and datasets as the inventory
parses them (:func:`aispike_hub.kube.objects.parse_node`), plus whole GPUs from the
``nvidia.com/gpu`` allocatable, their model from a label and their memory from a label or the
admin's table.  A GPU node with no model label (neither ours nor GPU feature discovery's) is named
by its DRA devices: the watcher also watches ResourceSlices and reads them with
:func:`aispike_hub.kube.dra_models.node_models`.  A cluster without the DRA API (404) or a hub
without the RBAC to read slices (403) simply has no slices: logged once, never a failed form.

GPUs held outside this hub count as taken on these backends too: the watcher also watches pods,
and a node lists only the GPUs that pods of other workloads (``nvidia.com/gpu``, MIG, HAMi,
gpushare: :func:`aispike_hub.kube.coexist.pod_gpus`) do not hold.  This hub's own notebook pods
(``aispike.io/hub-server``) are not subtracted: admission counts them from its tickets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, cast

from aispike_hub.contract import (
    GFD_MEMORY_LABEL,
    GFD_MODEL_LABEL,
    GPU_MODEL_LABEL,
    GPU_MODEL_LABELS,
    HUB_SERVER_ANNOTATION,
    NVIDIA_GPU_RESOURCE,
)
from aispike_hub.kube.api import KubeJson, kube_api_client
from aispike_hub.kube.coexist import pod_gpus
from aispike_hub.kube.dra_models import MIXED, DraModel, node_models
from aispike_hub.kube.identity import belongs
from aispike_hub.kube.objects import meta_of, parse_node
from aispike_hub.kube.slices import label_value
from aispike_hub.kube.watch import ListWatch, ListWatchApi
from aispike_hub.model import GIB_IN_MIB, Gpu, Node

log = logging.getLogger(__name__)

"""GPU feature discovery's labels: model name and memory per GPU in MiB."""


def node_from_object(
    obj: Mapping[str, Any],
    gpu_memory_gib: Mapping[str, int] | None = None,
    model_labels: Sequence[str] = (GPU_MODEL_LABEL, GFD_MODEL_LABEL),
    held_outside: int = 0,
    dra: DraModel | None = None,
) -> Node | None:
    """The model :class:`Node` of a Node object; ``None`` when pods cannot go there.

    GPUs without a known memory size (no ``nvidia.com/gpu.memory`` label, model not in
    ``gpu_memory_gib``) are left out: the form cannot offer slices of an unknown size.
    ``held_outside`` GPUs (held by other workloads' pods) are left out too.  ``dra`` (what the
    node's DRA devices say) names the model and memory where no label does.
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
    count = max(0, count - held_outside)
    model = next((labels[k] for k in model_labels if labels.get(k)), "")
    from_dra = not model and dra is not None
    if from_dra and dra is not None:
        model = dra.model
    memory_mib = 0
    if labels.get(GFD_MEMORY_LABEL, "").isdigit():
        memory_mib = int(labels[GFD_MEMORY_LABEL])
    elif model and model in (gpu_memory_gib or {}):
        memory_mib = int((gpu_memory_gib or {})[model]) * GIB_IN_MIB
    elif from_dra and dra is not None:
        memory_mib = dra.memory_mib
    gpus: tuple[Gpu, ...] = ()
    if count > 0 and model and memory_mib > 0:
        gpus = tuple(Gpu(i, model, memory_mib) for i in range(count))
    return Node(info.name, info.cpu_milli, info.memory_mib, gpus, labels,
                dict(info.images), dict(info.datasets))


def model_label_for(objects: Sequence[Mapping[str, Any]],
                    model_labels: Sequence[str] = (GPU_MODEL_LABEL, GFD_MODEL_LABEL)) -> str:
    """The node label that names GPU models on this cluster, for the spawner's model affinity:
    the first of ``model_labels`` that a node offering ``nvidia.com/gpu`` carries (our
    ``aispike.io/gpu-model``, else GPU feature discovery's ``nvidia.com/gpu.product``), or the
    first of them when no node carries any.  Pair it with :func:`model_value` for the value.

    Why: a cluster with GPU feature discovery but not our agent has no ``aispike.io/gpu-model``;
    an affinity on it would leave the pod unschedulable (issue 21).
    """
    gpu_labels = []
    for obj in objects:
        alloc = (obj.get("status") or {}).get("allocatable") or {}
        if str(alloc.get(NVIDIA_GPU_RESOURCE, "0")) not in ("", "0"):
            gpu_labels.append(meta_of(obj).get("labels") or {})
    for key in model_labels:
        if any(labels.get(key) for labels in gpu_labels):
            return key
    return model_labels[0] if model_labels else GPU_MODEL_LABEL


def model_labels_in_use(objects: Sequence[Mapping[str, Any]],
                        model_labels: Sequence[str] = GPU_MODEL_LABELS) -> tuple[str, ...]:
    """The labels of ``model_labels`` (in their order) that name the model of at least one node
    offering ``nvidia.com/gpu`` by precedence (the first of them the node carries); all of
    ``model_labels`` when no node carries any (nothing known: keep every way open).  The
    spawner's model affinity has one term per label returned
    (:func:`aispike_hub.backends.model_affinity_terms`)."""
    used: set[str] = set()
    for obj in objects:
        alloc = (obj.get("status") or {}).get("allocatable") or {}
        if str(alloc.get(NVIDIA_GPU_RESOURCE, "0")) in ("", "0"):
            continue
        labels = meta_of(obj).get("labels") or {}
        first = next((k for k in model_labels if labels.get(k)), None)
        if first is not None:
            used.add(first)
    return tuple(k for k in model_labels if k in used) or tuple(model_labels)


def dra_only_nodes(objects: Sequence[Mapping[str, Any]], dra: Mapping[str, DraModel],
                   model_labels: Sequence[str] = GPU_MODEL_LABELS) -> dict[str, str]:
    """Node name -> GPU model for the nodes offering ``nvidia.com/gpu`` that carry none of
    ``model_labels`` and whose DRA devices name one model (``dra``: from
    :func:`~aispike_hub.kube.dra_models.node_models`).  The model affinity matches these by
    name (:func:`aispike_hub.backends.model_affinity_terms`): no label says their model, and a
    device-plugin pod has no claim whose selector could."""
    out: dict[str, str] = {}
    for obj in objects:
        alloc = (obj.get("status") or {}).get("allocatable") or {}
        if str(alloc.get(NVIDIA_GPU_RESOURCE, "0")) in ("", "0"):
            continue
        meta = meta_of(obj)
        labels = meta.get("labels") or {}
        name = str(meta.get("name") or "")
        found = dra.get(name)
        if (found is None or found.model == MIXED or not found.model
                or any(labels.get(k) for k in model_labels)):
            continue
        out[name] = found.model
    return out


def model_value(model: str) -> str:
    """The label value a node of GPU ``model`` carries under either model label (both our agent
    and GPU feature discovery write the product name with spaces as dashes)."""
    return label_value(model)


class NodeWatcher:
    """Node objects by name, kept current by the inventory's list + watch loop on a thread.

    Why this and not KubeSpawner's own asyncio ``kubespawner.reflector.ResourceReflector`` (which
    the spawner runs for pods): the reflector keys every object by ``metadata.namespace``, which
    a cluster-scoped Node does not have (its list and its watch both fail with ``KeyError``), and
    after a short run of errors it gives up and calls ``on_failure``.  Making it watch Nodes means
    overriding both its list and its watch loop, i.e. writing a second list/watch after all.  So
    the spawner runs the very loop the placement inventory runs
    (:class:`~aispike_hub.kube.watch.ListWatch`: list, watch from the resourceVersion, re-list on
    410/expiry and every resync, backoff on errors) on one daemon thread, and reads Nodes with the
    inventory's parser.  The event loop only takes a snapshot under a lock (:meth:`nodes`), and
    waits for :attr:`first_load` as it did.

    ``api`` is what the loop talks through: a :class:`~aispike_hub.kube.api.KubeJson` (or anything
    with its ``list``/``watch``), a ``kubernetes`` ``ApiClient``, or ``None`` for
    :func:`~aispike_hub.kube.api.kube_api_client` (the client the native backend's inventory
    uses).  The loop is synchronous, so an asyncio client (KubeSpawner's ``kubernetes_asyncio``
    ``CoreV1Api``) is not used: the watcher then opens :func:`kube_api_client` itself.
    """

    def __init__(self, api: Any = None, watch_timeout: int = 300, watch_pods: bool = True,
                 hub_id: str = "", owns_unnamed: bool = False, watch_slices: bool = True
                 ) -> None:
        self.api = api
        self.hub_id = hub_id
        """This hub's id: pods of other hubs count as held (kube/identity.py)."""
        self.owns_unnamed = owns_unnamed
        """Pods without a hub id in their value are this hub's too (kube/identity.py)."""
        self.watch_timeout = watch_timeout
        self.watch_pods = watch_pods
        """Also watch pods, to leave out the GPUs other workloads hold (see the module doc)."""
        self.objects: dict[str, dict[str, Any]] = {}
        """Node objects by name (replaced whole on each list; read a copy via :meth:`nodes`)."""
        self.held: dict[str, tuple[str, int]] = {}
        """Pod key -> (node, GPUs) for bound pods of other workloads that hold GPUs."""
        self.watch_slices = watch_slices
        """Also watch ResourceSlices, to name the model of GPU nodes without a model label."""
        self.slices: dict[str, dict[str, Any]] = {}
        """ResourceSlice objects by name (empty where the cluster has none or hides them)."""
        self.slices_unavailable = ""
        """Why slices are not read ("" while they are): the API's 404 or 403, logged once."""
        self._pending = ({"nodes"} | ({"pods"} if watch_pods else set())
                         | ({"slices"} if watch_slices else set()))
        self._loop = asyncio.get_running_loop()
        self.first_load: asyncio.Future[None] = self._loop.create_future()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> NodeWatcher:
        """Start watching on a daemon thread (idempotent); :attr:`first_load` resolves once the
        first list is in."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="spawner-nodes", daemon=True)
            self._thread.start()
        return self

    async def stop(self) -> None:
        """Stop watching (the thread ends at its next event or watch timeout)."""
        self._stop.set()

    def _run(self) -> None:
        try:
            api = _json_api(self.api)
        except Exception as e:  # no credentials: say so now rather than time out waiting
            log.warning("spawner node watch: no Kubernetes client (%s)", e)
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._failed, e)
            return
        if self.watch_pods:
            pods = ListWatch(api, "pods", on_list=self._pods_listed, on_event=self._pod_event,
                             stop=self._stop,
                             query={"fieldSelector": "status.phase!=Succeeded,"
                                                     "status.phase!=Failed"},
                             resync_seconds=self.watch_timeout,
                             watch_timeout_seconds=self.watch_timeout,
                             name="spawner pod watch", logger=log)
            threading.Thread(target=pods.run, name="spawner-pods", daemon=True).start()
        if self.watch_slices:
            slices = ListWatch(OptionalKind(api, self._stop, self._slices_unavailable,
                                            lambda: self._call(self._loaded, "slices")),
                               "resourceslices", on_list=self._slices_listed,
                               on_event=self._slice_event, stop=self._stop,
                               resync_seconds=self.watch_timeout,
                               watch_timeout_seconds=self.watch_timeout,
                               name="spawner slice watch", logger=log)
            threading.Thread(target=slices.run, name="spawner-slices", daemon=True).start()
        ListWatch(api, "nodes", on_list=self._listed, on_event=self._event, stop=self._stop,
                  resync_seconds=self.watch_timeout, watch_timeout_seconds=self.watch_timeout,
                  name="spawner node watch", logger=log).run()

    def _listed(self, items: list[dict[str, Any]]) -> None:
        objects = {str(meta_of(o).get("name")): o for o in items}
        with self._lock:
            self.objects = objects
        with contextlib.suppress(RuntimeError):  # the hub's loop is closed: nobody waits
            self._loop.call_soon_threadsafe(self._loaded, "nodes")

    def _call(self, fn: Any, *args: Any) -> None:
        """``fn(*args)`` on the hub's loop (nothing when the loop is closed: nobody waits)."""
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(fn, *args)

    def _slices_listed(self, items: list[dict[str, Any]]) -> None:
        objects = {str(meta_of(o).get("name")): o for o in items}
        with self._lock:
            self.slices = objects
        self._call(self._loaded, "slices")

    def _slice_event(self, etype: str, obj: dict[str, Any]) -> None:
        name = str(meta_of(obj).get("name"))
        with self._lock:
            if etype == "DELETED":
                self.slices.pop(name, None)
            else:
                self.slices[name] = obj

    def _slices_unavailable(self, why: str) -> None:
        """The cluster does not serve ResourceSlices, or this hub may not read them: no slices
        (logged the first time only; the watcher asks again at each resync)."""
        if not self.slices_unavailable:
            log.warning("spawner node watch: no ResourceSlices (%s); GPU nodes without a model "
                        "label have no model", why)
        self.slices_unavailable = why

    def dra_models(self) -> dict[str, DraModel]:
        """Node name -> the GPU model its DRA devices name, over the slices seen now."""
        with self._lock:
            slices = list(self.slices.values())
        return node_models(slices)

    def dra_only_nodes(self, model_labels: Sequence[str] = GPU_MODEL_LABELS) -> dict[str, str]:
        """:func:`dra_only_nodes` over the nodes and slices seen now."""
        dra = self.dra_models()
        with self._lock:
            objects = list(self.objects.values())
        return dra_only_nodes(objects, dra, model_labels)

    def _loaded(self, kind: str) -> None:
        self._pending.discard(kind)
        if not self._pending and not self.first_load.done():
            self.first_load.set_result(None)

    def _held(self, obj: Mapping[str, Any]) -> tuple[str, int] | None:
        """(node, GPUs) a pod of another workload holds; ``None`` when it holds none here."""
        meta = meta_of(obj)
        value = (meta.get("annotations") or {}).get(HUB_SERVER_ANNOTATION)
        if isinstance(value, str) and belongs(value, self.hub_id, self.owns_unnamed):
            return None  # this hub's server: admission counts it from its ticket
        node = (obj.get("spec") or {}).get("nodeName")
        phase = (obj.get("status") or {}).get("phase")
        if not node or phase in ("Succeeded", "Failed"):
            return None
        gpus = pod_gpus(obj)
        held = gpus.anonymous + len(gpus.exact)
        return (str(node), held) if held else None

    def _pods_listed(self, items: list[dict[str, Any]]) -> None:
        held: dict[str, tuple[str, int]] = {}
        for obj in items:
            found = self._held(obj)
            if found is not None:
                meta = meta_of(obj)
                held[f"{meta.get('namespace')}/{meta.get('name')}"] = found
        with self._lock:
            self.held = held
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._loaded, "pods")

    def _pod_event(self, etype: str, obj: dict[str, Any]) -> None:
        meta = meta_of(obj)
        key = f"{meta.get('namespace')}/{meta.get('name')}"
        found = None if etype == "DELETED" else self._held(obj)
        with self._lock:
            if found is None:
                self.held.pop(key, None)
            else:
                self.held[key] = found

    def _failed(self, error: Exception) -> None:
        if not self.first_load.done():
            self.first_load.set_exception(error)

    def _event(self, etype: str, obj: dict[str, Any]) -> None:
        name = str(meta_of(obj).get("name"))
        with self._lock:
            if etype == "DELETED":
                self.objects.pop(name, None)
            else:
                self.objects[name] = obj

    def model_label(self, model_labels: Sequence[str] = (GPU_MODEL_LABEL, GFD_MODEL_LABEL)
                    ) -> str:
        """:func:`model_label_for` over the nodes seen now."""
        with self._lock:
            objects = list(self.objects.values())
        return model_label_for(objects, model_labels)

    def model_labels_in_use(self, model_labels: Sequence[str] = GPU_MODEL_LABELS
                            ) -> tuple[str, ...]:
        """:func:`model_labels_in_use` over the nodes seen now."""
        with self._lock:
            objects = list(self.objects.values())
        return model_labels_in_use(objects, model_labels)

    def nodes(self, gpu_memory_gib: Mapping[str, int] | None = None,
              model_labels: Sequence[str] = (GPU_MODEL_LABEL, GFD_MODEL_LABEL)) -> list[Node]:
        out = []
        dra = self.dra_models()
        with self._lock:
            objects = list(self.objects.values())
            held: dict[str, int] = {}
            for node_name, k in self.held.values():
                held[node_name] = held.get(node_name, 0) + k
        for obj in objects:
            try:
                name = str(meta_of(obj).get("name"))
                node = node_from_object(obj, gpu_memory_gib, model_labels,
                                        held.get(name, 0), dra.get(name))
            except (ValueError, KeyError, TypeError) as e:
                log.warning("skipping node %s: %s", obj.get("metadata", {}).get("name"), e)
                continue
            if node is not None:
                out.append(node)
        return out


class OptionalKind:
    """``api``'s list and watch for a kind the cluster may not serve (404: no DRA API) or this
    hub may not read (403: no RBAC): either answer reads as "none of them" (an empty list, and a
    watch that waits out its timeout), reported to ``unavailable`` with the reason; the loop asks
    again at its next resync.  Any other failure is reported to ``failed`` (so the first load
    does not wait on it) and raised (the loop backs off and retries).

    Why: ResourceSlices only add the model of unlabelled nodes; their absence must never keep
    the form from rendering or a server from starting.
    """

    ABSENT = (403, 404)

    def __init__(self, api: ListWatchApi, stop: threading.Event,
                 unavailable: Any, failed: Any) -> None:
        self.api = api
        self.stop = stop
        self.unavailable = unavailable
        self.failed = failed
        self.absent = False

    def _absent(self, e: Exception) -> bool:
        status = getattr(e, "status", None)
        if status not in self.ABSENT:
            return False
        self.absent = True
        self.unavailable(f"{status} {getattr(e, 'reason', '') or ''}".strip())
        return True

    def list(self, kind: str, *, query: Mapping[str, Any] | None = None
             ) -> tuple[list[dict[str, Any]], str]:
        try:
            items, rv = self.api.list(kind, query=query)
        except Exception as e:
            if self._absent(e):
                return [], ""
            self.failed()
            raise
        self.absent = False
        return items, rv

    def watch(self, kind: str, resource_version: str, *, timeout_seconds: int = 240,
              query: Mapping[str, Any] | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        if not self.absent:
            try:
                yield from self.api.watch(kind, resource_version,
                                          timeout_seconds=timeout_seconds, query=query)
                return
            except Exception as e:
                if not self._absent(e):
                    raise
        self.stop.wait(timeout_seconds)


def _json_api(api: Any) -> ListWatchApi:
    """The list/watch client for ``api`` (see :class:`NodeWatcher`); blocking, call on the thread.
    """
    if callable(getattr(api, "list", None)) and callable(getattr(api, "watch", None)):
        return cast(ListWatchApi, api)
    from kubernetes.client import ApiClient

    if isinstance(api, ApiClient):
        return KubeJson(api)
    return KubeJson(kube_api_client())
