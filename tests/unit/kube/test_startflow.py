"""kube.startflow: the start of one server as a table of (flow, observation) -> next action."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from aispike_hub.kube.startflow import (
    Action,
    Flow,
    Observation,
    Phase,
    Rules,
    ServerStatus,
    may_repin,
    step,
)

SPAWNER = Rules(unschedulable_timeout=30.0)
PLACER = Rules()


@dataclass(frozen=True)
class Case:
    id: str
    flow: Flow
    seen: Observation
    action: Action
    reason: str = ""
    then: Flow | None = None
    """The flow after the action (None: not checked)."""
    rules: Rules = SPAWNER


GPU_POD = Flow(pins=True, phase=Phase.POD, adopted="u1")
CPU_POD = Flow(pins=False, phase=Phase.POD)
POD = Observation(pod_uid="u1", now=100.0)

CASES = [
    Case("a GPU server is pinned first", Flow(pins=True), Observation(), Action.PIN,
         then=Flow(pins=True, phase=Phase.PINNED)),
    Case("a CPU-only server goes straight to its pod", Flow(pins=False), Observation(),
         Action.CREATE_POD, then=Flow(pins=False, phase=Phase.POD)),
    Case("a pinned server gets its pod", Flow(pins=True, phase=Phase.PINNED), Observation(),
         Action.CREATE_POD, then=Flow(pins=True, phase=Phase.POD)),
    Case("a new pod is adopted", Flow(pins=True, phase=Phase.POD), POD, Action.ADOPT,
         then=Flow(pins=True, phase=Phase.POD, adopted="u1")),
    Case("a re-created pod is adopted again", GPU_POD, Observation(pod_uid="u2"), Action.ADOPT,
         then=Flow(pins=True, phase=Phase.POD, adopted="u2")),
    Case("a pod already running is adopted before done", Flow(pins=True, phase=Phase.POD),
         Observation(pod_uid="u1", running=True), Action.ADOPT),
    Case("a CPU-only pod has no claim to adopt", CPU_POD, POD, Action.WAIT),
    Case("a running pod is done", GPU_POD, Observation(pod_uid="u1", running=True),
         Action.DONE, then=Flow(pins=True, phase=Phase.RUNNING, adopted="u1")),
    Case("a running pod is done even past the deadline", GPU_POD,
         Observation(pod_uid="u1", running=True, timed_out=True), Action.DONE),
    Case("a start that ran but whose pod is not seen is done", GPU_POD,
         Observation(running=True), Action.DONE),
    Case("done stays done", Flow(pins=True, phase=Phase.RUNNING), Observation(), Action.DONE),
    Case("an allocated claim: wait for the pod", GPU_POD,
         Observation(pod_uid="u1", claim=ServerStatus("allocated")), Action.WAIT),
    Case("a pending claim: wait", GPU_POD,
         Observation(pod_uid="u1", claim=ServerStatus("pending")), Action.WAIT),
    Case("a stale pin is re-pinned with its reason", GPU_POD,
         Observation(pod_uid="u1", claim=ServerStatus("stale", "device gone")),
         Action.REPIN, "device gone", then=GPU_POD),
    Case("a missing claim is re-pinned", GPU_POD,
         Observation(pod_uid="u1", claim=ServerStatus("missing", "claim c does not exist")),
         Action.REPIN, "claim c does not exist"),
    Case("a stale pin is re-pinned even past the deadline", GPU_POD,
         Observation(pod_uid="u1", claim=ServerStatus("stale", "taken"), timed_out=True),
         Action.REPIN, "taken"),
    Case("a CPU-only server has no pin to re-pin", CPU_POD,
         Observation(pod_uid="u1", claim=ServerStatus("missing", "no claim")), Action.WAIT),
    Case("past the deadline: give up", GPU_POD, Observation(pod_uid="u1", timed_out=True),
         Action.GIVE_UP, "timeout", then=Flow(pins=True, phase=Phase.GAVE_UP, adopted="u1")),
    Case("past the deadline with no pod: give up", Flow(pins=False, phase=Phase.POD),
         Observation(timed_out=True), Action.GIVE_UP, "timeout"),
    Case("gave up stays given up", Flow(pins=True, phase=Phase.GAVE_UP), POD, Action.GIVE_UP),
    Case("an unschedulable pod starts the clock", GPU_POD,
         Observation(pod_uid="u1", unschedulable="0/3 nodes", now=100.0), Action.WAIT,
         "0/3 nodes", then=Flow(pins=True, phase=Phase.POD, adopted="u1",
                                unschedulable_since=100.0)),
    Case("unschedulable for less than the timeout: wait",
         Flow(pins=True, phase=Phase.POD, adopted="u1", unschedulable_since=100.0),
         Observation(pod_uid="u1", unschedulable="0/3 nodes", now=129.9), Action.WAIT,
         "0/3 nodes", then=Flow(pins=True, phase=Phase.POD, adopted="u1",
                                unschedulable_since=100.0)),
    Case("unschedulable for exactly the timeout: give up with the scheduler's reason",
         Flow(pins=True, phase=Phase.POD, adopted="u1", unschedulable_since=100.0),
         Observation(pod_uid="u1", unschedulable="0/3 nodes", now=130.0), Action.GIVE_UP,
         "0/3 nodes"),
    Case("a CPU-only pod gives up the same way",
         Flow(pins=False, phase=Phase.POD, unschedulable_since=100.0),
         Observation(pod_uid="u1", unschedulable="Insufficient cpu", now=131.0),
         Action.GIVE_UP, "Insufficient cpu"),
    Case("the placer never gives up on an unschedulable pod",
         Flow(pins=True, phase=Phase.POD, adopted="u1", unschedulable_since=0.0),
         Observation(pod_uid="u1", unschedulable="0/3 nodes", now=1e6), Action.WAIT,
         "0/3 nodes", rules=PLACER),
    Case("a schedulable pod stops the clock",
         Flow(pins=True, phase=Phase.POD, adopted="u1", unschedulable_since=100.0), POD,
         Action.WAIT, then=GPU_POD),
    Case("a pod not seen for a moment keeps the clock",
         Flow(pins=True, phase=Phase.POD, adopted="u1", unschedulable_since=100.0),
         Observation(now=200.0), Action.WAIT,
         then=Flow(pins=True, phase=Phase.POD, adopted="u1", unschedulable_since=100.0)),
    Case("a stale pin is re-pinned before the unschedulable give-up",
         Flow(pins=True, phase=Phase.POD, adopted="u1", unschedulable_since=100.0),
         Observation(pod_uid="u1", claim=ServerStatus("stale", "kube-scheduler: 0/3"),
                     unschedulable="0/3", now=200.0), Action.REPIN, "kube-scheduler: 0/3"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_step(case: Case) -> None:
    s = step(case.flow, case.seen, case.rules)
    assert s.action is case.action
    if case.reason:
        assert s.reason == case.reason
    if case.then is not None:
        assert s.flow == case.then


def test_a_fresh_pin_restarts_the_unschedulable_clock() -> None:
    flow = Flow(pins=True, phase=Phase.POD, adopted="u1", unschedulable_since=100.0)
    assert flow.repinned() == Flow(pins=True, phase=Phase.POD, adopted="u1")


def test_placer_rules_are_the_default() -> None:
    flow = Flow(pins=True, phase=Phase.POD, adopted="u1", unschedulable_since=0.0)
    seen = Observation(pod_uid="u1", unschedulable="x", now=1e9)
    assert step(flow, seen).action is Action.WAIT


@pytest.mark.parametrize(("attempt", "max_repins", "allowed"),
                         [(1, 0, True), (2, 0, False), (4, 3, True), (5, 3, False)])
def test_may_repin(attempt: int, max_repins: int, allowed: bool) -> None:
    assert may_repin(attempt, max_repins) is allowed


def test_a_whole_start_with_one_repin() -> None:
    """Drive the flow as a driver would: pin, pod, adopt, stale, re-pin, new pod, run."""
    flow, log = Flow(pins=True), []
    script = [
        Observation(),                                                       # -> pin
        Observation(),                                                       # -> create pod
        Observation(pod_uid="u1"),                                           # -> adopt
        Observation(pod_uid="u1", claim=ServerStatus("pending")),            # -> wait
        Observation(pod_uid="u1", claim=ServerStatus("stale", "taken")),     # -> re-pin
        Observation(pod_uid="u2"),                                           # -> adopt (moved)
        Observation(pod_uid="u2", running=True),                             # -> done
    ]
    for seen in script:
        s = step(flow, seen)
        log.append(s.action)
        flow = s.flow
    assert log == [Action.PIN, Action.CREATE_POD, Action.ADOPT, Action.WAIT, Action.REPIN,
                   Action.ADOPT, Action.DONE]
    assert flow.phase is Phase.RUNNING and flow.adopted == "u2"
