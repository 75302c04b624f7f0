"""Publishing this node to Kubernetes: its ResourceSlice, GPU-model label and datasets annotation.

The manifests come from :mod:`aispike_hub.kube.slices` (the one implementation of the Kubernetes
contract, shared with the test stack and the simulator); this module decides *when* to write them.

Why only on change: every agent tick reads NVML and the cache, but a ResourceSlice update makes
the scheduler re-read the pool, and a Node update wakes every Node watcher (the service's
inventory, KubeSpawner's reflectors).  So each object's content is hashed; the hash is stored on
the object (annotation ``aispike.io/content-hash`` on the slice) and remembered between ticks, and
nothing is written while it is unchanged.  After a restart, the hash on the live slice says whether
it is already current.

Planning (:func:`desired_state`, :func:`plan_slice`, :func:`plan_node_patch`) is pure;
:func:`publish` does the I/O through any client with the small :class:`KubeClient` interface, and
:class:`KubernetesClient` adapts the official ``kubernetes`` package's ``ApiClient`` to it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from aispike_hub.agent.datasets import CachedDataset
from aispike_hub.contract import (
    CONTENT_HASH_ANNOTATION,
    DATASETS_ANNOTATION,
    DRIVER,
    GPU_MODEL_LABEL,
    MANAGED_BY_AGENT,
    MANAGED_BY_LABEL,
    RESOURCE_GROUP,
    RESOURCE_VERSION,
)
from aispike_hub.kube.slices import datasets_annotation as build_datasets_annotation
from aispike_hub.kube.slices import (
    gpu_device,
    gpu_model_label,
    resource_slice,
    resource_slice_name,
)
from aispike_hub.model import Gpu

log = logging.getLogger(__name__)

HASH_ANNOTATION = CONTENT_HASH_ANNOTATION
"""On our ResourceSlice: hash of its content (generation excluded), to skip unchanged writes."""

MAX_DATASETS_IN_ANNOTATION = 500
"""Most recently used datasets kept in the node annotation (annotations total at most 256 KiB)."""


def content_hash(value: Any) -> str:
    """A stable hash of JSON-able ``value`` (sorted keys, no whitespace)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def publishable_gpus(gpus: Sequence[Gpu]) -> tuple[list[Gpu], list[str]]:
    """The GPUs the contract can publish, and a reason for each one it cannot (logged, skipped).

    Why: one odd device (no UUID, a MIG instance under 2 GiB) must not keep the node's other GPUs
    out of the scheduler.
    """
    good: list[Gpu] = []
    problems: list[str] = []
    for gpu in gpus:
        try:
            gpu_device(gpu)
        except ValueError as exc:
            problems.append(str(exc))
            log.warning("not publishing GPU %s: %s", gpu.index, exc)
            continue
        good.append(gpu)
    return good, problems


def rfc3339(seconds: float) -> str:
    """Seconds since the epoch as an RFC 3339 UTC time (second precision)."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class DesiredState:
    """What this node should look like in the API, without generation or resource versions."""

    node_name: str
    resource_slice: dict[str, Any] | None
    """None when the node has no GPU to publish (then an old slice is deleted)."""
    labels: Mapping[str, str | None] = field(default_factory=dict)
    """Labels to set; None removes the label."""
    annotations: Mapping[str, str | None] = field(default_factory=dict)
    problems: tuple[str, ...] = ()

    @property
    def slice_hash(self) -> str:
        return content_hash(self.resource_slice["spec"]) if self.resource_slice else ""

    @property
    def node_hash(self) -> str:
        return content_hash({"labels": self.labels, "annotations": self.annotations})


def desired_state(
    node_name: str,
    gpus: Sequence[Gpu],
    datasets: Sequence[CachedDataset] | None,
) -> DesiredState:
    """Everything the agent publishes for ``node_name`` (pure).

    ``datasets`` None means the agent manages no dataset cache: the annotation is left alone.
    """
    good, problems = publishable_gpus(gpus)
    slice_manifest = resource_slice(node_name, good) if good else None
    model = gpu_model_label(good)
    labels: dict[str, str | None] = {GPU_MODEL_LABEL: model or None}
    annotations: dict[str, str | None] = {}
    if datasets is not None:
        recent = sorted(datasets, key=lambda d: (-d.last_used, d.name))[
            :MAX_DATASETS_IN_ANNOTATION
        ]
        annotations[DATASETS_ANNOTATION] = build_datasets_annotation(
            {d.name: d.bytes for d in recent}, {d.name: rfc3339(d.last_used) for d in recent}
        )
    return DesiredState(node_name, slice_manifest, labels, annotations, tuple(problems))


@dataclass(frozen=True)
class SliceWrite:
    """One write of our ResourceSlice: ``create``, ``replace`` or ``delete``."""

    action: str
    name: str
    body: dict[str, Any] | None = None


def plan_slice(
    desired: DesiredState, existing: Mapping[str, Any] | None, node_uid: str = ""
) -> SliceWrite | None:
    """The write that brings the live slice (``existing``, None if absent) to ``desired``.

    None when the live slice already carries the desired content hash.  A replace bumps the pool
    generation (the scheduler then drops what it knew of the old pool) and keeps the live
    ``resourceVersion`` so a concurrent writer makes it fail instead of being overwritten.  With
    ``node_uid`` the slice is owned by the Node, so deleting the Node garbage-collects it.
    """
    name = resource_slice_name(desired.node_name)
    if desired.resource_slice is None:
        return SliceWrite("delete", name) if existing is not None else None
    meta = (existing or {}).get("metadata") or {}
    if existing is not None and (meta.get("annotations") or {}).get(HASH_ANNOTATION) == (
        desired.slice_hash
    ):
        return None
    body = copy.deepcopy(desired.resource_slice)
    body["metadata"].setdefault("annotations", {})[HASH_ANNOTATION] = desired.slice_hash
    body["metadata"].setdefault("labels", {})[MANAGED_BY_LABEL] = MANAGED_BY_AGENT
    if node_uid:
        body["metadata"]["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "Node", "name": desired.node_name, "uid": node_uid}
        ]
    if existing is None:
        return SliceWrite("create", name, body)
    old_generation = int((((existing.get("spec") or {}).get("pool")) or {}).get("generation", 0))
    body["spec"]["pool"]["generation"] = old_generation + 1
    if meta.get("resourceVersion"):
        body["metadata"]["resourceVersion"] = meta["resourceVersion"]
    return SliceWrite("replace", name, body)


def plan_node_patch(
    desired: DesiredState, existing_node: Mapping[str, Any]
) -> dict[str, Any] | None:
    """A JSON merge patch for the Node's labels and annotations, or None if they already match."""
    meta = existing_node.get("metadata") or {}
    patch: dict[str, dict[str, str | None]] = {}
    for kind, wanted in (("labels", desired.labels), ("annotations", desired.annotations)):
        live = meta.get(kind) or {}
        changes = {k: v for k, v in wanted.items() if live.get(k) != v and (v or k in live)}
        if changes:
            patch[kind] = changes
    return {"metadata": patch} if patch else None


class KubeClient(Protocol):
    """The few API calls the publisher makes (objects as plain dicts, as the API speaks JSON)."""

    def get_resource_slice(self, name: str) -> dict[str, Any] | None: ...

    def create_resource_slice(self, body: dict[str, Any]) -> None: ...

    def replace_resource_slice(self, name: str, body: dict[str, Any]) -> None: ...

    def delete_resource_slice(self, name: str) -> None: ...

    def get_node(self, name: str) -> dict[str, Any]: ...

    def patch_node(self, name: str, patch: dict[str, Any]) -> None: ...


@dataclass
class PublishMemory:
    """Hashes last written (or found current) by this agent; empty after a restart."""

    slice_hash: str | None = None
    node_hash: str | None = None


def publish(client: KubeClient, desired: DesiredState, memory: PublishMemory) -> list[str]:
    """Write what changed since the last publish; returns what was done, e.g. ["slice: replace"].

    An unchanged tick makes no API call at all.  A failed write leaves ``memory`` unchanged, so
    the next tick reads the live objects and tries again.
    """
    done: list[str] = []
    slice_hash = desired.slice_hash
    node_hash = desired.node_hash
    node: dict[str, Any] | None = None
    if memory.slice_hash != slice_hash:
        node = client.get_node(desired.node_name)
        uid = str((node.get("metadata") or {}).get("uid", ""))
        existing = client.get_resource_slice(resource_slice_name(desired.node_name))
        write = plan_slice(desired, existing, node_uid=uid)
        if write is not None:
            if write.action == "create" and write.body is not None:
                client.create_resource_slice(write.body)
            elif write.action == "replace" and write.body is not None:
                client.replace_resource_slice(write.name, write.body)
            elif write.action == "delete":
                client.delete_resource_slice(write.name)
            done.append(f"slice: {write.action}")
            log.info("ResourceSlice %s: %s", write.name, write.action)
        memory.slice_hash = slice_hash
    if memory.node_hash != node_hash:
        if node is None:
            node = client.get_node(desired.node_name)
        patch = plan_node_patch(desired, node)
        if patch is not None:
            client.patch_node(desired.node_name, patch)
            done.append("node: patch")
            log.info("Node %s: patched %s", desired.node_name, sorted(patch["metadata"]))
        memory.node_hash = node_hash
    return done


class KubernetesClient:
    """:class:`KubeClient` over the official ``kubernetes`` package (``kubernetes.client``).

    ResourceSlices go through ``CustomObjectsApi``, which addresses any group/version/plural, so
    this works whatever the installed client's generated DRA models are.
    """

    GROUP, VERSION, PLURAL = RESOURCE_GROUP, RESOURCE_VERSION, "resourceslices"

    def __init__(self, api_client: Any) -> None:
        import kubernetes  # imported here: only the agent in a cluster needs it

        client: Any = kubernetes.client  # the client package is untyped
        self._api_client = api_client
        self._custom = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)
        self._api_exception = client.exceptions.ApiException

    def get_resource_slice(self, name: str) -> dict[str, Any] | None:
        try:
            found: Any = self._custom.get_cluster_custom_object(
                self.GROUP, self.VERSION, self.PLURAL, name
            )
        except self._api_exception as exc:
            if getattr(exc, "status", None) == 404:
                return None
            raise
        return dict(found)

    def create_resource_slice(self, body: dict[str, Any]) -> None:
        self._custom.create_cluster_custom_object(self.GROUP, self.VERSION, self.PLURAL, body)

    def replace_resource_slice(self, name: str, body: dict[str, Any]) -> None:
        self._custom.replace_cluster_custom_object(
            self.GROUP, self.VERSION, self.PLURAL, name, body
        )

    def delete_resource_slice(self, name: str) -> None:
        try:
            self._custom.delete_cluster_custom_object(self.GROUP, self.VERSION, self.PLURAL, name)
        except self._api_exception as exc:
            if getattr(exc, "status", None) != 404:
                raise

    def get_node(self, name: str) -> dict[str, Any]:
        node = self._core.read_node(name)
        api_client: Any = self._api_client
        return dict(api_client.sanitize_for_serialization(node))

    def patch_node(self, name: str, patch: dict[str, Any]) -> None:
        # Say merge patch explicitly: the generated client would otherwise pick the first JSON
        # patch type it lists (json-patch), which expects a list of operations, not a dict.
        self._core.patch_node(name, patch, _content_type="application/merge-patch+json")


__all__ = [
    "DRIVER",
    "HASH_ANNOTATION",
    "DesiredState",
    "KubeClient",
    "KubernetesClient",
    "PublishMemory",
    "SliceWrite",
    "content_hash",
    "desired_state",
    "plan_node_patch",
    "plan_slice",
    "publish",
]
