"""The compute share of a GPU slice: how much of a GPU's SMs a slice may use; pure.

A memory slice shares the GPU's compute with its neighbours.  Each slice therefore carries a
compute share in percent of the GPU: by default in proportion to its memory share (a 20 GiB
slice of an 80 GiB GPU gets 25 %), and the user may choose another value within the policy's
bounds (:class:`ComputeShareBounds`).  Whole GPUs always get 100 %.

How the share is enforced is the backend's business (``GpuBackend.compute_share_env`` and
``compute_share_limits``): ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`` on our driver (enforced only by
an MPS daemon; docs/isolation.md), ``nvidia.com/gpucores`` on HAMi (enforced by HAMi-core).
This module holds the rule only, so the form, the spawner and the agent agree on one number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

FIELD = "compute_percent"
"""The request field a user sets (named in errors)."""


class ComputeShareError(ValueError):
    """A chosen compute share outside the policy's bounds (the message names the field)."""


@dataclass(frozen=True, slots=True)
class ComputeShareBounds:
    """What the policy lets a user choose for a slice's compute share (percent of one GPU).

    ``min_percent``/``max_percent`` bound a user's choice; ``user_choice`` False means the
    default (proportional to memory) is the only value.  A default outside the bounds is clamped
    into them, so an admin can, for example, give every small slice at least 10 %.
    """

    min_percent: int = 1
    max_percent: int = 100
    user_choice: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.min_percent <= self.max_percent <= 100:
            raise ComputeShareError(
                f"compute share bounds need 1 <= min_percent <= max_percent <= 100, got "
                f"{self.min_percent}..{self.max_percent}")


def proportional_percent(slice_mib: int, gpu_mib: int) -> int:
    """The memory share of the slice in whole percent, rounded up (never below 1, at most 100).

    Rounded up so that the shares of slices that fill a GPU sum to at least 100: the GPU's
    compute is never left idle by rounding.
    """
    if gpu_mib <= 0:
        raise ValueError(f"GPU memory must be > 0 MiB, got {gpu_mib}")
    if slice_mib <= 0 or slice_mib >= gpu_mib:
        return 100
    return max(1, min(100, math.ceil(100 * slice_mib / gpu_mib)))


def compute_percent(slice_mib: int, gpu_mib: int, chosen: int | None = None,
                    bounds: ComputeShareBounds | None = None) -> int:
    """The compute share (percent) a slice of ``slice_mib`` on a ``gpu_mib`` GPU gets.

    ``slice_mib`` 0 (or the whole GPU) is a whole GPU: 100, whatever was chosen.  ``chosen``
    ``None`` gives the proportional default clamped into ``bounds``; a chosen value outside the
    bounds (or any choice when the policy allows none) raises :class:`ComputeShareError`.
    """
    b = bounds or ComputeShareBounds()
    if slice_mib <= 0 or slice_mib >= gpu_mib:
        return 100
    if chosen is None:
        return min(b.max_percent, max(b.min_percent, proportional_percent(slice_mib, gpu_mib)))
    if isinstance(chosen, bool) or not isinstance(chosen, int):
        raise ComputeShareError(f"{FIELD} must be a whole number of percent, got {chosen!r}")
    if not b.user_choice:
        raise ComputeShareError(f"{FIELD}: this hub sets the compute share itself "
                                "(in proportion to the memory slice); leave it out")
    if not b.min_percent <= chosen <= b.max_percent:
        raise ComputeShareError(f"{FIELD} must be between {b.min_percent} and "
                                f"{b.max_percent} percent, got {chosen}")
    return chosen
