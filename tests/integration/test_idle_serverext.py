"""GPU work as a jupyter-server ``*_last_activity``: a real jupyter server with the extension.

No hub needed: jupyter-server's ``/api/status`` reports the ``last_activity`` that
jupyterhub-singleuser sends to the hub, which is all the plain idle culler sees.  The agent is
the recorded one (tests/integration/recorded_agent.py).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from aispike_hub.service.idle import parse_time

from .conftest import _free_port, wait_until
from .recorded_agent import RecordedAgent


@pytest.fixture
def agent() -> Iterator[RecordedAgent]:
    agent = RecordedAgent().start()
    yield agent
    agent.stop()


def test_gpu_work_moves_the_servers_last_activity(agent: RecordedAgent, tmp_path: Path) -> None:
    agent.nodes = {"n1": [("ada", "train", "idle")]}
    port, token = _free_port(), secrets.token_hex(8)
    env = {**os.environ, "AISPIKE_AGENT_URL": agent.url("n1"), "JUPYTERHUB_USER": "ada",
           "JUPYTERHUB_SERVER_NAME": "train", "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt")}
    with open(tmp_path / "server.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter_server", f"--ServerApp.port={port}",
             "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}",
             "--ServerApp.open_browser=False", f"--ServerApp.root_dir={tmp_path}",
             "--ServerApp.jpserver_extensions=aispike_hub.serverext.gpu_activity=True",
             "--GpuActivity.interval=0.3", "--allow-root"],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    status_url = f"http://127.0.0.1:{port}/api/status"

    def last_activity() -> float | None:
        try:
            r = requests.get(status_url, headers={"Authorization": f"token {token}"}, timeout=2)
        except requests.RequestException:
            return None
        return parse_time(r.json()["last_activity"]) if r.status_code == 200 else None

    try:
        first = wait_until(last_activity, 60, "jupyter server to answer")
        # GPU memory held, nothing computed: the server's activity does not move.
        wait_until(lambda: agent.nodes and (last_activity() or 0) == first, 3, "stable")
        time.sleep(1.5)
        assert last_activity() == first
        # The recorded process computes (91 %): GPU work is activity.
        agent.nodes = {"n1": [("ada", "train", "busy")]}
        moved = wait_until(lambda: (t := last_activity()) and t > first + 1 and t, 15,
                           "last_activity to follow the GPU")
        assert moved > first
        # Another user's busy GPU is not this server's activity.
        agent.nodes = {"n1": [("bob", "train", "busy"), ("ada", "", "busy")]}
        time.sleep(1.0)
        settled = last_activity()
        time.sleep(1.5)
        assert last_activity() == settled
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "AISpike GPU activity: polling" in (tmp_path / "server.log").read_text()
