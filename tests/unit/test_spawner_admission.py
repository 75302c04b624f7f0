"""In-process admission answers like the service's client; the spawner's settings are documented.

No cluster and no kubeconfig: the in-process admission runs the service's controller over a
sqlite file and a fixed node list.
"""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path
from typing import Any

from aispike_hub.admission.client import AdmissionClient
from aispike_hub.admission.inprocess import InProcessAdmission
from aispike_hub.admission.protocol import Admission
from aispike_hub.model import GIB_IN_MIB, Gpu, Node, SliceRequest

NODES = [Node("n1", 32_000, 256 * GIB_IN_MIB, (Gpu(0, "A100", 80 * GIB_IN_MIB, uuid="u0"),))]


def _admission(tmp_path: Path, policy: dict[str, Any]) -> InProcessAdmission:
    return InProcessAdmission(nodes=lambda: NODES, db_url=f"sqlite:///{tmp_path}/a.sqlite",
                              policy=policy, poll_interval=0.01)


def _slice(gib: int) -> SliceRequest:
    return SliceRequest(gpu_count=1, gpu_memory_mib=gib * GIB_IN_MIB, cpu_milli=1000,
                        memory_mib=GIB_IN_MIB)


def test_both_implementations_offer_the_same_calls() -> None:
    for name in ("admit", "status", "release", "fit", "follow"):
        assert hasattr(InProcessAdmission, name) and hasattr(AdmissionClient, name), name
        ours = inspect.signature(getattr(InProcessAdmission, name))
        theirs = inspect.signature(getattr(AdmissionClient, name))
        assert list(ours.parameters) == list(theirs.parameters), name
    assert {"admit", "status", "release", "fit", "follow"} <= set(dir(Admission))


def test_in_process_admission_admits_refuses_and_releases(tmp_path: Path) -> None:
    admission = _admission(tmp_path, {"users": {"ada": {"quota": {"gpu_memory": "16Gi"}}}})

    async def scenario() -> None:
        first = await admission.admit("ada", "train", [], _slice(8))
        assert first["state"] == "admitted" and first["assignment"]["node"] == "n1"
        assert first["priority_class"] == "aispike-normal"
        assert [t["state"] async for t in admission.follow(first)] == ["admitted"]
        again = await admission.admit("ada", "train", [], _slice(8))  # idempotent
        assert again["state"] == "admitted"
        over = await admission.admit("ada", "big", [], _slice(12))
        assert over["state"] == "refused"
        assert "you use 8 of 16 GiB GPU memory in server 'train'" in over["reasons"][0]
        fit = await admission.fit("ada", [], _slice(4))
        assert fit["verdict"] == "admit" and fit["fits_now"]
        assert fit["limits"]["gpu_memory_mib"] == 16 * GIB_IN_MIB
        assert await admission.release("ada", "train")
        assert not await admission.release("ada", "train")
        assert (await admission.status("ada", "train"))["state"] == "unknown"
        assert (await admission.admit("ada", "big", [], _slice(12)))["state"] == "admitted"

    asyncio.run(scenario())


def test_a_request_that_does_not_fit_waits_then_gives_up(tmp_path: Path) -> None:
    admission = _admission(tmp_path, {})
    admission.queue_timeout = 0.05

    async def scenario() -> None:
        ticket = await admission.admit("bob", "", [], SliceRequest(gpu_count=2))
        assert ticket["state"] == "queued"
        states = [t["state"] async for t in admission.follow(ticket)]
        assert states[0] == "queued" and states[-1] == "expired"

    asyncio.run(scenario())


def test_every_spawner_setting_has_help() -> None:
    from aispike_hub.spawner.kube import AISpikeSpawner
    from aispike_hub.spawner.settings import SpawnerFormSettings

    ours = {name: trait for name, trait in AISpikeSpawner.class_traits(config=True).items()
            if name in AISpikeSpawner.__dict__ or name in SpawnerFormSettings.__dict__}
    assert {"backend", "images", "datasets", "admission_class", "unschedulable_timeout",
            "mig_profiles", "fit_preview_service", "cpu_max"} <= set(ours)
    for name, trait in ours.items():
        assert len(trait.help) > 20, name
    for name, trait in InProcessAdmission.class_traits(config=True).items():
        assert trait.help, name
