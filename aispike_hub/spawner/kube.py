"""``AISpikeSpawner``: KubeSpawner with GPU slices, admission, placement and reasons.

One start, in order (every step says what it does on the spawn page):

1. the options (form, REST ``user_options`` or ``opt-`` query) are parsed by
   :mod:`aispike_hub.spawner.form`: a bad value is an HTTP 400 naming the field, before anything
   else happens (``apply_user_options``; with JupyterHub < 5.3, at the start of ``start``);
2. admission (:mod:`aispike_hub.admission`: the AISpike service, or in-process): refused
   is a ``SpawnException`` with the quota core's reasons, before any pod exists; queued is
   progress messages until admitted;
3. the pod is built from the admin's image and dataset entries: resources for the backend
   (``aispike``: the server's pinned ResourceClaim from :class:`aispike_hub.kube.placer.Placer`;
   ``hami``/``gpushare``/``mig``/``nvidia``: extended resources, :mod:`aispike_hub.kube.resources`),
   the tier's PriorityClass, annotations, env, dataset volumes, the GPU model as required node
   affinity and nodes caching the image and datasets as preferred affinity (non-native);
4. KubeSpawner creates the pod; meanwhile a watcher re-pins a stale pin (native) and aborts the
   start with the scheduler's reason once the pod stays unschedulable for
   ``unschedulable_timeout`` seconds, instead of waiting out ``start_timeout``; a 403 from a
   ResourceQuota becomes a ``SpawnException`` too.

Stopping deletes the pod (its claim is garbage-collected with it, and released at once) and
gives the admission back.

This module holds the settings, the cluster view and steps 1-3; step 4 (pin, create, wait,
re-pin), undoing a failed start and ``stop`` are :class:`aispike_hub.spawner.kube_start.
KubeStartMixin`, which the spawner inherits.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, ClassVar, cast

from jupyterhub.spawner import SpawnException
from traitlets import (
    Bool,
    Dict,
    Enum,
    Float,
    Integer,
    List,
    TraitError,
    Unicode,
    default,
    validate,
)

from aispike_hub.admission.client import AdmissionClient
from aispike_hub.admission.hub import admit_or_raise
from aispike_hub.admission.protocol import Admission
from aispike_hub.backends import (
    BackendOptions,
    GpuBackend,
    and_terms,
    backend_for,
    backend_names,
)
from aispike_hub.contract import (
    BACKEND_ANNOTATION,
    GFD_MODEL_LABEL,
    GPU_MODEL_LABEL,
    HUB_ID_LABEL,
    NOTE_ANNOTATION,
    OPTIONS_ANNOTATION,
    TIER_ANNOTATION,
)
from aispike_hub.kube.api import kube_api_client
from aispike_hub.kube.claims import HUB_SERVER_ANNOTATION, REQUEST_ANNOTATION, request_to_json
from aispike_hub.kube.identity import (
    hub_id_from_env,
    hub_server_value,
    owns_unnamed_from_env,
    refuse_bad_hub_id,
)
from aispike_hub.kube.resources import (
    DEFAULT_MIG_PROFILES,
    BackendError,
    GpuResources,
    dataset_volumes,
    locality_preference,
)
from aispike_hub.model import Node, SliceRequest
from aispike_hub.spawner.form import FormSettings, Options
from aispike_hub.spawner.kube_options import RESTORED, KubeOptionsMixin
from aispike_hub.spawner.kube_start import KubeStartMixin
from aispike_hub.spawner.nodes import NodeWatcher
from aispike_hub.spawner.profiles import no_request_above_limit
from aispike_hub.spawner.settings import SpawnerFormSettings

_RESTORED = RESTORED  # the old name, for importers


class _Raw:
    """A response-like holder so kubernetes_asyncio can deserialize a manifest we edited."""

    def __init__(self, doc: Any) -> None:
        self.data = json.dumps(doc)


class AISpikeSpawner(KubeStartMixin, KubeOptionsMixin, SpawnerFormSettings):
    """KubeSpawner that starts notebook servers on GPU slices (see the module docstring)."""

    backend = Enum(
        list(backend_names()), "aispike",
        help="""How a GPU slice becomes pod resources. aispike: our DRA driver, a pinned
        ResourceClaim per server (Kubernetes >= 1.34); hami: nvidia.com/gpu + nvidia.com/gpumem
        (MiB); gpushare: aliyun.com/gpu-mem; mig: the smallest nvidia.com/mig-<profile> that
        holds the slice; nvidia: whole nvidia.com/gpu (a slice takes a whole GPU).""",
    ).tag(config=True)

    images = List(
        Dict(), default_value=[],
        help="""Images users may pick: [{"name": "pytorch", "image": "quay.io/...:tag",
        "description": "PyTorch 2 + CUDA 12"}, ...]; the first is the default. Empty: one
        entry "default" with KubeSpawner.image. Users pick by name; only these images run.""",
    ).tag(config=True)

    datasets = Dict(
        default_value={},
        help="""Datasets users may mount: {"imagenet": {"description": "ImageNet-1k",
        "mount_path": "/datasets/imagenet", "volume": {"persistentVolumeClaim":
        {"claimName": "imagenet", "readOnly": true}}, "read_only": true}}. The volume is any
        Kubernetes volume source; nodes caching a dataset (annotation aispike.io/datasets)
        are preferred.""",
    ).tag(config=True)

    # fit_preview_service and fit_token_seconds: SpawnerFormSettings (shared with the local one)

    user_namespace_quota = Bool(
        True,
        help="""With enable_user_namespaces: keep a ResourceQuota named aispike-user-quota in
        each user's namespace matching the user's quota ceiling (quota plus borrowing: CPU,
        RAM, servers as pods and claims, GPUs as devices of our DeviceClass; see
        docs/quotas.md), rewritten at every start, so the API server refuses what admission
        would. Group quotas stay with admission only.""",
    ).tag(config=True)

    unschedulable_timeout = Float(
        30.0,
        help="""Seconds a pod may stay unschedulable (FailedScheduling) before the start is
        aborted with the scheduler's reason, instead of waiting out start_timeout. Raise it
        on clusters with a node autoscaler.""",
    ).tag(config=True)

    mig_profiles = List(
        Unicode(), default_value=list(DEFAULT_MIG_PROFILES),
        help="MIG profiles the mig backend may request, e.g. ['1g.10gb', '3g.40gb'].",
    ).tag(config=True)
    gpushare_unit = Enum(
        ["GiB", "MiB"], "GiB",
        help="Unit of aliyun.com/gpu-mem in the gpushare device plugin (its --memory-unit).",
    ).tag(config=True)
    gpu_model_labels = List(
        Unicode(), default_value=[GPU_MODEL_LABEL, GFD_MODEL_LABEL],
        help="""Node labels naming the GPU model, in order of precedence (a node's model is
        its first one present), for non-native backends. A chosen model becomes one required
        node-affinity term per label that the cluster's GPU nodes use (every label when none
        does), so nodes labelled by our agent and by GPU feature discovery both match.""",
    ).tag(config=True)
    gpu_memory_gib = Dict(
        default_value={},
        help="""GPU memory per model (GiB), for non-native nodes without the
        nvidia.com/gpu.memory label: {"NVIDIA-A100-SXM4-80GB": 80}.""",
    ).tag(config=True)
    locality_weight = Integer(
        50, help="""Weight (1-100) of the preferred node affinity for nodes caching the image
        and datasets (non-native backends; the native placement scores locality itself).""",
    ).tag(config=True)

    hub_id = Unicode(
        help="""This hub's id, for several hubs on one cluster (docs/operations.md, "Hub
        identity"): written on every pod and claim as aispike.io/hub-server
        "<hub id>:<user>/<server>" (and the claim's aispike.io/hub label), so each hub counts,
        adopts and reconciles only its own servers and counts the others' as taken.  Lowercase
        letters, digits, '.' and '-', at most 63.  Default: $AISPIKE_HUB_ID, else
        <$POD_NAMESPACE>.<$AISPIKE_HELM_RELEASE> when both are set (the Helm chart sets them),
        else empty: the default hub, which writes a bare "<user>/<server>" as versions before
        hub ids did.  Set the same id for the AISpike service (Inventory.hub_id).""",
    ).tag(config=True)

    @default("hub_id")
    def _hub_id_default(self) -> str:
        return hub_id_from_env()

    @validate("hub_id")
    def _hub_id_valid(self, proposal: Any) -> str:
        try:
            return refuse_bad_hub_id("AISpikeSpawner.hub_id", proposal["value"])
        except ValueError as e:
            raise TraitError(str(e)) from None

    hub_owns_unnamed = Bool(
        help="""Whether this hub also owns pods and claims whose aispike.io/hub-server has no
        hub id (written by versions before hub ids): set it on the one hub upgraded in place,
        so its running servers stay its own; never on a second hub of the cluster.  Always
        true with an empty hub_id.  Default: $AISPIKE_HUB_OWNS_UNNAMED.""",
    ).tag(config=True)

    @default("hub_owns_unnamed")
    def _hub_owns_unnamed_default(self) -> bool:
        return owns_unnamed_from_env()

    _shared: ClassVar[dict[str, Any]] = {}
    """Per hub process: the node watcher, or the inventory and placer (native backend)."""
    _shared_lock: ClassVar[asyncio.Lock | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._messages: list[str] = []

    # -- the cluster ---------------------------------------------------------------------------
    @classmethod
    def _lock(cls) -> asyncio.Lock:
        if AISpikeSpawner._shared_lock is None:
            AISpikeSpawner._shared_lock = asyncio.Lock()
        return AISpikeSpawner._shared_lock

    @property
    def gpu_backend(self) -> GpuBackend:
        """The configured GPU backend (``c.AISpikeSpawner.backend``) with this spawner's
        backend settings: what a slice becomes on the pod, and whether it is a pinned claim."""
        return self._backend_named(self.backend)

    def _backend_named(self, name: str) -> GpuBackend:
        return backend_for(name, BackendOptions(
            mig_profiles=tuple(self.mig_profiles), gpushare_unit=self.gpushare_unit))

    async def _once(self, key: str, make: Callable[[], Any]) -> Any:
        """``_shared[key]``, made once per hub process by ``make()`` (a coroutine function).

        The making runs as a task of its own: a caller that stops waiting (the form's
        timeout) neither cancels it nor starts a second one.
        """
        shared = AISpikeSpawner._shared
        if key in shared:
            return shared[key]
        tasks: dict[str, asyncio.Future[Any]] = shared.setdefault("_making", {})
        task = tasks.get(key)
        if task is None or (task.done() and (task.cancelled() or task.exception())):
            task = tasks[key] = asyncio.ensure_future(make())
        shared[key] = await asyncio.shield(task)
        return shared[key]

    async def placer(self) -> Any:
        """The hub's one :class:`Placer` (native backend), its inventory started on first use."""
        async def make() -> Any:
            from aispike_hub.kube.inventory import Inventory
            from aispike_hub.kube.placer import Placer

            api = await asyncio.to_thread(kube_api_client)
            inventory = Inventory(api, config=self.config, hub_id=self.hub_id,
                                  owns_unnamed=self.hub_owns_unnamed)
            await asyncio.to_thread(inventory.start)
            return Placer(inventory, config=self.config)

        return await self._once("placer", make)

    async def node_watcher(self) -> NodeWatcher:
        async def make() -> NodeWatcher:
            # the inventory's client (kube_api_client), as the native backend's
            return NodeWatcher(hub_id=self.hub_id,
                               owns_unnamed=self.hub_owns_unnamed).start()

        watcher = cast(NodeWatcher, await self._once("nodes", make))
        await asyncio.wait_for(asyncio.shield(watcher.first_load), 60)
        return watcher

    async def cluster_nodes(self, backend: str | None = None) -> list[Node]:
        """Schedulable nodes with their GPUs, as ``backend`` (default: the spawner's) sees
        them."""
        if self._backend_named(backend or self.backend).uses_claims:
            placer = await self.placer()
            with placer.inventory.lock:
                state = placer.inventory.state()
                return list(state.nodes) if state is not None else []
        watcher = await self.node_watcher()
        return watcher.nodes(self.gpu_memory_gib, self.gpu_model_labels)

    def _nodes_now(self) -> Sequence[Node]:
        """The cluster view without waiting (for in-process admission)."""
        placer = AISpikeSpawner._shared.get("placer")
        if self.gpu_backend.uses_claims and placer is not None:
            with placer.inventory.lock:
                state = placer.inventory.state()
                return list(state.nodes) if state is not None else []
        watcher = AISpikeSpawner._shared.get("nodes")
        return watcher.nodes(self.gpu_memory_gib, self.gpu_model_labels) if watcher else []

    @property
    def admission(self) -> Admission:
        cls: Any = self.admission_class
        if issubclass(cls, AdmissionClient):
            return cast(Admission, cls(parent=self))
        return cast(Admission, cls(parent=self, nodes=self._nodes_now))

    async def priority_class_exists(self, name: str) -> bool:
        """Whether PriorityClass ``name`` exists (cached: found for good, missing for a
        minute).  Without the chart's PriorityClasses a pod naming one is refused (403), so a
        missing one means no priority, with a warning; a cluster that does not let the hub
        read PriorityClasses is trusted to have them."""
        import time

        from kubernetes_asyncio.client.exceptions import ApiException

        cache: dict[str, tuple[bool, float]] = AISpikeSpawner._shared.setdefault(
            "priority_classes", {})
        known = cache.get(name)
        if known is not None and (known[0] or time.monotonic() - known[1] < 60):
            return known[0]
        try:
            await self.scheduling_api().read_priority_class(name)
            exists = True
        except ApiException as e:
            exists = e.status != 404
            if e.status != 404:
                self.log.debug("cannot read PriorityClass %s (%s); assuming it exists",
                               name, e.status)
        except Exception as e:
            self.log.debug("cannot read PriorityClass %s (%s); assuming it exists", name, e)
            exists = True
        cache[name] = (exists, time.monotonic())
        return exists

    def scheduling_api(self) -> Any:
        """``SchedulingV1Api`` on KubeSpawner's shared client."""
        from kubespawner.clients import shared_client

        return shared_client("SchedulingV1Api")

    # -- start ---------------------------------------------------------------------------------
    def _say(self, message: str) -> None:
        self.log.info("%s: %s", self._log_name, message)
        self._messages.append(message)

    def start(self) -> asyncio.Future[Any]:
        self._messages = []
        self._start_future = asyncio.ensure_future(self._start_admitted())
        return self._start_future

    async def _start_admitted(self) -> Any:
        self._enter_start()  # a stop from inside this start only deletes an old pod
        self._pin = None
        self._adopted_uid = ""
        asked = False
        try:
            if self._options is None:  # JupyterHub < 5.3 has no apply_user_options
                await self.apply_options(self.user_options)
            options, settings = self._options, await self.form_settings()
            assert options is not None
            request = self.request_for(options, settings)
            try:
                resources = self.gpu_backend.pod_resources(request)
            except BackendError as e:
                raise SpawnException(f"Cannot start {options.describe()}: {e}",
                                     reason="options", status_code=400) from None
            # From here on every way out but success gives the admission back, also a
            # cancel (the hub's start timeout, a user's cancel) while the ticket is queued.
            asked = True
            ticket = await self._admit(options, request)
            try:
                if self.enable_user_namespaces and self.user_namespace_quota:
                    await self._write_namespace_quota(ticket)
                await self._prepare_pod(options, settings, request, resources, ticket)
                return await self._create_and_wait(options, request, ticket)
            except BaseException:
                await self._abandon()
                raise
        except BaseException:
            if asked:
                await self._release_admission()
            raise
        finally:
            self._options = None
            self._kube_start = None

    async def _write_namespace_quota(self, ticket: dict[str, Any]) -> None:
        """The user's ceilings as the ResourceQuota of their namespace (second line of
        defence: the API server then refuses pods and claims beyond them)."""
        from kubernetes_asyncio.client.exceptions import ApiException

        from aispike_hub.kube.namespace_quota import QUOTA_NAME, resource_quota

        ceiling = ticket.get("ceiling")
        if not isinstance(ceiling, dict):
            self.log.warning("%s: admission gave no quota ceiling; namespace %s keeps its "
                             "ResourceQuota as it is", self._log_name, self.namespace)
            return
        body = resource_quota(self.user.name, ceiling, self.backend)
        await self._ensure_namespace()
        try:
            await self.api.replace_namespaced_resource_quota(QUOTA_NAME, self.namespace, body)
        except ApiException as e:
            if e.status != 404:
                raise
            await self.api.create_namespaced_resource_quota(self.namespace, body)

    async def _admit(self, options: Options, request: SliceRequest) -> dict[str, Any]:
        return await admit_or_raise(self.admission, self.user.name, self.name or "",
                                    self.group_names(), request,
                                    options.describe(), self._say)

    async def _prepare_pod(self, options: Options, settings: FormSettings,
                           request: SliceRequest, resources: GpuResources,
                           ticket: dict[str, Any]) -> None:
        """The pod's settings for this start, on top of the configured values and the
        profile's overrides (``_profiled``, recorded when the options were applied)."""
        base = self._profiled or {name: getattr(self, name) for name in RESTORED}
        self.image = request.image or base["image"]
        cpu, mem = self.resource_plan(options)
        self.cpu_limit, self.cpu_guarantee = cpu.limit, cpu.guarantee
        self.mem_limit = None if mem.limit is None else math.ceil(mem.limit)
        self.mem_guarantee = None if mem.guarantee is None else math.floor(mem.guarantee)
        self.extra_resource_limits = {**base["extra_resource_limits"], **resources.limits}
        # Never a pod whose request exceeds its limit (the API server refuses it).
        self.extra_resource_guarantees = no_request_above_limit(
            base["extra_resource_guarantees"], self.extra_resource_limits, _quantity)
        if resources.note:
            self._say(resources.note)
        chosen = [settings.dataset(name) for name in options.datasets]
        volumes, mounts = dataset_volumes(
            (d.name, d.mount_path, d.volume, d.read_only) for d in chosen)
        self.volumes = [*self._sorted_dict_values(base["volumes"]), *volumes]
        self.volume_mounts = [*self._sorted_dict_values(base["volume_mounts"]), *mounts]
        if not self.gpu_backend.uses_claims and request.gpu_count:
            nodes = await self.cluster_nodes()
            watcher = AISpikeSpawner._shared.get("nodes")
            labels = (watcher.model_labels_in_use(self.gpu_model_labels) if watcher
                      else tuple(self.gpu_model_labels))
            # GPU nodes no label names: by name, from their DRA devices' model (a device-plugin
            # pod has no claim whose selector could say it)
            dra_nodes = watcher.dra_only_nodes(self.gpu_model_labels) if watcher else {}
            terms = self.gpu_backend.model_affinity_terms(request, labels, dra_nodes)
            if terms:
                # ANDed into the admin's terms (Kubernetes ORs the list's terms).
                self.node_affinity_required = and_terms(
                    [_plain(t) for t in self._sorted_dict_values(
                        base["node_affinity_required"])], terms)
            preferred = locality_preference(nodes, request.image, request.datasets,
                                            self.locality_weight)
            if preferred:
                self.node_affinity_preferred = [
                    *self._sorted_dict_values(base["node_affinity_preferred"]), *preferred]
        tier_class = ticket.get("priority_class")
        if tier_class and await self.priority_class_exists(tier_class):
            self.priority_class_name = tier_class
        elif tier_class:
            self.log.warning("%s: PriorityClass %s does not exist (the Helm chart makes one per "
                             "tier): the pod starts without it", self._log_name, tier_class)
        self.extra_annotations = {
            **base["extra_annotations"],
            # KubeSpawner expands {username}-style fields in annotations: escape JSON braces.
            REQUEST_ANNOTATION: _literal(request_to_json(request)),
            OPTIONS_ANNOTATION: _literal(json.dumps(options.as_user_options(), sort_keys=True)),
            BACKEND_ANNOTATION: self.backend,
            HUB_SERVER_ANNOTATION: _literal(self._hub_server()),
            **({TIER_ANNOTATION: ticket["tier"]} if ticket.get("tier") else {}),
            **({NOTE_ANNOTATION: resources.note} if resources.note else {}),
        }
        self.extra_labels = {**base["extra_labels"], BACKEND_ANNOTATION: self.backend,
                             **({HUB_ID_LABEL: self.hub_id} if self.hub_id else {})}
        self.environment = {
            **base["environment"],
            **self.gpu_backend.notebook_env(request, resources.granted_mib,
                                            {d.name: d.mount_path for d in chosen}),
        }

    def _hub_server(self) -> str:
        """This server's ``aispike.io/hub-server`` (on its pod and claim): its reservation
        key ``user/server``, after ``<hub id>:`` when this hub has an id."""
        return hub_server_value(f"{self.user.name}/{self.name or ''}", self.hub_id)

    async def get_pod_manifest(self) -> Any:
        pod = await super().get_pod_manifest()
        if self._pin is None:
            return pod
        from kubernetes_asyncio.client import ApiClient

        api = ApiClient()
        try:
            pinned = self._pin.pod(api.sanitize_for_serialization(pod))
            return api.deserialize(cast(Any, _Raw(pinned)), "V1Pod")
        finally:
            await api.close()

    # -- progress ------------------------------------------------------------------------------
    async def progress(self) -> Any:
        """Our steps (admission, queue, placement, waiting reasons) and the pod's events."""
        if self.events_enabled:
            await self._start_watching_events()
        sent = events_sent = 0
        progress = 0.0
        while True:
            future = self._start_future
            finished = future is not None and future.done()
            for message in self._messages[sent:]:
                progress = min(progress + 10, 40)
                yield {"progress": int(progress), "message": message}
            sent = len(self._messages)
            events = self.events if self.events_enabled else []
            for event in events[events_sent:]:
                progress += (90 - progress) / 3
                yield {"progress": int(progress), "raw_event": event,
                       "message": f"{event['lastTimestamp'] or event['eventTime']} "
                                  f"[{event['type']}] {event['message']}"}
            events_sent = len(events)
            if finished:
                break
            await asyncio.sleep(0.5)


def _quantity(value: Any) -> Decimal:
    """A Kubernetes quantity ("500m", "2Gi", 4) as a number, for comparing request to limit."""
    from kubernetes.utils.quantity import parse_quantity

    return Decimal(parse_quantity(value))  # type: ignore[no-untyped-call]


def _plain(term: Any) -> dict[str, Any]:
    """A node-selector term as a dict (the admin may configure ``V1NodeSelectorTerm`` objects)."""
    if isinstance(term, dict):
        return term
    from kubernetes.client import ApiClient

    return cast(dict[str, Any],
                ApiClient().sanitize_for_serialization(term))  # type: ignore[no-untyped-call]


def _literal(text: str) -> str:
    """``text`` protected from KubeSpawner's ``str.format`` expansion of manifest fields."""
    return text.replace("{", "{{").replace("}", "}}")
