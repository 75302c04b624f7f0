"""Quotas, priority tiers and admission: who may start what, and if not, why not.

This package is the one implementation of the quota rule.  The AISpike service calls it for
every spawn (under one lock, so concurrent starts cannot together pass a limit), the admin panel
calls it to show who is over quota, and the simulator calls it to replay a policy.  It is pure:
the caller passes the user, the request, what is already running and what the placement core
said about the cluster, and gets back a verdict with reasons a person can act on.

Semantics (written down precisely, as Kueue does, and tested as tables in
``tests/unit/quota/test_quota_table.py``):

- A **policy** has defaults, per-group entries and per-user entries.  Each limit of a user comes
  from the user's own entry if set there, else from the groups the user belongs to (the most
  generous value among them, or the least generous with ``group_combine="least_generous"``),
  else from the defaults, else it is unlimited.  Every limit is resolved on its own, and the
  resolved :class:`Limits` remember where each value came from, so reasons can name it.
- **Countable resources** (:data:`RESOURCES`): GPU memory, GPUs (devices touched: a slice counts
  as one), CPU, RAM and running servers.  Each has a **nominal quota** and an optional
  **borrowing** allowance on top.  A server beyond the nominal quota is admitted only while the
  cluster has idle capacity (the request fits now, without preempting anyone); it is marked
  *borrowed*, and borrowed servers are the first to be preempted.
- A group entry has limits for **each member** (``member``) and optionally a quota for **the
  whole group** (``quota`` + ``borrowing``), counted over every server of its members.
- **Per-request limits**: largest single slice (GPU memory on one GPU), allowed GPU models,
  allowed images.
- **Tiers** are ordered by priority.  A request that is within quota but does not fit may
  preempt servers of lower tiers, and borrowed servers of its own or lower tiers; never its own
  user's servers.
- **Verdicts**: *refuse* when the request can never be admitted as asked, or the user's own
  quota is used up (only the user can free it: waiting would not help); *queue* when it is
  admissible by quota but the group's quota is in use by others or the cluster is full;
  *admit* otherwise.

Modules, one job each: :mod:`.policy` (the policy's types and validation), :mod:`.resolve` (a
user's limits, what a request counts), :mod:`.admit` (the named checks and the verdict),
:mod:`.report` (use against limits per user and group: the group ceiling), :mod:`.preemption`
(who may be preempted), :mod:`.messages` (every sentence a person reads), :mod:`.documents` (the
policy as admins write it).  Every public name is re-exported here.
"""

from __future__ import annotations

from aispike_hub.quota.admit import (
    CHECKS,
    Admission,
    Ask,
    ClusterView,
    Finding,
    Server,
    User,
    Verdict,
    admit,
)
from aispike_hub.quota.documents import (
    entry_from_dict,
    entry_to_dict,
    group_from_dict,
    group_to_dict,
    parse_amount,
    policy_from_dict,
    policy_to_dict,
    tier_to_dict,
    tiers_from_list,
)
from aispike_hub.quota.policy import (
    DEFAULT_TIERS,
    RESOURCES,
    UNLIMITED,
    Amounts,
    Budget,
    Entry,
    GroupCombine,
    GroupEntry,
    Policy,
    PolicyError,
    Tier,
    entry_fields,
    validate_policy,
)
from aispike_hub.quota.preemption import (
    preemptible_by,
    preemption_order,
    preemption_reason,
    victim_filter,
)
from aispike_hub.quota.report import (
    GroupReport,
    QuotaReport,
    Use,
    UserReport,
    group_limits,
    group_report,
    quota_report,
    usage_of,
    user_report,
)
from aispike_hub.quota.resolve import (
    Limits,
    charge_of,
    per_gpu_mib,
    resolve_limits,
    restrict_request,
)

__all__ = [
    "CHECKS", "DEFAULT_TIERS", "RESOURCES", "UNLIMITED",
    "Admission", "Amounts", "Ask", "Budget", "ClusterView", "Entry", "Finding", "GroupCombine",
    "GroupEntry", "GroupReport", "Limits", "Policy", "PolicyError", "QuotaReport", "Server",
    "Tier", "Use", "User", "UserReport", "Verdict",
    "admit", "charge_of", "entry_fields", "entry_from_dict", "entry_to_dict", "group_from_dict",
    "group_limits", "group_report", "group_to_dict", "parse_amount", "per_gpu_mib",
    "policy_from_dict", "policy_to_dict", "preemptible_by", "preemption_order",
    "preemption_reason", "quota_report", "resolve_limits", "restrict_request", "tier_to_dict",
    "tiers_from_list", "usage_of", "user_report", "validate_policy", "victim_filter",
]
