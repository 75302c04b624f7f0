"""The inventory's ledger on its own: parsed objects in, placement state out (no threads, no API).

Objects are built as the parsers would return them (:mod:`aispike_hub.kube.objects`), so each
test reads as a short story of cluster events and what the placement state counts after each.
"""

from __future__ import annotations

import logging

import pytest

from aispike_hub.kube.claims import PinnedGpu, Placement
from aispike_hub.kube.ledger import Ledger
from aispike_hub.kube.objects import AllocatedDevice, ClaimInfo, NodeInfo, PodInfo, SliceInfo
from aispike_hub.model import Assignment, Gpu
from aispike_hub.placement.state import ClusterState

GIB = 1024
GPUS = (
    Gpu(0, "A100", 80 * GIB, uuid="GPU-a0", nvlink_domain="nvl0", numa_node=0),
    Gpu(1, "A100", 80 * GIB, uuid="GPU-a1", nvlink_domain="nvl0", numa_node=0),
)


def node(name: str = "n0", cpu: int = 8000, *, unschedulable: str = "",
         labels: tuple[tuple[str, str], ...] = (("pool", "a"),),
         images: tuple[tuple[str, int], ...] = ()) -> NodeInfo:
    return NodeInfo(name, cpu, 64 * GIB, labels, images, (), unschedulable)


def gpu_slice(on: str = "n0", gpus: tuple[Gpu, ...] = GPUS, generation: int = 1) -> SliceInfo:
    return SliceInfo(f"{on}-gpu.aispike.io", on, on, generation, gpus,
                     {f"gpu-{g.index}": g.index for g in gpus})


def allocated(name: str, mib: int | None, device: str = "gpu-0", *, uid: str = "",
              hub_server: str = "") -> ClaimInfo:
    """Someone's claim that kube-scheduler allocated on one of our devices on n0."""
    return ClaimInfo("ns", name, uid or f"uid-{name}", "1", "2026-01-01T00:00:00Z",
                     (AllocatedDevice("n0", device, mib),), is_allocated=True,
                     hub_server=hub_server)


def pin(mib: int = 8 * GIB, index: int = 1) -> Placement:
    return Placement("n0", (PinnedGpu(f"GPU-a{index}", index, mib, "nvl0"),), False, 500, GIB)


def pinned(name: str = "s-gpu", placement: Placement | None = None, *, uid: str = "u-s",
           created: str = "2026-01-01T00:00:01Z", hub_server: str = "") -> ClaimInfo:
    """Our own pinned claim, not allocated yet."""
    return ClaimInfo("ns", name, uid, "1", created, ours=True, server="s",
                     placement=placement or pin(), hub_server=hub_server)


def pod(name: str = "s", cpu: int = 500, claims: tuple[str, ...] = ("s-gpu",),
        hub_server: str = "") -> PodInfo:
    return PodInfo("ns", name, f"uid-{name}", "n0", cpu, GIB, "Running", claims,
                   hub_server=hub_server)


def book(*nodes: NodeInfo, **kwargs: object) -> Ledger:
    ledger = Ledger(**kwargs)  # type: ignore[arg-type]
    for info in nodes or (node(),):
        ledger.put_node(info)
    ledger.put_slice(gpu_slice())
    return ledger


def current(ledger: Ledger) -> ClusterState:
    state = ledger.state()
    assert state is not None
    return state


def gpu_free(ledger: Ledger, index: int, on: str = "n0") -> int:
    state = current(ledger)
    n = state.node_index[on]
    return int(state.gpu_free[n, state.slot_of(n, index)])


def test_the_state_holds_schedulable_selected_nodes_with_their_published_gpus() -> None:
    ledger = book(node(), node("cordoned", unschedulable="cordoned"),
                  node("other-pool", labels=(("pool", "b"),)), node_selector={"pool": "a"})
    state = current(ledger)
    assert [n.name for n in state.nodes] == ["n0"]
    assert state.total_gpus() == 2 and state.nodes[0].gpus == GPUS
    assert ledger.devices().by_uuid["GPU-a1"] == ("n0", 1, 80 * GIB)
    ledger.put_slice(gpu_slice(generation=0))  # an older generation of the pool's slice
    assert current(ledger).total_gpus() == 2


def test_node_facts_change_in_place_and_placement_changes_rebuild() -> None:
    ledger = book(node(), node("down", unschedulable="not Ready"))
    ledger.put_claim(allocated("c", 70 * GIB))
    state = current(ledger)
    assert gpu_free(ledger, 0) == 10 * GIB
    ledger.put_node(node(images=(("quay.io/x:1", 1000),)))
    ledger.put_node(node(cpu=6000, images=(("quay.io/x:1", 1000),)))
    ledger.put_node(node("down", cpu=4000, unschedulable="not Ready"))
    assert ledger.state() is state  # facts changed in place: nothing rebuilt
    assert state.nodes[0].images == {"quay.io/x:1": 1000} and int(state.cpu_free[0]) == 6000
    assert gpu_free(ledger, 0) == 10 * GIB  # the allocation is still counted
    ledger.put_node(node("down"))  # Ready now: a node to place on
    rebuilt = current(ledger)
    assert rebuilt is not state and "down" in rebuilt.node_index
    assert gpu_free(ledger, 0) == 10 * GIB  # ... and the rebuild counted it again
    ledger.remove_slice(gpu_slice().name)
    assert current(ledger).total_gpus() == 0 and current(ledger) is not rebuilt
    ledger.remove_node("down")
    assert "down" not in current(ledger).node_index


def test_a_hold_counts_until_its_claim_replaces_it_and_the_allocation_makes_it_a_fact() -> None:
    changed: list[str] = []
    ledger = book(on_change=changed.append)
    current(ledger)  # the placer decides on the state, then holds its pin
    held = pin().assignment("ns/s-gpu")
    ledger.hold("ns/s-gpu", held)
    assert ledger.usage_of("ns/s-gpu") == (held,)
    assert gpu_free(ledger, 1) == 72 * GIB and int(current(ledger).cpu_free[0]) == 7500
    ledger.put_claim(pinned())  # the claim exists: it replaces the hold, same room
    assert ledger.usage_of("ns/s-gpu") == (held,) and changed == ["ns/s-gpu"]
    assert gpu_free(ledger, 1) == 72 * GIB and ledger.stale_reason("ns/s-gpu") == ""
    ledger.put_pod(pod())  # bound pod uses the claim: the CPU/RAM moves to the pod
    (claim_part,) = ledger.usage_of("ns/s-gpu")
    assert claim_part.cpu_milli == 0 and int(current(ledger).cpu_free[0]) == 7500
    allocation = AllocatedDevice("n0", "gpu-1", 8 * GIB)
    ledger.put_claim(ClaimInfo("ns", "s-gpu", "u-s", "2", "2026-01-01T00:00:01Z", (allocation,),
                               is_allocated=True, ours=True, server="s", placement=pin()))
    assert gpu_free(ledger, 1) == 72 * GIB and int(current(ledger).cpu_free[0]) == 7500
    ledger.remove_pod("ns/s")
    assert int(current(ledger).cpu_free[0]) == 7500  # the claim counts its pinned CPU again
    assert ledger.usage_of("ns/s-gpu")[0].cpu_milli == 500


def test_drop_forgets_the_claim_and_ignores_its_late_echoes() -> None:
    ledger = book()
    ledger.put_claim(pinned())
    assert gpu_free(ledger, 1) == 72 * GIB
    ledger.drop("ns/s-gpu", "u-s")
    assert "ns/s-gpu" not in ledger.claims and gpu_free(ledger, 1) == 80 * GIB
    ledger.put_claim(pinned())  # the watch still delivers events of the deleted claim
    assert "ns/s-gpu" not in ledger.claims and gpu_free(ledger, 1) == 80 * GIB
    ledger.put_claim(pinned(uid="u-successor"))  # its re-pinned successor counts
    assert gpu_free(ledger, 1) == 72 * GIB
    ledger.hold("ns/t-gpu", pin(4 * GIB, 0).assignment("ns/t-gpu"))
    ledger.drop_hold("ns/t-gpu")  # the creation failed: only the hold goes
    assert gpu_free(ledger, 0) == 80 * GIB and gpu_free(ledger, 1) == 72 * GIB
    ledger.remove_claim("ns/s-gpu", "u-other")  # another incarnation's deletion: not this one
    assert "ns/s-gpu" in ledger.claims
    ledger.remove_claim("ns/s-gpu", "u-successor")
    assert gpu_free(ledger, 1) == 80 * GIB


def test_a_fact_evicts_our_pins_in_its_way_newest_first() -> None:
    changed: list[str] = []
    ledger = book(on_change=changed.append)
    ledger.put_claim(pinned("old-gpu", pin(30 * GIB, 0), uid="u-old",
                            created="2026-01-01T00:00:00Z"))
    ledger.put_claim(pinned("new-gpu", pin(30 * GIB, 0), uid="u-new",
                            created="2026-01-02T00:00:00Z"))
    assert gpu_free(ledger, 0) == 20 * GIB
    changed.clear()
    ledger.put_claim(allocated("theirs", 40 * GIB))  # needs the room of one pin
    assert gpu_free(ledger, 0) == 10 * GIB
    assert ledger.usage_of("ns/new-gpu") == () and ledger.usage_of("ns/old-gpu") != ()
    assert "room on n0 was taken by an allocation" in ledger.stale_reason("ns/new-gpu")
    assert ledger.stale_reason("ns/old-gpu") == ""
    assert "ns/new-gpu" in changed and "ns/theirs" in changed


def test_a_fact_that_does_not_fit_is_clamped_to_what_fits_and_warned_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ledger = book()
    ledger.put_claim(allocated("a", 70 * GIB))
    current(ledger)  # counted as they come, not in a rebuild
    with caplog.at_level(logging.WARNING):
        ledger.put_claim(allocated("b", 20 * GIB))
        ledger.put_pod(pod("hog", cpu=12000, claims=()))
    assert ledger.usage_of("ns/b") == (Assignment("n0", (0,), (10 * GIB,), 0, 0, "ns/b"),)
    assert gpu_free(ledger, 0) == 0 and int(current(ledger).cpu_free[0]) == 0
    assert caplog.text.count("exceed our view") == 2  # once for the claim, once for the pod
    ledger.remove_claim("ns/a")
    ledger.invalidate()  # a rebuild counts what fits now: b whole
    current(ledger)
    assert ledger.usage_of("ns/b")[0].gpu_memory_mib == (20 * GIB,)


def test_a_rebuild_counts_facts_before_pins() -> None:
    ledger = book()
    ledger.put_claim(pinned("mine-gpu", pin(60 * GIB, 0)))
    ledger.put_claim(allocated("theirs", 60 * GIB))
    ledger.invalidate()
    ledger.state()
    assert gpu_free(ledger, 0) == 20 * GIB
    assert ledger.usage_of("ns/theirs")[0].gpu_memory_mib == (60 * GIB,)
    assert ledger.usage_of("ns/mine-gpu") == () and ledger.stale_reason("ns/mine-gpu")


def test_a_pin_on_a_vanished_device_or_an_unplaceable_node_is_stale() -> None:
    ledger = book()
    ledger.put_claim(pinned())
    ledger.put_slice(gpu_slice(gpus=GPUS[:1], generation=2))
    assert "no longer published" in ledger.stale_reason("ns/s-gpu")
    assert gpu_free(ledger, 0) == 80 * GIB
    ledger.put_slice(gpu_slice(generation=3))
    ledger.put_node(node(unschedulable="cordoned"))
    ledger.put_node(node("n1"))
    assert "not available for placement" in ledger.stale_reason("ns/s-gpu")


def test_usage_is_split_per_hub_server_and_everything_else() -> None:
    ledger = book()
    ledger.put_claim(pinned(hub_server="alice/train"))
    ledger.put_pod(pod(hub_server="alice/train"))
    ledger.put_claim(allocated("theirs", 10 * GIB, hub_server=""))
    ours, other = ledger.usage_by_server()
    assert set(ours) == {"alice/train"} and len(ours["alice/train"]) == 2
    assert [a.owner for a in other] == ["ns/theirs"]
