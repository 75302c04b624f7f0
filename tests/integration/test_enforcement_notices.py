"""Slice enforcement tells the user why: the node agent's notice reaches the user through the real
hub and the real AISpike service (``POST api/notices`` with ``custom:aispike:notify``; the user
reads ``GET api/notices``, which the lab extension shows)."""

from __future__ import annotations

import secrets
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import requests
import yaml

from aispike_hub.agent.enforce import NOTICE_KIND, ServiceNotices

from .conftest import REPO, RunningHub, _free_port, new_username, wait_until


@dataclass
class NoticeStack:
    hub: RunningHub
    service_url: str
    agent_token: str

    def user_token(self, user: str) -> str:
        assert self.hub.api("POST", f"/users/{user}").status_code in (201, 409)
        r = self.hub.api("POST", f"/users/{user}/tokens", json={"note": "test"})
        assert r.status_code == 201, r.text
        return str(r.json()["token"])


@pytest.fixture(scope="module")
def stack(hub_factory: Callable[..., RunningHub],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[NoticeStack]:
    workdir = tmp_path_factory.mktemp("aispike-notices")
    spec = workdir / "nodes.yaml"
    spec.write_text(yaml.safe_dump({"nodes": [{"name": "gpu-1", "cpu": "8", "memory": "64Gi",
                                               "gpus": [{"model": "H200", "memory": "141Gi"}]}]}))
    port = _free_port()
    service_token, agent_token = secrets.token_hex(16), secrets.token_hex(16)
    service_url = f"http://127.0.0.1:{port}/services/aispike/"
    command = [sys.executable, "-m", "aispike_hub.cli", "service",
               f"--db-url=sqlite:///{workdir}/aispike.sqlite", f"--nodes-file={spec}"]
    hub = hub_factory("notices", f"""
        c.JupyterHub.custom_scopes = {{
            "custom:aispike:admin": {{"description": "edit AISpike quotas, read its audit log"}},
            "custom:aispike:admit": {{"description": "ask AISpike to admit spawns"}},
            "custom:aispike:notify": {{"description": "post notices to users (node agents)"}},
        }}
        c.JupyterHub.services += [
            {{"name": "aispike", "url": "http://127.0.0.1:{port}", "api_token": {service_token!r},
              "command": {command!r}, "environment": {{"PYTHONPATH": {str(REPO)!r}}},
              "oauth_no_confirm": True}},
            {{"name": "node-agent", "api_token": {agent_token!r}}},
        ]
        c.JupyterHub.load_roles += [
            {{"name": "aispike", "services": ["aispike"], "scopes": ["read:users"]}},
            {{"name": "node-agent", "services": ["node-agent"],
              "scopes": ["custom:aispike:notify", "access:services!service=aispike"]}},
            {{"name": "user", "scopes": ["self", "access:services!service=aispike"]}},
        ]
    """)

    def answers() -> bool:
        try:
            return requests.get(f"{service_url}api/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    wait_until(answers, 60, "the AISpike service to answer")
    yield NoticeStack(hub, service_url, agent_token)


def test_the_agents_notice_reaches_the_user(stack: NoticeStack) -> None:
    user = new_username()
    token = stack.user_token(user)
    message = "server 'train' uses 14.2 GiB of GPU memory, but its slice is 8.0 GiB. Free memory"
    sink = ServiceNotices(stack.service_url, stack.agent_token)
    sink.post(user, "train", NOTICE_KIND, message)
    assert len(sink.sent) == 1, "the service refused the agent's notice (see the agent's log)"
    r = requests.get(f"{stack.service_url}api/notices",
                     headers={"Authorization": f"token {token}"}, timeout=10)
    assert r.status_code == 200, r.text
    (notice,) = r.json()["notices"]
    assert (notice["server"], notice["kind"], notice["message"]) == ("train", "gpu-memory",
                                                                     message)


def test_users_cannot_post_notices_and_bad_input_names_the_field(stack: NoticeStack) -> None:
    user = new_username()
    token = stack.user_token(user)
    url = f"{stack.service_url}api/notices"
    doc = {"user": "someone-else", "kind": "gpu-memory", "message": "hi"}
    r = requests.post(url, json=doc, headers={"Authorization": f"token {token}"}, timeout=10)
    assert r.status_code == 403 and "custom:aispike:notify" in r.json()["error"]
    agent = {"Authorization": f"token {stack.agent_token}"}
    r = requests.post(url, json={**doc, "message": ""}, headers=agent, timeout=10)
    assert r.status_code == 400 and r.json()["field"] == "message"
