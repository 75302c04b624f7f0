"""Every sentence the quota core says to a person, and the helpers that format amounts.

Reasons are the product: a refused or queued user reads them to decide what to do, so they say
what was asked, what the limit is, where the limit comes from and what would help.  Keeping all
of them here (and only the decisions in :mod:`.admit` and :mod:`.preemption`) lets the wording be
reviewed in one place; the tests pin them byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from aispike_hub.model import GIB_IN_MIB


class _Named(Protocol):
    @property
    def name(self) -> str: ...


def _fmt(resource: str, amount: int) -> str:
    """An amount as a person reads it: 12 GiB, 2 CPUs, 3 servers."""
    if resource in ("gpu_memory_mib", "memory_mib"):
        unit = "" if resource == "gpu_memory_mib" else " RAM"
        if amount % GIB_IN_MIB == 0:
            return f"{amount // GIB_IN_MIB} GiB{unit}"
        if amount >= GIB_IN_MIB:
            return f"{amount / GIB_IN_MIB:.1f} GiB{unit}"
        return f"{amount} MiB{unit}"
    if resource == "cpu_milli":
        if amount % 1000 == 0:
            n = amount // 1000
            return f"{n} CPU" + ("" if n == 1 else "s")
        return f"{amount / 1000:g} CPUs"
    if resource == "gpus":
        return f"{amount} GPU" + ("" if amount == 1 else "s")
    return f"{amount} server" + ("" if amount == 1 else "s")


def _of(resource: str, used: int, limit: int) -> str:
    """'12 of 16 GiB GPU memory', '2 of 2 servers', '512 MiB of 16 GiB RAM'.

    The unit is said once, after the limit; the amount used repeats it only where it differs
    (MiB of GiB), and never with "RAM" (or "GPU memory") twice.
    """
    whole = _fmt(resource, limit) + (" GPU memory" if resource == "gpu_memory_mib" else "")
    number, _, unit = _fmt(resource, used).partition(" ")
    if resource in ("gpu_memory_mib", "memory_mib"):
        size = unit.split(" ")[0]
        if used and size != _fmt(resource, limit).split(" ")[1]:
            return f"{number} {size} of {whole}"
    return f"{number} of {whole}"


def _server_names(servers: Sequence[_Named]) -> str:
    """The servers named as a person lists them: named ones in the order given, then the
    default (unnamed) server last, where "and your default server" reads naturally."""
    ordered = sorted(servers, key=lambda s: not s.name)
    names = [f"'{s.name}'" if s.name else "your default server" for s in ordered]
    if len(names) == 1:
        return names[0] if not ordered[0].name else f"server {names[0]}"
    quoted = ", ".join(names[:-1]) + f" and {names[-1]}"
    return f"servers {quoted}"


# --- refusals: the request can never be admitted as asked -----------------------------------------


def no_gpus_allowed(source: str) -> str:
    return (f"you may not use GPUs ({source}); "
            "start a server without a GPU or ask an admin")


def models_not_allowed(allowed: Iterable[str], source: str, wanted: Iterable[str]) -> str:
    return (f"you may use GPU models {', '.join(sorted(allowed))} "
            f"({source}), not {', '.join(sorted(wanted))}")


def image_not_allowed(image: str, allowed: Iterable[str], source: str) -> str:
    return (f"image {image or '(none)'!r} is not one you may use; allowed: "
            f"{', '.join(sorted(allowed))} ({source})")


def slice_too_large(slice_mib: int, max_slice_mib: int, source: str) -> str:
    return (f"{_fmt('gpu_memory_mib', slice_mib)} per GPU is more than your largest slice of "
            f"{_fmt('gpu_memory_mib', max_slice_mib)} ({source});"
            " ask for less or ask an admin")


def over_user_ceiling(resource: str, amount: int, ceiling: int, source: str) -> str:
    what = "a server" if resource == "servers" else _fmt(resource, amount)
    return (f"{what} is more than your quota of {_fmt(resource, ceiling)}"
            f"{' GPU memory' if resource == 'gpu_memory_mib' else ''}"
            f" ({source}); ask for less or ask an admin")


def over_group_ceiling(resource: str, amount: int, group: str, ceiling: int) -> str:
    return (f"{_fmt(resource, amount)} is more than group '{group}' may ever use "
            f"({_fmt(resource, ceiling)}); ask for less or ask an admin")


# --- the user's own quota is in use (only the user can free it) ---------------------------------


def user_quota_used(resource: str, used: int, ceiling: int, holders: Sequence[_Named],
                    amount: int, quota: int, borrowing: int) -> str:
    where = f" in {_server_names(holders)}" if holders else ""
    more = "another server" if resource == "servers" else f"{_fmt(resource, amount)} more"
    borrow = (f" (quota {_fmt(resource, quota)} + {_fmt(resource, borrowing)} borrowing)"
              if borrowing else "")
    return (f"you use {_of(resource, used, ceiling)}{where}{borrow}; {more} would exceed "
            f"it: stop a server or ask an admin")


# --- waiting: others may free what is needed -----------------------------------------------------


def group_quota_used(group: str, resource: str, used: int, ceiling: int) -> str:
    return (f"group '{group}' uses {_of(resource, used, ceiling)}; waiting for a "
            f"member's server to stop")


BORROW_NEEDS_IDLE = ("this server would borrow beyond your nominal quota, which is only possible "
                     "while the cluster has idle capacity; it has none now")
CLUSTER_FULL = "the cluster has no room for it now"
ADMITTED_BORROWED = ("admitted on borrowed capacity: it is the first to be preempted "
                     "when others need their quota")


# --- preemption -----------------------------------------------------------------------------------


def preempted(victim_name: str, victim_tier: str, victim_borrowed: bool, requester: str,
              tier: str) -> str:
    """What the preempted user is told."""
    # The default server is 'default', as in the warning the user read before (admission's
    # controller) and in the idle notices; "why" says what made this server the one to go.
    why = ("it ran on borrowed capacity beyond your quota"
           if victim_borrowed else f"it ran in the lower tier '{victim_tier}'")
    return (
        f"Your server '{victim_name or 'default'}' was stopped to make room for a tier "
        f"'{tier}' server of {requester}: {why}, and the cluster was full."
    )
