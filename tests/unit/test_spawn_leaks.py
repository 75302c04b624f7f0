"""Nothing leaks: every way a start or a server ends gives its ticket and its GPU back (issue 26).

One table of leak paths, run against both spawners (``AISpikeSpawner`` on Kubernetes and the
one-machine ``LocalGPUSpawner``) with the real admission controller: in process over sqlite, or
behind a small HTTP stand-in of the AISpike service (the same controller) for the REST client.
What the hub does is done the way JupyterHub 6 does it: ``asyncio.wait_for(spawner.start(),
start_timeout)`` (a timeout cancels the start), ``spawner.stop()`` only when ``poll()`` says the
server runs, ``run_post_stop_hook()`` after every stop.  No cluster and no processes: the
placer is a stand-in recording its calls, KubeSpawner's and LocalProcessSpawner's own start
and stop are replaced.

| leak path | kube | local | expected |
|---|---|---|---|
| cancel while queued | x | x | ticket gone at once, never admitted later, no GPU |
| start timeout while queued | x | x | ticket gone at once, never admitted later |
| stop during start (queued) | x | x | start cancelled, ticket gone |
| stop during start (admitted, pod/process starting) | x | x | ticket and GPU gone |
| server found gone (the hub skips stop) | x | x | ticket and GPU gone (post-stop hook) |
| re-used ticket, changed request | x | x | the new request's size, not the old ticket's |
| stop while the service is unreachable | x | x | release kept on disk, sent before the next |
|  |  |  | admission (also after a hub restart) |
| hub restart with servers running | x | x | tickets kept (they still hold GPUs) |
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from jupyterhub.spawner import LocalProcessSpawner
from jupyterhub.utils import maybe_future
from kubespawner import KubeSpawner
from tornado import httpserver, web
from traitlets.config import Config

from aispike_hub.admission import pending as pending_module
from aispike_hub.admission.client import AdmissionClient
from aispike_hub.admission.controller import AdmissionController
from aispike_hub.admission.inprocess import InProcessAdmission
from aispike_hub.admission.inventory import NodesInventory
from aispike_hub.admission.wire import request_from_dict
from aispike_hub.isolation_env import IsolationSettings
from aispike_hub.kube.startflow import ServerStatus
from aispike_hub.model import GIB_IN_MIB, Gpu, Node, SliceRequest
from aispike_hub.placement.state import ClusterState
from aispike_hub.quota import User, policy_from_dict
from aispike_hub.service.store import Store
from aispike_hub.spawner.kube import AISpikeSpawner
from aispike_hub.spawner.local import LocalGPUSpawner, slice_env

GIB = GIB_IN_MIB
MODEL = "NVIDIA A100-SXM4-80GB"
NODE = Node("box", 32_000, 256 * GIB, (Gpu(0, MODEL, 80 * GIB, uuid="u0"),))
KUBECONFIG = """apiVersion: v1
kind: Config
current-context: none
clusters: [{name: none, cluster: {server: "http://127.0.0.1:9"}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
users: [{name: none, user: {}}]
"""
KINDS = ("kube", "local")


# --- the stand-ins ----------------------------------------------------------------------------


class FakePlacer:
    """The placer calls the Kubernetes spawner makes, recorded ("pin 8192", "release")."""

    def __init__(self) -> None:
        self.inventory = SimpleNamespace(lock=threading.Lock(),
                                         state=lambda: ClusterState([NODE]),
                                         claim=lambda _ns, _name: None)
        self.calls: list[str] = []
        self.held: set[str] = set()
        """Pod names whose claim exists."""

    def pin(self, namespace: str, server: str, request: SliceRequest, **_kw: Any) -> Any:
        self.calls.append(f"pin {request.gpu_memory_mib}")
        self.held.add(server)
        return SimpleNamespace(claim="claim", describe=lambda: "pinned", pod=lambda p: p)

    def release(self, namespace: str, server: str) -> None:
        self.calls.append("release")
        self.held.discard(server)

    def adopt(self, pin: Any, pod_name: str, uid: str) -> None:
        pass

    def status(self, namespace: str, server: str) -> ServerStatus:
        return ServerStatus("pending")


class World:
    """One test's hub side: its admission, its spawners' stand-ins, its clock of the start."""

    def __init__(self, kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.kind = kind
        self.tmp_path = tmp_path
        self.monkeypatch = monkeypatch
        self.start_seconds = 0.0
        self.placer = FakePlacer()
        self.config = Config()
        self.config.InProcessAdmission.db_url = f"sqlite:///{tmp_path}/admission.sqlite"
        self.config.InProcessAdmission.queue_timeout = 60
        self.config.InProcessAdmission.poll_interval = 0.02
        self.admission_class: type = InProcessAdmission
        if kind == "kube":
            self._kube()
        else:
            self._local()

    def _kube(self) -> None:
        mp = self.monkeypatch
        (self.tmp_path / "kubeconfig").write_text(KUBECONFIG)
        mp.setenv("KUBECONFIG", str(self.tmp_path / "kubeconfig"))
        mp.setattr("kubernetes_asyncio.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION",
                   str(self.tmp_path / "kubeconfig"))
        world = self

        async def start(self: AISpikeSpawner) -> str:
            await asyncio.sleep(world.start_seconds)
            return "http://pod:8888"

        async def nothing(self: Any, *_a: Any, **_kw: Any) -> None:
            return None

        mp.setattr(KubeSpawner, "_start", start)
        mp.setattr(KubeSpawner, "stop", nothing)
        mp.setattr(KubeSpawner, "_start_watching_pods", nothing)
        mp.setattr(AISpikeSpawner, "pod_reflector", SimpleNamespace(pods={}))
        mp.setitem(AISpikeSpawner._shared, "placer", self.placer)
        self.config.AISpikeSpawner.gpu_memory_gib = {"A100": 80}

    def _local(self) -> None:
        mp = self.monkeypatch
        world = self
        mp.setattr(LocalGPUSpawner, "_held", {})

        async def start(self: LocalGPUSpawner) -> tuple[str, int]:
            await asyncio.sleep(world.start_seconds)
            self.pid = 4242
            return ("127.0.0.1", 9999)

        async def stop(self: LocalGPUSpawner, now: bool = False) -> None:
            self.pid = 0

        mp.setattr(LocalProcessSpawner, "start", start)
        mp.setattr(LocalProcessSpawner, "stop", stop)

    def spawner(self, user: str, server: str = "", gpu_gib: int = 40) -> Any:
        hub_user = SimpleNamespace(name=user, groups=[], url=f"/user/{user}/", escaped_name=user,
                                   id=1)
        orm = SimpleNamespace(name=server, server=None, state=None, user_options=None)
        if self.kind == "kube":
            s = AISpikeSpawner(user=hub_user, config=self.config, orm_spawner=orm,
                               admission_class=self.admission_class)
        else:
            s = LocalGPUSpawner(user=hub_user, config=self.config, orm_spawner=orm,
                                admission_class=self.admission_class,
                                simulated_gpus=f"1x {MODEL} 80GB", node_name="box",
                                machine_cpus=32.0, machine_memory_gib=256)
        s.user_options = {"gpu_gib": gpu_gib}
        return s

    def admission(self) -> Any:
        return self.spawner("nobody").admission

    async def state(self, user: str, server: str = "") -> str:
        return str((await self.admission().status(user, server))["state"])

    async def fill_the_gpu(self, user: str = "bob") -> None:
        whole = SliceRequest(gpu_count=1, cpu_milli=1000, memory_mib=GIB)
        assert (await self.admission().admit(user, "", [], whole))["state"] == "admitted"

    def holds_gpu(self, spawner: Any) -> bool:
        """Whether the spawner side still holds the server's GPU (claim / slice)."""
        if self.kind == "kube":
            return spawner.pod_name in self.placer.held
        return spawner.key in LocalGPUSpawner._held

    async def hub_stop(self, spawner: Any, running: bool) -> None:
        """``User.stop`` of JupyterHub 6: ``stop()`` only when ``poll()`` says it runs, then
        the post-stop hook."""
        if running:
            await spawner.stop()
        await maybe_future(spawner.run_post_stop_hook())


@pytest.fixture(params=KINDS)
def world(request: pytest.FixtureRequest, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> World:
    return World(request.param, tmp_path, monkeypatch)


async def until(check: Callable[[], Awaitable[bool]], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def queued_start(world: World, user: str = "alice") -> tuple[Any, asyncio.Future[Any]]:
    """A start of ``user`` waiting in the queue behind bob's whole GPU."""
    await world.fill_the_gpu()
    spawner = world.spawner(user)
    future = spawner.start()

    async def queued() -> bool:
        return await world.state(user) == "queued"

    await until(queued)
    return spawner, future


async def never_admitted_later(world: World, user: str = "alice") -> None:
    """Bob's server goes: a ticket left behind would now be admitted with no server."""
    assert await world.admission().release("bob", "")
    await asyncio.sleep(0.2)
    assert await world.state(user) == "unknown"


# --- the table --------------------------------------------------------------------------------


def test_cancel_while_queued(world: World) -> None:
    async def scenario() -> None:
        spawner, future = await queued_start(world)
        future.cancel()  # the user's cancel: JupyterHub cancels the spawn
        with pytest.raises(asyncio.CancelledError):
            await future
        assert await world.state("alice") == "unknown"
        await world.hub_stop(spawner, running=False)  # poll(): nothing runs
        await never_admitted_later(world)
        assert not world.holds_gpu(spawner)

    asyncio.run(scenario())


def test_start_timeout_while_queued(world: World) -> None:
    async def scenario() -> None:
        await world.fill_the_gpu()
        spawner = world.spawner("alice")
        with pytest.raises(asyncio.TimeoutError):  # what JupyterHub 6's User.spawn does
            await asyncio.wait_for(spawner.start(), timeout=0.5)
        assert await world.state("alice") == "unknown"  # at once, before the hub's stop
        await world.hub_stop(spawner, running=False)
        await never_admitted_later(world)

    asyncio.run(scenario())


def test_stop_during_a_queued_start(world: World) -> None:
    async def scenario() -> None:
        spawner, future = await queued_start(world)
        await spawner.stop(now=True)
        assert future.cancelled()
        assert await world.state("alice") == "unknown"
        await never_admitted_later(world)
        assert not world.holds_gpu(spawner)

    asyncio.run(scenario())


def test_stop_while_the_server_starts_after_admission(world: World) -> None:
    async def scenario() -> None:
        world.start_seconds = 60
        spawner = world.spawner("alice")
        future = spawner.start()

        async def placed() -> bool:
            return world.holds_gpu(spawner)

        await until(placed)
        assert await world.state("alice") == "admitted"
        await spawner.stop(now=True)
        assert future.done()
        assert await world.state("alice") == "unknown"
        assert not world.holds_gpu(spawner)

    asyncio.run(scenario())


def test_a_server_found_gone_gives_everything_back(world: World) -> None:
    async def scenario() -> None:
        spawner = world.spawner("alice")
        await spawner.start()
        assert await world.state("alice") == "admitted" and world.holds_gpu(spawner)
        # The pod ended / the process died: poll() says so, the hub skips stop().
        await world.hub_stop(spawner, running=False)
        assert await world.state("alice") == "unknown"
        assert not world.holds_gpu(spawner)

    asyncio.run(scenario())


def test_a_normal_stop_releases_once(world: World) -> None:
    async def scenario() -> None:
        spawner = world.spawner("alice")
        await spawner.start()
        calls: list[str] = []
        real = world.admission_class.release

        async def counting(self: Any, user: str, server: str) -> bool:
            calls.append(user)
            return bool(await real(self, user, server))

        world.monkeypatch.setattr(world.admission_class, "release", counting)
        await world.hub_stop(spawner, running=True)
        assert calls == ["alice"]  # the post-stop hook does not ask again
        assert await world.state("alice") == "unknown"

    asyncio.run(scenario())


def test_a_re_used_ticket_follows_the_new_request(world: World) -> None:
    async def scenario() -> None:
        first = world.spawner("bob", gpu_gib=8)
        await first.start()
        # The hub lost track of the server (no stop): its 8 GiB ticket is still held.
        ticket = await world.admission().status("bob", "")
        assert ticket["charge"]["gpu_memory_mib"] == 8 * GIB
        if world.kind == "local":
            world.monkeypatch.setattr(LocalGPUSpawner, "_held", {})
        second = world.spawner("bob", gpu_gib=4)
        await second.start()
        ticket = await world.admission().status("bob", "")
        assert ticket["charge"]["gpu_memory_mib"] == 4 * GIB
        assert ticket["assignment"]["gpu_memory_mib"] == [4 * GIB]
        if world.kind == "kube":
            assert world.placer.calls[-1] == f"pin {4 * GIB}"
            assert second.environment["AISPIKE_GPU_MEMORY_MIB"] == str(4 * GIB)
        else:
            assert second.assignment.gpu_memory_mib == (4 * GIB,)
            env = slice_env(second.node(), second.assignment, IsolationSettings(),
                            second._request)
            assert env["AISPIKE_GPU_MEMORY_LIMIT"] == str(4 * GIB)

    asyncio.run(scenario())


# --- the service unreachable: releases kept and sent again -----------------------------------


class Service:
    """The AISpike service's admission API, enough of it, over the real controller."""

    def __init__(self, tmp_path: Path) -> None:
        self.controller = AdmissionController(
            Store(f"sqlite:///{tmp_path}/service.sqlite"), NodesInventory(lambda: [NODE]),
            policy_from_dict({}))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}/services/aispike/"
        self.server: httpserver.HTTPServer | None = None

    def up(self) -> None:
        controller = self.controller

        class Admissions(web.RequestHandler):
            def post(self) -> None:
                doc = json.loads(self.request.body)
                user = User(doc["user"], frozenset(doc.get("groups") or ()))
                ticket = controller.admit(user, doc["server"],
                                          request_from_dict(doc["request"]), "hub")
                self.write(ticket.as_dict())

        class One(web.RequestHandler):
            def get(self, user: str, server: str) -> None:
                controller.process()
                self.write(controller.status(user, server).as_dict())

            def delete(self, user: str, server: str) -> None:
                self.write({"released": controller.release(user, server, "hub")})

        class Fit(web.RequestHandler):
            def post(self) -> None:
                doc = json.loads(self.request.body)
                self.write(controller.fit(User(doc["user"]), request_from_dict(doc["request"])))

        app = web.Application([
            (r"/services/aispike/api/admissions", Admissions),
            (r"/services/aispike/api/admissions/([^/]*)/([^/]*)", One),
            (r"/services/aispike/api/fit", Fit),
        ])
        self.server = app.listen(self.port, "127.0.0.1")

    async def down(self) -> None:
        assert self.server is not None
        self.server.stop()
        await self.server.close_all_connections()
        self.server = None

    def state(self, user: str, server: str = "") -> str:
        return self.controller.status(user, server).state


@pytest.fixture
def service(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Service:
    svc = Service(tmp_path)
    world.admission_class = AdmissionClient
    world.config.AdmissionClient.url = svc.url
    world.config.AdmissionClient.api_token = "t"
    world.config.AdmissionClient.poll_interval = 0.02
    world.config.AdmissionClient.request_timeout = 5
    world.config.AdmissionClient.release_retry_interval = 0.2
    world.config.AdmissionClient.pending_releases_file = str(tmp_path / "pending.json")
    monkeypatch.setattr(pending_module, "_by_path", {})
    return svc


def test_a_stop_while_the_service_is_unreachable_is_released_later(
        world: World, service: Service, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        service.up()
        kept, stopped = world.spawner("keeps"), world.spawner("alice", "", gpu_gib=8)
        await kept.start()
        await stopped.start()
        assert service.state("alice") == service.state("keeps") == "admitted"
        await service.down()  # hub shutdown: JupyterHub stops its services first
        await world.hub_stop(stopped, running=True)  # ... then the servers
        assert not world.holds_gpu(stopped)
        saved = json.loads((tmp_path / "pending.json").read_text())
        assert [(p["user"], p["server"]) for p in saved["pending"]] == [("alice", "")]

        # A new hub process (nothing in memory) with the service back: the first call to the
        # service sends the kept release before anything else.
        monkeypatch.setattr(pending_module, "_by_path", {})
        service.up()
        assert service.state("alice") == "admitted"  # the leak, until the release arrives
        later = world.spawner("carol", gpu_gib=8)
        await later.start()
        assert service.state("alice") == "unknown"
        assert not json.loads((tmp_path / "pending.json").read_text())["pending"]
        # The server that kept running across the restart keeps its ticket (it holds a GPU).
        assert service.state("keeps") == "admitted"
        await service.down()

    asyncio.run(scenario())


def test_a_release_kept_while_the_service_is_down_is_retried_while_the_hub_runs(
        world: World, service: Service, tmp_path: Path) -> None:
    async def scenario() -> None:
        service.up()
        spawner = world.spawner("alice", gpu_gib=8)
        await spawner.start()
        await service.down()
        await world.hub_stop(spawner, running=True)
        assert (tmp_path / "pending.json").exists()
        service.up()  # back a little later: the retry loop sends it on its own

        async def released() -> bool:
            return service.state("alice") == "unknown"

        await until(released, 10)
        await service.down()

    asyncio.run(scenario())


def test_a_kept_release_never_takes_the_ticket_of_the_servers_next_start(
        world: World, service: Service, tmp_path: Path) -> None:
    async def scenario() -> None:
        service.up()
        spawner = world.spawner("alice", gpu_gib=8)
        await spawner.start()
        await service.down()
        await world.hub_stop(spawner, running=True)
        service.up()
        if world.kind == "local":
            world.monkeypatch.setattr(LocalGPUSpawner, "_held", {})
        again = world.spawner("alice", gpu_gib=8)
        await again.start()  # the kept release goes first, then the new admission
        assert service.state("alice") == "admitted"
        await asyncio.sleep(0.5)  # the retry loop has nothing left to send
        assert service.state("alice") == "admitted"
        await service.down()

    asyncio.run(scenario())
