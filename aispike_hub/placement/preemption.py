"""Preemption candidates: which running servers would have to stop for a request to fit.

kube-scheduler cannot preempt pods that hold DRA devices (Kubernetes 1.36), so GPU preemption is
ours: the quota engine asks this module for victims, the service warns and stops them through the
hub, then places the request.  This is the pure decision; nothing here stops anything.

Rules (the order a person would expect):

- only servers that the caller's ``may_preempt`` allows are candidates.  This module has no rule
  of its own about who may be preempted: that is the quota core's
  (:func:`aispike_hub.quota.preemptible_by`), and the caller passes it in, usually as
  :func:`aispike_hub.quota.victim_filter`;
- on each node, candidates are taken in the order *borrowed first, lower tier first, least work
  lost first*, until the request fits there (the fit test is the core's own
  :func:`~aispike_hub.placement.filter.find_options`, on a one-node copy of the state); then
  victims that turned out unnecessary are put back, so no server stops for nothing;
- nodes are ranked by the cost of their victim set: highest tier hit, then servers not on
  borrowed capacity, then total work lost, then number of victims.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aispike_hub.model import Assignment, SliceRequest
from aispike_hub.placement.filter import find_options
from aispike_hub.placement.state import ClusterState


@dataclass(frozen=True, slots=True)
class RunningServer:
    """A running server that might be stopped: where it is, its tier, what stopping it costs."""

    key: str
    """Who it is (e.g. ``user/server``); returned in :attr:`PreemptionOption.victims`."""
    assignment: Assignment
    tier: int
    """Priority tier: higher is more important."""
    work_lost: float = 0.0
    """Cost of stopping it (e.g. seconds of uninterrupted activity); lower is cheaper."""
    borrowed: bool = False
    """Runs on borrowed capacity (beyond its group's nominal quota): the first to go."""


@dataclass(frozen=True, slots=True)
class PreemptionOption:
    """One way to make room: stop ``victims`` on ``node``."""

    node: str
    victims: tuple[str, ...]
    highest_tier: int
    not_borrowed: int
    work_lost: float

    @property
    def cost(self) -> tuple[int, int, float, int]:
        return (self.highest_tier, self.not_borrowed, self.work_lost, len(self.victims))


MayPreempt = Callable[[RunningServer, int], bool]
"""Whether a running server may be stopped for a request of the given tier (the caller's rule)."""


def preemption_candidates(
    state: ClusterState,
    request: SliceRequest,
    running: Sequence[RunningServer],
    tier: int,
    *,
    may_preempt: MayPreempt,
    limit: int = 5,
) -> list[PreemptionOption]:
    """Up to ``limit`` ways to make ``request`` fit by stopping servers, cheapest first.

    ``state`` is the current cluster (everything running committed); ``running`` lists the
    servers that could be stopped (their assignments must be part of ``state``);
    ``may_preempt`` says which of them the request may stop (required: eligibility is the quota
    core's rule, see :func:`aispike_hub.quota.victim_filter`).  An empty list
    means no allowed set of victims makes room (or the request already fits: check first).
    """
    order = sorted(
        (s for s in running if may_preempt(s, tier)),
        key=lambda s: (not s.borrowed, s.tier, s.work_lost, s.key),
    )
    by_node: dict[str, list[RunningServer]] = {}
    for s in order:
        if s.assignment.node in state.node_index:
            by_node.setdefault(s.assignment.node, []).append(s)
    options: list[PreemptionOption] = []
    for node, candidates in by_node.items():
        victims = _victims_on_node(state, node, request, candidates)
        if victims is None:
            continue
        options.append(
            PreemptionOption(
                node=node,
                victims=tuple(v.key for v in victims),
                highest_tier=max(v.tier for v in victims),
                not_borrowed=sum(1 for v in victims if not v.borrowed),
                work_lost=sum(v.work_lost for v in victims),
            )
        )
    options.sort(key=lambda o: (o.cost, o.node))
    return options[:limit]


def _one_node(state: ClusterState, node: str) -> ClusterState:
    n = state.node_index[node]
    one = ClusterState([state.nodes[n]])
    slots = [s for s in range(state.width) if bool(state.gpu_exists[n, s])]
    one.commit(
        Assignment(
            node,
            tuple(int(state.gpu_index[n, s]) for s in slots),
            tuple(int(state.gpu_cap[n, s] - state.gpu_free[n, s]) for s in slots),
            int(state.cpu_cap[n] - state.cpu_free[n]),
            int(state.mem_cap[n] - state.mem_free[n]),
            anonymous_gpus=int(state.anon_gpus[n]),
        )
    )
    return one


def _victims_on_node(
    state: ClusterState, node: str, request: SliceRequest, candidates: list[RunningServer]
) -> list[RunningServer] | None:
    local = _one_node(state, node)
    taken: list[RunningServer] = []
    for server in candidates:
        local.release(server.assignment)
        taken.append(server)
        if len(find_options(local, request)):
            break
    else:
        return None
    # Put back every victim the request does not need, most expensive first.
    for server in sorted(taken, key=lambda s: (s.borrowed, -s.tier, -s.work_lost),):
        local.commit(server.assignment)
        if len(find_options(local, request)):
            taken.remove(server)
        else:
            local.release(server.assignment)
    return taken
