"""The reconciler's rules, table by table (issue 26): tickets against the hub's servers, our
claims against pods and namespaces.  Each case is one observation and the exact actions."""

from __future__ import annotations

import datetime as dt

import pytest

from aispike_hub.service.reconcile import (
    Action,
    ClaimView,
    ClearMissing,
    ClearPodMissing,
    DeleteClaim,
    DeletePod,
    MarkMissing,
    MarkPodMissing,
    Observation,
    PodView,
    ReleaseTicket,
    Settings,
    TicketView,
    Unprotect,
    decide,
)

T0 = dt.datetime(2026, 12, 4, 12, 0, 0)
START = T0 - dt.timedelta(hours=1)  # the service started an hour ago
SETTINGS = Settings(grace=60, orphan_seconds=300)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def ticket(user: str = "bob", server: str = "", touched: float = -600,
           missing: float | None = None, state: str = "admitted") -> TicketView:
    return TicketView(user, server, state, at(touched),
                      at(missing) if missing is not None else None)


def seen(tickets: list[TicketView], servers: set[str] | None, now: float = 0,
         listed: float | None = None) -> Observation:
    return Observation(now=at(now), started_at=START, tickets=tickets,
                       servers=frozenset(servers) if servers is not None else None,
                       listed_at=at(now if listed is None else listed))


TICKETS: list[tuple[str, Observation, list[Action]]] = [
    ("server present keeps the ticket",
     seen([ticket()], {"bob/"}), []),
    ("server present clears a remembered absence",
     seen([ticket(missing=-30)], {"bob/"}), [ClearMissing("bob", "")]),
    ("absent, first sighting: remembered, kept (within grace)",
     seen([ticket()], set()), [MarkMissing("bob", "", at(0))]),
    ("absent 59 s: within grace, kept",
     seen([ticket(missing=-59)], set()), []),
    ("absent exactly the grace: released",
     seen([ticket(missing=-60)], set()),
     [ReleaseTicket("bob", "", "admitted", "the hub has had no default server of bob for 60 s")]),
    ("a queued ticket (cancelled spawn) absent past the grace: released",
     seen([ticket(server="s1", state="queued", missing=-61)], {"bob/"}),
     [ReleaseTicket("bob", "s1", "queued", "the hub has had no 's1' of bob for 61 s")]),
    ("named and default servers are told apart",
     seen([ticket(server="s1", missing=-90), ticket()], {"bob/s1"}),
     [ClearMissing("bob", "s1"), MarkMissing("bob", "", at(0))]),
    ("a ticket touched after the listing began is not judged by it",
     seen([ticket(touched=-1)], set(), listed=-2), []),
    ("a ticket from before the service started: released at the first listing",
     seen([ticket(touched=-7200)], set()),
     [ReleaseTicket("bob", "", "admitted", "the hub has no default server of bob (found at "
                    "start)")]),
    ("no listing (hub down, or no read:servers): nothing judged",
     seen([ticket(touched=-7200, missing=-3600)], None), []),
]


@pytest.mark.parametrize(("case", "observation", "expected"), TICKETS,
                         ids=[c[0] for c in TICKETS])
def test_tickets(case: str, observation: Observation, expected: list[Action]) -> None:
    assert decide(observation, SETTINGS) == expected, case


def claim(name: str = "claim-bob", ns: str = "jhub", created: float = -400, owner: str = "",
          deleting: bool = False, protected: bool = False) -> ClaimView:
    return ClaimView(ns, name, f"uid-{name}", "7", at(created), owner, "bob/", deleting,
                     protected)


def kube(claims: list[ClaimView], pods: list[PodView] | None = None,
         namespaces: dict[str, str] | None = None) -> Observation:
    return Observation(now=at(0), started_at=START, tickets=[], claims=claims,
                       pods=pods or [],
                       namespaces={"jhub": "active"} if namespaces is None
                       else namespaces)  # type: ignore[arg-type]


def delete(c: ClaimView, reason: str) -> DeleteClaim:
    return DeleteClaim(c.namespace, c.name, c.uid, c.resource_version, c.hub_server, reason)


CLAIMS: list[tuple[str, Observation, list[Action]]] = [
    ("a claim its pod uses is kept",
     kube([claim()], [PodView("jhub", "jupyter-bob", ("claim-bob",))]), []),
    ("a claim whose owner pod exists is kept (pod not yet listing it)",
     kube([claim(owner="jupyter-bob")], [PodView("jhub", "jupyter-bob")]), []),
    ("no pod, younger than orphan_seconds: kept",
     kube([claim(created=-299)]), []),
    ("no pod, exactly orphan_seconds old: deleted",
     kube([claim(created=-300)]), [delete(claim(created=-300), "no pod has used it in its 300 s")]),
    ("an orphan whose owner pod is gone: deleted",
     kube([claim(owner="jupyter-bob")]),
     [delete(claim(owner="jupyter-bob"), "no pod has used it in its 400 s")]),
    ("a pod of the same name in another namespace does not keep it",
     kube([claim()], [PodView("other", "x", ("claim-bob",))]),
     [delete(claim(), "no pod has used it in its 400 s")]),
    ("an orphan already being deleted: left to the API server",
     kube([claim(deleting=True)]), []),
    ("deleted namespace: deleted at once, whatever its age",
     kube([claim(created=-1)], namespaces={}),
     [delete(claim(created=-1), "namespace jhub is deleted and no pod uses the claim")]),
    ("terminating namespace: deleted at once",
     kube([claim(created=-1)], namespaces={"jhub": "terminating"}),
     [delete(claim(created=-1), "namespace jhub is terminating and no pod uses the claim")]),
    ("terminating namespace, claim held by delete-protection: the finalizer is removed",
     kube([claim(deleting=True, protected=True)], namespaces={"jhub": "terminating"}),
     [Unprotect("jhub", "claim-bob", "uid-claim-bob", "7",
                "namespace jhub is terminating and no pod uses the claim")]),
    ("terminating namespace but its pod still runs: kept (the pod goes first)",
     kube([claim(deleting=True, protected=True)],
          [PodView("jhub", "jupyter-bob", ("claim-bob",))], {"jhub": "terminating"}), []),
    ("namespaces unknown (no permission): only the age rule",
     Observation(now=at(0), started_at=START, tickets=[], claims=[claim(created=-10)],
                 namespaces=None), []),
    ("no Kubernetes view: nothing about claims",
     Observation(now=at(0), started_at=START, tickets=[], claims=None), []),
]


@pytest.mark.parametrize(("case", "observation", "expected"), CLAIMS,
                         ids=[c[0] for c in CLAIMS])
def test_claims(case: str, observation: Observation, expected: list[Action]) -> None:
    assert decide(observation, SETTINGS) == expected, case


def test_ticket_and_claim_actions_together_in_that_order() -> None:
    both = Observation(now=at(0), started_at=START, tickets=[ticket(missing=-120)],
                       servers=frozenset(), listed_at=at(0), claims=[claim()],
                       namespaces={"jhub": "active"})
    actions = decide(both, SETTINGS)
    assert [type(a) for a in actions] == [ReleaseTicket, DeleteClaim]


# -- two hubs on one cluster (issue 26 item 4): a hub judges only its own claims ---------------

def hub_claim(value: str, name: str = "claim-x", ns: str = "jhub") -> ClaimView:
    """An orphan (no pod, 400 s old) whose aispike.io/hub-server is ``value``."""
    return ClaimView(ns, name, f"uid-{name}", "7", at(-400), "", value)


HUBS: list[tuple[str, ClaimView, Settings, bool]] = [
    ("hub A deletes its own orphan", hub_claim("lab-a:bob/"),
     Settings(60, 300, "lab-a"), True),
    ("hub B never deletes hub A's orphan", hub_claim("lab-a:bob/"),
     Settings(60, 300, "lab-b"), False),
    ("hub B owning unnamed values still never deletes hub A's", hub_claim("lab-a:bob/"),
     Settings(60, 300, "lab-b", owns_unnamed=True), False),
    ("the default hub never deletes a named hub's orphan", hub_claim("lab-a:bob/"),
     SETTINGS, False),
    ("an old value (no hub id) is the default hub's", hub_claim("bob/"), SETTINGS, True),
    ("... not a named hub's", hub_claim("bob/"), Settings(60, 300, "lab-a"), False),
    ("... unless that hub was upgraded in place", hub_claim("bob/"),
     Settings(60, 300, "lab-a", owns_unnamed=True), True),
]


@pytest.mark.parametrize(("claim_", "settings", "deleted"),
                         [c[1:] for c in HUBS], ids=[c[0] for c in HUBS])
def test_a_hub_reconciles_only_its_own_claims(claim_: ClaimView, settings: Settings,
                                              deleted: bool) -> None:
    actions = decide(kube([claim_]), settings)
    assert [type(a) for a in actions] == ([DeleteClaim] if deleted else [])


def test_another_hubs_claim_in_a_deleted_namespace_is_left_to_that_hub() -> None:
    gone = kube([hub_claim("lab-a:bob/", ns="gone")], namespaces={})
    assert decide(gone, Settings(60, 300, "lab-b")) == []
    assert [type(a) for a in decide(gone, Settings(60, 300, "lab-a"))] == [DeleteClaim]


# -- pods the hub forgot (a hub killed mid-spawn keeps no server for it) ------------------------

def pod(hub_server: str = "bob/", created: float = -600, missing: float | None = None,
        deleting: bool = False, name: str = "jupyter-bob", claims: tuple[str, ...] = ()
        ) -> PodView:
    return PodView("jhub", name, claims, f"uid-{name}", at(created), hub_server, deleting,
                   at(missing) if missing is not None else None)


def pods(ps: list[PodView], servers: set[str] | None, listed: float = 0) -> Observation:
    return Observation(now=at(0), started_at=START, tickets=[],
                       servers=frozenset(servers) if servers is not None else None,
                       listed_at=at(listed), claims=[], pods=ps,
                       namespaces={"jhub": "active"})


FORGOT = "the hub has had no default server of bob for {} s (a spawn the hub forgot, e.g. it " \
         "was killed mid-spawn)"
PODS: list[tuple[str, Observation, Settings, list[Action]]] = [
    ("the hub lists its server: kept", pods([pod()], {"bob/"}), SETTINGS, []),
    ("listed again: the remembered absence is cleared",
     pods([pod(missing=-30)], {"bob/"}), SETTINGS, [ClearPodMissing("uid-jupyter-bob")]),
    ("absent, first sighting: remembered, kept",
     pods([pod()], set()), SETTINGS, [MarkPodMissing("uid-jupyter-bob", at(0))]),
    ("absent 59 s: within grace, kept", pods([pod(missing=-59)], set()), SETTINGS, []),
    ("absent exactly the grace: deleted", pods([pod(missing=-60)], set()), SETTINGS,
     [DeletePod("jhub", "jupyter-bob", "uid-jupyter-bob", "bob/", FORGOT.format(60))]),
    ("a named server is told apart from the default one",
     pods([pod("bob/s1", missing=-90)], {"bob/"}), SETTINGS,
     [DeletePod("jhub", "jupyter-bob", "uid-jupyter-bob", "bob/s1",
                "the hub has had no 's1' of bob for 90 s (a spawn the hub forgot, e.g. it was "
                "killed mid-spawn)")]),
    ("created after the listing began: not judged by it",
     pods([pod(created=-1, missing=-90)], set(), listed=-2), SETTINGS, []),
    ("created exactly when the listing began: not judged by it",
     pods([pod(created=-2, missing=-90)], set(), listed=-2), SETTINGS, []),
    ("already being deleted: left to the API server",
     pods([pod(deleting=True, missing=-90)], set()), SETTINGS, []),
    ("no listing (hub down): nothing judged", pods([pod(missing=-3600)], None), SETTINGS, []),
    ("not a hub server's pod (no annotation): never touched",
     pods([pod(hub_server="", missing=-3600)], set()), SETTINGS, []),
    ("another hub's pod: never touched",
     pods([pod(hub_server="lab-a:bob/", missing=-3600)], set()), SETTINGS, []),
    ("this named hub's pod: deleted",
     pods([pod(hub_server="lab-a:bob/", missing=-60)], set()), Settings(60, 300, "lab-a"),
     [DeletePod("jhub", "jupyter-bob", "uid-jupyter-bob", "lab-a:bob/", FORGOT.format(60))]),
    ("the listing names the server without the hub id",
     pods([pod(hub_server="lab-a:bob/")], {"bob/"}), Settings(60, 300, "lab-a"),
     []),
    ("pods switched off (delete_orphan_pods=False): nothing judged",
     pods([pod(missing=-3600)], set()), Settings(60, 300, pods=False), []),
]


@pytest.mark.parametrize(("case", "observation", "settings", "expected"), PODS,
                         ids=[c[0] for c in PODS])
def test_pods(case: str, observation: Observation, settings: Settings,
              expected: list[Action]) -> None:
    assert decide(observation, settings) == expected, case


def test_a_forgotten_pod_and_its_ticket_go_together_and_its_claim_is_kept_until_then() -> None:
    """The hub crashed mid-spawn: ticket released, pod deleted; the claim the pod still uses
    is not deleted in the same pass (it follows the pod: owned by it, or an orphan later)."""
    c = claim(created=-900)
    seen_ = Observation(now=at(0), started_at=START, tickets=[ticket(missing=-120)],
                        servers=frozenset(), listed_at=at(0), claims=[c],
                        pods=[pod(missing=-120, claims=(c.name,))],
                        namespaces={"jhub": "active"})
    assert [type(a) for a in decide(seen_, SETTINGS)] == [ReleaseTicket, DeletePod]
