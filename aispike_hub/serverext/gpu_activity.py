"""GPU work counts as activity: a notebook that computes on its GPU is not idle to the hub.

jupyter-server takes the latest of every ``*_last_activity`` setting as the server's last
activity, and ``jupyterhub-singleuser`` reports that to the hub, which is all the plain
jupyterhub-idle-culler looks at.  :class:`GpuActivity` polls the node agent's ``/usage``
document and, while this server's processes use the GPU (utilisation >= ``busy_percent``), sets
``aispike_gpu_last_activity`` to now.  So a training run with no browser open keeps its server,
even on a hub without the AISpike idle monitor.

Loaded on its own (``jupyter server
--ServerApp.jpserver_extensions=aispike_hub.serverext.gpu_activity=True``, or
``c.ServerApp.jpserver_extensions = {"aispike_hub.serverext.gpu_activity": True}``) or
started by the full AISpike server extension with
``GpuActivity(parent=serverapp).start(serverapp.web_app.settings)``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Mapping, MutableMapping
from typing import Any

from tornado import httpclient
from tornado.ioloop import PeriodicCallback
from traitlets import Float, Unicode, default
from traitlets.config import LoggingConfigurable

SETTING = "aispike_gpu_last_activity"
"""The web app setting jupyter-server counts as activity (its name ends in _last_activity)."""


def gpu_in_use(doc: Mapping[str, Any], user: str, server: str, busy_percent: float) -> bool:
    """Does the agent's usage document show ``user``'s ``server`` computing on a GPU?"""
    return any(nb.get("user") == user and (nb.get("server") or "") == server
               and float(nb.get("utilization_percent") or 0.0) >= busy_percent
               for nb in doc.get("notebooks", []))


class GpuActivity(LoggingConfigurable):
    """Polls the node agent and records GPU work as this server's activity."""

    agent_url = Unicode(
        help="""The node agent's usage document, e.g. http://$(HOST_IP):9402/usage; default
        $AISPIKE_AGENT_URL. Empty: nothing is polled.""",
    ).tag(config=True)

    @default("agent_url")
    def _agent_url(self) -> str:
        return os.environ.get("AISPIKE_AGENT_URL", "")

    interval = Float(60.0, help="Seconds between polls of the agent.").tag(config=True)

    busy_percent = Float(
        5.0, help="GPU utilisation at or above this counts as activity."
    ).tag(config=True)

    user = Unicode(help="Hub user of this server; default $JUPYTERHUB_USER.").tag(config=True)

    @default("user")
    def _user(self) -> str:
        return os.environ.get("JUPYTERHUB_USER", "")

    server_name = Unicode(
        help="Server name; default $JUPYTERHUB_SERVER_NAME ('' = the default server)."
    ).tag(config=True)

    @default("server_name")
    def _server_name(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVER_NAME", "")

    async def check(self, settings: MutableMapping[str, Any]) -> bool:
        """One poll: True (and the setting moved to now) when the GPU is in use."""
        try:
            resp = await httpclient.AsyncHTTPClient().fetch(self.agent_url, request_timeout=10)
            doc = json.loads(resp.body)
        except Exception as e:
            self.log.debug("AISpike GPU activity: agent %s did not answer: %s", self.agent_url, e)
            return False
        if not gpu_in_use(doc, self.user, self.server_name, self.busy_percent):
            return False
        settings[SETTING] = dt.datetime.now(dt.UTC)
        return True

    def start(self, settings: MutableMapping[str, Any]) -> PeriodicCallback | None:
        """Poll every ``interval`` seconds from now on (None when there is no agent URL)."""
        if not self.agent_url or not self.user:
            self.log.info("AISpike GPU activity: no agent URL or user; not polling")
            return None
        callback = PeriodicCallback(lambda: self.check(settings), self.interval * 1000)
        callback.start()
        self.log.info("AISpike GPU activity: polling %s every %g s for %s/%s", self.agent_url,
                      self.interval, self.user, self.server_name)
        return callback


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "aispike_hub.serverext.gpu_activity"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    reporter = GpuActivity(parent=serverapp, log=serverapp.log)
    serverapp.web_app.settings["aispike_gpu_activity"] = reporter
    reporter.start(serverapp.web_app.settings)
