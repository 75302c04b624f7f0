"""placement.fit: an earlier decision is pinned only while it still serves the request."""

from __future__ import annotations

import pytest

from aispike_hub.model import Assignment, Gpu, Node, SliceRequest
from aispike_hub.placement.engine import PlacementEngine
from aispike_hub.placement.fit import leave_out_gpus, misfit, mismatch, still_fits
from aispike_hub.placement.state import ClusterState

GIB = 1024
GPUS = (
    Gpu(0, "A100", 80 * GIB, uuid="GPU-a0", nvlink_domain="nvl0", numa_node=0),
    Gpu(1, "A100", 80 * GIB, uuid="GPU-a1", nvlink_domain="nvl0", numa_node=0),
)
REQ = SliceRequest(gpu_memory_mib=8 * GIB, cpu_milli=500, memory_mib=GIB)
GOOD = Assignment("n0", (1,), (8 * GIB,), 500, GIB)


def state(cpu_milli: int = 8000, memory_mib: int = 64 * GIB,
          gpus: tuple[Gpu, ...] = GPUS) -> ClusterState:
    return ClusterState([Node("n0", cpu_milli, memory_mib, gpus)])


def test_an_earlier_decision_is_honoured_only_while_it_still_serves_the_request() -> None:
    s = state()
    assert still_fits(s, GOOD, REQ)
    assert s.gpu_free.sum() == 160 * GIB  # checking took nothing
    assert not still_fits(s, Assignment("gone", (1,), (8 * GIB,), 500, GIB), REQ)
    assert not still_fits(s, Assignment("n0", (1,), (9 * GIB,), 500, GIB), REQ)
    assert not still_fits(s, Assignment("n0", (7,), (8 * GIB,), 500, GIB), REQ)
    assert not still_fits(s, GOOD, SliceRequest(gpu_memory_mib=8 * GIB, cpu_milli=500,
                                                memory_mib=GIB, allowed_models={"H100"}))
    s.commit(Assignment("n0", (1,), (75 * GIB,)))
    assert not still_fits(s, GOOD, REQ)  # no longer fits


def test_the_placer_keeps_the_old_name() -> None:
    from aispike_hub.kube.placer import honours

    assert honours is still_fits


def test_exactly_filling_a_gpu_fits_and_one_mib_more_does_not() -> None:
    s = state()
    s.commit(Assignment("n0", (0,), (72 * GIB,)))
    assert still_fits(s, Assignment("n0", (0,), (8 * GIB,), 500, GIB), REQ)  # 72 + 8 = 80
    s.commit(Assignment("n0", (0,), (1,)))  # one MiB more in use
    why = misfit(s, Assignment("n0", (0,), (8 * GIB,), 500, GIB), REQ)
    assert why.startswith("no longer free") and "GPU 0" in why


def test_a_whole_gpu_is_its_full_memory_and_only_on_an_untouched_gpu() -> None:
    whole = SliceRequest(gpu_count=1, cpu_milli=500, memory_mib=GIB)
    s = state()
    assert still_fits(s, Assignment("n0", (0,), (80 * GIB,), 500, GIB), whole)
    assert "MiB requested" in misfit(s, Assignment("n0", (0,), (40 * GIB,), 500, GIB), whole)
    s.commit(Assignment("n0", (0,), (1,)))
    assert not still_fits(s, Assignment("n0", (0,), (80 * GIB,), 500, GIB), whole)


def test_a_gpu_that_is_gone_does_not_fit() -> None:
    s = state(gpus=GPUS[:1])  # GPU 1 vanished since the decision
    assert misfit(s, GOOD, REQ) == "GPU 1 of n0 is gone"
    assert still_fits(s, Assignment("n0", (0,), (8 * GIB,), 500, GIB), REQ)


def test_a_node_that_is_gone_does_not_fit() -> None:
    other = ClusterState([Node("n1", 8000, 64 * GIB, GPUS)])
    assert misfit(other, GOOD, REQ) == "node n0 is not placeable"


@pytest.mark.parametrize(("cpu_free", "fits"), [(500, True), (499, False)])
def test_cpu_exactly_free_fits(cpu_free: int, fits: bool) -> None:
    s = state(cpu_milli=cpu_free)
    assert still_fits(s, GOOD, REQ) is fits


@pytest.mark.parametrize(("memory_free", "fits"), [(GIB, True), (GIB - 1, False)])
def test_ram_exactly_free_fits(memory_free: int, fits: bool) -> None:
    s = state(memory_mib=memory_free)
    assert still_fits(s, GOOD, REQ) is fits


def test_a_decision_for_another_request_does_not_fit() -> None:
    s = state()
    assert "2 requested" in misfit(s, GOOD, SliceRequest(gpu_count=2, cpu_milli=500,
                                                         memory_mib=GIB))
    assert "CPU or RAM" in misfit(s, GOOD, SliceRequest(gpu_memory_mib=8 * GIB, cpu_milli=600,
                                                        memory_mib=GIB))
    cpu_only = SliceRequest(gpu_count=0, cpu_milli=500, memory_mib=GIB)
    assert still_fits(s, Assignment("n0", (), (), 500, GIB), cpu_only)
    assert not still_fits(s, GOOD, cpu_only)


def test_checking_leaves_the_state_as_it_was_when_it_does_not_fit() -> None:
    s = state()
    s.commit(Assignment("n0", (1,), (75 * GIB,), 7800, GIB))
    free = (s.gpu_free.copy(), s.cpu_free.copy(), s.mem_free.copy())
    assert not still_fits(s, GOOD, REQ)
    assert (s.gpu_free == free[0]).all() and (s.cpu_free == free[1]).all()
    assert (s.mem_free == free[2]).all()


def test_a_request_restricted_to_the_gpus_model_keeps_its_decision() -> None:
    """The model check reads the decided GPU's model (an allowed model fits, others do not)."""
    a100_only = SliceRequest(gpu_memory_mib=8 * GIB, cpu_milli=500, memory_mib=GIB,
                             allowed_models={"A100"})
    assert misfit(state(), GOOD, a100_only) == ""


def test_a_slice_on_a_gpu_already_in_use_does_not_worsen_a_node_short_of_idle_gpus() -> None:
    """A node already keeping too few idle GPUs for outside workloads (room < 0) still takes a
    slice on a GPU that is in use anyway: the room does not shrink, exactly as before."""
    s = state()
    s.commit(Assignment("n0", (0,), (8 * GIB,)))
    s.commit(Assignment("n0", (), (), anonymous_gpus=2, owner="device-plugin"))
    assert int(s.anonymous_room()[0]) == -1
    assert misfit(s, Assignment("n0", (0,), (8 * GIB,), 500, GIB), REQ) == ""
    why = misfit(s, GOOD, REQ)  # GPU 1 is idle: taking it makes the shortage worse
    assert why.startswith("no longer free") and "idle" in why


def test_an_assignment_whose_gpus_and_memory_do_not_pair_up_cannot_exist() -> None:
    """Why ``misfit``'s ``zip(..., strict=True)`` never fires: the model refuses it first."""
    with pytest.raises(ValueError):
        Assignment("n0", (0,), (8 * GIB, 8 * GIB), 500, GIB)


def test_a_taken_room_has_the_requests_shape_and_no_room() -> None:
    """``mismatch`` is the shape part of ``misfit``: a taken room is a misfit of right shape
    (the only refutation the hub's placer tells admission)."""
    s = state()
    s.commit(Assignment("n0", (1,), (75 * GIB,)))
    assert misfit(s, GOOD, REQ).startswith("no longer free") and not mismatch(s, GOOD, REQ)
    wrong = Assignment("n0", (1,), (9 * GIB,), 500, GIB)
    assert mismatch(s, wrong, REQ) == misfit(s, wrong, REQ) != ""
    assert mismatch(s, Assignment("gone", (1,), (8 * GIB,), 500, GIB), REQ)
    assert mismatch(s, Assignment("n0", (0,), (8 * GIB,), 400, GIB), REQ)


def test_gpus_left_out_take_no_slice_in_the_next_decision() -> None:
    s = state()
    s.commit(Assignment("n0", (0,), (10 * GIB,)))
    done = leave_out_gpus(s, [("n0", 1), ("n0", 7), ("gone", 0), ("n0", 1)])
    assert done == [("n0", 1), ("n0", 1)]
    assert int(s.gpu_free[0, 1]) == 0 and int(s.gpu_free[0, 0]) == 70 * GIB
    decision = PlacementEngine("aispike").place(s, REQ, owner="x")
    assert decision.assignment is not None and decision.assignment.gpu_indices == (0,)
    leave_out_gpus(s, [("n0", 0)])
    assert not PlacementEngine("aispike").place(s, REQ, owner="x").placed
    assert int(s.cpu_free[0]) == 8000  # only GPU memory is left out
