"""AISpikeSpawner's start gives everything back on every way out (issue #26).

A cancel (the user's, or the hub's start timeout) or a stop while the ticket is still queued,
and any failure after the admission was asked, release the ticket at once, and the claim too
once one was pinned.  No cluster: the placer is a stand-in, KubeSpawner's own start and stop
are replaced, and admission runs in process over sqlite.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from jupyterhub.utils import exponential_backoff
from kubespawner import KubeSpawner
from traitlets.config import Config

from aispike_hub.admission.inprocess import InProcessAdmission
from aispike_hub.kube.startflow import ServerStatus
from aispike_hub.model import GIB_IN_MIB, Gpu, Node, SliceRequest
from aispike_hub.placement.state import ClusterState
from aispike_hub.spawner.kube import AISpikeSpawner

NODE = Node("n1", 32_000, 256 * GIB_IN_MIB, (Gpu(0, "A100", 80 * GIB_IN_MIB, uuid="u0"),))
KUBECONFIG = """apiVersion: v1
kind: Config
current-context: none
clusters: [{name: none, cluster: {server: "http://127.0.0.1:9"}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
users: [{name: none, user: {}}]
"""


class FakePlacer:
    """What the spawner calls of the placer, recording the calls."""

    def __init__(self, pin_seconds: float = 0.0) -> None:
        self.claims: dict[str, Any] = {}
        """Claims the inventory sees, by name (a leftover of an earlier start)."""
        self.inventory = SimpleNamespace(lock=threading.Lock(),
                                         state=lambda: ClusterState([NODE]),
                                         claim=lambda _ns, name: self.claims.get(name))
        self.pin_seconds = pin_seconds
        self.pinning = threading.Event()
        self.calls: list[str] = []

    def pin(self, namespace: str, server: str, request: SliceRequest, **_kw: Any) -> Any:
        self.pinning.set()
        time.sleep(self.pin_seconds)
        self.calls.append("pin")
        return SimpleNamespace(claim="claim", describe=lambda: "pinned", pod=lambda p: p)

    def release(self, namespace: str, server: str) -> None:
        self.calls.append("release")
        self.claims.clear()

    def adopt(self, pin: Any, pod_name: str, uid: str) -> None:
        self.calls.append("adopt")

    def disown(self, pin: Any) -> None:
        self.calls.append("disown")

    def status(self, namespace: str, server: str) -> ServerStatus:
        return ServerStatus("pending")


@pytest.fixture
def kube(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> SimpleNamespace:
    """KubeSpawner's start (waits ``start_seconds``, or raises ``start_error``) and stop."""
    (tmp_path / "kubeconfig").write_text(KUBECONFIG)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    monkeypatch.setattr("kubernetes_asyncio.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION",
                        str(tmp_path / "kubeconfig"))
    fake = SimpleNamespace(start_seconds=0.0, start_error=None, stops=0, stop_inside=False,
                           stop_in_retry=False, on_start=None)

    async def start(self: AISpikeSpawner) -> str:
        if fake.on_start is not None:  # the pod appears once KubeSpawner creates it
            fake.on_start()
        if fake.stop_inside:  # KubeSpawner's retry after a 409 stops the old pod itself
            await self.stop(True)
        if fake.stop_in_retry:
            # KubeSpawner's pod create finding the server's old pod (409): it stops the old
            # pod and asks to be retried; JupyterHub's exponential_backoff runs each try as a
            # task of its own (maybe_future)
            tries: list[str] = []

            async def create() -> bool:
                tries.append("create")
                if len(tries) == 1:
                    await self.stop(True)
                    return False
                return True

            await exponential_backoff(create, "pod not created", start_wait=0.01, timeout=30)
        await asyncio.sleep(fake.start_seconds)
        if fake.start_error is not None:
            raise fake.start_error
        return "http://pod:8888"

    async def stop(self: AISpikeSpawner, now: bool = False) -> None:
        fake.stops += 1

    async def watching(self: AISpikeSpawner, replace: bool = False) -> None:
        return None

    monkeypatch.setattr(KubeSpawner, "_start", start)
    monkeypatch.setattr(KubeSpawner, "stop", stop)
    monkeypatch.setattr(KubeSpawner, "_start_watching_pods", watching)
    monkeypatch.setattr(AISpikeSpawner, "pod_reflector", SimpleNamespace(pods={}))
    return fake


def _spawner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, placer: FakePlacer,
             gpu_gib: int = 40) -> AISpikeSpawner:
    config = Config()
    config.InProcessAdmission.db_url = f"sqlite:///{tmp_path}/admission.sqlite"
    config.InProcessAdmission.queue_timeout = 60
    config.InProcessAdmission.poll_interval = 0.02
    monkeypatch.setitem(AISpikeSpawner._shared, "placer", placer)
    user = SimpleNamespace(name="alice", groups=[], url="/user/alice/", escaped_name="alice",
                           id=1)
    orm = SimpleNamespace(name="", server=None, state=None, user_options=None)
    spawner = AISpikeSpawner(user=user, config=config, admission_class=InProcessAdmission,
                             orm_spawner=orm)
    spawner.user_options = {"gpu_gib": gpu_gib}
    return spawner


async def _fill_the_gpu(spawner: AISpikeSpawner) -> None:
    whole = SliceRequest(gpu_count=1, cpu_milli=1000, memory_mib=GIB_IN_MIB)
    assert (await spawner.admission.admit("bob", "", [], whole))["state"] == "admitted"


async def _state(spawner: AISpikeSpawner) -> str:
    return str((await spawner.admission.status("alice", ""))["state"])


async def _until(check: Any, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_a_cancelled_queued_start_gives_its_ticket_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kube: SimpleNamespace) -> None:
    async def scenario() -> None:
        placer = FakePlacer()
        spawner = _spawner(tmp_path, monkeypatch, placer)
        await _fill_the_gpu(spawner)
        future = spawner.start()

        async def queued() -> bool:
            return await _state(spawner) == "queued"

        await _until(queued)
        future.cancel()  # what the hub's start timeout (asyncio.wait_for) does
        with pytest.raises(asyncio.CancelledError):
            await future
        assert await _state(spawner) == "unknown"
        assert placer.calls == []  # never pinned: no claim to release

    asyncio.run(scenario())


def test_stop_while_queued_cancels_the_start_and_releases_at_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kube: SimpleNamespace) -> None:
    async def scenario() -> None:
        placer = FakePlacer()
        spawner = _spawner(tmp_path, monkeypatch, placer)
        await _fill_the_gpu(spawner)
        future = spawner.start()

        async def queued() -> bool:
            return await _state(spawner) == "queued"

        await _until(queued)
        await spawner.stop(now=True)
        assert future.cancelled()
        assert await _state(spawner) == "unknown"
        # Bob's server goes: Alice's cancelled start must not come back and take the GPU.
        assert await spawner.admission.release("bob", "")
        await asyncio.sleep(0.2)
        assert await _state(spawner) == "unknown"
        assert placer.calls.count("pin") == 0

    asyncio.run(scenario())


def test_a_failure_after_admission_releases_ticket_and_claim(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kube: SimpleNamespace) -> None:
    async def scenario() -> None:
        placer = FakePlacer()
        spawner = _spawner(tmp_path, monkeypatch, placer)
        kube.start_error = RuntimeError("the API server went away")
        with pytest.raises(RuntimeError, match="went away"):
            await spawner.start()
        assert await _state(spawner) == "unknown"
        assert placer.calls == ["pin", "release"]
        assert kube.stops >= 1  # the pod, if any, is deleted

    asyncio.run(scenario())


def test_a_cancel_while_the_pod_starts_releases_ticket_and_claim(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kube: SimpleNamespace) -> None:
    async def scenario() -> None:
        placer = FakePlacer()
        spawner = _spawner(tmp_path, monkeypatch, placer)
        kube.start_seconds = 60
        future = spawner.start()

        async def pinned() -> bool:
            return "pin" in placer.calls

        await _until(pinned)
        assert await _state(spawner) == "admitted"
        future.cancel()
        with pytest.raises(asyncio.CancelledError):
            await future
        assert await _state(spawner) == "unknown"
        assert placer.calls == ["pin", "release"]

    asyncio.run(scenario())


def test_a_cancel_during_the_pin_waits_for_the_claim_then_releases_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kube: SimpleNamespace) -> None:
    async def scenario() -> None:
        placer = FakePlacer(pin_seconds=0.3)
        spawner = _spawner(tmp_path, monkeypatch, placer)
        future = spawner.start()
        await asyncio.to_thread(placer.pinning.wait, 10)
        future.cancel()
        with pytest.raises(asyncio.CancelledError):
            await future
        # The claim the pin thread made is released after it was made, not before.
        assert placer.calls == ["pin", "release"]
        assert await _state(spawner) == "unknown"

    asyncio.run(scenario())


def test_kubespawners_own_stop_inside_the_start_does_not_end_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kube: SimpleNamespace) -> None:
    async def scenario() -> None:
        placer = FakePlacer()
        spawner = _spawner(tmp_path, monkeypatch, placer)
        kube.stop_inside = True
        assert await spawner.start() == "http://pod:8888"
        assert kube.stops == 1
        assert await _state(spawner) == "admitted"
        assert placer.calls == ["pin"]
        await spawner.stop()
        assert await _state(spawner) == "unknown"
        assert placer.calls == ["pin", "release"]

    asyncio.run(scenario())


@pytest.mark.parametrize("gpu_gib", [40, 0])
def test_kubespawners_409_retry_deletes_the_old_pod_and_the_start_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kube: SimpleNamespace,
        gpu_gib: int) -> None:
    """An old pod of the server still exists: KubeSpawner's create gets 409, stops (deletes) the
    old pod from a retry task of its own and tries again.  That stop must not cancel the start
    (which waits for the very task the stop runs in) nor give back its ticket or claim
    (KubeSpawner 7.1.0's test_spawn_component_label_and_other_labels hung on this)."""
    async def scenario() -> None:
        placer = FakePlacer()
        spawner = _spawner(tmp_path, monkeypatch, placer, gpu_gib)
        kube.stop_in_retry = True
        assert await asyncio.wait_for(spawner.start(), 20) == "http://pod:8888"
        assert kube.stops == 1
        assert await _state(spawner) == "admitted"
        assert placer.calls == (["pin"] if gpu_gib else [])
        await spawner.stop()
        assert await _state(spawner) == "unknown"
        assert kube.stops == 2

    asyncio.run(scenario())


def test_a_pod_replaced_inside_the_start_leaves_the_claim_to_the_next_pod(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kube: SimpleNamespace) -> None:
    """KubeSpawner's create timed out but the pod was made (a loaded API server); the start
    adopted that pod, then KubeSpawner's retry got 409 and deletes it.  The claim must be
    disowned before that delete (the garbage collector would take it with the old pod: the
    new pod's adopt then failed with a 404 and the start with it), and the new pod adopts it."""
    async def scenario() -> None:
        placer = FakePlacer()
        spawner = _spawner(tmp_path, monkeypatch, placer)
        pods: dict[str, Any] = {}
        key = f"{spawner.namespace}/{spawner.pod_name}"
        monkeypatch.setattr(AISpikeSpawner, "pod_reflector", SimpleNamespace(pods=pods))
        kube.start_seconds = 4.0
        original_stop = KubeSpawner.stop

        async def replace_pod(self: AISpikeSpawner, now: bool = False) -> None:
            await original_stop(self, now)
            pods[key] = _pending_pod(spawner, "uid-2", "")  # KubeSpawner's next create

        async def retry_after_409() -> None:
            while "adopt" not in placer.calls:  # the start adopts uid-1 first
                await asyncio.sleep(0.05)
            await spawner.stop(True)

        monkeypatch.setattr(KubeSpawner, "stop", replace_pod)
        kube.on_start = lambda: (pods.update({key: _pending_pod(spawner, "uid-1", "")}),
                                 asyncio.ensure_future(retry_after_409()))
        assert await asyncio.wait_for(spawner.start(), 20) == "http://pod:8888"
        assert placer.calls == ["pin", "adopt", "disown", "adopt"]
        assert await _state(spawner) == "admitted"

    asyncio.run(scenario())


def _pending_pod(spawner: AISpikeSpawner, uid: str, why: str) -> dict[str, Any]:
    return {"metadata": {"name": spawner.pod_name, "namespace": spawner.namespace, "uid": uid},
            "spec": {}, "status": {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "message": why}]}}


def test_the_watch_adopts_repins_and_gives_up_on_an_unschedulable_pod(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kube: SimpleNamespace) -> None:
    from jupyterhub.spawner import SpawnException

    async def scenario() -> None:
        placer = FakePlacer()
        verdicts = [ServerStatus("stale", "device gone")]
        placer.status = lambda *_a: verdicts.pop() if verdicts else ServerStatus("pending")

        def repin(namespace: str, server: str, reason: str, request: SliceRequest,
                  ask: Any = None) -> Any:
            placer.calls.append(f"repin: {reason}")
            return SimpleNamespace(claim="claim", describe=lambda: "pinned again")

        placer.repin = repin
        spawner = _spawner(tmp_path, monkeypatch, placer)
        spawner.unschedulable_timeout = 0.6
        kube.start_seconds = 60
        pods: dict[str, Any] = {}
        kube.on_start = lambda: pods.update({f"{spawner.namespace}/{spawner.pod_name}":
                                             _pending_pod(spawner, "uid-1",
                                                          "0/1 nodes are available")})
        monkeypatch.setattr(AISpikeSpawner, "pod_reflector", SimpleNamespace(pods=pods))
        with pytest.raises(SpawnException) as raised:
            await spawner.start()
        assert raised.value.status_code == 503
        assert "0/1 nodes are available" in str(raised.value)
        assert placer.calls == ["pin", "adopt", "repin: device gone", "release"]
        assert await _state(spawner) == "unknown"
        assert "Waiting for a node: 0/1 nodes are available" in spawner._messages

    asyncio.run(scenario())


def test_the_placers_ask_reaches_admission_from_its_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kube: SimpleNamespace) -> None:
    """``_admission_asker`` runs admission's ``place`` on the hub's loop for the placer's
    thread (in-process admission: the hub's default); the in-process admission places what the
    claim will hold (a 1.5 GiB slice as 2 GiB), so the placer keeps its decision."""
    async def scenario() -> None:
        spawner = _spawner(tmp_path, monkeypatch, FakePlacer())
        request = SliceRequest(gpu_memory_mib=1536)
        ticket = await spawner.admission.admit("alice", "", [], request)
        assert ticket["state"] == "admitted"
        assert ticket["assignment"]["gpu_memory_mib"] == [2 * GIB_IN_MIB]
        ask = spawner._admission_asker()
        answer = await asyncio.to_thread(ask, "n1")
        assert answer["placed"] and answer["assignment"]["node"] == "n1"
        assert answer["request"]["gpu_memory_mib"] == 2 * GIB_IN_MIB
        await spawner.admission.release("alice", "")
        answer = await asyncio.to_thread(ask, "")
        assert not answer["placed"] and answer["state"] == "unknown"

    asyncio.run(scenario())


class RecordingPlacer(FakePlacer):
    def __init__(self) -> None:
        super().__init__()
        self.hub_servers: list[str] = []

    def pin(self, namespace: str, server: str, request: SliceRequest, **kw: Any) -> Any:
        self.hub_servers.append(kw.get("hub_server", ""))
        return super().pin(namespace, server, request, **kw)


@pytest.mark.parametrize(("hub_id", "value"), [("lab-1", "lab-1:alice/"), ("", "alice/")])
def test_the_pod_and_the_claim_name_the_hub(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kube: SimpleNamespace,
        hub_id: str, value: str) -> None:
    """Issue 26 item 4: with a hub id, the claim's and the pod's aispike.io/hub-server name the
    hub (and the pod is labelled with it); without one, the value is the old ``user/server``."""
    from aispike_hub.contract import HUB_ID_LABEL
    from aispike_hub.kube.claims import HUB_SERVER_ANNOTATION

    monkeypatch.setenv("AISPIKE_HUB_ID", hub_id)

    async def scenario() -> None:
        placer = RecordingPlacer()
        spawner = _spawner(tmp_path, monkeypatch, placer)
        assert spawner.hub_id == hub_id
        await spawner.start()
        assert placer.hub_servers == [value]
        assert spawner.extra_annotations[HUB_SERVER_ANNOTATION] == value
        assert spawner.extra_labels.get(HUB_ID_LABEL) == (hub_id or None)

    asyncio.run(scenario())


def test_the_placers_ask_fails_closed_when_the_service_is_unreachable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kube: SimpleNamespace) -> None:
    from aispike_hub.admission.client import AdmissionClient
    from aispike_hub.kube.placer import PlacementRefused

    async def scenario() -> None:
        spawner = _spawner(tmp_path, monkeypatch, FakePlacer())
        spawner.admission_class = AdmissionClient
        spawner.config.AdmissionClient.url = "http://127.0.0.1:9/services/aispike/"
        spawner.config.AdmissionClient.pending_releases_file = ""
        spawner.config.AdmissionClient.request_timeout = 5.0
        ask = spawner._admission_asker()
        with pytest.raises(PlacementRefused) as refused:
            await asyncio.to_thread(ask, "")
        (reason,) = refused.value.reasons
        assert "could not place the server again" in reason and "not answering" in reason

    asyncio.run(scenario())


def test_a_hub_id_that_is_not_a_label_value_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kube: SimpleNamespace) -> None:
    from traitlets import TraitError

    async def scenario() -> None:
        spawner = _spawner(tmp_path, monkeypatch, FakePlacer())
        with pytest.raises(TraitError, match="hub_id"):
            spawner.hub_id = "Lab 1"

    asyncio.run(scenario())
