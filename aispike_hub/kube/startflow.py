"""The start of one notebook server, as a pure step function: what to do next, given what is seen.

A GPU server on the DRA (``aispike``) backend goes through

    NEW --pin--> PINNED --create pod--> POD --adopt / re-pin / wait--> RUNNING (done)
                                            \\--give up (timeout, unschedulable)--> GAVE_UP

A server without a claim to pin (CPU-only, or a non-native backend) skips the pin and the
adoption: NEW --create pod--> POD.

:func:`step` holds the rules of that flow once; it does no I/O.  Two thin drivers perform its
actions: :meth:`aispike_hub.kube.placer.Placer.start_server` (threads, synchronous client: the
benchmarks and integration tests) and ``AISpikeSpawner._create_and_wait`` (asyncio, KubeSpawner
creates the pod: what users run).  A driver loops: ``s = step(flow, seen, rules)``, performs
``s.action``, sets ``flow = s.flow``, and on :attr:`Action.WAIT` observes again.

The rules, in the order they are applied while the pod exists:

1. a pod the claim is not yet owned by is **adopted** (once per pod uid), so deleting the pod
   deletes the claim, even when it is already running;
2. a running pod means **done**;
3. a pin judged stale or missing (:class:`ServerStatus`) is **re-pinned**, with its reason;
4. past the driver's deadline: **give up** (timeout);
5. a pod unschedulable for ``Rules.unschedulable_timeout`` seconds: **give up** with the
   scheduler's reason (``None``: never; then the re-pin of rule 3, which the placer judges stale
   after its own ``unschedulable_seconds``, and the deadline are what end it);
6. otherwise **wait** and observe again (while the pod itself is not seen, the unschedulable
   clock neither starts nor stops).

How many re-pins one server gets is counted on its claim (so a restart does not reset it):
:func:`may_repin` is that bound, checked by the placer where it reads the claim.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace


class Phase(enum.Enum):
    """Where a start stands (what the flow has done so far)."""

    NEW = "new"
    """Nothing made yet."""
    PINNED = "pinned"
    """The server's claim is created (pinned to a node and GPUs); no pod yet."""
    POD = "pod"
    """The pod is created; waiting for it to run (adopting, re-pinning on the way)."""
    RUNNING = "running"
    """The pod runs: the start is done."""
    GAVE_UP = "gave-up"
    """The start failed; the driver cleans up."""


class Action(enum.Enum):
    """What the driver does next."""

    PIN = "pin"
    """Decide the placement and create the server's pinned claim (admission's choice first)."""
    CREATE_POD = "create-pod"
    """Create the server's pod (with the claim reference and node affinity of the pin)."""
    ADOPT = "adopt"
    """Make the claim owned by the pod ``Observation.pod_uid``."""
    REPIN = "repin"
    """Replace the stale pin (``Step.reason`` says why) with a fresh decision."""
    WAIT = "wait"
    """Nothing to do: observe again (``Step.reason``: what the pod waits for, if known)."""
    DONE = "done"
    """The pod runs."""
    GIVE_UP = "give-up"
    """Fail the start with ``Step.reason``."""


STALE_PHASES = ("stale", "missing")
"""Claim phases (:attr:`ServerStatus.phase`) that call for a re-pin of a pinned server."""


@dataclass(frozen=True, slots=True)
class ServerStatus:
    """Where a server's claim stands: ``running``, ``allocated``, ``pending``, ``stale``,
    ``missing`` (no claim), with a reason a person can read (the placer judges it)."""

    phase: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Observation:
    """What a driver saw of the server just now (the defaults: nothing seen yet)."""

    pod_uid: str = ""
    """The server's pod ('' while it does not exist or is not seen yet)."""
    running: bool = False
    """The pod runs (for the spawner: KubeSpawner's start returned)."""
    claim: ServerStatus | None = None
    """The placer's judgement of the pin (``None``: not looked at, or nothing to judge)."""
    unschedulable: str = ""
    """The scheduler's reason the pod is not placed ('' when it is not unschedulable)."""
    now: float = 0.0
    """A monotonic clock reading, for the unschedulable rule."""
    timed_out: bool = False
    """The driver's deadline passed (or its process is stopping)."""


@dataclass(frozen=True, slots=True)
class Rules:
    """The drivers' settings for :func:`step`."""

    unschedulable_timeout: float | None = None
    """Give up once the pod stays unschedulable this long (seconds); ``None``: never."""


@dataclass(frozen=True, slots=True)
class Flow:
    """The state of one start: its phase and what it remembers between observations."""

    pins: bool
    """The start pins a claim (a GPU server on the DRA backend).  A driver whose pin step also
    admits CPU-only servers starts with it set and clears it when the pin made no claim."""
    phase: Phase = Phase.NEW
    adopted: str = ""
    """Uid of the pod the claim was made owned by ('' none yet)."""
    unschedulable_since: float | None = None
    """When the pod was first seen unschedulable (cleared when it is not, or after a re-pin)."""

    def repinned(self) -> Flow:
        """The flow once a re-pin made a fresh pin: the unschedulable clock starts again."""
        return replace(self, unschedulable_since=None)


@dataclass(frozen=True, slots=True)
class Step:
    """The next action, why, and the flow once the action is done."""

    action: Action
    flow: Flow
    reason: str = ""


PLACER_RULES = Rules()
"""The placer's own start: no unschedulable give-up (re-pins and the deadline end it)."""


def step(flow: Flow, seen: Observation, rules: Rules = PLACER_RULES) -> Step:
    """The next action of a start in ``flow`` that saw ``seen`` (see the module docstring)."""
    if flow.phase is Phase.NEW:
        if flow.pins:
            return Step(Action.PIN, replace(flow, phase=Phase.PINNED))
        return Step(Action.CREATE_POD, replace(flow, phase=Phase.POD))
    if flow.phase is Phase.PINNED:
        return Step(Action.CREATE_POD, replace(flow, phase=Phase.POD))
    if flow.phase is Phase.RUNNING:
        return Step(Action.DONE, flow)
    if flow.phase is Phase.GAVE_UP:
        return Step(Action.GIVE_UP, flow, "the start already gave up")
    if flow.pins and seen.pod_uid and seen.pod_uid != flow.adopted:
        return Step(Action.ADOPT, replace(flow, adopted=seen.pod_uid))
    if seen.running:
        return Step(Action.DONE, replace(flow, phase=Phase.RUNNING))
    if flow.pins and seen.claim is not None and seen.claim.phase in STALE_PHASES:
        return Step(Action.REPIN, flow, seen.claim.reason)
    if seen.timed_out:
        return Step(Action.GIVE_UP, replace(flow, phase=Phase.GAVE_UP), "timeout")
    if not seen.pod_uid:
        return Step(Action.WAIT, flow)  # the pod is not seen (yet, or for a moment): no verdict
    if not seen.unschedulable:
        return Step(Action.WAIT, replace(flow, unschedulable_since=None))
    since = seen.now if flow.unschedulable_since is None else flow.unschedulable_since
    if rules.unschedulable_timeout is not None and seen.now - since >= rules.unschedulable_timeout:
        return Step(Action.GIVE_UP, replace(flow, phase=Phase.GAVE_UP), seen.unschedulable)
    return Step(Action.WAIT, replace(flow, unschedulable_since=since), seen.unschedulable)


def may_repin(attempt: int, max_repins: int) -> bool:
    """Whether a pin may be made for the ``attempt``-th time (the first pin is attempt 1):
    a server's pin is re-made at most ``max_repins`` times."""
    return attempt <= 1 + max_repins
