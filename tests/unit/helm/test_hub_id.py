"""The chart names its hub (issue 26 item 4): one id, the same for the hub and the service.

Rendered with the pinned helm of the test stack (no cluster).  The id is aispike.hubId, else
``<namespace>.<release>``; the hub's spawner gets it through jupyterhub_config.py (the admin's
hub.config wins), both pods through AISPIKE_HUB_ID (what ``Inventory.hub_id`` reads).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aispike_hub.kube.identity import hub_id_from_env, owns_unnamed_from_env

from .chart import helm, one, render, template_args
from .test_z2jh import computed, load_hub_config


def env_of(docs: list[dict[str, Any]], deployment: str) -> dict[str, str]:
    pod = one(docs, "Deployment", deployment)["spec"]["template"]["spec"]
    return {e["name"]: e.get("value", "") for e in pod["containers"][0]["env"]}


@pytest.mark.parametrize(("sets", "hub_id", "owns"), [
    ((), "hubns.rel", False),
    (("aispike.hubId=lab-1",), "lab-1", False),
    (("aispike.hubOwnsUnnamed=true",), "hubns.rel", True),
])
def test_the_hub_and_the_service_get_the_same_id(
        sets: tuple[str, ...], hub_id: str, owns: bool, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    docs = render(sets=sets)
    for deployment in ("rel-aispike-hub-hub", "rel-aispike-hub-service"):
        env = env_of(docs, deployment)
        assert hub_id_from_env(env) == hub_id, deployment
        assert owns_unnamed_from_env(env) is owns, deployment
    assert computed(docs)["hubId"] == hub_id
    config = load_hub_config(docs, tmp_path, monkeypatch)
    assert config.AISpikeSpawner.hub_id == hub_id
    assert config.AISpikeSpawner.hub_owns_unnamed is owns


def test_the_admins_hub_config_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = render(sets=("hub.config.AISpikeSpawner.hub_id=mine",))
    assert load_hub_config(docs, tmp_path, monkeypatch).AISpikeSpawner.hub_id == "mine"


def test_a_hub_id_that_is_not_a_label_value_is_refused() -> None:
    proc = helm(*template_args(sets=["aispike.hubId=Lab 1"]), check=False)
    assert proc.returncode != 0 and "/aispike/hubId" in proc.stderr, proc.stderr
