"""The GPU map's figures add up: what the admin panel prints as "capacity = busy + idle + no
verdict + other + free + fragmented" is exact for every view, whatever the holdings."""

from __future__ import annotations

import random

import pytest

from aispike_hub.model import GIB_IN_MIB, Assignment, Gpu, Node
from aispike_hub.placement.fragmentation import default_notebook_workload
from aispike_hub.service.gpumap import HELD_STATES, ClusterMap, Live, MapFilter, holdings_of

GIB = GIB_IN_MIB
PARTS = (*HELD_STATES, "free", "fragmented")


def _node(name: str, gpus: int, gib: int, pool: str) -> Node:
    return Node(name, 32_000, 256 * GIB, tuple(Gpu(i, f"X{gib}", gib * GIB) for i in range(gpus)),
                labels={"aispike.io/pool": pool})


def _random_map(seed: int) -> ClusterMap:
    rng = random.Random(seed)
    nodes = [_node(f"n-{i}", rng.choice([1, 2, 4, 8]), rng.choice([16, 40, 80]),
                   rng.choice(["a", "b"])) for i in range(rng.randint(1, 12))]
    holdings = []
    live = {}
    for k in range(rng.randint(0, 40)):
        n = rng.choice(nodes)
        gpu = rng.choice(n.gpus)
        # Some overfill a GPU or name a GPU that is not there: reported, not drawn.
        index = gpu.index if rng.random() > 0.05 else 99
        mib = rng.choice([1, 2, 4, 8, 20, 40]) * GIB + rng.choice([0, 512])
        user = "" if rng.random() < 0.15 else f"u{k}"
        holdings += holdings_of(Assignment(n.name, (index,), (mib,)), user, "", ["g"])
        if user and rng.random() < 0.7:
            live[(user, "")] = Live(rng.choice(["busy", "active", "idle", "abandoned", "?"]))
    return ClusterMap(nodes, holdings, live, default_notebook_workload(), ("aispike.io/pool",))


def _adds_up(t: dict[str, int]) -> None:
    assert sum(t[p] for p in PARTS) == t["total_mib"], t
    assert all(t[p] >= 0 for p in PARTS), t


@pytest.mark.parametrize("seed", range(40))
def test_every_view_adds_up_to_its_capacity(seed: int) -> None:
    m = _random_map(seed)
    pools = m.view(MapFilter(), level="pools")
    _adds_up(pools["totals"])
    for p in pools["pools"]:
        _adds_up(p)
    assert sum(p["total_mib"] for p in pools["pools"]) == pools["totals"]["total_mib"]
    nodes = m.view(MapFilter(), level="nodes", limit=1000)
    _adds_up(nodes["totals"])
    for n in nodes["nodes"]:
        for g in n["gpus"]:
            # Each GPU's bar: its slices and its free (or fragmented) rest fill it exactly.
            assert sum(s["mib"] for s in g["segments"]) + g["free_mib"] == g["memory_mib"], g


def test_a_server_without_a_verdict_counts_as_no_verdict_not_as_free() -> None:
    """The demo's first minutes: a fresh server, no idle verdict yet."""
    nodes = [_node("box", 2, 80, "simulated")]
    m = ClusterMap(nodes, holdings_of(Assignment("box", (0,), (4 * GIB,)), "alice", ""), {},
                   default_notebook_workload(), ("aispike.io/pool",))
    t = m.view(MapFilter())["totals"]
    assert (t["busy"], t["idle"], t["unknown"], t["free"], t["fragmented"]) == (
        0, 0, 4 * GIB, 156 * GIB, 0)
    assert t["total_mib"] == 160 * GIB
