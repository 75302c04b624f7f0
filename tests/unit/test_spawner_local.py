"""The local spawner without a hub: simulated inventory, placement, environment, restarts."""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

import pytest

from aispike_hub.agent.dra import IsolationSettings
from aispike_hub.model import GIB_IN_MIB, SliceRequest
from aispike_hub.spawner.local import STATE_KEY, LocalGPUSpawner, slice_env
from aispike_hub.spawner.machine import InventoryError, parse_simulated


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LocalGPUSpawner, "_held", {})


def spawner(user: str, server: str = "") -> Any:
    return LocalGPUSpawner(
        user=SimpleNamespace(name=user, groups=[], url=f"/user/{user}/", escaped_name=user),
        orm_spawner=SimpleNamespace(name=server, server=None, state=None, user_options=None),
        simulated_gpus="2x A100 80GB", node_name="box", machine_cpus=32.0,
        machine_memory_gib=256)


def test_simulated_inventory_is_read_and_bad_ones_say_how() -> None:
    assert parse_simulated("2x A100 80GB + 1x T4 16GB") == [
        {"model": "A100 80GB", "memory": f"{80 * 1024}Mi", "count": 2},
        {"model": "T4 16GB", "memory": f"{16 * 1024}Mi", "count": 1}]
    with pytest.raises(InventoryError, match=r"write e\.g\. '2x A100 80GB'"):
        parse_simulated("lots of GPUs")
    node = spawner("ada").node()
    assert [g.memory_mib for g in node.gpus] == [80 * GIB_IN_MIB] * 2
    assert node.labels["aispike.io/inventory"] == "simulated"
    assert "simulated" in spawner("ada").inventory_note()


def test_slices_are_placed_by_the_core_and_survive_a_hub_restart() -> None:
    request = SliceRequest(gpu_count=1, gpu_memory_mib=60 * GIB_IN_MIB)
    first = spawner("ada")
    first.hold(first.place(request))
    first.pid = os.getpid()
    state = first.get_state()
    assert state[STATE_KEY]["gpu_memory_mib"] == [60 * GIB_IN_MIB]
    second = spawner("bob")
    second.hold(second.place(request))  # 60 + 60 > 80: the other GPU
    assert first.assignment.gpu_indices != second.assignment.gpu_indices
    env = slice_env(second.node(), second.assignment, IsolationSettings(), request)
    gpu = second.node().gpus[second.assignment.gpu_indices[0]]
    assert env["CUDA_VISIBLE_DEVICES"] == env["NVIDIA_VISIBLE_DEVICES"] == gpu.uuid
    assert env["AISPIKE_GPU_MEMORY_LIMIT"] == str(60 * GIB_IN_MIB)
    assert env["CUDA_DEVICE_MEMORY_LIMIT_0"] == f"{60 * GIB_IN_MIB}m"
    assert env["AISPIKE_BACKEND"] == "local"

    LocalGPUSpawner._held.clear()  # a new hub process: nothing in memory ...
    restored = spawner("ada")
    restored.load_state(state)  # ... until the running servers' states are loaded
    assert restored.assignment == first.assignment
    third = spawner("cy")
    with pytest.raises(Exception, match="No room on box"):
        third.place(SliceRequest(gpu_count=2))
    restored.clear_state()  # the process is gone: its slice is free again
    assert third.place(SliceRequest(gpu_count=2)).gpu_indices == (0, 1)


def test_a_state_without_a_process_holds_nothing() -> None:
    s = spawner("ada")
    s.load_state({STATE_KEY: {"node": "box", "gpu_indices": [0], "gpu_memory_mib": [1024],
                              "cpu_milli": 0, "memory_mib": 0}})
    assert s.assignment is None and not LocalGPUSpawner._held


class _TokenUser(SimpleNamespace):
    """A hub user that mints tokens (and may be refused the groups scope)."""

    def new_api_token(self, note: str, expires_in: int, scopes: list[str]) -> str:
        if self.refuse and any(s.startswith("read:users:groups") for s in scopes):
            raise ValueError("not allowed")
        self.minted.append((note, expires_in, scopes))
        return f"tok-{len(self.minted)}"


def previewing(user: str, refuse: bool = False, **config: Any) -> Any:
    s = spawner(user)
    s.user = _TokenUser(name=user, groups=[], url=f"/user/{user}/", escaped_name=user,
                        refuse=refuse, minted=[])
    s.hub = SimpleNamespace(base_url="/prefix/hub/")
    for key, value in config.items():
        setattr(s, key, value)
    return s


def test_the_form_previews_fits_through_the_service_with_the_shared_token_rule() -> None:
    from aispike_hub.admission.hub import fit_preview

    s = previewing("ada", fit_token_seconds=600)
    preview = fit_preview(s)
    assert preview.url == "/prefix/services/aispike/api/fit" and preview.token == "tok-1"
    (_note, seconds, scopes), = s.user.minted
    assert seconds == 600 and scopes == ["access:services!service=aispike",
                                         "read:users:groups!user=ada"]
    # A user who may not read their groups still gets a preview (without group quotas).
    refused = previewing("bob", refuse=True)
    assert fit_preview(refused).token == "tok-1"
    assert refused.user.minted[0][2] == ["access:services!service=aispike"]
    assert fit_preview(previewing("cy", fit_preview_service="")).absent


def test_in_process_admission_says_why_the_form_has_no_live_preview() -> None:
    import asyncio
    import json
    import re

    from aispike_hub.admission.hub import PREVIEW_IN_PROCESS
    from aispike_hub.admission.inprocess import InProcessAdmission

    s = previewing("ada", admission_class=InProcessAdmission)
    s.config.InProcessAdmission.db_url = "sqlite://"
    html = asyncio.run(s.render_options_form())
    assert not s.user.minted  # no token for a preview nobody can answer
    config = json.loads(re.search(r'id="aispike-form-config">(.*?)</script>', html, re.S)[1])
    assert config["fitUrl"] == "" and config["fitAbsent"] == PREVIEW_IN_PROCESS
    assert "this hub admits servers itself" in html  # shown without script too
