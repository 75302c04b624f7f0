"""The quota table (test_quota_table.CASES) through both spawners: Kubernetes and local.

Each row runs through a spawner's own admission (in-process, the service's controller) over the
spawner's own view of the GPUs, with the row's usage as admitted servers: a refusal is a 403
``SpawnException`` with the row's phrases, a queued request one that gave up (503), an admitted
one a ticket; on the local spawner the admitted slice is then placed on this machine's GPUs
where the admission put it.  No cluster: the Kubernetes spawner gets a kubeconfig naming a
server that is never contacted, and its node view is a fixed node.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from jupyterhub.spawner import SpawnException
from test_quota_table import CASES, Case
from traitlets.config import Config

from aispike_hub.admission.hub import admit_or_raise
from aispike_hub.admission.inprocess import InProcessAdmission
from aispike_hub.model import GIB_IN_MIB, Gpu, Node
from aispike_hub.quota import Verdict
from aispike_hub.service.store import ReservationRow, utcnow

KINDS = ("kube", "local")
# Every GPU holds 80 GiB, as in the table's cluster view; the models are the table's.
_MODELS = ["NVIDIA A100-SXM4-80GB"] * 4 + ["NVIDIA H100 80GB HBM3"] * 2 + ["T4"] * 2
ROOMY = Node("table-gpu", 256_000, 2048 * GIB_IN_MIB,
             tuple(Gpu(i, m, 80 * GIB_IN_MIB, uuid=f"GPU-{i}") for i, m in enumerate(_MODELS)))
FULL = Node("table-gpu", 256_000, 2048 * GIB_IN_MIB, ())
"""``fits=False`` rows: nothing can be placed."""

KUBECONFIG = """apiVersion: v1
kind: Config
current-context: none
clusters: [{name: none, cluster: {server: "http://127.0.0.1:9"}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
users: [{name: none, user: {}}]
"""


def _spawner(kind: str, case: Case, node: Node, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch) -> Any:
    config = Config()
    config.InProcessAdmission.db_url = f"sqlite:///{tmp_path}/admission.sqlite"
    config.InProcessAdmission.policy = case.policy
    config.InProcessAdmission.queue_timeout = 0.3
    config.InProcessAdmission.poll_interval = 0.05
    user = SimpleNamespace(name=case.user, groups=[SimpleNamespace(name=g) for g in case.groups],
                           url=f"/user/{case.user}/", escaped_name=case.user, id=1)
    server = "" if case.id == "same-server-not-counted-twice" else "new"
    orm = SimpleNamespace(name=server, server=None, state=None, user_options=None)
    if kind == "kube":
        from aispike_hub.spawner.kube import AISpikeSpawner

        (tmp_path / "kubeconfig").write_text(KUBECONFIG)
        monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
        monkeypatch.setattr("kubernetes_asyncio.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION",
                            str(tmp_path / "kubeconfig"))
        monkeypatch.setitem(AISpikeSpawner._shared, "nodes",
                            SimpleNamespace(nodes=lambda *_a: [node]))
        spawner = AISpikeSpawner(user=user, config=config, admission_class=InProcessAdmission,
                                 orm_spawner=orm)
    else:
        from aispike_hub.spawner.local import LocalGPUSpawner

        spawner = LocalGPUSpawner(user=user, config=config, admission_class=InProcessAdmission,
                                  node_name=node.name, orm_spawner=orm)
        spawner.node = lambda: node
        monkeypatch.setattr(LocalGPUSpawner, "_held", {})
    return spawner


def _load_usage(admission: InProcessAdmission, case: Case) -> None:
    store = admission.controller.store
    with store.session() as s:
        for i, sv in enumerate(case.usage):
            s.add(ReservationRow(
                user=sv.user, server=sv.name, state="admitted", seq=i + 1,
                groups=sorted(sv.groups), request={}, charge=sv.charge.as_dict(), tier=sv.tier,
                priority=sv.priority, borrowed=sv.borrowed, assignment=None, reasons=[],
                preempting=[], created_at=utcnow(), admitted_at=utcnow()))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_quota_table_through_the_spawner(kind: str, case: Case, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        spawner = _spawner(kind, case, ROOMY if case.fits else FULL, tmp_path, monkeypatch)
        admission = spawner.admission
        _load_usage(admission, case)

        async def start() -> dict[str, Any]:
            return await admit_or_raise(admission, spawner.user.name, spawner.name,
                                        [g.name for g in spawner.user.groups], case.request,
                                        "the request", lambda _message: None)

        if case.verdict is Verdict.ADMIT:
            ticket = await start()
            assert ticket["state"] == "admitted", ticket
            assert ticket["borrowed"] == case.borrowed, ticket
            if kind == "local" and case.request.gpu_count:
                placed = spawner.place(case.request, ticket["assignment"])
                if ticket["assignment"]:  # not for a row of the table's usage (no assignment)
                    assert list(placed.gpu_indices) == ticket["assignment"]["gpu_indices"]
            return
        with pytest.raises(SpawnException) as raised:
            await start()
        message = str(raised.value)
        if case.verdict is Verdict.REFUSE:
            assert raised.value.status_code == 403, message
        else:
            assert raised.value.status_code == 503 and "gave up" in message, message
        if case.fits:  # without room the reasons are the placement core's, not the table's
            for phrase in case.says:
                assert phrase in message, f"{phrase!r} not in {message!r}"

    asyncio.run(scenario())
