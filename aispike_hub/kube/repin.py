"""Re-pinning: replacing a stale pin, and cleaning up what a crashed process left behind.

Why its own module: :mod:`aispike_hub.kube.placer` makes a server's first pin and drives its
start; this is step 6 of that flow (see its docstring) and :meth:`Placer.reconcile`, the
periodic pass of the tests' stand-in service (never the product's: there the AISpike service's
reconciliation owns orphan claims; the orphan verdicts here are that same rule,
:mod:`aispike_hub.service.reconcile`).  A pin goes stale when an allocation took the room
first, the device vanished, or the pod stays unschedulable: the claim is deleted only while
still unallocated (a resourceVersion precondition) and re-created with a fresh decision,
preferring the pod's node; otherwise the pending pod is re-created on the new node.  The
functions take the :class:`aispike_hub.kube.placer.Placer` (its inventory, API, settings and
decisions); its ``repin`` and ``reconcile`` methods call them.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kubernetes.client.exceptions import ApiException

from aispike_hub.kube.claims import claim_name, owner_reference, pinned_node_of_pod
from aispike_hub.kube.inventory import CLAIM_FINALIZER, PodInfo
from aispike_hub.kube.pin import Pin, PlacementFailed, PlacementRefused
from aispike_hub.kube.startflow import may_repin
from aispike_hub.model import SliceRequest

if TYPE_CHECKING:
    from aispike_hub.kube.placer import AskAdmission, Placer

log = logging.getLogger("aispike_hub.kube.placer")  # the placer's log, as before the split


def repin(
    placer: Placer, namespace: str, server: str, reason: str = "",
    request: SliceRequest | None = None, ask: AskAdmission | None = None,
) -> Pin | None:
    """Replace a stale pin with a fresh decision; ``None`` when the claim changed meanwhile.
    With ``ask``, the decision is admission's (see :meth:`Placer._decide`).

    Raises :class:`PlacementFailed` past ``placer.max_repins``, :class:`PlacementRefused` when
    nothing fits any more.
    """
    with _server_lock(placer, namespace, server):
        return _repin(placer, namespace, server, reason, request, ask)


def _server_lock(placer: Placer, namespace: str, server: str) -> threading.Lock:
    with placer._pinned_lock:
        return placer._server_locks.setdefault(f"{namespace}/{server}", threading.Lock())


def _repin(
    placer: Placer, namespace: str, server: str, reason: str, request: SliceRequest | None,
    ask: AskAdmission | None = None,
) -> Pin | None:
    name = claim_name(server)
    claim = placer.inventory.claim(namespace, name)
    if claim is not None and (claim.is_allocated or claim.deleting):
        return None
    if claim is None:
        # "Missing" in our view may be the watch lagging behind: the pod's event came first,
        # the claim's not yet.  The API says whether it really is gone.
        if placer._claim_from_api(namespace, name) is not None:
            return None  # it exists (or is still going): judge it once the watch shows it
        # Really gone: our own hold of the earlier pin must not count against its successor
        # (a 2-GPU re-pin was refused "most idle on one node: 1" by its own first pin).
        placer.inventory.drop_hold(namespace, name)
    pod_now = placer.inventory.pod(namespace, server)
    # A claim with the scheduler's finalizer but no allocation is normally being allocated
    # right now; if its pod is unschedulable all the same, the attempt failed and left it.
    stuck = bool(claim is not None and claim.allocating and pod_now is not None
                 and pod_now.unschedulable)
    if claim is not None and claim.allocating and not stuck:
        return None
    attempt = 1
    if claim is not None and claim.placement is not None:
        attempt = claim.placement.attempt + 1
    request = request or (claim.request if claim is not None else None)
    if request is None:
        raise PlacementFailed(f"claim {namespace}/{name} has no request to re-pin from")
    if not may_repin(attempt, placer.max_repins):
        raise PlacementFailed(
            f"gave up on server {server} after {placer.max_repins} re-pins: {reason}"
        )
    if claim is not None:
        if not _delete_unallocated(placer, namespace, name, claim.uid, claim.resource_version,
                                   finalizer_ok=stuck):
            return None  # allocated since we looked: nothing to re-pin
        placer.inventory.drop(namespace, name, claim.uid)
    pod = placer.inventory.pod(namespace, server)
    pod_node = ""
    pod_json: dict[str, Any] | None = None
    if pod is not None and not pod.node:
        try:
            pod_json = placer.api.get("pods", server, namespace)
            pod_node = pinned_node_of_pod(pod_json)
        except ApiException as e:
            if e.status != 404:
                raise
            pod = None
    placement, candidates = placer._decide(namespace, name, request, attempt, pod_node,
                                           ask=ask)
    owner = owner_reference(pod.name, pod.uid) if pod is not None else None
    moved = pod_json is not None and bool(pod_node) and placement.node != pod_node
    hub_server = (claim.hub_server if claim is not None else "") or (
        pod.hub_server if pod is not None else "")
    if not placer._create_claim(namespace, server, placement, request,
                                None if moved else owner, wait_gone=10,
                                hub_server=hub_server):
        return None  # another actor re-pinned it first
    placer.repins += 1
    log.info("re-pinned %s/%s (attempt %d) on %s: %s", namespace, server, attempt,
             placement.node, reason)
    pin = Pin(namespace, server, name, placement, request, candidates)
    if moved and pod_json is not None:
        _recreate_pod(placer, pin, pod_json)
    return pin


def _delete_unallocated(
    placer: Placer, namespace: str, name: str, uid: str, rv: str, finalizer_ok: bool = False
) -> bool:
    """Delete the claim only while it is unallocated; False if it got allocated meanwhile.

    The resourceVersion precondition makes this safe against the scheduler allocating it at
    the same moment; a 409 from an unrelated change (say, our owner patch) is re-read.
    """
    for _ in range(5):
        try:
            placer.api.delete("resourceclaims", name, namespace, uid=uid, resource_version=rv)
            return True
        except ApiException as e:
            if e.status == 404:
                return True
            if e.status != 409:
                raise
        try:
            fresh = placer.api.get("resourceclaims", name, namespace)
        except ApiException as e:
            if e.status == 404:
                return True
            raise
        meta = fresh.get("metadata") or {}
        if (
            (fresh.get("status") or {}).get("allocation")
            or meta.get("uid") != uid
            or (not finalizer_ok and CLAIM_FINALIZER in (meta.get("finalizers") or []))
        ):
            return False  # allocated, being allocated, or someone else's by now
        rv = str(meta.get("resourceVersion", ""))
    return False


def _recreate_pod(
    placer: Placer, pin: Pin, pod_json: Mapping[str, Any], timeout: float = 60
) -> None:
    """Re-create a pending (never bound) pod so its node affinity names the new node."""
    meta = pod_json.get("metadata") or {}
    manifest: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            k: meta[k] for k in ("name", "labels", "annotations") if k in meta
        },
        "spec": {k: v for k, v in (pod_json.get("spec") or {}).items() if k != "nodeName"},
    }
    if "ownerReferences" in meta:
        manifest["metadata"]["ownerReferences"] = meta["ownerReferences"]
    # Drop the old node pin before applying the new one (apply narrows existing terms).
    spec: dict[str, Any] = manifest["spec"]
    affinity = spec.get("affinity") or {}
    (affinity.get("nodeAffinity") or {}).pop(
        "requiredDuringSchedulingIgnoredDuringExecution", None
    )
    body = pin.pod(manifest)
    try:
        placer.api.delete("pods", pin.server, pin.namespace, uid=str(meta.get("uid", "")),
                          grace_seconds=0)
    except ApiException as e:
        if e.status not in (404, 409):
            raise
        if e.status == 409:
            return  # a different pod by now: whoever made it owns it
    deadline = time.monotonic() + timeout
    while True:
        try:
            created = placer.api.create("pods", body, pin.namespace)
            break
        except ApiException as e:
            if e.status != 409 or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    placer.adopt(pin, pin.server, str(created["metadata"]["uid"]))

# -- after a restart ---------------------------------------------------------------------------


def reconcile(placer: Placer) -> dict[str, int]:
    """Re-pin stale pins and delete orphaned claims; what the tests' stand-in service runs.

    Not in the product path: nothing in ``aispike_hub`` calls it (``tests/unit/kube/
    test_placer_asks_admission.py`` checks).  In the product the AISpike service's
    reconciliation (:mod:`aispike_hub.service.reconcile`, carried out by
    :mod:`aispike_hub.service.reconciler`) owns orphan claims, and stale pins are re-pinned
    by the spawner's start loop, which asks admission.  Here:

    - **orphans**: the verdicts are the service's one rule (:func:`aispike_hub.service.
      reconcile.decide` on this inventory's claims and pods, with ``placer.orphan_seconds``
      and this inventory's hub identity; namespaces unread, so judged by age only), carried
      out the same way (delete with the claim's uid and resourceVersion as preconditions);
    - **stale pins** of servers whose pod exists are re-pinned with the placer's own decision
      (no admission to ask: the callers have none).

    Returns counts of what it did (``repinned``, ``orphans``, ``failed``).
    """
    from aispike_hub.service import reconcile as rule  # pure: the one orphan rule

    done = {"repinned": 0, "orphans": 0, "failed": 0}
    inv = placer.inventory
    pods = inv.pods()
    claims = [c for c in inv.claims() if c.ours]
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    seen = rule.Observation(
        now=now, started_at=now, tickets=(),
        claims=[rule.ClaimView(c.namespace, c.name, c.uid, c.resource_version,
                               _parse_time(c.created), c.owner_pod, c.hub_server, c.deleting,
                               c.is_allocated or c.allocating) for c in claims],
        pods=[rule.PodView(p.namespace, p.name, tuple(p.claim_names)) for p in pods])
    settings = rule.Settings(orphan_seconds=placer.orphan_seconds, hub_id=inv.hub_id,
                             owns_unnamed=inv.owns_unnamed)
    orphaned: set[str] = set()
    for action in rule.decide(seen, settings):
        if isinstance(action, rule.DeleteClaim):
            orphaned.add(f"{action.namespace}/{action.name}")
            if _delete_claim(placer, action.namespace, action.name, action.uid,
                             action.resource_version):
                log.warning("deleted orphan claim %s/%s: %s", action.namespace, action.name,
                            action.reason)
                done["orphans"] += 1
    users: dict[str, PodInfo] = {}
    for p in pods:
        for c in p.claim_names:
            users[f"{p.namespace}/{c}"] = p
    for claim in claims:
        if claim.is_allocated or claim.deleting or claim.key in orphaned:
            continue
        if not inv.belongs(claim.hub_server):
            continue  # another hub's claim (kube/identity.py): its own hub reconciles it
        pod = users.get(claim.key)
        if pod is None:
            continue  # no pod yet: the orphan rule above judges it
        st = placer.status(claim.namespace, pod.name)
        if st.phase != "stale":
            continue
        try:
            if placer.repin(claim.namespace, pod.name, st.reason, claim.request) is not None:
                done["repinned"] += 1
        except (PlacementFailed, PlacementRefused) as e:
            log.warning("server %s/%s cannot be placed: %s", claim.namespace, pod.name, e)
            done["failed"] += 1
    return done


def _parse_time(text: str) -> dt.datetime | None:
    """A Kubernetes timestamp as naive UTC (the rule's clock); ``None`` when unreadable (the
    claim is then never judged by age)."""
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    return parsed


def _delete_claim(placer: Placer, namespace: str, name: str, uid: str, rv: str) -> bool:
    """Delete the claim as observed (uid and resourceVersion as preconditions); False when it
    is gone or changed since (the next pass looks again)."""
    try:
        placer.api.delete("resourceclaims", name, namespace, uid=uid, resource_version=rv)
    except ApiException as e:
        if e.status not in (404, 409):
            raise
        return False
    placer.inventory.drop(namespace, name, uid)
    return True
