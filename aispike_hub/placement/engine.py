"""The placement engine: filter, score, choose.  It only orchestrates; rules live in the plugins.

A :class:`Policy` is a weighted sum of scorers, then tie-breakers applied in order, then a seeded
random choice among what is still tied (as kube-scheduler picks among equal nodes).  Policies are
selected by name (:data:`POLICY_NAMES`); every policy can add the affinity scorers (topology,
locality) with a weight.  The same engine serves the Kubernetes placement, the spawner's fit
preview, the admin panel's "what fits now" and the simulator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from aispike_hub.model import Assignment, SliceRequest
from aispike_hub.placement.filter import Options, choose_whole_gpus, find_options, why_nothing_fits
from aispike_hub.placement.fragmentation import Workload, default_notebook_workload
from aispike_hub.placement.scorers import (
    BestFitScorer,
    CpuBalanceScorer,
    DotProductScorer,
    FragmentationScorer,
    GpuFitScorer,
    GpuPackingScorer,
    LocalityScorer,
    RandomScorer,
    ScarceHostScorer,
    Scorer,
    ScoringContext,
    SliceValueScorer,
    SpreadScorer,
    TopologyScorer,
)
from aispike_hub.placement.state import ClusterState, FloatArray, IntArray

TIE_TOLERANCE = 1e-9
SLICE_VALUE_WEIGHT = 20.0
"""Weight of the slice-value loss in ``aispike`` (a share of a GPU, like the other terms), high
enough to decide which GPU a slice joins over the one-task-ahead fragmentation terms."""
SCARCE_HOST_WEIGHT = 100.0
"""Weight of the scarce-host term in ``aispike``: above every other term, so the few nodes a
rare big server type needs take other work only when nothing else can."""
CPU_BALANCE_WEIGHT = 20.0
"""Weight of the CPU balance term in ``aispike``.  Once slice values steer slices to their best
partners, the node those partners sit on must not be drained of the CPU its idle GPUs need;
measured in docs/placement.md (with slice values at 20, weight 1 left 3.97 % unallocated on
`default`, 20 left 3.77 %)."""


@dataclass(frozen=True, slots=True)
class Policy:
    """Weighted scorers, then tie-breakers, then (optionally) a seeded random pick."""

    name: str
    terms: tuple[tuple[Scorer, float], ...]
    tiebreak: tuple[Scorer, ...] = ()
    random_ties: bool = True
    score_twins_once: bool = False
    """Score one of each group of interchangeable options (same node signature and GPU free
    memory).  Only for policies whose scorers ignore node identity and which break ties
    deterministically, so that the decision is exactly the one without it."""


@dataclass(frozen=True, slots=True)
class Decision:
    """The engine's answer: an assignment, or the reasons nothing fits."""

    assignment: Assignment | None
    reasons: tuple[str, ...] = ()
    candidates: int = 0
    """How many options passed the filter (the "fits now on N GPUs" of the options form)."""

    @property
    def placed(self) -> bool:
        return self.assignment is not None


@dataclass(frozen=True, slots=True)
class Affinity:
    """Weights of the affinity scorers added to any policy (0 disables one)."""

    topology: float = 0.0
    locality: float = 0.0


def _build_policy(name: str, workload: Workload | None, affinity: Affinity) -> Policy:
    gpu_bestfit = GpuFitScorer(best=True)

    def need_workload() -> Workload:
        return workload if workload is not None else default_notebook_workload()

    builders: dict[str, Callable[[], Policy]] = {
        # A random node, then the emptiest GPU on it (measured closest to the published Random).
        "random": lambda: Policy(name, ((RandomScorer(), 1.0),), (GpuFitScorer(best=False),)),
        "spread": lambda: Policy(name, ((SpreadScorer(), 1.0),), (GpuFitScorer(best=False),)),
        "bestfit": lambda: Policy(name, ((BestFitScorer(faithful=True), 1.0),), (gpu_bestfit,)),
        "dotprod": lambda: Policy(name, ((DotProductScorer(faithful=True), 1.0),)),
        "packing": lambda: Policy(name, ((GpuPackingScorer(), 1.0),), (gpu_bestfit,)),
        "fgd": lambda: Policy(
            name, ((FragmentationScorer(need_workload(), faithful=True), 1.0),)
        ),
        "aispike": lambda: Policy(
            name,
            (
                (FragmentationScorer(need_workload(), measure="capacity"), 2.0),
                (FragmentationScorer(need_workload()), 1.0),
                (CpuBalanceScorer(need_workload()), CPU_BALANCE_WEIGHT),
                (SliceValueScorer(need_workload()), SLICE_VALUE_WEIGHT),
                (ScarceHostScorer(need_workload()), SCARCE_HOST_WEIGHT),
            ),
            (GpuPackingScorer(), BestFitScorer(), gpu_bestfit),
            random_ties=False,
            score_twins_once=True,
        ),
    }
    if name not in builders:
        raise ValueError(f"unknown placement policy {name!r}; choose one of {POLICY_NAMES}")
    policy = builders[name]()
    extra: list[tuple[Scorer, float]] = []
    if affinity.topology:
        extra.append((TopologyScorer(), affinity.topology))
    if affinity.locality:
        extra.append((LocalityScorer(), affinity.locality))
    if extra:
        # affinity looks at node identity (topology groups, cached data): score every option
        policy = Policy(policy.name, policy.terms + tuple(extra), policy.tiebreak,
                        policy.random_ties, score_twins_once=False)
    return policy


POLICY_NAMES = ("random", "spread", "bestfit", "dotprod", "packing", "fgd", "aispike")
DEFAULT_POLICY = "aispike"


@dataclass(slots=True)
class PlacementEngine:
    """Places requests on a :class:`ClusterState` with one policy; deterministic for a seed."""

    policy_name: str = DEFAULT_POLICY
    workload: Workload | None = None
    seed: int = 0
    affinity: Affinity = field(default_factory=Affinity)
    policy: Policy = field(init=False)
    rng: np.random.Generator = field(init=False)

    def __post_init__(self) -> None:
        self.policy = _build_policy(self.policy_name, self.workload, self.affinity)
        self.rng = np.random.default_rng(self.seed)

    def prepare(self, state: ClusterState) -> None:
        """Build what the scorers derive once per cluster and workload (the slice-value LP) now,
        so that the first decision does not pay for it (0.1-0.4 s, scipy's import included)."""
        for scorer, _ in self.policy.terms:
            prepare = getattr(scorer, "prepare", None)
            if prepare is not None:
                prepare(state)

    def place(self, state: ClusterState, request: SliceRequest, owner: str = "",
              explain: bool = True) -> Decision:
        """Choose where ``request`` goes; the state is not changed (call ``state.commit``).

        ``explain=False`` skips the reasons when nothing fits (the simulator never shows them).
        """
        options = find_options(state, request)
        if len(options) == 0:
            reasons = tuple(why_nothing_fits(state, request)) if explain else ()
            return Decision(None, reasons, 0)
        if self.policy.score_twins_once:
            reps = _first_of_twins(state, options)
            pick = int(reps[self._choose(ScoringContext(state, request,
                                                        _subset(options, reps), self.rng))])
        else:
            pick = self._choose(ScoringContext(state, request, options, self.rng))
        return Decision(self._assignment(state, request, options, pick, owner), (), len(options))

    def _choose(self, ctx: ScoringContext) -> int:
        total: FloatArray = np.zeros(len(ctx.options))
        for scorer, weight in self.policy.terms:
            total += weight * scorer.score(ctx)
        alive: IntArray = _best(total, np.arange(total.size))
        for scorer in self.policy.tiebreak:
            if alive.size == 1:
                break
            sub = ScoringContext(ctx.state, ctx.request, _subset(ctx.options, alive), ctx.rng,
                                 ctx.cache)
            alive = alive[_best(scorer.score(sub), np.arange(alive.size))]
        if alive.size > 1 and self.policy.random_ties:
            return int(alive[self.rng.integers(alive.size)])
        return int(alive[0])

    @staticmethod
    def _assignment(state: ClusterState, request: SliceRequest, options: Options, i: int,
                    owner: str) -> Assignment:
        node = int(options.node[i])
        if options.slice:
            slots = [int(options.slot[i])]
        elif request.gpu_count:
            slots = choose_whole_gpus(state, node, request)
        else:
            slots = []
        indices = tuple(int(state.gpu_index[node, s]) for s in slots)
        memory = tuple(
            int(options.demand[i]) if options.slice else int(state.gpu_cap[node, s])
            for s in slots
        )
        return Assignment(
            node=state.nodes[node].name, gpu_indices=indices, gpu_memory_mib=memory,
            cpu_milli=request.cpu_milli, memory_mib=request.memory_mib, owner=owner,
        )


def _first_of_twins(state: ClusterState, options: Options) -> IntArray:
    """Indices of the first option of each group of interchangeable options, in order."""
    sig = state.node_signature()[options.node]
    if options.slice:
        # mix the slot's free memory into the node's signature (odd multiplier: a bijection)
        sig = sig ^ (state.gpu_free[options.node, options.slot] * 0x5851F42D4C957F2D)
    _, first = np.unique(sig, return_index=True)
    out: IntArray = np.sort(first)
    return out


def _best(values: FloatArray, index: IntArray) -> IntArray:
    top = float(values.max())
    out: IntArray = index[values >= top - TIE_TOLERANCE * max(1.0, abs(top))]
    return out


def _subset(options: Options, keep: IntArray) -> Options:
    return Options(options.node[keep], options.slot[keep], options.demand[keep],
                   options.gpu_count, options.slice)
