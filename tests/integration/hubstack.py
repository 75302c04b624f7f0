"""What the hub tests share: a hub with the AISpike service, and one hub per spawner kind.

- :class:`ServiceHub`: the calls every hub test makes (users, start, stop, ready, tokens, the
  service's API, notices, audit), one implementation for the quota, idle, spawner and admin
  panel tests.
- :func:`aispike_service_config`: the hub config that runs the AISpike service as a hub-managed
  service (custom scopes, its role, the admins' role, the users' access, admission client).
- :func:`spawner_setup`: the same scenario on either spawner.  ``kube``: KubeSpawner (with
  admission: the product's ``AISpikeSpawner`` on a kwok node of the test's own) on the
  test control plane, notebook pods run by the pod runner.  ``local``:
  :class:`~aispike_hub.spawner.local.LocalGPUSpawner` over a simulated inventory of the same
  GPUs, notebook servers as local processes; it needs no cluster, so it also runs where the
  cluster binaries are absent.  Tests take the kind from a fixture parametrized with
  :data:`SPAWNER_KINDS`, so one table of cases runs against both.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from .conftest import REPO, RunningHub, _free_port, new_username, wait_until

HERE = Path(__file__).parent
IMAGE = "quay.io/jupyter/base-notebook:2026-01-05"
SPAWNER_KINDS = ("kube", "local")
"""Every hub test of quotas and idle handling runs once per kind."""
CUSTOM_SCOPES = {
    "custom:aispike:admin": "AISpike admin: panel, quotas, audit log",
    "custom:aispike:admit": "ask AISpike to admit spawns",
    "custom:aispike:idle": "read the AISpike idle report",
}


def service_answers(url: str) -> bool:
    """Whether the AISpike service at ``url`` (ending in ``/services/aispike/``) is up."""
    try:
        return requests.get(f"{url}api/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def wait_for_service(url: str) -> None:
    wait_until(lambda: service_answers(url), 60, "the AISpike service to answer")


def service_command(workdir: Path, *args: str) -> list[str]:
    """``aispike-hub service`` with a sqlite store in ``workdir``."""
    return [sys.executable, "-m", "aispike_hub.cli", "service",
            f"--db-url=sqlite:///{workdir}/aispike.sqlite", *args]


def aispike_service_config(port: int, token: str, command: list[str], *,
                           service_scopes: Iterable[str], admin_scopes: Iterable[str],
                           admin_users: Iterable[str] = (), admission: bool = True,
                           allowed_scopes: Iterable[str] = (),
                           environment: Mapping[str, str] | None = None) -> str:
    """Hub config lines: the AISpike service on ``port`` as a hub-managed service.

    ``service_scopes``: the service's own hub scopes; ``admin_scopes``: what the ``tests``
    service (and ``admin_users``) may do with it; every user may reach it (notices, fit).
    ``admission``: spawners ask it to admit (``c.AdmissionClient``).
    """
    url = f"http://127.0.0.1:{port}/services/aispike/"
    service: dict[str, Any] = {
        "name": "aispike", "url": f"http://127.0.0.1:{port}", "api_token": token,
        "command": command, "environment": {"PYTHONPATH": str(REPO), **(environment or {})},
        "oauth_no_confirm": True,
    }
    if allowed_scopes:
        service["oauth_client_allowed_scopes"] = list(allowed_scopes)
    admins: dict[str, Any] = {"name": "aispike-admins", "services": ["tests"],
                              "scopes": [*admin_scopes, "access:services!service=aispike"]}
    if admin_users:
        admins["users"] = list(admin_users)
    lines = [
        f"c.JupyterHub.custom_scopes = {{k: {{'description': v}} for k, v in "
        f"{CUSTOM_SCOPES!r}.items()}}",
        f"c.JupyterHub.services.append({service!r})",
        "c.JupyterHub.load_roles += [",
        f"    {{'name': 'aispike', 'services': ['aispike'], 'scopes': {list(service_scopes)!r}}},",
        f"    {admins!r},",
        "    {'name': 'user', 'scopes': ['self', 'access:services!service=aispike']},",
        "]",
    ]
    if admission:
        lines += [f"c.AdmissionClient.url = {url!r}", f"c.AdmissionClient.api_token = {token!r}",
                  "c.AdmissionClient.poll_interval = 0.5"]
    return "\n".join(lines) + "\n"


class ServiceHub:
    """A running hub with the AISpike service, as the tests talk to it."""

    def __init__(self, hub: RunningHub, service_url: str) -> None:
        self.hub = hub
        self.service_url = service_url

    # -- the service -----------------------------------------------------------------------
    def service(self, method: str, path: str, token: str | None = None, **kw: Any
                ) -> requests.Response:
        return requests.request(
            method, f"{self.service_url}api/{path}", timeout=kw.pop("timeout", 30),
            headers={"Authorization": f"token {token or self.hub.token}"}, **kw)

    def set_user(self, user: str, entry: dict[str, Any]) -> None:
        r = self.service("PUT", f"policy/users/{user}", json=entry)
        assert r.status_code == 200, r.text

    def audit(self, target: str | None = None, **params: Any) -> list[dict[str, Any]]:
        r = self.service("GET", "audit", params={"limit": 500, **params})
        entries = list(r.json()["entries"])
        return [e for e in entries if target is None or e["target"] == target]

    def notices(self, user: str) -> list[dict[str, Any]]:
        return list(self.service("GET", "notices", token=self.user_token(user)).json()["notices"])

    # -- the hub ---------------------------------------------------------------------------
    def user(self, *groups: str) -> str:
        """A new hub user, in ``groups``."""
        name = new_username()
        assert self.hub.api("POST", f"/users/{name}").status_code == 201
        for group in groups:
            r = self.hub.api("POST", f"/groups/{group}/users", json={"users": [name]})
            assert r.status_code == 200, r.text
        return name

    def user_token(self, user: str) -> str:
        r = self.hub.api("POST", f"/users/{user}/tokens", json={"note": "test"})
        assert r.status_code == 201, r.text
        return str(r.json()["token"])

    def start(self, user: str, server: str = "", options: Mapping[str, Any] | None = None
              ) -> requests.Response:
        path = f"/users/{user}/servers/{server}" if server else f"/users/{user}/server"
        return self.hub.api("POST", path, json=dict(options or {}), timeout=120)

    def server(self, user: str, server: str = "") -> dict[str, Any]:
        model = self.hub.api("GET", f"/users/{user}").json()
        return dict((model.get("servers") or {}).get(server) or {})

    def ready(self, user: str) -> set[str]:
        """Names of the user's ready servers ("" is the default server)."""
        model = self.hub.api("GET", f"/users/{user}").json()
        return {name for name, s in (model.get("servers") or {}).items() if s.get("ready")}

    def running(self, user: str, server: str = "") -> bool:
        return server in self.ready(user)

    def wait_ready(self, user: str, server: str = "", timeout: float = 120) -> dict[str, Any]:
        try:
            return dict(wait_until(lambda: (s := self.server(user, server)).get("ready") and s,
                                   timeout, f"{user}/{server} ready"))
        except AssertionError:
            raise AssertionError(f"hub log:\n{self.log_tail()}") from None

    def stop(self, user: str, server: str = "", wait: bool = False) -> None:
        path = f"/users/{user}/servers/{server}" if server else f"/users/{user}/server"
        r = self.hub.api("DELETE", path, timeout=120)
        assert r.status_code in (202, 204), r.text
        if wait:
            wait_until(lambda: not self.server(user, server), 90, f"{user}/{server} stopped")

    def log_tail(self, chars: int = 6000) -> str:
        return self.hub.log_text()[-chars:]


# --- one hub per spawner kind ----------------------------------------------------------------


@dataclass
class SpawnerSetup:
    """The spawner part of a test hub: config lines, the service's inventory, cleanup."""

    kind: str
    config: str
    nodes: list[dict[str, Any]]
    """The AISpike service's inventory (node spec entries, :mod:`aispike_hub.kube.nodespec`)."""
    cleanup: Callable[[], None] = field(default=lambda: None)
    selector: dict[str, str] = field(default_factory=dict)
    """The labels of this setup's GPU nodes (``kube`` with admission): the hub's placer sees only
    them, so a service on a Kubernetes inventory must too (:meth:`service_args`), or it places
    servers on other tests' nodes that the placer refutes."""

    def service_args(self) -> list[str]:
        """The service's command-line arguments that give it the hub's node view."""
        return [f"--Inventory.node_selector={k}={v}" for k, v in self.selector.items()]


def simulated_inventory(machine: Mapping[str, Any]) -> str:
    """A node spec's GPUs as the local spawner's simulated inventory ("1x NVIDIA H200 141GB")."""
    parts = []
    for group in machine["gpus"]:
        memory = str(group["memory"])
        assert memory.endswith("Gi"), memory
        parts.append(f"{group.get('count', 1)}x {group['model']} {memory[:-2]}GB")
    return " + ".join(parts)


def spawner_setup(kind: str, request: pytest.FixtureRequest, machine: Mapping[str, Any], *,
                  workdir: Path, admission: bool) -> SpawnerSetup:
    """The hub's spawner for ``kind`` on a machine like ``machine`` (a node spec entry).

    ``admission``: starts are admitted by the AISpike service (``c.AdmissionClient``, which the
    hub config must set up).  Without it the Kubernetes variant is plain KubeSpawner and the
    local one admits in-process (the local spawner always has an admission).
    """
    name = f"{machine['name']}-{secrets.token_hex(3)}"
    if kind == "kube":
        return _kube_setup(request, {**machine, "name": name}, admission)
    if kind == "local":
        return _local_setup({**machine, "name": name}, workdir, admission)
    raise ValueError(kind)


@contextlib.contextmanager
def hub_of_kind(kind: str, request: pytest.FixtureRequest,
                hub_factory: Callable[..., RunningHub], machine: Mapping[str, Any], *,
                name: str, workdir: Path, admission: bool, service_args: Iterable[str],
                service_scopes: Iterable[str], admin_scopes: Iterable[str],
                hub_config: str = "") -> Iterator[ServiceHub]:
    """A hub with ``kind``'s spawner on a machine like ``machine`` and the AISpike service
    (inventory: that machine; ``service_args`` added to its command); stopped afterwards, with
    its servers, so the other kind's hub runs alone."""
    spawner = spawner_setup(kind, request, machine, workdir=workdir, admission=admission)
    spec = workdir / "nodes.yaml"
    spec.write_text(yaml.safe_dump({"nodes": spawner.nodes}))
    port = _free_port()
    token = secrets.token_hex(16)
    command = service_command(workdir, f"--nodes-file={spec}", *service_args)
    try:
        hub = hub_factory(
            f"{name}-{kind}",
            spawner.config
            + aispike_service_config(port, token, command, service_scopes=service_scopes,
                                     admin_scopes=admin_scopes, admission=admission)
            + hub_config)
        try:
            stack = ServiceHub(hub, f"http://127.0.0.1:{port}/services/aispike/")
            wait_for_service(stack.service_url)
            yield stack
        finally:
            hub.stop()
    finally:
        spawner.cleanup()


def _kube_setup(request: pytest.FixtureRequest, machine: dict[str, Any], admission: bool
                ) -> SpawnerSetup:
    from .conftest import GpuNodes

    cluster = request.getfixturevalue("cluster")
    namespace = request.getfixturevalue("hub_namespace")
    request.getfixturevalue("pod_runner")
    spawner = "kubespawner.KubeSpawner"
    nodes, cleanup = [machine], (lambda: None)
    extra = ""
    selector: dict[str, str] = {}
    if admission:  # the product's spawner: the service admits, the placer pins a claim
        gpu_nodes = GpuNodes(cluster, f"h{secrets.token_hex(3)}")
        selector = dict(gpu_nodes.selector)
        (node,) = gpu_nodes({"nodes": [machine]})
        made = ensure_priority_classes(cluster)
        nodes = [{**machine, "name": node.name}]

        def cleanup() -> None:
            gpu_nodes.delete_all()
            for name in made:
                cluster.scheduling.delete_priority_class(name)

        spawner = "aispike"
        extra = (f"c.AISpikeSpawner.node_selector = {gpu_nodes.selector!r}\n"
                 f"c.Inventory.node_selector = {gpu_nodes.selector!r}\n")
    return SpawnerSetup("kube", kube_spawner_config(spawner, namespace) + extra, nodes, cleanup,
                        selector)


def kube_spawner_config(spawner_class: str, namespace: str) -> str:
    """Hub config lines: ``spawner_class`` (a KubeSpawner; this folder's modules importable)
    starting notebook pods in ``namespace``, run by the pod runner."""
    return f"""
import sys
sys.path.insert(0, {str(HERE)!r})
c.JupyterHub.spawner_class = {spawner_class!r}
c.KubeSpawner.namespace = {namespace!r}
# kwok runs no containers: the image is never pulled, the pod runner runs the command.
c.KubeSpawner.image = {IMAGE!r}
c.KubeSpawner.cmd = ["jupyterhub-singleuser"]
c.KubeSpawner.start_timeout = 150
c.KubeSpawner.http_timeout = 60
"""


def _local_setup(machine: dict[str, Any], workdir: Path, admission: bool) -> SpawnerSetup:
    from aispike_hub.model import GIB_IN_MIB
    from aispike_hub.spawner.machine import machine_spec

    simulated = simulated_inventory(machine)
    cpus = float(str(machine.get("cpu", "64")))
    memory_gib = int(str(machine.get("memory", "512Gi")).removesuffix("Gi"))
    spec = machine_spec(machine["name"], int(cpus * 1000), memory_gib * GIB_IN_MIB,
                        simulated=simulated)
    args = ["--allow-root"] if os.getuid() == 0 else []
    config = f"""
c.JupyterHub.spawner_class = "aispike_hub.spawner.local.LocalGPUSpawner"
c.LocalGPUSpawner.simulated_gpus = {simulated!r}
c.LocalGPUSpawner.node_name = {machine["name"]!r}
c.LocalGPUSpawner.machine_cpus = {cpus!r}
c.LocalGPUSpawner.machine_memory_gib = {memory_gib!r}
c.LocalGPUSpawner.system_users = False
c.LocalGPUSpawner.home_dir_template = {str(workdir / "home" / "{username}")!r}
c.LocalGPUSpawner.cmd = [{sys.executable!r}, "-m", "jupyterhub.singleuser"]
c.LocalGPUSpawner.args = {args!r}
c.LocalGPUSpawner.start_timeout = 150
c.LocalGPUSpawner.http_timeout = 60
"""
    if not admission:
        config += (
            'c.LocalGPUSpawner.admission_class = '
            '"aispike_hub.admission.inprocess.InProcessAdmission"\n'
            f'c.InProcessAdmission.db_url = "sqlite:///{workdir}/admission.sqlite"\n')
    return SpawnerSetup("local", config, list(spec["nodes"]))


PRIORITY_CLASSES = {"aispike-low": 0, "aispike-normal": 100, "aispike-high": 200}
"""The chart's PriorityClasses of the default tiers (pods of the real spawner carry them)."""


def ensure_priority_classes(cluster: Any) -> list[str]:
    """Create the default tiers' PriorityClasses that are missing; the names made (to delete)."""
    from kubernetes.client.rest import ApiException

    made = []
    for name, value in PRIORITY_CLASSES.items():
        try:
            cluster.scheduling.create_priority_class(
                {"metadata": {"name": name}, "value": value,
                 "description": "AISpike tier (tests)"})
            made.append(name)
        except ApiException as e:
            if e.status != 409:
                raise
    return made
