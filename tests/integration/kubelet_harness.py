"""A test harness that plays the kubelet's side of DRA plugins, over real gRPC unix sockets.

What the kubelet 1.36 does, reduced to what a driver sees:

- its plugin watcher notices a socket appearing in the plugin registry directory, calls
  ``pluginregistration.Registration/GetInfo`` on it, validates the answer (type ``DRAPlugin``,
  a supported ``v1.DRAPlugin`` version, an endpoint socket that exists) and reports the outcome
  with ``NotifyRegistrationStatus``;
- its DRA manager then calls ``k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin/NodePrepareResources``
  and ``NodeUnprepareResources`` on the endpoint with the claims of the pods it starts and stops.

It uses the same committed stubs as the plugin, so the wire names are the published protos'.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from aispike_hub.agent.kubeletapi import dra_v1_pb2 as dra
from aispike_hub.agent.kubeletapi import dra_v1_pb2_grpc as dra_grpc
from aispike_hub.agent.kubeletapi import pluginregistration_v1_pb2 as reg
from aispike_hub.agent.kubeletapi import pluginregistration_v1_pb2_grpc as reg_grpc


@dataclass
class Registered:
    name: str
    endpoint: str
    versions: list[str]


class KubeletHarness:
    def __init__(self, registry_dir: str | Path) -> None:
        self.registry_dir = Path(registry_dir)
        self.plugin: Registered | None = None

    def wait_for_plugin(self, timeout: float = 10) -> Path:
        """The registration socket that appears in the registry (the plugin watcher's job)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            socks = sorted(p for p in self.registry_dir.glob("*.sock") if p.is_socket())
            if socks:
                return socks[0]
            time.sleep(0.05)
        raise AssertionError(f"no registration socket in {self.registry_dir} after {timeout} s")

    def register(self, timeout: float = 10) -> Registered:
        """GetInfo, validate as the kubelet does, NotifyRegistrationStatus(registered)."""
        sock = self.wait_for_plugin(timeout)
        with grpc.insecure_channel(f"unix://{sock}") as channel:
            stub = reg_grpc.RegistrationStub(channel)
            info = stub.GetInfo(reg.InfoRequest(), timeout=5)
            error = ""
            if info.type != "DRAPlugin":
                error = f"plugin type {info.type!r} is not DRAPlugin"
            elif "v1.DRAPlugin" not in info.supported_versions:
                error = f"no supported DRA version in {list(info.supported_versions)}"
            elif not os.path.exists(info.endpoint):
                error = f"endpoint {info.endpoint} does not exist"
            stub.NotifyRegistrationStatus(
                reg.RegistrationStatus(plugin_registered=not error, error=error), timeout=5
            )
        if error:
            raise AssertionError(f"registration refused: {error}")
        self.plugin = Registered(info.name, info.endpoint, list(info.supported_versions))
        return self.plugin

    def _stub(self, channel: grpc.Channel) -> Any:
        return dra_grpc.DRAPluginStub(channel)

    def prepare(self, *claims: tuple[str, str, str]) -> dict[str, Any]:
        """NodePrepareResources for (namespace, name, uid) claims; uid -> result message."""
        assert self.plugin is not None, "register first"
        request = dra.NodePrepareResourcesRequest(
            claims=[dra.Claim(namespace=ns, name=n, uid=u) for ns, n, u in claims]
        )
        with grpc.insecure_channel(f"unix://{self.plugin.endpoint}") as channel:
            response = self._stub(channel).NodePrepareResources(request, timeout=30)
        return dict(response.claims)

    def unprepare(self, *claims: tuple[str, str, str]) -> dict[str, Any]:
        assert self.plugin is not None, "register first"
        request = dra.NodeUnprepareResourcesRequest(
            claims=[dra.Claim(namespace=ns, name=n, uid=u) for ns, n, u in claims]
        )
        with grpc.insecure_channel(f"unix://{self.plugin.endpoint}") as channel:
            response = self._stub(channel).NodeUnprepareResources(request, timeout=30)
        return dict(response.claims)


def device_dicts(result: Any) -> list[dict[str, Any]]:
    """A prepare result's devices as plain dicts (for comparisons)."""
    return [
        {
            "request_names": list(d.request_names),
            "pool_name": d.pool_name,
            "device_name": d.device_name,
            "cdi_device_ids": list(d.cdi_device_ids),
            "share_id": d.share_id if d.HasField("share_id") else None,
        }
        for d in result.devices
    ]
