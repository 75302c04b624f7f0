"""Reconciliation's decisions: tickets against the hub's servers, claims against pods (pure).

Three views of "who holds GPU memory" can drift apart: the service's tickets (admitted or
queued reservations), the hub's servers, and Kubernetes' ResourceClaims with their pods.  A
spawn cancelled while queued, a hub that dropped a server while the service was down, a
shutdown in which every release met "connection refused", a hub that died between creating a
claim and its pod, a namespace deleted under a claim: each leaves one view holding what the
others gave up.  :func:`decide` is the rule that brings them back together, a function of what
was observed and the clock, returning :data:`Action` values that
:mod:`aispike_hub.service.reconciler` carries out (release, audit, delete, patch).

The rules:

- **A ticket whose server the hub does not list** is released once it has been missing for
  ``grace`` seconds (the first sighting is remembered in the store, so a restart does not start
  the grace over); a ticket from before the service started is released at the first complete
  listing (the hub lists pending spawns too, so nothing from before the start can be in flight
  unseen).  A ticket touched after the listing began is never judged by it.  With no complete
  listing (the hub did not answer, the token cannot read servers) no ticket is judged.
- **A ticket whose server the hub lists** is kept (a remembered first sighting is cleared).
- **Our pod whose server the hub does not list** (a pod with this hub's
  ``aispike.io/hub-server``, not being deleted, created before the listing began) is deleted
  once it has been missing for ``grace`` seconds.  This is the hub that was killed while a
  spawn was in flight: JupyterHub keeps no server for that spawn, so after its restart nothing
  polls or stops the pod, which would hold its GPU memory, CPU and RAM for ever.  The first
  sighting is remembered by the running service only (a restart starts the grace over: later,
  never sooner).  With ``pods=False`` (``Reconciler.delete_orphan_pods``) no pod is judged.
- **Our claim that no pod uses** (neither in a pod's ``resourceClaims`` nor its owner pod) is
  deleted once it is ``orphan_seconds`` old: its spawner died before creating the pod, or the
  pod went and the claim stayed.
- **Our claim in a deleted or terminating namespace** that no pod uses is deleted at once, and
  kube-scheduler's ``resource.kubernetes.io/delete-protection`` finalizer is removed from it
  when it is already being deleted, so the namespace does not hang in Terminating.
- Claims of other workloads are never touched, nor claims of another hub sharing the cluster:
  only claims whose ``aispike.io/hub-server`` names this hub (``Settings.hub_id``; a value
  without a hub id, from a version before hub ids, counts as the default hub's and, with
  ``owns_unnamed``, this hub's: :func:`aispike_hub.kube.identity.belongs`) are judged.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from aispike_hub.kube.identity import DEFAULT_HUB, belongs, split_hub_server

__all__ = [
    "Action",
    "ClaimView",
    "ClearMissing",
    "ClearPodMissing",
    "DeleteClaim",
    "DeletePod",
    "MarkMissing",
    "MarkPodMissing",
    "Observation",
    "PodView",
    "ReleaseTicket",
    "Settings",
    "TicketView",
    "Unprotect",
    "decide",
]

NamespaceState = Literal["active", "terminating"]
"""A namespace the API server has (absent from the mapping: deleted)."""

ACTIVE: Final[NamespaceState] = "active"
TERMINATING: Final[NamespaceState] = "terminating"


@dataclass(frozen=True, slots=True)
class TicketView:
    """One admitted or queued reservation of the service."""

    user: str
    server: str
    state: str
    touched: dt.datetime
    """The latest of its creation and admission: when the service last acted on it."""
    missing_since: dt.datetime | None = None

    @property
    def key(self) -> str:
        return f"{self.user}/{self.server}"


@dataclass(frozen=True, slots=True)
class ClaimView:
    """One of our ResourceClaims as the inventory sees it."""

    namespace: str
    name: str
    uid: str
    resource_version: str
    created: dt.datetime | None
    owner_pod: str = ""
    hub_server: str = ""
    deleting: bool = False
    protected: bool = False
    """Carries kube-scheduler's ``resource.kubernetes.io/delete-protection`` finalizer."""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class PodView:
    namespace: str
    name: str
    claim_names: tuple[str, ...] = ()
    uid: str = ""
    created: dt.datetime | None = None
    hub_server: str = ""
    """``aispike.io/hub-server`` ('' for pods that are not a hub server's)."""
    deleting: bool = False
    missing_since: dt.datetime | None = None
    """When a pass first saw its server absent from the hub's listing (remembered in memory)."""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class Observation:
    """What one pass saw.  ``None`` means "not seen": nothing is decided from it."""

    now: dt.datetime
    started_at: dt.datetime
    """When this service process started."""
    tickets: Sequence[TicketView]
    servers: frozenset[str] | None = None
    """``user/server`` of every server the hub lists as active ('' name: the default)."""
    listed_at: dt.datetime | None = None
    """When the listing of ``servers`` began."""
    claims: Sequence[ClaimView] | None = None
    pods: Sequence[PodView] = ()
    namespaces: Mapping[str, NamespaceState] | None = None
    """State of every namespace holding one of ``claims`` (absent: deleted)."""


@dataclass(frozen=True, slots=True)
class Settings:
    grace: float = 60.0
    orphan_seconds: float = 300.0
    hub_id: str = DEFAULT_HUB
    """This hub's id: claims and pods of other hubs are never judged (kube/identity.py)."""
    owns_unnamed: bool = False
    """Claims without a hub id are this hub's too (always, for the default hub)."""
    pods: bool = True
    """Delete our pods whose server the hub has not listed for ``grace`` seconds."""

    def mine(self, hub_server: str) -> bool:
        """Whether a claim with this ``aispike.io/hub-server`` value is this hub's."""
        return belongs(hub_server, self.hub_id, self.owns_unnamed)


@dataclass(frozen=True, slots=True)
class ReleaseTicket:
    user: str
    server: str
    state: str
    reason: str


@dataclass(frozen=True, slots=True)
class MarkMissing:
    user: str
    server: str
    since: dt.datetime


@dataclass(frozen=True, slots=True)
class ClearMissing:
    user: str
    server: str


@dataclass(frozen=True, slots=True)
class DeleteClaim:
    namespace: str
    name: str
    uid: str
    resource_version: str
    hub_server: str
    reason: str


@dataclass(frozen=True, slots=True)
class Unprotect:
    """Remove the delete-protection finalizer (the claim is being deleted, no pod uses it)."""

    namespace: str
    name: str
    uid: str
    resource_version: str
    reason: str


@dataclass(frozen=True, slots=True)
class MarkPodMissing:
    uid: str
    since: dt.datetime


@dataclass(frozen=True, slots=True)
class ClearPodMissing:
    uid: str


@dataclass(frozen=True, slots=True)
class DeletePod:
    """Delete a hub server's pod the hub has forgotten (its claim follows: owned by the pod,
    or collected as a claim no pod uses)."""

    namespace: str
    name: str
    uid: str
    hub_server: str
    reason: str


Action = (ReleaseTicket | MarkMissing | ClearMissing | DeleteClaim | Unprotect | MarkPodMissing
          | ClearPodMissing | DeletePod)


def _seconds(later: dt.datetime, earlier: dt.datetime) -> float:
    return (later - earlier).total_seconds()


def _ticket_actions(seen: Observation, settings: Settings) -> list[Action]:
    if seen.servers is None or seen.listed_at is None:
        return []
    out: list[Action] = []
    for t in seen.tickets:
        if t.key in seen.servers:
            if t.missing_since is not None:
                out.append(ClearMissing(t.user, t.server))
            continue
        if t.touched >= seen.listed_at:
            continue  # newer than the listing: the hub may list it next time
        name = f"'{t.server}'" if t.server else "default server"
        if t.touched < seen.started_at:
            out.append(ReleaseTicket(t.user, t.server, t.state,
                                     f"the hub has no {name} of {t.user} (found at start)"))
            continue
        first = t.missing_since or seen.now
        if t.missing_since is None:
            out.append(MarkMissing(t.user, t.server, seen.now))
        missing = _seconds(seen.now, first)
        if missing >= settings.grace:
            out.append(ReleaseTicket(
                t.user, t.server, t.state,
                f"the hub has had no {name} of {t.user} for {missing:.0f} s"))
    return out


def _pod_actions(seen: Observation, settings: Settings) -> list[Action]:
    if not settings.pods or seen.servers is None or seen.listed_at is None:
        return []
    out: list[Action] = []
    for p in seen.pods:
        if not p.hub_server or not p.uid or not settings.mine(p.hub_server) or p.deleting:
            continue
        if p.created is None or p.created >= seen.listed_at:
            continue  # newer than the listing: its spawn may have begun after it
        _, key = split_hub_server(p.hub_server)
        if key in seen.servers:
            if p.missing_since is not None:
                out.append(ClearPodMissing(p.uid))
            continue
        first = p.missing_since or seen.now
        if p.missing_since is None:
            out.append(MarkPodMissing(p.uid, seen.now))
        missing = _seconds(seen.now, first)
        if missing >= settings.grace:
            user, _, server = key.partition("/")
            name = f"'{server}'" if server else "default server"
            out.append(DeletePod(p.namespace, p.name, p.uid, p.hub_server,
                                 f"the hub has had no {name} of {user} for {missing:.0f} s "
                                 "(a spawn the hub forgot, e.g. it was killed mid-spawn)"))
    return out


def _claim_actions(seen: Observation, settings: Settings) -> list[Action]:
    if seen.claims is None:
        return []
    used = {f"{p.namespace}/{c}" for p in seen.pods for c in p.claim_names}
    pods = {f"{p.namespace}/{p.name}" for p in seen.pods}
    out: list[Action] = []
    for c in seen.claims:
        if not settings.mine(c.hub_server):
            continue  # another hub's: its own service reconciles it
        if c.key in used or (c.owner_pod and f"{c.namespace}/{c.owner_pod}" in pods):
            continue
        ns: NamespaceState | Literal["deleted"] | None = None
        if seen.namespaces is not None:
            ns = seen.namespaces.get(c.namespace, "deleted")
        if ns in (TERMINATING, "deleted"):
            why = f"namespace {c.namespace} is {ns} and no pod uses the claim"
            if c.deleting and c.protected:
                out.append(Unprotect(c.namespace, c.name, c.uid, c.resource_version, why))
            elif not c.deleting:
                out.append(DeleteClaim(c.namespace, c.name, c.uid, c.resource_version,
                                       c.hub_server, why))
            continue
        if c.deleting or c.created is None:
            continue
        age = _seconds(seen.now, c.created)
        if age >= settings.orphan_seconds:
            out.append(DeleteClaim(c.namespace, c.name, c.uid, c.resource_version, c.hub_server,
                                   f"no pod has used it in its {age:.0f} s"))
    return out


def decide(seen: Observation, settings: Settings) -> list[Action]:
    """What to do about ``seen`` (see the module docstring): ticket actions, then pods', then
    claims'."""
    return [*_ticket_actions(seen, settings), *_pod_actions(seen, settings),
            *_claim_actions(seen, settings)]
