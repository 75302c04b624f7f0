"""Nothing leaks through a real hub: tickets, claims and servers agree after every way a start
or a server ends (issue 26), and a server whose old pod still exists restarts with its GPU
slice (issue 21).  Once per spawner kind (``hubstack.SPAWNER_KINDS``), the AISpike service as a
hub-managed service admitting every start.

The spawners reach the service through a TCP gate the test can close (connections refused) and
open again, as when JupyterHub stops its services before the servers at shutdown.

| case | kube | local | expected |
|---|---|---|---|
| cancel a spawn waiting in the queue | x | x | ticket gone at once; never admitted later |
| the hub's start timeout while queued | x | x | ticket gone |
| the server dies (pod deleted / process killed) | x | x | ticket (and claim) gone |
| stop while the service is unreachable | x | x | release kept, sent once it is back |
| restart with the old pod and claim still there | x |  | starts; the claim is the new pod's |
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from aispike_hub.kube.claims import claim_name

from .conftest import RunningHub, _free_port, wait_until
from .hubstack import SPAWNER_KINDS, ServiceHub, hub_of_kind
from .leftovers import claim_of, leave_behind, pod_exists

MACHINE = {"name": "leaks-gpu", "cpu": "64", "memory": "512Gi",
           "gpus": [{"model": "NVIDIA A100-SXM4-80GB", "memory": "80Gi", "count": 1}]}
START_TIMEOUT = 10
"""start_timeout of the users in the group ``impatient``."""


class Gate:
    """A TCP forwarder in front of the AISpike service that the test closes and opens."""

    def __init__(self, port: int, target: int) -> None:
        self.port, self.target = port, target
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def open(self) -> None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self._listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def close(self) -> None:
        """Refuse new connections and cut the open ones."""
        if self._listener is not None:
            # shutdown() first: a close() alone leaves a listener blocked in accept() open.
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            for c in self._conns:
                with contextlib.suppress(OSError):
                    c.close()
            self._conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=10)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


class Stack(ServiceHub):
    def __init__(self, hub: ServiceHub, kind: str, gate: Gate,
                 request: pytest.FixtureRequest) -> None:
        super().__init__(hub.hub, hub.service_url)
        self.kind = kind
        self.gate = gate
        self.request = request

    def tickets(self, user: str) -> list[dict[str, Any]]:
        """The user's tickets the service holds (admitted or queued)."""
        queue = self.service("GET", "queue").json()
        return [t for t in queue["admitted"] + queue["queued"] if t["user"] == user]

    def ticket_state(self, user: str, server: str) -> str:
        return str(self.service("GET", f"admissions/{user}/{server}").json()["state"])

    def wait_queued(self, user: str, server: str) -> None:
        wait_until(lambda: self.ticket_state(user, server) == "queued", 60,
                   f"{user}/{server} queued")

    def wait_no_ticket(self, user: str, timeout: float = 30) -> None:
        try:
            wait_until(lambda: not self.tickets(user), timeout, f"{user}'s tickets released")
        except AssertionError:
            raise AssertionError(f"{self.tickets(user)}\nhub log:\n{self.log_tail()}") from None

    def fill(self) -> str:
        """A user holding 60 of the 80 GiB (a 40 GiB start then waits in the queue)."""
        user = self.user()
        assert self.start(user, "big", {"gpu_gib": 60}).status_code in (201, 202)
        self.wait_ready(user, "big")
        return user


@pytest.fixture(scope="module", params=SPAWNER_KINDS)
def stack(request: pytest.FixtureRequest, hub_factory: Callable[..., RunningHub],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    kind = request.param
    gate_port = _free_port()
    hub_config = f"""
c.JupyterHub.allow_named_servers = True
c.JupyterHub.named_server_limit_per_user = 0
c.JupyterHub.load_groups = {{"impatient": {{"users": []}}}}
c.Spawner.group_overrides = {{"impatient": {{"groups": ["impatient"],
                              "spawner_override": {{"start_timeout": {START_TIMEOUT}}}}}}}
c.Spawner.poll_interval = 2
c.AdmissionClient.url = "http://127.0.0.1:{gate_port}/services/aispike/"
c.AdmissionClient.release_retry_interval = 1
"""
    with hub_of_kind(
            kind, request, hub_factory, MACHINE, name="leaks", admission=True,
            workdir=tmp_path_factory.mktemp(f"aispike-leaks-{kind}"),
            service_args=["--AISpikeService.tick_interval=0.5",
                          "--AISpikeService.queue_timeout=120"],
            service_scopes=["admin:servers", "read:users", "read:groups",
                            "custom:aispike:admit"],
            admin_scopes=["custom:aispike:admin", "admin:groups"],
            hub_config=hub_config) as hub:
        port = urlparse(hub.service_url).port
        assert port is not None
        gate = Gate(gate_port, port)
        gate.open()
        try:
            yield Stack(hub, kind, gate, request)
        finally:
            gate.close()


def test_a_cancelled_queued_spawn_leaves_no_ticket(stack: Stack) -> None:
    first, second = stack.fill(), stack.user()
    assert stack.start(second, "next", {"gpu_gib": 40}).status_code in (201, 202)
    stack.wait_queued(second, "next")
    stack.stop(second, "next")  # the user cancels the pending spawn
    stack.wait_no_ticket(second, 15)
    stack.stop(first, "big", wait=True)
    stack.wait_no_ticket(first)
    time.sleep(3)  # a ticket left behind would be admitted now, with no server behind it
    assert not stack.tickets(second) and not stack.server(second, "next")


def test_the_start_timeout_of_a_queued_spawn_leaves_no_ticket(stack: Stack) -> None:
    first, second = stack.fill(), stack.user("impatient")
    assert stack.start(second, "next", {"gpu_gib": 40}).status_code in (201, 202)
    stack.wait_queued(second, "next")
    wait_until(lambda: not stack.server(second, "next"), START_TIMEOUT + 60,
               "the hub to give up the start")
    assert "failed to start in 10 seconds" in stack.log_tail(20000)
    stack.wait_no_ticket(second, 15)
    stack.stop(first, "big", wait=True)
    time.sleep(3)
    assert not stack.tickets(second)


def _kill_local_server(user: str, server: str) -> None:
    """Kill the local spawner's notebook process of ``user``/``server`` (it "dies")."""
    wanted = {f"JUPYTERHUB_USER={user}".encode(), f"JUPYTERHUB_SERVER_NAME={server}".encode()}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = set((proc / "environ").read_bytes().split(b"\0"))
        except OSError:
            continue
        if wanted <= env:
            os.kill(int(proc.name), signal.SIGKILL)
            return
    raise AssertionError(f"no process of {user}/{server}")


def test_a_server_that_dies_gives_its_ticket_back(stack: Stack) -> None:
    user = stack.user()
    assert stack.start(user, "dies", {"gpu_gib": 8}).status_code in (201, 202)
    stack.wait_ready(user, "dies")
    assert len(stack.tickets(user)) == 1
    if stack.kind == "kube":
        cluster = stack.request.getfixturevalue("cluster")
        namespace = stack.request.getfixturevalue("hub_namespace")
        name = f"jupyter-{user}--dies"
        claim = claim_name(name)
        assert claim_of(cluster, namespace, claim) is not None
        cluster.core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
    else:
        _kill_local_server(user, "dies")
    # The hub's poll notices (poll() says it is gone, so it skips stop()): the post-stop hook.
    wait_until(lambda: not stack.server(user, "dies"), 60, "the hub to notice")
    stack.wait_no_ticket(user)
    if stack.kind == "kube":
        wait_until(lambda: claim_of(cluster, namespace, claim) is None, 60, "claim gone")


def test_a_stop_while_the_service_is_unreachable_is_released_when_it_is_back(
        stack: Stack) -> None:
    user = stack.user()
    assert stack.start(user, "s", {"gpu_gib": 8}).status_code in (201, 202)
    stack.wait_ready(user, "s")
    stack.gate.close()  # as at hub shutdown: the service is gone before the servers stop
    try:
        stack.stop(user, "s", wait=True)
        wait_until(lambda: "is kept in" in stack.log_tail(20000), 30, "the release kept")
        assert len(stack.tickets(user)) == 1  # the service never heard of the stop ...
    finally:
        stack.gate.open()
    stack.wait_no_ticket(user)  # ... until it is reachable again


# --- Kubernetes: a restart with the old pod still there (issue 21) -----------------------------


@pytest.mark.parametrize("stack", ["kube"], indirect=True)  # pods and claims are Kubernetes'
def test_a_server_whose_old_pod_still_exists_restarts_with_its_gpu_slice(stack: Stack) -> None:
    cluster = stack.request.getfixturevalue("cluster")
    namespace = stack.request.getfixturevalue("hub_namespace")
    user = stack.user()
    name, options = f"jupyter-{user}--gpu", {"gpu_gib": 8}
    assert stack.start(user, "gpu", options).status_code in (201, 202)
    stack.wait_ready(user, "gpu")
    pod = cluster.api.sanitize_for_serialization(cluster.core.read_namespaced_pod(name,
                                                                                   namespace))
    claim = claim_of(cluster, namespace, claim_name(name))
    assert claim is not None
    # The hub loses track of the server (a crash, a pod that ended by itself) while its pod
    # and claim stay: here, stop it and leave the same pod and claim behind again.
    stack.stop(user, "gpu", wait=True)
    wait_until(lambda: not pod_exists(cluster, namespace, name), 60, "pod gone")
    wait_until(lambda: claim_of(cluster, namespace, claim_name(name)) is None, 60, "claim gone")
    stack.wait_no_ticket(user)
    old_uid = leave_behind(cluster, namespace, pod, claim)

    assert stack.start(user, "gpu", options).status_code in (201, 202)
    stack.wait_ready(user, "gpu")
    new = cluster.core.read_namespaced_pod(name, namespace)
    assert new.metadata.uid != old_uid
    now = claim_of(cluster, namespace, claim_name(name))
    assert now is not None, "the new pod lost its claim"
    assert [o["uid"] for o in now["metadata"]["ownerReferences"]] == [new.metadata.uid]
    assert now["status"]["allocation"]["devices"]["results"][0]["consumedCapacity"][
        "memory"] == "8Gi"
    assert new.spec.resource_claims[0].resource_claim_name == claim_name(name)
    assert "An earlier pod of this server still exists" in stack.log_tail(40000)
    assert len(stack.tickets(user)) == 1
    stack.stop(user, "gpu", wait=True)
    wait_until(lambda: claim_of(cluster, namespace, claim_name(name)) is None, 60, "claim gone")
    stack.wait_no_ticket(user)
