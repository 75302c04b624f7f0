"""What the DRA burst and latency benchmarks measure through the product: helpers shared by
``benchmarks/kube_placement.py``'s sections.

Every number comes from the parts a hub admin runs: JupyterHub (with configurable-http-proxy)
starting servers through ``AISpikeSpawner``, the AISpike service (``aispike-hub service``, a
managed hub service with its Kubernetes inventory) deciding admission and placement, the
hub's placer pinning the ResourceClaim, kube-scheduler allocating it, and the pod runner
starting each pod's ``jupyterhub-singleuser``.  The placement core's decision time is read
from the product's own Prometheus histogram (``aispike_placement_decision_seconds``, scraped
from the service's ``/metrics`` and the hub's ``/hub/metrics``), not timed around a library
call.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

DECISION = "aispike_placement_decision_seconds"
_BUCKET = re.compile(
    r'^' + DECISION + r'_bucket\{(?P<labels>[^}]*)\}\s+(?P<value>[0-9.e+-]+)$')


def histogram(text: str, caller: str) -> list[tuple[float, float]]:
    """Cumulative ``(upper bound, count)`` pairs of the decision histogram for ``caller``
    (both outcomes added), from Prometheus text."""
    counts: dict[float, float] = {}
    for line in text.splitlines():
        m = _BUCKET.match(line.strip())
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m["labels"]))
        if labels.get("caller") != caller:
            continue
        le = float("inf") if labels["le"] == "+Inf" else float(labels["le"])
        counts[le] = counts.get(le, 0.0) + float(m["value"])
    return sorted(counts.items())


def minus(after: list[tuple[float, float]], before: list[tuple[float, float]]
          ) -> list[tuple[float, float]]:
    """The observations made between two scrapes of the same histogram."""
    earlier = dict(before)
    return [(le, n - earlier.get(le, 0.0)) for le, n in after]


def quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """``q``-quantile of a cumulative histogram, interpolated linearly inside the bucket it
    falls in (Prometheus' ``histogram_quantile``); NaN without observations."""
    if not buckets or buckets[-1][1] <= 0:
        return float("nan")
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for le, n in buckets:
        if n >= rank:
            if le == float("inf"):
                return lower  # beyond the last finite bound: report that bound
            inside = n - below
            return lower + (le - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = le, n
    return lower


def observations(buckets: list[tuple[float, float]]) -> int:
    return int(buckets[-1][1]) if buckets else 0


def scrape(url: str, token: str, wait: float = 0) -> str:
    """Prometheus text of ``url``, asking again for up to ``wait`` seconds while it answers
    503 (a managed service the hub is starting again)."""
    end = time.monotonic() + wait
    while True:
        r = requests.get(url, headers={"Authorization": f"token {token}"}, timeout=30)
        if r.status_code != 503 or time.monotonic() > end:
            r.raise_for_status()
            return r.text
        time.sleep(1)


def rss_mib(pid: int | None) -> float:
    """Resident memory of a process (MiB), NaN when it is gone."""
    if pid is None:
        return float("nan")
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


@dataclass
class Spawns:
    """Start requests sent through the hub's REST API and what became of each."""

    hub: Any
    """tests/integration/conftest.py's RunningHub (its ``api`` is the hub's REST API)."""
    sent: dict[str, float] = field(default_factory=dict)
    answered: dict[str, float] = field(default_factory=dict)
    """When the hub answered the start request (201/202): from then on it lists the server
    until the spawn succeeds or fails."""
    ready: dict[str, float] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    def users(self, count: int, prefix: str) -> list[str]:
        names = [f"{prefix}-{k}-{secrets.token_hex(2)}" for k in range(count)]
        for chunk in range(0, len(names), 100):
            r = self.hub.api("POST", "/users", json={"usernames": names[chunk:chunk + 100]},
                             timeout=120)
            assert r.status_code == 201, r.text
        return names

    def start(self, user: str, options: Mapping[str, Any]) -> None:
        self.sent[user] = time.monotonic()
        try:
            r = self.hub.api("POST", f"/users/{user}/server", json=dict(options), timeout=300)
        except requests.RequestException as e:
            self.failed[user] = f"request: {e}"
            return
        if r.status_code not in (201, 202):
            self.failed[user] = f"{r.status_code} {r.text[:200]}"
        else:
            self.answered[user] = time.monotonic()

    def listing(self, state: str | None = None) -> list[dict[str, Any]]:
        """Every user model, page by page (the hub answers at most 200 a request)."""
        users: list[dict[str, Any]] = []
        while True:
            params: dict[str, Any] = {"offset": len(users), "limit": 200}
            if state:
                params["state"] = state
            r = self.hub.api("GET", "/users", params=params, timeout=60,
                             headers={"Accept": "application/jupyterhub-pagination+json"})
            r.raise_for_status()
            page = r.json()
            users.extend(page["items"])
            if not page["items"] or not (page.get("_pagination") or {}).get("next"):
                return users

    def poll(self) -> None:
        """Mark ready servers, and started users the hub no longer has a server for (a
        spawn that failed: refused, or gave up) as failed."""
        asked = time.monotonic()
        listing = self.listing()
        now = time.monotonic()
        for u in listing:
            name = u["name"]
            if name not in self.sent or name in self.ready or name in self.failed:
                continue
            server = (u.get("servers") or {}).get("")
            if server and server.get("ready"):
                self.ready[name] = now
            elif not server and name in self.answered and asked > self.answered[name]:
                # listed after the hub answered the start: the spawn is over, and not ready
                self.failed[name] = "the hub has no server for it (spawn failed)"

    def settle(self, timeout: float, done: Callable[[], bool] = lambda: True) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.poll()
            if done() and len(self.ready) + len(self.failed) >= len(self.sent):
                return
            time.sleep(0.5)

    def burst(self, options: Mapping[str, Mapping[str, Any]], timeout: float,
              during: Callable[[], None] | None = None) -> float:
        """Send every start at once; returns seconds from the first request to the last
        server ready (or failed)."""
        began = time.monotonic()
        with ThreadPoolExecutor(max_workers=min(len(options), 256)) as pool:
            futures = [pool.submit(self.start, u, o) for u, o in options.items()]
            if during is not None:
                during()
            self.settle(timeout, done=lambda: all(f.done() for f in futures))
        ends = list(self.ready.values()) or [time.monotonic()]
        return max(ends) - began

    def seconds_to_ready(self) -> list[float]:
        return [self.ready[u] - self.sent[u] for u in self.ready]

    def stop_all(self, timeout: float = 600) -> None:
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(lambda u: self.hub.api("DELETE", f"/users/{u}/server", timeout=300),
                          list(self.sent)))
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not [u for u in self.listing("active") if u["name"] in self.sent]:
                return
            time.sleep(1)


FAILURE_CAUSES = {
    "the proxy did not take the route": "Failed to add {user} to proxy",
    "the hub's start timeout": "{user}'s server failed to start in",
    "the notebook never answered": "{user}'s server never showed up",
    "an error in the spawner": "Unhandled error starting {user}'s server",
}
"""What the hub's log says about a failed spawn, by cause (JupyterHub's own wording)."""


def failure_causes(log_text: str, users: list[str]) -> dict[str, int]:
    """How many of ``users`` failed for each of :data:`FAILURE_CAUSES` (from the hub's log);
    a user whose failure the log does not explain counts as "other"."""
    out: dict[str, int] = {}
    for user in users:
        cause = next((c for c, pattern in FAILURE_CAUSES.items()
                      if pattern.format(user=user) in log_text), "other")
        out[cause] = out.get(cause, 0) + 1
    return out


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, str(default)))
