"""KubeSpawner and AISpikeSpawner side by side, without a cluster.

Only the node view is made up (a node watcher with one A100 node, and a stand-in placer for the
native backend); admission runs in process over sqlite; KubeSpawner's own ``_start`` is replaced
by what it does before it talks to the API server: ``load_user_options()``, the pod manifest
and ``modify_pod_hook``.  Both spawners thus build their pods from the same config and the same
``user_options`` as in a real start.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient
from kubespawner import KubeSpawner
from traitlets.config import Config

from aispike_hub.admission.inprocess import InProcessAdmission
from aispike_hub.kube.startflow import ServerStatus
from aispike_hub.model import GIB_IN_MIB, Gpu, Node, SliceRequest
from aispike_hub.placement.state import ClusterState
from aispike_hub.spawner.kube import AISpikeSpawner

A100 = "NVIDIA-A100-SXM4-80GB"
NODE = Node("n1", 32_000, 256 * GIB_IN_MIB,
            tuple(Gpu(i, A100, 80 * GIB_IN_MIB, uuid=f"u{i}") for i in range(2)))
KUBECONFIG = """apiVersion: v1
kind: Config
current-context: none
clusters: [{name: none, cluster: {server: "http://127.0.0.1:9"}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
users: [{name: none, user: {}}]
"""


class FakeWatcher:
    """The node watcher of non-native backends, with a fixed node list (and, for nodes without
    model labels, the models their DRA devices name: ``dra``, node name -> model)."""

    def __init__(self, nodes: list[Node], dra: dict[str, str] | None = None) -> None:
        self._nodes = nodes
        self.dra = dict(dra or {})
        self.first_load: asyncio.Future[None] | None = None

    def _objects(self) -> list[dict[str, Any]]:
        """Node objects made of the fixed nodes' labels and GPU counts."""
        return [{"metadata": {"name": n.name, "labels": dict(n.labels)},
                 "status": {"allocatable": {"nvidia.com/gpu": str(len(n.gpus))}}}
                for n in self._nodes]

    def nodes(self, *_args: Any) -> list[Node]:
        return list(self._nodes)

    def model_labels_in_use(self, labels: Any) -> tuple[str, ...]:
        """The real rule over the fixed nodes."""
        from aispike_hub.spawner.nodes import model_labels_in_use

        return model_labels_in_use(self._objects(), labels)

    def dra_only_nodes(self, labels: Any) -> dict[str, str]:
        """The real rule over the fixed nodes and their DRA models."""
        from aispike_hub.kube.dra_models import DraModel
        from aispike_hub.spawner.nodes import dra_only_nodes

        return dra_only_nodes(self._objects(), {n: DraModel(m) for n, m in self.dra.items()},
                              labels)


class FakePlacer:
    """The native backend's placer: pins without a cluster (the pod is left as it is)."""

    def __init__(self, nodes: list[Node]) -> None:
        self.inventory = SimpleNamespace(lock=threading.Lock(),
                                         state=lambda: ClusterState(nodes))
        self.calls: list[str] = []

    def pin(self, namespace: str, server: str, request: SliceRequest, **_kw: Any) -> Any:
        self.calls.append("pin")
        return SimpleNamespace(claim="claim", describe=lambda: "pinned", pod=lambda p: p)

    def release(self, namespace: str, server: str) -> None:
        self.calls.append("release")

    def adopt(self, pin: Any, pod_name: str, uid: str) -> None:
        self.calls.append("adopt")

    def status(self, namespace: str, server: str) -> ServerStatus:
        return ServerStatus("pending")


class Fakes(SimpleNamespace):
    """What the ``no_cluster`` fixture set up, and helpers to build and start spawners."""

    tmp: Path
    placer: FakePlacer
    watcher: FakeWatcher
    priority_classes: set[str]

    def user(self) -> Any:
        # No ``groups``: KubeSpawner's own tests use such users (real hub users have them).
        return SimpleNamespace(name="alice", id=1, url="/user/alice/", escaped_name="alice")

    def config(self, kube: dict[str, Any], aispike: dict[str, Any] | None = None) -> Config:
        config = Config()
        for key, value in kube.items():
            setattr(config.KubeSpawner, key, value)
        for key, value in (aispike or {}).items():
            setattr(config.AISpikeSpawner, key, value)
        config.InProcessAdmission.db_url = f"sqlite:///{self.tmp}/admission.sqlite"
        config.InProcessAdmission.poll_interval = 0.02
        return config

    def spawner(self, cls: type[Any], config: Config, user_options: dict[str, Any],
                **kw: Any) -> Any:
        orm = SimpleNamespace(name="", server=None, state=None, user_options=None)
        s = cls(user=self.user(), config=config, orm_spawner=orm, _mock=True, **kw)
        s.user_options = dict(user_options)
        return s

    async def kube_pod(self, config: Config, user_options: dict[str, Any]) -> dict[str, Any]:
        """KubeSpawner's pod for ``user_options``."""
        s = self.spawner(KubeSpawner, config, user_options)
        await s.load_user_options()
        return await _manifest(s)

    async def aispike_pod(self, config: Config, user_options: dict[str, Any],
                          ) -> tuple[dict[str, Any], Any]:
        """AISpikeSpawner's pod for ``user_options``, through its whole start (its
        ``apply_user_options`` first, as the hub calls it)."""
        s = self.spawner(AISpikeSpawner, config, user_options)

        async def no_leftovers() -> None:  # no cluster here: no earlier pod or claim to clear
            return None

        s._clear_leftovers = no_leftovers
        await s.apply_user_options(s, s.user_options)
        await s.start()
        return s.captured, s


async def _manifest(spawner: Any) -> dict[str, Any]:
    pod = await spawner.get_pod_manifest()
    if spawner.modify_pod_hook:  # as KubeSpawner's _start does
        pod = spawner.modify_pod_hook(spawner, pod)
        if asyncio.iscoroutine(pod):
            pod = await pod
    api = ApiClient()
    try:
        return dict(api.sanitize_for_serialization(pod))
    finally:
        await api.close()


@pytest.fixture
def no_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Fakes]:
    (tmp_path / "kubeconfig").write_text(KUBECONFIG)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    monkeypatch.delenv("AISPIKE_SERVICE_URL", raising=False)
    monkeypatch.setattr("kubernetes_asyncio.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION",
                        str(tmp_path / "kubeconfig"))
    fakes = Fakes(tmp=tmp_path, placer=FakePlacer([NODE]), watcher=FakeWatcher([NODE]),
                  priority_classes=set())
    monkeypatch.setattr(AISpikeSpawner, "_shared",
                        {"placer": fakes.placer, "nodes": fakes.watcher})

    async def node_watcher(self: AISpikeSpawner) -> Any:
        return fakes.watcher

    async def start(self: Any) -> str:
        await self.load_user_options()  # KubeSpawner's _start does this first
        self.captured = await _manifest(self)
        return "http://pod:8888"

    async def exists(self: AISpikeSpawner, name: str) -> bool:
        return name in fakes.priority_classes

    monkeypatch.setattr(AISpikeSpawner, "node_watcher", node_watcher)
    monkeypatch.setattr(KubeSpawner, "_start", start)
    monkeypatch.setattr(AISpikeSpawner, "priority_class_exists", exists)
    InProcessAdmission._controllers.clear()
    yield fakes
    InProcessAdmission._controllers.clear()
