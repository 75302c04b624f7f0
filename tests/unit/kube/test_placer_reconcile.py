"""``Placer.reconcile`` judges orphan claims by the service's one rule (issue 18).

Only the integration tests' stand-in service runs ``Placer.reconcile`` (nothing in the product
does: ``test_placer_asks_admission`` checks); its orphan verdicts are
:func:`aispike_hub.service.reconcile.decide`'s, the rule the AISpike service's reconciliation
carries out, so the two cannot drift apart.  The real :class:`Inventory` (its ledger fed plain
event dicts) and :class:`Placer` run against the small in-memory API of ``test_repin_own_pin``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from unit.kube.test_repin_own_pin import GPUS, NS, SMALL, MemoryApi

from aispike_hub.kube import inventory
from aispike_hub.kube.claims import claim_name
from aispike_hub.kube.placer import Placer
from aispike_hub.kube.slices import resource_slice
from aispike_hub.service import reconcile as rule


@pytest.fixture
def placer() -> Placer:
    inv = inventory.Inventory(api_client=None, hub_id="lab-a")
    inv._apply("nodes", "ADDED", {
        "metadata": {"name": "n"}, "spec": {},
        "status": {"allocatable": {"cpu": "32", "memory": "256Gi"},
                   "conditions": [{"type": "Ready", "status": "True"}]}})
    inv._apply("resourceslices", "ADDED", {**resource_slice("n", GPUS)})
    p = Placer(inv, orphan_seconds=300)
    p.api = inv.api = MemoryApi()  # type: ignore[assignment]
    return p


def _claim(placer: Placer, server: str, age_s: float, hub_server: str) -> dict[str, Any]:
    """Pin ``server`` and show its claim to the inventory as made ``age_s`` seconds ago."""
    placer.pin(NS, server, SMALL, hub_server=hub_server)
    obj = placer.api.get("resourceclaims", claim_name(server), NS)
    made = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=age_s)
    obj["metadata"]["creationTimestamp"] = made.strftime("%Y-%m-%dT%H:%M:%SZ")
    placer.inventory._apply("resourceclaims", "ADDED", obj)
    return obj


def _pod_using(placer: Placer, server: str) -> None:
    placer.inventory._apply("pods", "ADDED", {
        "metadata": {"name": server, "namespace": NS, "uid": f"pod-{server}"},
        "spec": {"containers": [{"name": "notebook"}],
                 "resourceClaims": [{"name": "gpu", "resourceClaimName": claim_name(server)}]},
        "status": {"phase": "Pending"}})


def test_orphans_are_the_services_verdicts(placer: Placer) -> None:
    old = _claim(placer, "old", 600, "lab-a:ann/old")  # no pod, older than orphan_seconds
    _claim(placer, "young", 10, "lab-a:ann/young")  # no pod yet: its spawner may be slow
    _claim(placer, "used", 600, "lab-a:ann/used")
    _pod_using(placer, "used")
    _claim(placer, "theirs", 600, "lab-b:bob/theirs")  # another hub's: never ours to judge
    # what the service's rule says about the same view
    claims = [c for c in placer.inventory.claims() if c.ours]
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    verdicts = rule.decide(rule.Observation(
        now=now, started_at=now, tickets=(),
        claims=[rule.ClaimView(c.namespace, c.name, c.uid, c.resource_version,
                               dt.datetime.fromisoformat(c.created.replace("Z", "")),
                               c.owner_pod, c.hub_server) for c in claims],
        pods=[rule.PodView(p.namespace, p.name, tuple(p.claim_names))
              for p in placer.inventory.pods()]),
        rule.Settings(orphan_seconds=300, hub_id="lab-a"))
    assert [(type(v), v.name) for v in verdicts] == [(rule.DeleteClaim, claim_name("old"))]

    done = placer.reconcile()
    assert done == {"repinned": 0, "orphans": 1, "failed": 0}
    left = {name for kind, name in placer.api.objects if kind == "resourceclaims"}
    assert left == {claim_name(s) for s in ("young", "used", "theirs")}
    assert placer.inventory.claim(NS, old["metadata"]["name"]) is None
