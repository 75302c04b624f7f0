"""Quotas, the queue and preemption through a real hub and the real AISpike service, once per
spawner kind.

One hub per spawner kind (``stack`` is parametrized with ``hubstack.SPAWNER_KINDS``), each on a
machine with one 80 GiB GPU that the service's inventory describes:

- ``kube``: the product's ``AISpikeSpawner`` (admission by the service, each GPU slice a
  ResourceClaim pinned by the hub's placer and allocated by kube-scheduler) on a kwok node of
  the test's own on the test control plane;
- ``local``: ``LocalGPUSpawner`` over the simulated inventory "1x NVIDIA A100-SXM4-80GB 80GB",
  notebook servers as local processes, no cluster.

The AISpike service runs as a hub-managed service (its own process, sqlite store, OAuth with
custom scopes).  Each test sets the policy for its own users through the service's API; every
test (the table below) runs unchanged against both kinds.

| case | expected |
|---|---|
| 20 concurrent 8 GiB starts, quota 4 servers / 32 GiB | 4 run, 16 refused with the reason |
| low tier holds 60 GiB, high tier asks for 40 | low warned, stopped, sees why; high runs |
| one holds 60 GiB, another asks for 40 | queued (position 1, in the spawn progress); |
|  | starts when the first stops |
| hostile policy input, non-admins | 400 naming the field; 403 |
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterator

import pytest

from .conftest import RunningHub, wait_until
from .hubstack import SPAWNER_KINDS, ServiceHub, hub_of_kind

MACHINE = {"name": "quota-gpu", "cpu": "64", "memory": "512Gi",
           "gpus": [{"model": "NVIDIA A100-SXM4-80GB", "memory": "80Gi", "count": 1}]}


@pytest.fixture(scope="module", params=SPAWNER_KINDS)
def stack(request: pytest.FixtureRequest, hub_factory: Callable[..., RunningHub],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceHub]:
    kind = request.param
    with hub_of_kind(
            kind, request, hub_factory, MACHINE, name="quota", admission=True,
            workdir=tmp_path_factory.mktemp(f"aispike-quota-{kind}"),
            service_args=["--AISpikeService.preemption_grace=2",
                          "--AISpikeService.tick_interval=0.5",
                          "--AISpikeService.queue_timeout=120"],
            service_scopes=["admin:servers", "read:users", "read:groups",
                            "custom:aispike:admit"],
            admin_scopes=["custom:aispike:admin"],
            hub_config="c.JupyterHub.allow_named_servers = True\n"
                       "c.JupyterHub.named_server_limit_per_user = 0\n") as stack:
        yield stack


def test_twenty_concurrent_starts_end_exactly_at_the_quota(stack: ServiceHub) -> None:
    user = stack.user()
    stack.set_user(user, {"quota": {"servers": 4, "gpu_memory": "32Gi"}})
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda i: stack.start(user, f"s{i}", {"gpu_gib": 8}), range(20)))
    assert all(a.status_code in (201, 202, 400, 403, 500) for a in answers), \
        [a.text for a in answers]
    try:
        wait_until(lambda: len(stack.ready(user)) == 4, 150, "4 servers ready")
    except AssertionError:
        raise AssertionError(f"hub log:\n{stack.log_tail()}") from None
    queue = stack.service("GET", "queue").json()
    mine = [t for t in queue["admitted"] if t["user"] == user]
    assert len(mine) == 4 and sum(t["charge"]["gpu_memory_mib"] for t in mine) == 32 * 1024
    refused = [e for e in stack.audit(action="admission.refuse", limit=100)
               if e["target"].startswith(f"{user}/")]
    assert len(refused) == 16
    assert any("you use 4 of 4 servers" in r for e in refused for r in e["detail"]["reasons"])
    for name in stack.ready(user):
        stack.stop(user, name)
    wait_until(lambda: not [t for t in stack.service("GET", "queue").json()["admitted"]
                            if t["user"] == user], 60, "reservations released")


def test_high_tier_preempts_low_tier_and_the_low_tier_user_sees_why(stack: ServiceHub) -> None:
    low, high = stack.user(), stack.user()
    stack.set_user(low, {"tier": "low"})
    stack.set_user(high, {"tier": "high"})
    assert stack.start(low, "train", {"gpu_gib": 60}).status_code in (201, 202)
    wait_until(lambda: stack.ready(low) == {"train"}, 120, "low-tier server ready")

    assert stack.start(high, "urgent", {"gpu_gib": 40}).status_code in (201, 202)
    try:
        wait_until(lambda: stack.ready(high) == {"urgent"}, 120, "high-tier server ready")
    except AssertionError:
        raise AssertionError(f"hub log:\n{stack.log_tail()}") from None
    wait_until(lambda: not stack.ready(low), 60, "low-tier server stopped")
    notices = stack.notices(low)
    kinds = [n["kind"] for n in notices]
    assert "preemption-warning" in kinds and "preempted" in kinds, notices
    preempted = next(n for n in notices if n["kind"] == "preempted")
    assert f"tier 'high' server of {high}" in preempted["message"]
    assert stack.audit(f"{low}/train", action="preemption.stop")
    stack.stop(high, "urgent")


def test_a_queued_spawn_starts_when_another_server_stops(stack: ServiceHub) -> None:
    first, second = stack.user(), stack.user()
    assert stack.start(first, "big", {"gpu_gib": 60}).status_code in (201, 202)
    wait_until(lambda: stack.ready(first) == {"big"}, 120, "first server ready")

    assert stack.start(second, "next", {"gpu_gib": 40}).status_code in (201, 202)
    ticket = wait_until(
        lambda: (t := stack.service("GET", f"admissions/{second}/next").json())["state"]
        == "queued" and t, 30, "second request queued")
    assert ticket["position"] == 1 and "no room" in ticket["reasons"][0]
    # The user sees the same through the hub's spawn progress.
    events = stack.hub.get(f"hub/api/users/{second}/servers/next/progress", stream=True,
                           timeout=10)
    first_lines: list[bytes] = []
    for line in events.iter_lines():  # keepalives are blank lines; spawners say more or less
        if line.startswith(b"data:"):
            first_lines.append(line)
        if len(first_lines) >= 6 or b"Waiting in the queue" in line:
            break
    events.close()
    assert any(b"Waiting in the queue: position 1 of 1" in line for line in first_lines), \
        first_lines
    assert not stack.ready(second)

    stack.stop(first, "big")
    try:
        wait_until(lambda: stack.ready(second) == {"next"}, 120, "queued server started")
    except AssertionError:
        raise AssertionError(f"hub log:\n{stack.log_tail()}") from None
    stack.stop(second, "next")


def test_policy_api_refuses_hostile_input_and_non_admins(stack: ServiceHub) -> None:
    user = stack.user()
    bad = stack.service("PUT", f"policy/users/{user}", json={"quota": {"gpu_memory": "-1Gi"}})
    assert bad.status_code == 400 and bad.json()["field"] == f"users.{user}.quota.gpu_memory"
    bad = stack.service("PUT", f"policy/users/{user}", json={"tier": "platinum"})
    assert bad.status_code == 400 and bad.json()["field"] == f"users.{user}.tier"
    bad = stack.service("PUT", "policy", data=b"{not json")
    assert bad.status_code == 400
    token = stack.user_token(user)
    assert stack.service("PUT", f"policy/users/{user}", token=token,
                         json={"quota": {"gpus": 99}}).status_code == 403
    assert stack.service("GET", "audit", token=token).status_code == 403
    assert stack.service("POST", "admissions", token=token, json={}).status_code == 403
    # A user may preview a fit for themselves.
    fit = stack.service("POST", "fit", token=token, json={"request": {"gpu_memory_mib": 8192}})
    assert fit.status_code == 200 and fit.json()["verdict"] == "admit", fit.text
    assert stack.service("GET", "policy", token="not-a-token").status_code in (401, 403)
