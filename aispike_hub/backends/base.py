"""The interface every GPU backend implements, and what its answers look like; pure.

A *backend* is how a notebook server's GPU slice becomes something Kubernetes enforces: our own
DRA driver (a pinned ResourceClaim per server), or a device plugin's extended resources on the
notebook container.  Everything that differs between backends is a method or attribute of
:class:`GpuBackend`, so the spawner and the namespace quota ask the backend instead of comparing
its name.  Backends are registered by name (:mod:`aispike_hub.backends.registry`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from aispike_hub.contract import GPU_MODEL_LABEL, GPU_MODEL_LABELS, NODE_NAME_FIELD
from aispike_hub.isolation_env import notebook_env
from aispike_hub.kube.slices import label_value
from aispike_hub.model import SliceRequest
from aispike_hub.units import GIB_IN_MIB

DEFAULT_MIG_PROFILES = ("1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb")
"""MIG profiles of an A100/H100 80GB, smallest first."""


class BackendError(ValueError):
    """The request cannot be expressed on this backend (the message says what to ask for)."""


@dataclass(frozen=True, slots=True)
class BackendOptions:
    """Settings of the cluster's device plugins that some backends need (the spawner's
    ``mig_profiles`` and ``gpushare_unit``); the others ignore them."""

    mig_profiles: Sequence[str] = DEFAULT_MIG_PROFILES
    """MIG profiles the ``mig`` backend may request."""
    gpushare_unit: str = "GiB"
    """Unit of ``aliyun.com/gpu-mem`` in the gpushare device plugin (``GiB`` or ``MiB``)."""


@dataclass(frozen=True, slots=True)
class GpuResources:
    """What a backend adds to the notebook container, and what the user actually gets."""

    limits: Mapping[str, str]
    granted_mib: int
    """GPU memory per GPU the server gets (0 when only the device knows: whole GPUs)."""
    note: str = ""
    """Told to the user when the backend rounds the request (e.g. a whole GPU for a slice)."""


def model_affinity(models: Iterable[str], label: str = GPU_MODEL_LABEL) -> dict[str, Any] | None:
    """A required node-selector term keeping the pod on nodes of the allowed GPU models."""
    values = sorted({label_value(m) for m in models})
    if not values:
        return None
    return {"matchExpressions": [{"key": label, "operator": "In", "values": values}]}


def model_affinity_terms(models: Iterable[str], labels: Sequence[str] = GPU_MODEL_LABELS,
                         dra_nodes: Mapping[str, str] | None = None
                         ) -> list[dict[str, Any]]:
    """Required node-selector terms (ORed by Kubernetes) keeping a pod on nodes of the allowed
    GPU models, one term per way the cluster names a node's model, in ``labels``' order of
    precedence: a node is matched by the first of ``labels`` it carries, so the term of a later
    label also requires every earlier one to be absent (``DoesNotExist``).  ``dra_nodes``
    (node name -> model, for nodes that carry none of ``labels`` and whose model is known only
    from their DRA devices' attributes) adds one term per such node of an allowed model, by
    ``metadata.name`` (a node field selector takes exactly one value).  Empty: no model asked.

    Why every label, not the one our agent writes: a cluster with NVIDIA's GPU feature
    discovery but not our agent labels ``nvidia.com/gpu.product`` only; an affinity on
    ``aispike.io/gpu-model`` alone leaves the pod unschedulable (issue 21), and a cluster with
    both kinds of node must match both.
    """
    values = sorted({label_value(m) for m in models})
    if not values:
        return []
    terms: list[dict[str, Any]] = []
    for i, label in enumerate(labels):
        absent = [{"key": earlier, "operator": "DoesNotExist"} for earlier in labels[:i]]
        terms.append({"matchExpressions": [
            *absent, {"key": label, "operator": "In", "values": values}]})
    wanted = set(values)
    for node, model in sorted((dra_nodes or {}).items()):
        if label_value(model) in wanted:
            terms.append({
                "matchExpressions": [{"key": k, "operator": "DoesNotExist"} for k in labels],
                "matchFields": [{"key": NODE_NAME_FIELD, "operator": "In", "values": [node]}]})
    return terms


def and_terms(base: Sequence[Mapping[str, Any]], terms: Sequence[Mapping[str, Any]]
              ) -> list[dict[str, Any]]:
    """``base AND terms`` as one list of node-selector terms (each a conjunction; the list a
    disjunction): every pair merged.  Why: KubeSpawner's ``node_affinity_required`` is ORed, so
    appending the model's terms to an admin's would let a pod onto a node that meets only one
    of them."""
    if not base:
        return [dict(t) for t in terms]
    if not terms:
        return [dict(b) for b in base]
    out = []
    for b in base:
        for t in terms:
            merged: dict[str, Any] = dict(b)
            for key in ("matchExpressions", "matchFields"):
                both = [*(b.get(key) or []), *(t.get(key) or [])]
                if both:
                    merged[key] = both
            out.append(merged)
    return out


def slice_gib(request: SliceRequest) -> tuple[int, int]:
    """(MiB, GiB rounded up) of a one-GPU slice request; (0, 0) for whole GPUs or none."""
    slice_mib = request.gpu_memory_mib if request.gpu_count == 1 else 0
    return slice_mib, -(-slice_mib // GIB_IN_MIB)


class GpuBackend(ABC):
    """One way of giving notebook servers GPUs (see the module docstring).

    Subclasses set :attr:`name` and :attr:`uses_claims`, implement :meth:`slice_resources`
    (and, where the device plugin has quota-able resources, :meth:`quota_hard`), and are
    registered with :func:`aispike_hub.backends.registry.register` (the built-in ones by
    :data:`aispike_hub.backends.BUILTIN`).
    """

    name: ClassVar[str]
    """The value of ``c.AISpikeSpawner.backend`` that selects this backend."""
    uses_claims: ClassVar[bool] = False
    """True when servers get their GPU as a ResourceClaim of our DRA driver pinned by the hub's
    placer: the cluster view is the placer's inventory of our ResourceSlices, a start pins a
    claim and a stop releases it.  False when kube-scheduler places the pod by extended
    resources: the spawner adds GPU-model affinity and a locality preference instead."""
    description: ClassVar[str] = ""
    """One line for the setting's help text and the docs."""

    def __init__(self, options: BackendOptions | None = None) -> None:
        self.options = options or BackendOptions()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.options!r})"

    def pod_resources(self, request: SliceRequest) -> GpuResources:
        """Container resource limits for ``request`` (raises :class:`BackendError`).

        CPU-only requests get nothing; otherwise :meth:`slice_resources` decides.
        """
        if request.gpu_count == 0:
            return GpuResources({}, 0)
        return self.slice_resources(request)

    @abstractmethod
    def slice_resources(self, request: SliceRequest) -> GpuResources:
        """Container resource limits for a request of at least one GPU."""

    def quota_hard(self, servers: int | None, gpus: int | None,
                   gpu_memory_mib: int | None) -> dict[str, str]:
        """The GPU part of a user namespace's ResourceQuota ``spec.hard`` for these ceilings
        (``None``: unlimited).  Servers are always ``pods`` (added by the caller); a backend
        adds what its objects count in.  Default: nothing (the device plugin's resources
        cannot be limited per namespace)."""
        return {}

    def model_affinity(self, request: SliceRequest,
                       label: str = GPU_MODEL_LABEL) -> dict[str, Any] | None:
        """A required node-selector term for the request's allowed GPU models, when
        kube-scheduler places the pod (``None`` for a native backend or a CPU-only server)."""
        if self.uses_claims or not request.gpu_count:
            return None
        return model_affinity(request.allowed_models, label)

    def compute_share_env(self, percent: int) -> dict[str, str]:
        """Environment that bounds a slice to ``percent`` of its GPU's compute (the share comes
        from :func:`aispike_hub.quota.compute_share.compute_percent`).  Default: nothing, the
        backend cannot bound compute (whole GPUs, MIG's fixed instances, gpushare)."""
        return {}

    def compute_share_limits(self, percent: int) -> dict[str, str]:
        """Container resource limits that bound a slice's compute (HAMi's ``gpucores``).
        Default: nothing."""
        return {}

    def model_affinity_terms(self, request: SliceRequest,
                             labels: Sequence[str] = GPU_MODEL_LABELS,
                             dra_nodes: Mapping[str, str] | None = None
                             ) -> list[dict[str, Any]]:
        """The required node-selector terms (ORed) for the request's allowed GPU models under
        every way the cluster names them (:func:`model_affinity_terms`), when kube-scheduler
        places the pod (empty for a native backend, a CPU-only server or "any model")."""
        if self.uses_claims or not request.gpu_count:
            return []
        return model_affinity_terms(request.allowed_models, labels, dra_nodes)

    def notebook_env(self, request: SliceRequest, granted_mib: int,
                     datasets: Mapping[str, str]) -> dict[str, str]:
        """The slice variables the notebook sees (``AISPIKE_BACKEND`` is this backend's name)."""
        return notebook_env(request, granted_mib, self.name, datasets)
