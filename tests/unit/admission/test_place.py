"""Admission places an admitted server again (issue 18: the hub's placer asks, never re-decides).

The pure parts (:mod:`aispike_hub.admission.replace`: the request as placement sees it, one
node's room, placing on a preferred node first) and :meth:`AdmissionController.place`: it sees
the other servers' claims and promises, leaves the server's own out, never lands on a GPU model
the user's limits exclude, places the request rounded as the claim holds it, remembers the new
place in the reservation, and places only admitted servers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from traitlets.config import Configurable
from unit.service.service_fixtures import GIB

from aispike_hub.admission.controller import AdmissionController
from aispike_hub.admission.replace import (
    NO_ALLOWED_MODEL,
    claimed_request,
    place_preferring,
    placed_request,
    single_node_state,
)
from aispike_hub.admission.wire import assignment_from_dict, request_from_dict
from aispike_hub.model import Assignment, Gpu, Node, SliceRequest
from aispike_hub.placement.engine import PlacementEngine
from aispike_hub.placement.fit import still_fits
from aispike_hub.placement.state import ClusterState
from aispike_hub.quota import User, policy_from_dict, resolve_limits, restrict_request
from aispike_hub.service.store import Store

A100, H100 = "NVIDIA A100-SXM4-80GB", "NVIDIA H100 80GB HBM3"


def node(name: str, model: str, gpus: int = 1) -> Node:
    return Node(name, 64_000, 512 * GIB,
                tuple(Gpu(g, model, 80 * GIB, uuid=f"{name}-{g}") for g in range(gpus)))


NODES = [node("a-0", A100), node("h-0", H100)]
POLICY = {"users": {"ann": {"allowed_models": [A100]}}}


@dataclass
class ClusterInventory:
    """A fixed node list that also says what each hub server's claim holds (as the Kubernetes
    inventory does), so a test can make a claim exist or vanish."""

    node_list: Sequence[Node]
    held: dict[str, list[Assignment]] = field(default_factory=dict)

    def nodes(self) -> Sequence[Node]:
        return self.node_list

    def foreign_assignments(self) -> Sequence[Assignment]:
        return ()

    def server_assignments(self) -> Mapping[str, Sequence[Assignment]]:
        return self.held


def controller(nodes: Sequence[Node] = NODES, **kw: object) -> AdmissionController:
    return AdmissionController(Store("sqlite://"), ClusterInventory(list(nodes)),
                               policy_from_dict(POLICY), **kw)  # type: ignore[arg-type]


def gib(n: float, **kw: object) -> SliceRequest:
    return SliceRequest(gpu_memory_mib=int(n * GIB), **kw)  # type: ignore[arg-type]


# -- the pure parts ----------------------------------------------------------------------------
@pytest.mark.parametrize(("asked", "claimed"), [
    (0, 0), (GIB, GIB), (GIB + 1, 2 * GIB), (1536, 2 * GIB), (8 * GIB, 8 * GIB), (1, GIB)])
def test_the_claim_holds_memory_in_whole_gib(asked: int, claimed: int) -> None:
    request = SliceRequest(gpu_memory_mib=asked, cpu_milli=500)
    out = claimed_request(request)
    assert out.gpu_memory_mib == claimed
    assert out.cpu_milli == 500 and out.gpu_count == 1


def test_placement_sees_the_request_restricted_to_the_users_models_then_rounded() -> None:
    limits = resolve_limits(policy_from_dict(POLICY), "ann", ())
    request = SliceRequest(gpu_memory_mib=1536)
    assert placed_request(request, limits) == SliceRequest(
        gpu_memory_mib=1536, allowed_models=frozenset({A100}))
    assert placed_request(request, limits, claimed_request) == SliceRequest(
        gpu_memory_mib=2 * GIB, allowed_models=frozenset({A100}))
    unlimited = resolve_limits(policy_from_dict(POLICY), "bob", ())
    assert placed_request(request, unlimited) == request


def test_one_node_keeps_its_free_room() -> None:
    state = ClusterState([node("a-0", A100, 2), node("a-1", A100)])
    state.commit(Assignment("a-0", (1,), (30 * GIB,), 1000, GIB))
    one = single_node_state(state, "a-0")
    assert one is not None and list(one.node_index) == ["a-0"]
    assert int(one.gpu_free[0, 1]) == 50 * GIB and int(one.gpu_free[0, 0]) == 80 * GIB
    assert int(one.cpu_free[0]) == 63_000
    assert single_node_state(state, "gone") is None


def test_placing_tries_the_preferred_node_first_then_anywhere() -> None:
    engine = PlacementEngine("aispike")
    state = ClusterState([node("a-0", A100), node("a-1", A100)])
    for preferred in ("a-0", "a-1"):
        d = place_preferring(engine, state, gib(8), "x", preferred)
        assert d.assignment is not None and d.assignment.node == preferred
    state.commit(Assignment("a-1", (0,), (80 * GIB,), 0, 0))
    d = place_preferring(engine, state, gib(8), "x", "a-1")  # full: anywhere else
    assert d.assignment is not None and d.assignment.node == "a-0"
    d = place_preferring(engine, state, gib(8), "x", "not-a-node")
    assert d.assignment is not None and d.assignment.node == "a-0"


# -- the controller ----------------------------------------------------------------------------
def test_a_re_placement_is_stored_audited_and_answered() -> None:
    svc = controller([node("a-0", A100), node("a-1", A100)])
    ticket = svc.admit(User("bob"), "", gib(8), "hub")
    assert ticket.state == "admitted" and ticket.assignment is not None
    other = "a-1" if ticket.assignment["node"] == "a-0" else "a-0"
    answer = svc.place("bob", "", "hub", prefer_node=other)
    assert answer["placed"] and answer["state"] == "admitted"
    assert answer["assignment"]["node"] == other
    assert request_from_dict(answer["request"]) == gib(8)
    assert svc.status("bob", "").assignment == answer["assignment"]
    (entry,) = [e for e in svc.store.audit_log() if e.action == "admission.place"]
    assert entry.target == "bob/" and entry.detail["before"] == ticket.assignment


def test_only_an_admitted_server_is_placed() -> None:
    svc = controller([node("a-0", A100)])
    assert svc.admit(User("bob"), "a", gib(80), "hub").state == "admitted"
    assert svc.admit(User("cid"), "b", gib(80), "hub").state == "queued"
    for user, server, state in (("cid", "b", "queued"), ("nobody", "", "unknown")):
        answer = svc.place(user, server, "hub")
        assert answer["placed"] is False and answer["assignment"] is None
        assert answer["state"] == state and "not admitted" in answer["reasons"][0]
    assert svc.status("cid", "b").assignment is None  # nothing promised to a queued server


def test_a_re_placement_leaves_its_own_claim_and_promise_out() -> None:
    """One GPU, the server's own stale claim still seen: the GPU is still its to take."""
    svc = controller([node("a-0", A100)])
    first = svc.admit(User("bob"), "", gib(80), "hub")
    assert first.state == "admitted"
    inventory = svc.inventory
    assert isinstance(inventory, ClusterInventory)
    inventory.held["bob/"] = [assignment_from_dict(first.assignment or {})]
    answer = svc.place("bob", "", "hub")
    assert answer["placed"], answer["reasons"]


def test_a_re_placement_sees_the_other_servers_claims_and_promises() -> None:
    """Two one-GPU nodes: ann's claim holds one, cid's promise (no claim yet) the other, so
    bob, re-placed, has no room, though the hub's placer, blind to promises, would see one."""
    svc = controller([node("a-0", A100), node("a-1", A100)])
    bob = svc.admit(User("bob"), "", gib(40), "hub")
    ann = svc.admit(User("cid"), "", gib(80), "hub")
    assert bob.state == ann.state == "admitted"
    inventory = svc.inventory
    assert isinstance(inventory, ClusterInventory)
    bob_node = (bob.assignment or {})["node"]
    cid_node = (ann.assignment or {})["node"]
    assert bob_node != cid_node
    # a foreign-looking server takes the rest of bob's node through a claim
    inventory.held["eve/"] = [Assignment(bob_node, (0,), (80 * GIB,), 0, 0)]
    answer = svc.place("bob", "", "hub")
    assert not answer["placed"] and answer["assignment"] is None and answer["reasons"]
    assert svc.status("bob", "").assignment == bob.assignment  # the old promise stays
    del inventory.held["eve/"]
    assert svc.place("bob", "", "hub")["assignment"]["node"] == bob_node


def test_a_re_placement_never_lands_on_a_model_the_users_limits_exclude() -> None:
    """ann may only have A100s: with the A100 taken, she is not placed on the free H100, though
    her request itself allows any model."""
    svc = controller()
    ann = svc.admit(User("ann"), "", gib(8), "hub")
    assert ann.state == "admitted" and (ann.assignment or {})["node"] == "a-0"
    inventory = svc.inventory
    assert isinstance(inventory, ClusterInventory)
    answer = svc.place("ann", "", "hub", prefer_node="h-0")
    assert answer["assignment"]["node"] == "a-0"  # the preferred node is not hers to have
    assert request_from_dict(answer["request"]).allowed_models == frozenset({A100})
    inventory.held["eve/"] = [Assignment("a-0", (0,), (80 * GIB,), 0, 0)]
    answer = svc.place("ann", "", "hub")
    assert not answer["placed"], answer  # never the H100
    # bob has no limits: the H100 is his
    assert svc.admit(User("bob"), "", gib(8), "hub").state == "admitted"
    assert svc.place("bob", "", "hub")["assignment"]["node"] == "h-0"


def test_a_ticket_whose_models_are_no_longer_allowed_is_not_placed_anywhere() -> None:
    """ann asked for A100s; the admin now allows her H100s only.  Narrowed to nothing, the
    request would allow any model: the re-placement refuses instead."""
    svc = controller()
    asked = gib(8, allowed_models=frozenset({A100}))
    assert svc.admit(User("ann"), "", asked, "hub").state == "admitted"
    svc.set_policy({"users": {"ann": {"allowed_models": [H100]}}}, "admin")
    answer = svc.place("ann", "", "hub")
    assert not answer["placed"] and "any more" in answer["reasons"][0]


def test_with_the_devices_rounding_a_non_gib_slice_keeps_its_place() -> None:
    """The service places what the claim will hold: a 1.5 GiB slice is decided as 2 GiB, so
    the hub's placer (which pins 2 GiB) finds the ticket's assignment still fits."""
    rounded = controller(rounding=claimed_request)
    ticket = rounded.admit(User("bob"), "", SliceRequest(gpu_memory_mib=1536), "hub")
    assignment = assignment_from_dict(ticket.assignment or {})
    assert assignment.gpu_memory_mib == (2 * GIB,)
    state = ClusterState(NODES)
    assert still_fits(state, assignment, claimed_request(SliceRequest(gpu_memory_mib=1536)))
    assert ticket.charge["gpu_memory_mib"] == 1536  # the quota charges what was asked
    answer = rounded.place("bob", "", "hub")
    assert answer["assignment"]["gpu_memory_mib"] == [2 * GIB]
    # without rounding (a fixed node list, the local spawner) it is placed as asked
    plain = controller().admit(User("bob"), "", SliceRequest(gpu_memory_mib=1536), "hub")
    assert (plain.assignment or {})["gpu_memory_mib"] == [1536]


# -- an empty allowed-models set is "no model", never "any" (quota.restrict_request) ----------
NONE_POLICY = {"users": {"cid": {"allowed_models": []}, "ann": {"allowed_models": [A100]}}}


@pytest.mark.parametrize(("user", "request_", "placed"), [
    ("cid", gib(8), None),  # allowed no model: no GPU
    ("cid", gib(8, allowed_models=frozenset({A100})), None),
    ("ann", gib(8, allowed_models=frozenset({H100})), None),  # none of hers
    ("ann", gib(8), gib(8, allowed_models=frozenset({A100}))),
    ("ann", gib(8, allowed_models=frozenset({A100, H100})),
     gib(8, allowed_models=frozenset({A100}))),
    ("cid", SliceRequest(gpu_count=0), SliceRequest(gpu_count=0)),  # CPU-only: as asked
    ("bob", gib(8), gib(8)),  # no model limit: as asked
])
def test_no_allowed_model_left_is_nothing_to_place(
        user: str, request_: SliceRequest, placed: SliceRequest | None) -> None:
    limits = resolve_limits(policy_from_dict(NONE_POLICY), user, ())
    assert restrict_request(request_, limits) == placed
    assert placed_request(request_, limits, claimed_request) == placed


def test_a_user_allowed_no_model_is_refused_previewed_unplaced_and_never_re_placed() -> None:
    svc = AdmissionController(Store("sqlite://"), ClusterInventory(list(NODES)),
                              policy_from_dict({"users": {"cid": {}}}))
    assert svc.admit(User("cid"), "", gib(8), "hub").state == "admitted"
    svc.set_policy(NONE_POLICY, "admin")  # the admin takes every model away
    answer = svc.place("cid", "", "hub")
    assert not answer["placed"] and answer["assignment"] is None
    assert answer["reasons"] == ["cid may use no GPU model any more; start the server again"]
    preview = svc.fit(User("cid"), gib(8))
    assert not preview["fits_now"] and preview["verdict"] == "refuse"
    assert preview["placement_reasons"] == [NO_ALLOWED_MODEL]
    assert "you may not use GPUs" in " ".join(preview["reasons"])
    refused = svc.admit(User("cid"), "other", gib(8), "hub")
    assert refused.state == "refused" and "you may not use GPUs" in refused.reasons[0]


# -- one rounding rule: every face that rounds uses claimed_request ----------------------------
@pytest.mark.parametrize(("backend", "rounds"), [("aispike", True), ("hami", False),
                                                 ("gpushare", False), ("mig", False),
                                                 ("nvidia", False)])
def test_every_face_that_rounds_uses_the_one_rule(tmp_path: Path, backend: str,
                                                  rounds: bool) -> None:
    """The hub's placer pins with ``claimed_request``; the in-process admission places with the
    same function when its spawner's backend uses claims, and as asked otherwise (the device
    plugins of the other backends hold what their own resources say: docs/architecture.md)."""
    from aispike_hub.admission.inprocess import InProcessAdmission
    from aispike_hub.backends import backend_for
    from aispike_hub.kube import placer

    assert placer._for_scheduler is claimed_request

    class Spawner(Configurable):
        gpu_backend = backend_for(backend)

    admission = InProcessAdmission(parent=Spawner(), nodes=lambda: NODES,
                                   db_url=f"sqlite:///{tmp_path}/{backend}.sqlite")
    assert admission.controller.rounding is (claimed_request if rounds else None)
