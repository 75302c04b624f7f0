"""Fault injection on the real stack (issue 26, item 5): the driver shared by the integration
test (``test_fault_injection.py``, short) and the benchmark (``benchmarks/fault_injection.py``).

A burst of spawns through the product's hub, ``AISpikeSpawner`` (aispike DRA backend) and the
AISpike service, each spawn kept, cancelled while starting or stopped once ready (chosen from a
seed), while a seeded schedule of faults hits the stack: ``kill -9`` of the hub (restarted with
its config), of the AISpike service (the hub restarts its managed service), of kube-scheduler
(restarted with its argv) and a restart of kube-apiserver.  Then :func:`settle` waits for the
accounting to agree and :func:`check` says what does not:

- the hub's servers == the service's tickets == our ResourceClaims (per ``user/server``);
- no GPU over-committed (the allocated slices' memory on each device <= its memory);
- nothing leaked (a ticket or claim with no hub server, a hub server with no ticket).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from aispike_hub.kube.claims import HUB_SERVER_ANNOTATION, is_ours
from aispike_hub.kube.identity import split_hub_server
from aispike_hub.units import parse_quantity

FAULTS = ("hub", "service", "scheduler", "apiserver")


@dataclass
class Plan:
    """What a seed decides: each spawn's size and fate, and when each fault hits."""

    seed: int
    spawns: list[tuple[int, str, float]]
    """(GiB, fate: keep | cancel | stop, delay before the cancel/stop in s)"""
    faults: list[tuple[float, str]]
    """(seconds after the burst began, fault)"""


def plan(seed: int, spawns: int, *, faults: tuple[str, ...] = FAULTS, window: float = 60.0,
         sizes: tuple[int, ...] = (4, 8), keep: float = 0.3, cancel: float = 0.35) -> Plan:
    rnd = random.Random(seed)
    items = []
    for _ in range(spawns):
        r = rnd.random()
        fate = "keep" if r < keep else "cancel" if r < keep + cancel else "stop"
        items.append((rnd.choice(sizes), fate, rnd.uniform(0.0, 3.0)))
    times = sorted(rnd.uniform(0.1 * window, 0.9 * window) for _ in faults)
    order = list(faults)
    rnd.shuffle(order)
    return Plan(seed, items, list(zip(times, order, strict=True)))


# --- processes ---------------------------------------------------------------------------------


def _proc(pid: int) -> tuple[list[str], dict[str, str], str]:
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    env_items = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    env = dict(e.decode().split("=", 1) for e in env_items if b"=" in e)
    return [a.decode() for a in argv if a], env, os.readlink(f"/proc/{pid}/cwd")


def _wait_gone(pid: int, timeout: float = 30) -> None:
    """Wait for ``pid`` to end; SIGKILL it after ``timeout`` s (an API server drains its
    requests for a while after SIGTERM)."""
    if not _gone_within(pid, timeout):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if not _gone_within(pid, 30):
            raise AssertionError(f"process {pid} still alive after SIGKILL")


def _gone_within(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
            stat = Path(f"/proc/{pid}/stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except (ProcessLookupError, FileNotFoundError):
            return True
        time.sleep(0.1)
    return False


def restart_control_plane(state_dir: Path, name: str, sig: int = signal.SIGKILL,
                          down_s: float = 2.0, term_s: float = 30.0) -> None:
    """Kill the cluster's ``name`` process with ``sig`` and start it again with the same argv,
    environment and cwd (recorded in ``cluster.json`` so ``test-cluster down`` finds it)."""
    record_path = state_dir / "cluster.json"
    record = json.loads(record_path.read_text())
    (entry,) = [p for p in record["processes"] if p["name"] == name]
    pid = int(entry["pid"])
    argv, env, cwd = _proc(pid)
    os.kill(pid, sig)
    _wait_gone(pid, term_s)
    time.sleep(down_s)
    with open(state_dir / "logs" / f"{name}.log", "ab") as out:
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    entry["pid"] = proc.pid
    record_path.write_text(json.dumps(record, indent=1) + "\n")


def _children(pid: int) -> list[int]:
    with contextlib.suppress(FileNotFoundError):
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        return [int(c) for c in text.split()]
    return []


def service_pid(hub_pid: int) -> int | None:
    for child in _children(hub_pid):
        with contextlib.suppress(FileNotFoundError):
            if b"aispike_hub.cli\0service" in Path(f"/proc/{child}/cmdline").read_bytes():
                return child
    return None


# --- the run -----------------------------------------------------------------------------------


@dataclass
class Outcome:
    spawns: int = 0
    cancels: int = 0
    stops: int = 0
    faults: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    converge_s: float = float("nan")
    problems: list[str] = field(default_factory=list)
    overcommit: list[str] = field(default_factory=list)


class Stack:
    """What the driver needs of a running stack (a :class:`hubstack.ServiceHub`, the cluster)."""

    def __init__(self, service_hub: Any, cluster: Any, namespace: str,
                 restart_hub: Callable[..., None]) -> None:
        self.sh = service_hub
        self.cluster = cluster
        self.namespace = namespace
        self.restart_hub = restart_hub

    def stop_all(self, timeout: float = 300) -> None:
        """Stop every server the hub has and wait until no claim or ticket of ours is left: a
        later test starts on empty GPUs (a burst's kept servers can fill them)."""
        for user in self.hub_users():
            for name in user.get("servers") or {}:
                path = f"/users/{user['name']}/servers/{name}" if name else (
                    f"/users/{user['name']}/server")
                self.sh.hub.api("DELETE", path, timeout=60)
        end = time.monotonic() + timeout
        while True:
            servers, _ = self.hub_servers()
            claims, _ = self.claims()
            left = servers | claims | self.tickets()
            if not left:
                return
            if time.monotonic() > end:
                raise AssertionError(f"still there {timeout:.0f} s after stopping every "
                                     f"server: {sorted(left)}")
            time.sleep(2)

    # the accounting -----------------------------------------------------------------------
    def hub_servers(self) -> tuple[set[str], set[str]]:
        """(every server the hub has, those of them still pending), as ``user/server``."""
        servers, pending = set(), set()
        for user in self.hub_users():
            for name, s in (user.get("servers") or {}).items():
                key = f"{user['name']}/{name}"
                servers.add(key)
                if s.get("pending") or not s.get("ready"):
                    pending.add(key)
        return servers, pending

    def hub_users(self) -> list[dict[str, Any]]:
        """Every user model, page by page (JupyterHub answers at most ``api_page_max_limit``,
        200 by default, per request: a 200-spawn burst has more users than one page)."""
        users: list[dict[str, Any]] = []
        while True:
            r = self.sh.hub.api("GET", "/users", params={"offset": len(users), "limit": 200},
                                headers={"Accept": "application/jupyterhub-pagination+json"},
                                timeout=10)
            r.raise_for_status()
            page = r.json()
            users.extend(page["items"])
            if not page["items"] or not (page.get("_pagination") or {}).get("next"):
                return users

    def tickets(self) -> set[str]:
        queue = self.sh.service("GET", "queue", timeout=10).json()
        return {f"{t['user']}/{t['server']}" for t in queue["admitted"] + queue["queued"]}

    def claims(self) -> tuple[set[str], list[dict[str, Any]]]:
        items = self.cluster.custom.list_namespaced_custom_object(
            "resource.k8s.io", "v1", self.namespace, "resourceclaims")["items"]
        ours = [c for c in items if is_ours(c)]
        keys = set()
        for c in ours:
            value = (c["metadata"].get("annotations") or {}).get(HUB_SERVER_ANNOTATION, "")
            keys.add(split_hub_server(value)[1] if value else f"?{c['metadata']['name']}")
        return keys, items

    def overcommit(self, claims: list[dict[str, Any]]) -> list[str]:
        slices = self.cluster.custom.list_cluster_custom_object(
            "resource.k8s.io", "v1", "resourceslices")["items"]
        capacity: dict[tuple[str, str], int] = {}
        for s in slices:
            pool = s["spec"].get("pool", {}).get("name", "")
            for d in s["spec"].get("devices") or []:
                mem = (d.get("capacity") or {}).get("memory", {}).get("value")
                if mem is not None:
                    capacity[(pool, d["name"])] = int(parse_quantity(mem))
        used: dict[tuple[str, str], int] = defaultdict(int)
        for c in claims:
            for res in ((c.get("status") or {}).get("allocation") or {}).get(
                    "devices", {}).get("results") or []:
                mem = (res.get("consumedCapacity") or {}).get("memory")
                if mem is not None:
                    used[(res.get("pool", ""), res.get("device", ""))] += int(
                        parse_quantity(mem))
        return [f"{pool}/{dev}: {used[(pool, dev)]} > {cap} bytes"
                for (pool, dev), cap in capacity.items() if used[(pool, dev)] > cap]

    def check(self) -> tuple[list[str], list[str], bool]:
        """(disagreements, over-committed GPUs, whether the hub still has pending servers)."""
        servers, pending = self.hub_servers()
        tickets = self.tickets()
        claims, items = self.claims()
        problems = []
        for what, got in (("ticket", tickets), ("claim", claims)):
            for key in sorted(got - servers):
                problems.append(f"leaked {what}: {key} (no hub server)")
            for key in sorted(servers - got):
                problems.append(f"hub server {key} has no {what}")
        return problems, self.overcommit(items), bool(pending)

    # the burst ------------------------------------------------------------------------------
    def _call(self, fn: Callable[[], requests.Response], out: Outcome, tries: int = 60
              ) -> requests.Response | None:
        """Call the hub, retrying while it is down (a fault)."""
        for _ in range(tries):
            try:
                r = fn()
                if r.status_code < 500 or r.status_code == 503:
                    return r
            except requests.RequestException:
                pass
            time.sleep(1)
        out.errors.append("hub unreachable for a whole retry window")
        return None

    def _one(self, user: str, gib: int, fate: str, delay: float, out: Outcome) -> None:
        started = self._call(lambda: self.sh.start(user, "", {"gpu_gib": gib}), out)
        if started is None or started.status_code not in (201, 202):
            return
        if fate == "keep":
            return
        if fate == "stop":
            end = time.monotonic() + 120
            while time.monotonic() < end:
                with contextlib.suppress(requests.RequestException, ValueError):
                    s = self.sh.server(user, "")
                    if not s or s.get("ready"):
                        break
                time.sleep(1)
        time.sleep(delay)
        path = f"/users/{user}/server"
        self._call(lambda: self.sh.hub.api("DELETE", path, timeout=60), out)

    def _inject(self, name: str) -> None:
        if name == "hub":
            self.restart_hub()
        elif name == "service":
            pid = None
            for _ in range(60):  # a hub just restarted may not have started it yet
                pid = service_pid(self.sh.hub.process.pid)
                if pid is not None:
                    break
                time.sleep(1)
            if pid is None:
                raise AssertionError("the AISpike service is not a child of the hub")
            os.kill(pid, signal.SIGKILL)
        elif name == "scheduler":
            restart_control_plane(self.cluster.state_dir, "kube-scheduler")
        elif name == "apiserver":
            restart_control_plane(self.cluster.state_dir, "kube-apiserver", signal.SIGTERM,
                                  term_s=90)
        else:
            raise ValueError(name)

    def run(self, the_plan: Plan, *, spacing: float = 1.0, settle_s: float = 300) -> Outcome:
        out = Outcome(spawns=len(the_plan.spawns))
        out.cancels = sum(f == "cancel" for _, f, _ in the_plan.spawns)
        out.stops = sum(f == "stop" for _, f, _ in the_plan.spawns)
        users = [self.sh.user() for _ in the_plan.spawns]
        began = time.monotonic()

        def faults() -> None:
            for at, name in the_plan.faults:
                time.sleep(max(0.0, began + at - time.monotonic()))
                try:
                    self._inject(name)
                    out.faults.append(name)
                except Exception as e:  # reported, and the test fails on it
                    out.errors.append(f"fault {name}: {e!r}")

        threads = [threading.Thread(target=faults, daemon=True)]
        threads[0].start()
        for user, (gib, fate, delay) in zip(users, the_plan.spawns, strict=True):
            t = threading.Thread(target=self._one, args=(user, gib, fate, delay, out),
                                 daemon=True)
            t.start()
            threads.append(t)
            time.sleep(spacing)
        for t in threads:
            t.join(600)
        settled_from = time.monotonic()
        deadline = settled_from + settle_s
        while True:
            try:
                problems, over, pending = self.check()
            except Exception as e:
                problems, over, pending = [f"check failed: {e!r}"], [], True
            if not problems and not over and not pending:
                out.converge_s = time.monotonic() - settled_from
                break
            if time.monotonic() > deadline:
                break
            time.sleep(2)
        out.problems, out.overcommit = problems, over
        if pending:
            out.problems.append("the hub still has pending servers")
        return out


def table(rows: list[tuple[int, Outcome]]) -> str:
    lines = ["| seed | spawns | cancels | stops | faults | converge (s) | leaks | over-commit |",
             "|---|---|---|---|---|---|---|---|"]
    for seed, o in rows:
        lines.append(f"| {seed} | {o.spawns} | {o.cancels} | {o.stops} | "
                     f"{', '.join(o.faults)} | {o.converge_s:.1f} | {len(o.problems)} | "
                     f"{len(o.overcommit)} |")
    return "\n".join(lines)
