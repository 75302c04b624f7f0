"""Pure builders for the claim side of the DRA contract: pinned ResourceClaims and pod fields.

Placement is ours, enforcement is Kubernetes' (docs/dra-contract.md): for each
notebook server the placement core picks a node and GPU(s), and this module writes that decision
into the objects kube-scheduler understands:

- one ResourceClaim per server, named after the server (so the API server itself refuses a second
  claim for the same server: names are unique in a namespace), asking ``capacity.requests.memory``
  on one device pinned by a CEL selector on its ``uuid`` attribute; or, for whole GPUs, ``count: k``
  devices pinned by uuid with a ``matchAttribute`` constraint on the NVLink domain when the
  placement chose GPUs of one domain;
- the decision and the request, as annotations on the claim, so that a restarted service rebuilds
  its view (a pinned claim not yet allocated counts as used) and can re-pin without the spawner;
- the pod's ``resourceClaims``, the container's ``resources.claims`` and a required node affinity
  to the chosen node (``matchFields`` on ``metadata.name``, which lets the scheduler's NodeAffinity
  PreFilter narrow the search to that one node before the DRA filter runs).

Field names are those of ``resource.k8s.io/v1`` in Kubernetes 1.36 (``exactly``,
``allocationMode``, ``capacity.requests``, ``constraints[].matchAttribute``).  Everything here is
a pure function of data returning plain ``dict`` manifests (the API's camelCase JSON), like
KubeSpawner's ``objects.py``; no I/O, no clock.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aispike_hub.admission.wire import ANY_STYLE, KeyStyle, request_from_dict, request_to_dict
from aispike_hub.contract import HUB_ID_LABEL
from aispike_hub.kube.identity import split_hub_server
from aispike_hub.kube.slices import (
    DEVICE_CLASS,
    DRIVER,
    MEMORY_CAPACITY,
    RESOURCE_API_VERSION,
    device_class,
    memory_quantity,
    uuid_selector,
)
from aispike_hub.model import GIB_IN_MIB, Assignment, SliceRequest

__all__ = [
    "CLAIM_REQUEST",
    "DEVICE_CLASS",
    "HUB_ID_LABEL",
    "HUB_SERVER_ANNOTATION",
    "MANAGED_BY",
    "NVLINK_ATTRIBUTE",
    "PLACEMENT_ANNOTATION",
    "REQUEST_ANNOTATION",
    "SERVER_LABEL",
    "PinnedGpu",
    "Placement",
    "apply_pin_to_pod",
    "claim_name",
    "device_class",
    "node_affinity",
    "owner_reference",
    "pinned_claim",
    "placement_from_claim",
    "request_from_json",
    "request_to_json",
]

CLAIM_REQUEST = "gpu"
"""Name of the one request inside our claims, and of the pod's claim entry that refers to it."""

SERVER_LABEL = "aispike.io/server"
"""Label on our claims (and the pods that use them): the server's pod name (hashed if too long)."""

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "aispike-hub"
"""Value of ``app.kubernetes.io/managed-by`` on every claim we create: how we find our own."""

PLACEMENT_ANNOTATION = "aispike.io/placement"
"""On our claims: the placement decision (node, GPUs with uuid and MiB, CPU, RAM, attempt)."""

REQUEST_ANNOTATION = "aispike.io/request"
"""On our claims: the server's :class:`SliceRequest` as JSON, so any replica can re-pin it."""

HUB_SERVER_ANNOTATION = "aispike.io/hub-server"
"""On our claims and notebook pods: ``<hub user>/<server name>`` (the service's reservation key),
so the AISpike service can tell its own servers' usage from other workloads' after a restart."""

NVLINK_ATTRIBUTE = f"{DRIVER}/nvlinkDomain"
"""Fully qualified attribute name for ``matchAttribute`` (constraints need the domain prefix)."""

CLAIM_SUFFIX = "-gpu"
_MAX_NAME = 253
_LABEL_MAX = 63
_LABEL_OK = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$")


@dataclass(frozen=True, slots=True)
class PinnedGpu:
    """One GPU a placement pinned: the device's uuid (the pin key), index and MiB taken on it."""

    uuid: str
    index: int
    memory_mib: int
    nvlink_domain: str = ""


@dataclass(frozen=True, slots=True)
class Placement:
    """A placement decision in the words of the contract: where, which GPUs, how much.

    ``whole`` is true when the GPUs are taken as whole devices (multi-GPU requests and one whole
    GPU); then no memory is requested and the device's request policy default (the whole GPU) is
    consumed.  ``attempt`` counts pins of this server: re-pins are bounded, across restarts too.
    """

    node: str
    gpus: tuple[PinnedGpu, ...]
    whole: bool
    cpu_milli: int = 0
    memory_mib: int = 0
    attempt: int = 1

    def assignment(self, owner: str = "") -> Assignment:
        """The core's view of this pin (what it takes until the scheduler allocates it)."""
        return Assignment(
            node=self.node,
            gpu_indices=tuple(g.index for g in self.gpus),
            gpu_memory_mib=tuple(g.memory_mib for g in self.gpus),
            cpu_milli=self.cpu_milli,
            memory_mib=self.memory_mib,
            owner=owner,
        )

    @property
    def nvlink_domain(self) -> str:
        """The NVLink domain all pinned GPUs share ('' when one GPU, none, or several)."""
        domains = {g.nvlink_domain for g in self.gpus}
        if len(self.gpus) < 2 or len(domains) != 1:
            return ""
        return domains.pop()

    def to_json(self) -> str:
        return json.dumps(
            {
                "node": self.node,
                "whole": self.whole,
                "cpuMilli": self.cpu_milli,
                "memoryMiB": self.memory_mib,
                "attempt": self.attempt,
                "gpus": [
                    {"uuid": g.uuid, "index": g.index, "memoryMiB": g.memory_mib,
                     "nvlinkDomain": g.nvlink_domain}
                    for g in self.gpus
                ],
            },
            separators=(",", ":"),
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Placement:
        """Parse :meth:`to_json` output; raises ``ValueError`` on anything malformed."""
        try:
            data = json.loads(text)
            gpus = tuple(
                PinnedGpu(str(g["uuid"]), int(g["index"]), int(g["memoryMiB"]),
                          str(g.get("nvlinkDomain", "")))
                for g in data["gpus"]
            )
            return cls(
                node=str(data["node"]),
                gpus=gpus,
                whole=bool(data["whole"]),
                cpu_milli=int(data.get("cpuMilli", 0)),
                memory_mib=int(data.get("memoryMiB", 0)),
                attempt=int(data.get("attempt", 1)),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"bad {PLACEMENT_ANNOTATION} annotation: {e}") from e


def claimed_mib(request_mib: int) -> int:
    """What the scheduler will consume for a slice of ``request_mib``: rounded up to whole GiB.

    Why: the device's request policy has a 1 GiB step, so the allocator rounds every request up;
    a pin that counted less than that would let our view drift from the scheduler's.
    """
    return -(-request_mib // GIB_IN_MIB) * GIB_IN_MIB


def claim_name(server: str) -> str:
    """Name of the one ResourceClaim of the server whose pod is named ``server``.

    Deterministic on purpose: a second claim for the same server cannot exist (the API server
    refuses the name), and a claim re-created by a re-pin keeps the name the pod refers to.
    """
    name = f"{server}{CLAIM_SUFFIX}"
    if len(name) <= _MAX_NAME:
        return name
    digest = hashlib.sha256(server.encode()).hexdigest()[:10]
    return f"{server[: _MAX_NAME - len(CLAIM_SUFFIX) - 11]}-{digest}{CLAIM_SUFFIX}"


def server_label_value(server: str) -> str:
    """``server`` as a label value: itself when valid, else a readable prefix plus a hash."""
    if len(server) <= _LABEL_MAX and _LABEL_OK.match(server):
        return server
    digest = hashlib.sha256(server.encode()).hexdigest()[:10]
    prefix = re.sub(r"[^A-Za-z0-9_.-]+", "-", server)[: _LABEL_MAX - 11].strip("-_.")
    return f"{prefix}-{digest}" if prefix else digest


def request_to_json(request: SliceRequest) -> str:
    """A :class:`SliceRequest` as stable JSON (for the request annotation of claims and pods).

    Admission's one codec (:mod:`aispike_hub.admission.wire`) in camelCase, the style of a
    Kubernetes object and of every annotation already in clusters.
    """
    return json.dumps(request_to_dict(request, KeyStyle.CAMEL), separators=(",", ":"),
                      sort_keys=True)


def request_from_json(text: str) -> SliceRequest:
    """Inverse of :func:`request_to_json`; raises ``ValueError`` on anything malformed.

    Reads the field names in either style (camelCase as written here, or the REST API's
    snake_case), with the same checks as a request sent to the API.
    """
    try:
        return request_from_dict(json.loads(text), ANY_STYLE)
    except ValueError as e:  # bad JSON, or a RequestError naming the field
        raise ValueError(f"bad {REQUEST_ANNOTATION} annotation: {e}") from e


def _uuid_in(uuids: Sequence[str]) -> str:
    if len(uuids) == 1:
        return uuid_selector(uuids[0])
    listed = ", ".join(json.dumps(u) for u in uuids)
    return f'device.attributes["{DRIVER}"].uuid in [{listed}]'


def device_request(placement: Placement) -> dict[str, Any]:
    """The claim's one ``exactly`` request for ``placement``'s GPUs (pinned by uuid)."""
    uuids = [g.uuid for g in placement.gpus]
    exactly: dict[str, Any] = {
        "deviceClassName": DEVICE_CLASS,
        "allocationMode": "ExactCount",
        "count": len(uuids),
        "selectors": [{"cel": {"expression": _uuid_in(uuids)}}],
    }
    if not placement.whole:
        if len(placement.gpus) != 1:
            raise ValueError("a memory slice is on exactly one GPU")
        exactly["capacity"] = {
            "requests": {MEMORY_CAPACITY: memory_quantity(placement.gpus[0].memory_mib)}
        }
    return {"name": CLAIM_REQUEST, "exactly": exactly}


def pinned_claim(
    server: str,
    placement: Placement,
    request: SliceRequest,
    *,
    labels: Mapping[str, str] | None = None,
    owner: Mapping[str, Any] | None = None,
    hub_server: str = "",
) -> dict[str, Any]:
    """The ResourceClaim that holds ``placement`` for the server whose pod is ``server``.

    ``hub_server`` names the hub server the claim belongs to: ``<hub id>:<user>/<server>``, or
    ``<user>/<server>`` for the default hub (:func:`aispike_hub.kube.identity.hub_server_value`);
    a claim of a hub with an id is also labelled :data:`HUB_ID_LABEL` with it.

    ``owner`` is an ownerReference (see :func:`owner_reference`) when the pod already exists
    (a re-pin); otherwise the flow adds it right after creating the pod, so the claim is
    garbage-collected with its server.
    """
    if not placement.gpus:
        raise ValueError("a CPU-only server has no claim")
    devices: dict[str, Any] = {"requests": [device_request(placement)]}
    if placement.nvlink_domain:
        devices["constraints"] = [
            {"requests": [CLAIM_REQUEST], "matchAttribute": NVLINK_ATTRIBUTE}
        ]
    metadata: dict[str, Any] = {
        "name": claim_name(server),
        "labels": {
            **(labels or {}),
            SERVER_LABEL: server_label_value(server),
            MANAGED_BY_LABEL: MANAGED_BY,
            **({HUB_ID_LABEL: hub} if (hub := split_hub_server(hub_server)[0]) else {}),
        },
        "annotations": {
            PLACEMENT_ANNOTATION: placement.to_json(),
            REQUEST_ANNOTATION: request_to_json(request),
            **({HUB_SERVER_ANNOTATION: hub_server} if hub_server else {}),
        },
    }
    if owner:
        metadata["ownerReferences"] = [dict(owner)]
    return {
        "apiVersion": RESOURCE_API_VERSION,
        "kind": "ResourceClaim",
        "metadata": metadata,
        "spec": {"devices": devices},
    }


def is_ours(claim: Mapping[str, Any]) -> bool:
    """True for a claim this project created (by the managed-by label)."""
    labels = (claim.get("metadata") or {}).get("labels") or {}
    return labels.get(MANAGED_BY_LABEL) == MANAGED_BY and SERVER_LABEL in labels


def placement_from_claim(claim: Mapping[str, Any]) -> Placement | None:
    """The placement recorded on one of our claims, ``None`` on a claim that is not ours.

    Raises ``ValueError`` when the claim is ours but its annotation is damaged.
    """
    if not is_ours(claim):
        return None
    annotations = (claim.get("metadata") or {}).get("annotations") or {}
    text = annotations.get(PLACEMENT_ANNOTATION)
    if not text:
        raise ValueError(f"claim has no {PLACEMENT_ANNOTATION} annotation")
    return Placement.from_json(text)


def owner_reference(pod_name: str, pod_uid: str) -> dict[str, Any]:
    """ownerReference making a claim belong to its server's pod (deleted with it by the GC)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": pod_name,
        "uid": pod_uid,
        "controller": True,
        "blockOwnerDeletion": False,
    }


def node_affinity(node: str) -> dict[str, Any]:
    """Required node affinity to exactly ``node`` (``matchFields`` on ``metadata.name``)."""
    return {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
            ]
        }
    }


def apply_pin_to_pod(
    pod: Mapping[str, Any], server: str, placement: Placement | None, container: str = ""
) -> dict[str, Any]:
    """A copy of ``pod`` (a manifest) that uses the server's claim and stays on its node.

    Adds the pod-level ``resourceClaims`` entry, the claim to the notebook container's
    ``resources.claims`` (``container`` by name, else the first container), the server label,
    and a required node affinity.  Existing node-affinity terms are kept and each is narrowed to
    the node (terms are ORed, so every term gets the ``matchFields``).  ``placement=None`` (a
    CPU-only server) changes only the label: kube-scheduler places CPU and RAM well by itself.
    """
    out = copy.deepcopy(dict(pod))
    metadata = out.setdefault("metadata", {})
    metadata.setdefault("labels", {})[SERVER_LABEL] = server_label_value(server)
    if placement is None or not placement.gpus:
        return out
    spec = out.setdefault("spec", {})
    claims = [c for c in spec.get("resourceClaims") or [] if c.get("name") != CLAIM_REQUEST]
    claims.append({"name": CLAIM_REQUEST, "resourceClaimName": claim_name(server)})
    spec["resourceClaims"] = claims
    containers = spec.get("containers") or []
    if not containers:
        raise ValueError("the pod has no containers")
    target = next((c for c in containers if c.get("name") == container), containers[0])
    resources = target.setdefault("resources", {})
    entries = [c for c in resources.get("claims") or [] if c.get("name") != CLAIM_REQUEST]
    resources["claims"] = [*entries, {"name": CLAIM_REQUEST}]
    pin_field = {"key": "metadata.name", "operator": "In", "values": [placement.node]}
    affinity = spec.setdefault("affinity", {})
    node_aff = affinity.setdefault("nodeAffinity", {})
    required = node_aff.get("requiredDuringSchedulingIgnoredDuringExecution") or {}
    terms = required.get("nodeSelectorTerms") or [{}]
    narrowed = []
    for term in terms:
        fields = [
            f for f in term.get("matchFields") or [] if f.get("key") != "metadata.name"
        ]
        narrowed.append({**term, "matchFields": [*fields, pin_field]})
    node_aff["requiredDuringSchedulingIgnoredDuringExecution"] = {"nodeSelectorTerms": narrowed}
    return out


def pinned_node_of_pod(pod: Mapping[str, Any]) -> str:
    """The node a pod's required affinity pins it to via ``metadata.name`` ('' when none)."""
    spec = pod.get("spec") or {}
    required = (
        ((spec.get("affinity") or {}).get("nodeAffinity") or {})
        .get("requiredDuringSchedulingIgnoredDuringExecution") or {}
    )
    for term in required.get("nodeSelectorTerms") or []:
        for f in term.get("matchFields") or []:
            if f.get("key") == "metadata.name" and f.get("operator") == "In":
                values = f.get("values") or []
                if len(values) == 1:
                    return str(values[0])
    return ""
