"""The compute share of a slice: the rule (default, bounds) and the environment per backend."""

from __future__ import annotations

import pytest

from aispike_hub.backends import backend_for
from aispike_hub.isolation_env import GpuLimit, IsolationSettings, compute_share_env, isolation_env
from aispike_hub.quota.compute_share import (
    ComputeShareBounds,
    ComputeShareError,
    compute_percent,
    proportional_percent,
)

GIB = 1024


def test_the_default_is_the_memory_share_rounded_up() -> None:
    assert proportional_percent(20 * GIB, 80 * GIB) == 25
    assert proportional_percent(10 * GIB, 81559) == 13  # 12.56 % -> 13
    assert proportional_percent(1, 80 * GIB) == 1
    assert proportional_percent(80 * GIB, 80 * GIB) == 100
    assert compute_percent(0, 80 * GIB, chosen=10) == 100  # whole GPU, whatever was chosen


def test_slices_that_fill_a_gpu_get_at_least_all_of_its_compute() -> None:
    for parts in (3, 7, 9):
        shares = [proportional_percent(81559 // parts, 81559) for _ in range(parts)]
        assert sum(shares) >= 100


def test_a_choice_inside_the_bounds_is_kept_and_outside_is_refused_by_field() -> None:
    bounds = ComputeShareBounds(min_percent=10, max_percent=50)
    assert compute_percent(20 * GIB, 80 * GIB, 40, bounds) == 40
    assert compute_percent(2 * GIB, 80 * GIB, None, bounds) == 10  # default clamped up
    assert compute_percent(60 * GIB, 80 * GIB, None, bounds) == 50  # and down
    with pytest.raises(ComputeShareError, match="compute_percent must be between 10 and 50"):
        compute_percent(20 * GIB, 80 * GIB, 75, bounds)
    with pytest.raises(ComputeShareError, match="compute_percent"):
        compute_percent(20 * GIB, 80 * GIB, 20, ComputeShareBounds(user_choice=False))
    with pytest.raises(ComputeShareError, match="whole number"):
        compute_percent(20 * GIB, 80 * GIB, True, bounds)
    with pytest.raises(ComputeShareError):
        ComputeShareBounds(min_percent=60, max_percent=50)


def test_our_backend_sets_the_mps_thread_percentage() -> None:
    env = backend_for("aispike").compute_share_env(25)
    assert env == {"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "25", "AISPIKE_GPU_COMPUTE_PERCENT": "25"}
    assert backend_for("aispike").compute_share_env(100) == {}
    assert backend_for("aispike").compute_share_limits(25) == {}


def test_hami_gets_gpucores_and_the_others_cannot_bound_compute() -> None:
    assert backend_for("hami").compute_share_limits(25) == {"nvidia.com/gpucores": "25"}
    assert backend_for("hami").compute_share_limits(100) == {}
    assert backend_for("hami").compute_share_env(25) == {}
    for name in ("nvidia", "mig", "gpushare"):
        b = backend_for(name)
        assert b.compute_share_env(25) == {} and b.compute_share_limits(25) == {}


def test_the_isolation_env_carries_the_share_only_when_given() -> None:
    gpu = [GpuLimit(uuid="GPU-a", limit_bytes=20 << 30, total_bytes=80 << 30)]
    plain = isolation_env(gpu, IsolationSettings())
    assert "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE" not in plain
    shared = isolation_env(gpu, IsolationSettings(), compute_percent=25)
    assert shared == {**plain, "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "25",
                      "AISPIKE_GPU_COMPUTE_PERCENT": "25"}
    with pytest.raises(ValueError):
        compute_share_env(0)
