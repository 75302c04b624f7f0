"""Placement on Kubernetes: our core picks node and GPU, the pinned claim makes kube-scheduler obey.

The flow for one notebook server (the pod's name is the server's key):

1. **admit**: an optional hook (the quota engine, in the AISpike service) may refuse with reasons;
2. **place**: the placement core runs on the inventory's live :class:`ClusterState`, under the
   inventory's lock, and the chosen room is *held* in that state before the lock is released, so
   two concurrent placements never pick the same room;
3. **pin**: the server's one ResourceClaim is created (name derived from the server, so the API
   server refuses a second one), asking the chosen memory on the chosen GPU's uuid;
4. the spawner creates the pod with :meth:`Pin.pod` (claim reference + required node affinity)
   and :meth:`Placer.adopt` makes the claim owned by the pod (garbage-collected with it);
5. kube-scheduler allocates the claim (``consumedCapacity``) and binds the pod;
6. **re-pin**: when the pin went stale (an allocation took the room first, the device vanished,
   or the pod stays unschedulable), the claim is deleted (only if still unallocated: delete with a
   resourceVersion precondition) and re-created with a fresh decision, preferring the pod's node so
   the pod can stay; otherwise the pending pod is re-created with the new node.  Re-pins are
   bounded by :attr:`Placer.max_repins`, counted on the claim itself, so a restart does not reset
   the bound.

:meth:`Placer.start_server` runs steps 1-6 for a pod manifest (what the benchmarks and the
integration tests call; the order of the steps and when to re-pin or give up is
:mod:`aispike_hub.kube.startflow`, which the spawner drives too); :meth:`Placer.reconcile`
re-pins and cleans up whatever a crashed or restarted process left behind (only the tests'
stand-in service runs it: in the product the AISpike service's reconciliation owns orphan
claims, see :mod:`aispike_hub.kube.repin`).

**Who decides.**  In the product (``AISpikeSpawner``) every pin and re-pin passes ``ask``:
admission (the AISpike service, or the hub's in-process admission) is the only decider, and
the placer only checks admission's answer against its own view (``placement.fit.misfit``),
asking again a bounded number of times when its view refutes it and failing closed after
(:meth:`Placer._decide`).  Without ``ask`` (no admission exists: ``benchmarks/
kube_placement.py``, the integration tests' stand-in service ``tests/integration/
dra_burst.py`` and the tests that drive the placer alone, and :meth:`Placer.reconcile`) the
placer's core decides; ``tests/unit/kube/test_placer_asks_admission.py`` keeps every product
call passing ``ask``.  All I/O is synchronous (the
official ``kubernetes`` client); async callers use ``asyncio.to_thread``.

Step 6 and ``reconcile`` are :mod:`aispike_hub.kube.repin` (functions of the placer that
:meth:`Placer.repin` and :meth:`Placer.reconcile` call); :class:`Pin` and the two errors
are :mod:`aispike_hub.kube.pin` (re-exported here, so every import from this module works).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from kubernetes.client.exceptions import ApiException
from traitlets import Dict, Float, Integer, Unicode
from traitlets.config import LoggingConfigurable

from aispike_hub import metrics
from aispike_hub.admission.replace import claimed_request, place_preferring, single_node_state
from aispike_hub.kube import repin as repinning
from aispike_hub.kube.api import error_text
from aispike_hub.kube.asking import AskAdmission, GpuRef, NotPlaced, ask_admission, where
from aispike_hub.kube.claims import (
    PinnedGpu,
    Placement,
    claim_name,
    owner_reference,
    pinned_claim,
)
from aispike_hub.kube.inventory import (
    ClaimInfo,
    Inventory,
    PodInfo,
    parse_claim,
)
from aispike_hub.kube.pin import Pin, PlacementFailed, PlacementRefused
from aispike_hub.kube.startflow import (
    STALE_PHASES,
    Action,
    Flow,
    Observation,
    ServerStatus,
    step,
)
from aispike_hub.model import Assignment, SliceRequest
from aispike_hub.placement.engine import DEFAULT_POLICY, Affinity, Decision, PlacementEngine
from aispike_hub.placement.fit import misfit, mismatch, still_fits
from aispike_hub.placement.fragmentation import Workload
from aispike_hub.placement.state import ClusterState

log = logging.getLogger(__name__)

AdmitHook = Callable[[str, str, SliceRequest], Sequence[str]]
"""``(namespace, server, request) -> reasons to refuse`` (empty: admitted).  The quota engine."""

Progress = Callable[[str], None]


@dataclass
class StartResult:
    pin: Pin
    pod: PodInfo | None
    repins: int = 0
    placement_seconds: list[float] = field(default_factory=list)


class Placer(LoggingConfigurable):
    """The placement flow on a cluster with our DRA driver (see the module docstring)."""

    policy = Unicode(
        DEFAULT_POLICY, help="Placement policy of the core (aispike, fgd, bestfit, ...)."
    ).tag(config=True)
    topology_weight = Float(
        1.0, help="Weight of topology affinity (multi-GPU servers inside one NVLink domain)."
    ).tag(config=True)
    locality_weight = Float(
        0.5, help="Weight of locality affinity (nodes already caching the image and datasets)."
    ).tag(config=True)
    max_repins = Integer(
        3,
        help="""How often one server's pin may be re-made after going stale (someone else took
        the room before kube-scheduler allocated it).  Counted on the claim, so restarts do
        not reset it; past it the start fails with the last reason.""",
    ).tag(config=True)
    unschedulable_seconds = Float(
        30.0,
        help="""A pod whose pinned claim is not allocated and that stays unschedulable this long
        after its pin was made is re-pinned, even if our view sees no conflict (a fact we
        cannot see, e.g. a taint, or rounding).  Keep it above kube-scheduler's pod backoff
        (10 s by default): the pod's Unschedulable condition stays from the previous attempt
        until the scheduler retries, and judging a fresh pin by it would waste a re-pin.""",
    ).tag(config=True)
    orphan_seconds = Float(
        300.0,
        help="""A claim of ours that no pod uses and that is this old (counted from its
        creation) is deleted by reconcile(): its spawner died before creating the pod.  The
        rule is the AISpike service's (Reconciler.orphan_seconds); reconcile() is only run by
        the tests' stand-in service.""",
    ).tag(config=True)
    ask_attempts = Integer(
        3,
        help="""How many times one pin or re-pin asks admission for a place when the hub's view
        refutes its answer (a claim one side's watch has not seen yet); each ask names the GPUs
        refuted so far, so admission places around them.  Past it the pin is refused with both
        sides' reasons: the placer never decides on its own where admission
        answered (docs/architecture.md, "Who owns placement").""",
    ).tag(config=True)
    ask_pause_seconds = Float(
        1.0,
        help="""Seconds between two asks of one pin whose answer the hub's view refuted, so
        the service's watch can catch up with the claim the hub already sees.""",
    ).tag(config=True)
    claim_labels = Dict(
        {}, help="Extra labels for every ResourceClaim the placer creates."
    ).tag(config=True)

    def __init__(
        self,
        inventory: Inventory,
        *,
        admit_hook: AdmitHook | None = None,
        workload: Workload | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.inventory = inventory
        self.api = inventory.api
        self.admit_hook = admit_hook
        affinity = Affinity(topology=self.topology_weight, locality=self.locality_weight)
        self.engine = PlacementEngine(self.policy, workload, affinity=affinity)
        # A separate engine for one-node re-pins: scorers cache a model per state object.
        self._local_engine = PlacementEngine(self.policy, workload, affinity=affinity)
        self._pinned_at: dict[str, float] = {}
        self._pinned_lock = threading.Lock()
        self._server_locks: dict[str, threading.Lock] = {}
        self.decision_seconds: list[float] = []
        """Time of each core decision (placement latency inside the service), for benchmarks."""
        self.repins = 0
        self.pins = 0

    # -- decisions -----------------------------------------------------------------------------
    def preview(self, request: SliceRequest) -> Decision:
        """What the placer's own core would do with ``request`` now, with no side effect.  Not
        in the product (the form's fit preview is admission's ``fit``): the benchmarks time it."""
        with self.inventory.lock:
            state = self.inventory.state()
            if state is None:
                return Decision(None, ("no schedulable node in the cluster",), 0)
            return self.engine.place(state, _for_scheduler(request))

    def _decide(
        self, namespace: str, claim: str, request: SliceRequest, attempt: int,
        prefer_node: str = "", prefer: Assignment | None = None,
        ask: AskAdmission | None = None,
    ) -> tuple[Placement, int]:
        """Where the claim goes.  With ``ask`` (the product: the spawner always passes it),
        admission is the only decider: ``prefer`` (admission's decision at admission) is pinned
        while it still fits our view; otherwise admission is asked (outside the inventory lock:
        it may be a call to the service) and its answer is pinned while it fits our view; an
        answer our view refutes (a claim the service's watch has not seen yet, or ours that it
        has not seen go) is asked again after :attr:`ask_pause_seconds`, at most
        :attr:`ask_attempts` asks in all, then the pin is refused with both sides' reasons
        (fail closed: the placer never picks a room admission did not answer, which could be
        one it promised to another server).  Each ask tells admission the GPUs of the rooms our
        view refuted so far (``refuted`` of ``POST api/place``): it places around them at once
        instead of answering the same room again.  When nothing fits around them, the next ask
        goes without them (our view may be the stale one).

        Without ``ask`` there is no admission to follow (no product caller: the memory
        benchmark's claim generator and the integration tests' stand-in service drive the placer
        alone, and :meth:`reconcile`), and the core decides here (``prefer_node`` first)."""
        started = time.perf_counter()
        request = _for_scheduler(request)
        key = f"{namespace}/{claim}"
        asks = 0
        refuted = ""
        taken: dict[GpuRef, None] = {}  # the GPUs of refuted rooms, in order, told to admission
        while True:
            with self.inventory.lock:
                state = self.inventory.state()
                if state is None:
                    raise PlacementRefused(("no schedulable node in the cluster",))
                decision: Decision | None = None
                if prefer is not None:
                    refuted = misfit(state, prefer, request)
                    if not refuted:
                        decision = Decision(prefer, (), 1)
                    elif not mismatch(state, prefer, request):  # the shape fits: room taken
                        taken.update(dict.fromkeys((prefer.node, i) for i in prefer.gpu_indices))
                    elif prefer.node not in state.node_index:
                        log.warning(
                            "admission placed %s on node %s, which this hub does not place on "
                            "(not listed, tainted, or outside Inventory.node_selector): give "
                            "the hub and the AISpike service the same Inventory settings",
                            key, prefer.node)
                if decision is None and ask is None:
                    decision = place_preferring(self.engine, state, request, key, prefer_node,
                                                self._local_engine)
                if decision is not None:
                    if decision.assignment is None:
                        raise PlacementRefused(decision.reasons)
                    placement = self._placement(state, decision.assignment, request, attempt)
                    self.inventory.hold(namespace, claim, placement.assignment(key))
                    break
            assert ask is not None
            if asks >= self.ask_attempts:
                metrics.placement_decided("hub", time.perf_counter() - started, False)
                placed_on = where(prefer) if prefer is not None else "no place"
                raise PlacementRefused((
                    f"admission placed {key} on {placed_on}, but the hub sees that room "
                    f"taken ({refuted or 'not asked'}); asked {asks} "
                    f"time{'s' if asks != 1 else ''}, the two views still disagree: try "
                    "again shortly",))
            if asks:
                time.sleep(self.ask_pause_seconds)  # let the service's watch catch up
            try:
                prefer, request = ask_admission(ask, prefer_node, request, tuple(taken))
            except NotPlaced:
                asks += 1
                if not taken or asks >= self.ask_attempts:
                    raise
                # nothing fits around the GPUs we refuted: our view may be the stale one (a
                # claim gone that our watch still holds), so ask again without the hint
                taken.clear()
                prefer = None
                continue
            asks += 1
        self.decision_seconds.append(time.perf_counter() - started)
        metrics.placement_decided("hub", self.decision_seconds[-1], True)
        with self._pinned_lock:
            self._pinned_at[key] = time.monotonic()
        return placement, decision.candidates

    @staticmethod
    def _placement(
        state: ClusterState, a: Assignment, request: SliceRequest, attempt: int
    ) -> Placement:
        node = state.nodes[state.node_index[a.node]]
        by_index = {g.index: g for g in node.gpus}
        gpus = tuple(
            PinnedGpu(by_index[i].uuid, i, mib, by_index[i].nvlink_domain)
            for i, mib in zip(a.gpu_indices, a.gpu_memory_mib, strict=True)
        )
        return Placement(a.node, gpus, request.whole_gpus, a.cpu_milli, a.memory_mib, attempt)

    # -- the flow ------------------------------------------------------------------------------
    def pin(
        self, namespace: str, server: str, request: SliceRequest,
        owner: Mapping[str, Any] | None = None, *, hub_server: str = "",
        prefer: Assignment | None = None, wait_gone: float = 0,
        ask: AskAdmission | None = None,
    ) -> Pin:
        """Admit, place and create the server's pinned claim; raise :class:`PlacementRefused`.

        Idempotent for a server whose claim already exists with the same request (a retried
        spawn); a server never gets a second claim.  ``prefer`` is the AISpike service's
        decision at admission: pinned as it is while it still fits our view, so the service's
        reservation and the claim agree; otherwise admission is asked again (``ask``, see
        :meth:`_decide`: bounded, failing closed), or, where no admission exists (benchmarks,
        tests), the core decides here.  ``hub_server``
        (``user/server``) is written on the claim for the service's inventory.  A previous
        claim of the server still being deleted (the spawner released a leftover) is waited
        for up to ``wait_gone`` seconds.
        """
        if self.admit_hook is not None:
            refused = tuple(self.admit_hook(namespace, server, request))
            if refused:
                raise PlacementRefused(refused)
        if request.gpu_count == 0:
            return Pin(namespace, server, "", None, request)
        name = claim_name(server)
        existing = self.inventory.claim(namespace, name)
        if existing is not None and not existing.deleting:
            if existing.ours and existing.placement and existing.request == request:
                return Pin(namespace, server, name, existing.placement, request)
            raise PlacementRefused(
                (f"server {server} already has GPU claim {name} for a different request; "
                 "stop the server first",)
            )
        placement, candidates = self._decide(namespace, name, request, attempt=1, prefer=prefer,
                                            ask=ask)
        if not self._create_claim(namespace, server, placement, request, owner,
                                  wait_gone=wait_gone, hub_server=hub_server):
            theirs = self._claim_from_api(namespace, name)
            if theirs is not None and theirs.placement is not None and theirs.request == request:
                return Pin(namespace, server, name, theirs.placement, request)
            raise PlacementRefused(
                (f"server {server} already has GPU claim {name} for a different request; "
                 "stop the server first",)
            )
        self.pins += 1
        return Pin(namespace, server, name, placement, request, candidates)

    def _claim_from_api(self, namespace: str, name: str) -> ClaimInfo | None:
        try:
            return parse_claim(self.api.get("resourceclaims", name, namespace))
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def _create_claim(
        self, namespace: str, server: str, placement: Placement, request: SliceRequest,
        owner: Mapping[str, Any] | None, wait_gone: float = 0, hub_server: str = "",
    ) -> bool:
        """Create the claim; False when another actor already made this server's claim.

        A 409 while the previous claim is still being deleted (a re-pin) is retried for up to
        ``wait_gone`` seconds; a live claim of that name means someone else (another replica,
        the reconciler) pinned the server first: theirs stands.
        """
        name = claim_name(server)
        body = pinned_claim(server, placement, request, labels=self.claim_labels, owner=owner,
                            hub_server=hub_server)
        deadline = time.monotonic() + wait_gone
        while True:
            try:
                self.api.create("resourceclaims", body, namespace)
                return True
            except ApiException as e:
                if e.status != 409:
                    self.inventory.drop_hold(namespace, name)
                    raise
            try:
                existing = self.api.get("resourceclaims", name, namespace)
            except ApiException as e:
                if e.status == 404:
                    continue  # gone just now: create again
                raise
            deleting = bool((existing.get("metadata") or {}).get("deletionTimestamp"))
            if deleting and time.monotonic() < deadline:
                time.sleep(0.2)
                continue
            # Not ours to create: forget our hold, but keep counting the claim that exists.
            self.inventory.drop_hold(namespace, name)
            if deleting:
                raise PlacementRefused(
                    (f"the previous claim {name} of server {server} is still being deleted",)
                )
            return False

    def adopt(self, pin: Pin, pod_name: str, pod_uid: str) -> None:
        """Make the server's claim owned by its pod: deleting the server deletes the claim."""
        if not pin.claim:
            return
        patch = {"metadata": {"ownerReferences": [owner_reference(pod_name, pod_uid)]}}
        self.api.merge_patch("resourceclaims", pin.claim, patch, pin.namespace)

    def disown(self, pin: Pin) -> None:
        """Take the claim out of its pod's ownership before that pod is deleted while the start
        goes on (KubeSpawner replacing the server's pod after a 409): otherwise the garbage
        collector deletes the claim with the old pod, and the new pod has no GPU to adopt."""
        if not pin.claim:
            return
        try:
            self.api.merge_patch("resourceclaims", pin.claim,
                                 {"metadata": {"ownerReferences": None}}, pin.namespace)
        except ApiException as e:
            if e.status != 404:
                raise

    def release(self, namespace: str, server: str) -> None:
        """Free the server's slice now (its claim is also garbage-collected with the pod).

        The deleted claim's late watch events are ignored (its uid is remembered), so a claim
        that lingers while its finalizer goes is never taken for the server's current one.
        """
        name = claim_name(server)
        known = self.inventory.claim(namespace, name)
        uid = known.uid if known is not None else ""
        try:
            self.api.delete("resourceclaims", name, namespace)
        except ApiException as e:
            if e.status != 404:
                raise
        self.inventory.drop(namespace, name, uid)

    def status(self, namespace: str, server: str) -> ServerStatus:
        """Where the server stands, and whether its pin is stale (and why)."""
        name = claim_name(server)
        inv = self.inventory
        pod = inv.pod(namespace, server)
        if pod is not None and pod.running:
            return ServerStatus("running")
        claim = inv.claim(namespace, name)
        if claim is None:
            if pod is not None and not pod.claim_names:
                return ServerStatus("pending", pod.unschedulable)
            return ServerStatus("missing", f"claim {name} does not exist")
        if claim.is_allocated:
            return ServerStatus("allocated")
        stale = inv.stale_reason(namespace, name)
        if stale:
            return ServerStatus("stale", stale)
        if pod is not None and pod.unschedulable:
            key = f"{namespace}/{name}"
            with self._pinned_lock:
                since = self._pinned_at.setdefault(key, time.monotonic())
            if time.monotonic() - since >= self.unschedulable_seconds:
                return ServerStatus("stale", f"kube-scheduler: {pod.unschedulable}")
            return ServerStatus("pending", pod.unschedulable)
        return ServerStatus("pending")

    # -- re-pin and reconcile (:mod:`aispike_hub.kube.repin`) --------------------------------
    def repin(
        self, namespace: str, server: str, reason: str = "", request: SliceRequest | None = None,
        ask: AskAdmission | None = None,
    ) -> Pin | None:
        """Replace a stale pin with a fresh decision; ``None`` when the claim changed meanwhile.

        With ``ask`` the fresh decision is admission's (preferring the pod's node), see
        :meth:`_decide`; without it (no admission: :meth:`reconcile`, the benchmarks and the
        tests that drive the placer alone) the placer's own.

        Raises :class:`PlacementFailed` past :attr:`max_repins`, :class:`PlacementRefused` when
        nothing fits any more.
        """
        return repinning.repin(self, namespace, server, reason, request, ask)

    def reconcile(self) -> dict[str, int]:
        """Re-pin stale pins and delete orphaned claims; what a (restarted) service runs.

        Returns counts of what it did (``repinned``, ``orphans``, ``failed``).
        """
        return repinning.reconcile(self)

    # -- the start driver ----------------------------------------------------------------------
    def start_server(
        self,
        namespace: str,
        server: str,
        request: SliceRequest,
        pod: Mapping[str, Any],
        *,
        timeout: float = 300,
        progress: Progress | None = None,
        container: str = "",
        ask: AskAdmission | None = None,
    ) -> StartResult:
        """The whole flow for one server: pin, create the pod, wait until Running, re-pin.

        A thin driver of :func:`aispike_hub.kube.startflow.step` (the rules live there).
        ``ask``: admission's re-decision for this server (see :meth:`pin`), for the pin and
        every re-pin.
        Raises :class:`PlacementRefused` (nothing fits, before any pod exists),
        :class:`PlacementFailed` (re-pins exhausted; pod and claim are removed) or
        ``TimeoutError``.
        """
        say = progress or (lambda _msg: None)
        flow = Flow(pins=True)  # pin() admits every server; a CPU-only one gets no claim
        seen = Observation()
        result = StartResult(Pin(namespace, server, "", None, request), None)
        deadline = time.monotonic() + timeout
        keys = (f"{namespace}/{server}", f"{namespace}/{claim_name(server)}")
        last_reason = ""

        def timed_out() -> bool:
            return time.monotonic() >= deadline or self.inventory.stopped

        def judged() -> ServerStatus | None:
            st = self.status(namespace, server)
            return st if st.phase in ("running", *STALE_PHASES) else None

        while True:
            s = step(flow, seen)
            flow = s.flow
            if s.action is Action.PIN:
                result.pin = self.pin(namespace, server, request, ask=ask)
                say(result.pin.describe())
                flow = replace(flow, pins=bool(result.pin.claim))
            elif s.action is Action.CREATE_POD:
                created = self._create_pod(result.pin, pod, container)
                seen = Observation(pod_uid=str(created["metadata"]["uid"]))
                deadline = time.monotonic() + timeout
            elif s.action is Action.ADOPT:
                self.adopt(result.pin, server, seen.pod_uid)
                seen = replace(seen, timed_out=timed_out())
            elif s.action is Action.DONE:
                result.pod = self.inventory.pod(namespace, server)
                return result
            elif s.action is Action.REPIN:
                assert seen.claim is not None
                last_reason = f"{seen.claim.phase}: {s.reason}"
                say(f"the pin went stale ({s.reason}); placing again")
                try:
                    new = self.repin(namespace, server, s.reason, request, ask)
                except (PlacementFailed, PlacementRefused):
                    self._abandon(namespace, server)
                    raise
                if new is not None:
                    result.pin = new
                    result.repins += 1
                    flow = flow.repinned()
                    say(new.describe())
                seen = Observation(pod_uid=seen.pod_uid, timed_out=timed_out())
            elif s.action is Action.WAIT:
                st = self.inventory.wait_for(
                    judged, keys, timeout=min(2.0, max(0.0, deadline - time.monotonic()))
                )
                seen = Observation(pod_uid=seen.pod_uid, running=st is not None
                                   and st.phase == "running", claim=st, timed_out=timed_out())
            else:  # Action.GIVE_UP: this driver's only reason is its deadline
                raise self._timeout_error(namespace, server, result.pin, timeout, last_reason)

    def _create_pod(
        self, pin: Pin, pod: Mapping[str, Any], container: str
    ) -> Mapping[str, Any]:
        """Create the pinned pod; a retried spawn (or a restarted service) finds its own."""
        try:
            created: Mapping[str, Any] = self.api.create(
                "pods", pin.pod(pod, container), pin.namespace
            )
        except ApiException as e:
            if e.status != 409:
                raise
            created = self.api.get("pods", pin.server, pin.namespace)
        return created

    def _timeout_error(
        self, namespace: str, server: str, pin: Pin, timeout: float, last_reason: str
    ) -> TimeoutError:
        final = self.status(namespace, server)
        claim = self.inventory.claim(namespace, pin.claim) if pin.claim else None
        return TimeoutError(
            f"server {server} not Running after {timeout:g} s: {final.phase} {final.reason}"
            + (f"; claim allocated={claim.is_allocated} allocating={claim.allocating} "
               f"deleting={claim.deleting}" if claim else "; no claim")
            + (f" (last re-pin: {last_reason})" if last_reason else "")
        )

    def _abandon(self, namespace: str, server: str) -> None:
        for kind, name in (("pods", server), ("resourceclaims", claim_name(server))):
            try:
                self.api.delete(kind, name, namespace)
            except ApiException as e:
                if e.status != 404:
                    log.warning("could not delete %s %s/%s: %s", kind, namespace, name,
                                error_text(e))
        self.inventory.drop(namespace, claim_name(server))



honours = still_fits
"""The old name of :func:`aispike_hub.placement.fit.still_fits` (kept for importers)."""


_for_scheduler = claimed_request
"""The old name of :func:`aispike_hub.admission.replace.claimed_request` (one rounding rule)."""


__all__ = [  # the names importable from here before the split, and this module's own
    "AdmitHook",
    "AskAdmission",
    "GpuRef",
    "Pin",
    "PlacementFailed",
    "PlacementRefused",
    "Placer",
    "Progress",
    "StartResult",
    "honours",
    "single_node_state",
]
