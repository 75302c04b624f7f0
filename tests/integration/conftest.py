"""Fixtures for tests against a real Kubernetes control plane and a real JupyterHub.

- ``cluster`` (session): a running test cluster. Reuses the one ``KUBECONFIG`` (or
  ``scripts/test-cluster``'s default state dir) points at when it is ours (it carries the
  ``kube-system/aispike-test-cluster`` ConfigMap); otherwise starts one with
  ``scripts/test-cluster up`` and stops it at the end.  Without built binaries the tests are
  skipped, except with ``CI=true``, where a missing component fails them: CI must never pass by
  skipping.
- ``namespace``: a fresh namespace per test, deleted afterwards.
- ``gpu_nodes``: create kwok GPU nodes (Node + ResourceSlice) from a spec for one test.
- ``pod_runner`` (session): runs ``jupyterhub-singleuser`` for notebook pods kwok marks Running.
- ``hub_factory`` (session) / ``kube_hub``: real JupyterHub processes with
  configurable-http-proxy; ``kube_hub`` spawns with KubeSpawner into the cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import tools
from tools import end_group, find_tool, start_group, where_tools_are_looked_for

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "test-cluster"
NODE_SPEC = REPO / "tests" / "fixtures" / "cluster" / "gpu-nodes.yaml"
MARKER_CONFIGMAP = "aispike-test-cluster"
IN_CI = os.environ.get("CI", "").lower() == "true"
TEST_GROUP_LABEL = "aispike.io/test-group"
"""Label on nodes a test creates, so its pods can be steered onto them with a nodeSelector."""

try:
    import requests
    import yaml
    from kubernetes import client, config
    from kubernetes.client.rest import ApiException
except ImportError as e:  # the integration extra is not installed
    if IN_CI:
        raise
    _MISSING = str(e)
    collect_ignore_glob = ["test_*.py"]
else:
    _MISSING = ""
    from aispike_hub.kube.nodespec import nodes_from_spec
    from aispike_hub.kube.slices import node_manifests, resource_slice_name
    from aispike_hub.model import Node

    from .podrunner import PodRunner


def pytest_report_header(config: pytest.Config) -> str:
    if _MISSING:
        return f"integration tests: not collected ({_MISSING}); pip install -e '.[integration]'"
    return f"integration tests: CI={IN_CI} (missing components {'fail' if IN_CI else 'skip'})"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


def unavailable(reason: str) -> None:
    """Skip, or in CI fail: a CI run that skipped its integration tests proved nothing."""
    tools.unavailable(f"the test stack is incomplete: {reason}")


CHROMIUM = "/usr/bin/chromium"
"""Debian's chromium: the browser tests drive it headless (never ``playwright install``)."""
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


def browser_or_skip() -> Any:
    """Playwright's ``sync_playwright`` when it and Debian's chromium are here; else
    :func:`unavailable` (skip on a laptop, fail under CI)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright not installed (pip install -e '.[test]')")
    if not os.path.exists(CHROMIUM):
        unavailable(f"{CHROMIUM} missing (apt-get install chromium; scripts/test does)")
    os.environ.pop("DISPLAY", None)
    return sync_playwright


def stack_paths() -> dict[str, Any]:
    return tools.stack_paths()


# --- cluster -----------------------------------------------------------------------------------


@dataclass
class TestCluster:
    """A running test cluster and clients for it."""

    __test__ = False  # a fixture value, not a test class

    kubeconfig: Path
    bin_dir: Path
    api: Any  # kubernetes.client.ApiClient
    state_dir: Path | None
    started_here: bool
    kubernetes_version: str

    @property
    def core(self) -> Any:
        return client.CoreV1Api(self.api)

    @property
    def apps(self) -> Any:
        return client.AppsV1Api(self.api)

    @property
    def custom(self) -> Any:
        """Raw JSON access; used for resource.k8s.io so no field of a new API is ever dropped."""
        return client.CustomObjectsApi(self.api)

    @property
    def scheduling(self) -> Any:
        return client.SchedulingV1Api(self.api)

    def processes(self) -> list[dict[str, Any]]:
        """The control-plane processes (name, pid) when this cluster's state dir is known."""
        if self.state_dir is None or not (self.state_dir / "cluster.json").exists():
            return []
        return list(json.loads((self.state_dir / "cluster.json").read_text())["processes"])

    def tool(
        self,
        name: str,
        *args: str,
        check: bool = True,
        timeout: float = 120,
        stdin: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl or helm against this cluster."""
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        proc = subprocess.run(
            [str(self.bin_dir / name), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=stdin,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"{name} {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def kubectl(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.tool("kubectl", *args, **kw)

    def helm(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.tool("helm", *args, **kw)

    def events(self, namespace: str, name: str) -> list[Any]:
        """Events about object ``name`` in ``namespace``, oldest first."""
        items = self.core.list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={name}"
        ).items
        return sorted(items, key=lambda e: e.metadata.creation_timestamp)


def _connect(kubeconfig: Path) -> tuple[Any, str] | None:
    """An ApiClient and the server version if ``kubeconfig`` reaches one of *our* clusters."""
    if not kubeconfig.exists():
        return None
    try:
        api = config.new_client_from_config(config_file=str(kubeconfig))
        version = client.VersionApi(api).get_code(_request_timeout=5).git_version
        client.CoreV1Api(api).read_namespaced_config_map(
            MARKER_CONFIGMAP, "kube-system", _request_timeout=5
        )
    except Exception:
        return None
    return api, version


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestCluster]:
    if _MISSING:
        unavailable(_MISSING)
    paths = stack_paths()
    bin_dir = Path(paths["bin"])
    candidates = [Path(p) for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    candidates.append(Path(paths["state_dir"]) / "kubeconfig")
    for kubeconfig in candidates:
        found = _connect(kubeconfig)
        if found:
            api, version = found
            state = kubeconfig.parent if (kubeconfig.parent / "cluster.json").exists() else None
            _export_env(kubeconfig, bin_dir, Path(paths["proxy_bin"]))
            yield TestCluster(kubeconfig, bin_dir, api, state, False, version)
            return
    if not paths["built"]:
        unavailable(f"test-cluster binaries not built in {bin_dir}: run scripts/test-cluster build")
    state = tmp_path_factory.mktemp("cluster") / "state"
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "up", "--state-dir", str(state), "--nodes", str(NODE_SPEC)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.fail(f"scripts/test-cluster up failed:\n{proc.stderr}", pytrace=False)
    print(f"\n[cluster] up in {time.monotonic() - started:.1f} s ({state})")
    kubeconfig = state / "kubeconfig"
    found = _connect(kubeconfig)
    assert found, f"cluster started but {kubeconfig} does not reach it"
    _export_env(kubeconfig, bin_dir, Path(paths["proxy_bin"]))
    try:
        yield TestCluster(kubeconfig, bin_dir, found[0], state, True, found[1])
    finally:
        subprocess.run(
            [sys.executable, str(SCRIPT), "down", "--state-dir", str(state)], check=False
        )


def _export_env(kubeconfig: Path, bin_dir: Path, proxy_bin: Path) -> None:
    # Hubs, spawners and helm started by tests inherit these, like a shell after
    # `eval "$(scripts/test-cluster env)"`.
    os.environ["KUBECONFIG"] = str(kubeconfig)
    os.environ["PATH"] = os.pathsep.join([str(bin_dir), str(proxy_bin), os.environ["PATH"]])
    # Both Python clients read KUBECONFIG once, at import (before this fixture ran): point their
    # defaults at this cluster too, so code that loads "the" kubeconfig in-process finds it.
    import kubernetes.config.kube_config as sync_kube_config

    sync_kube_config.KUBE_CONFIG_DEFAULT_LOCATION = str(kubeconfig)
    config.load_kube_config(config_file=str(kubeconfig))
    try:
        import kubernetes_asyncio.config.kube_config as async_kube_config
    except ImportError:
        return
    async_kube_config.KUBE_CONFIG_DEFAULT_LOCATION = str(kubeconfig)


# --- namespace and nodes -----------------------------------------------------------------------


def wait_until(
    check: Callable[[], Any], timeout: float = 60, what: str = "condition", interval: float = 0.25
) -> Any:
    """Poll ``check`` until it returns something truthy; return that value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def _short_name(request: pytest.FixtureRequest) -> str:
    base = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())
    base = base.removeprefix("test-").strip("-")[:40].strip("-")
    return f"{base}-{secrets.token_hex(3)}"


SESSION_NAMESPACES: set[str] = set()
"""Namespaces this pytest session created: the only ones its pod runner serves."""


def create_namespace(cluster: TestCluster, name: str) -> str:
    cluster.core.create_namespace({"metadata": {"name": name}})
    SESSION_NAMESPACES.add(name)

    def has_default_sa() -> bool:
        try:
            cluster.core.read_namespaced_service_account("default", name)
        except ApiException:
            return False
        return True

    # The ServiceAccount admission plugin refuses pods until the controller made this account.
    wait_until(has_default_sa, 30, f"ServiceAccount default in {name}")
    return name


@pytest.fixture
def namespace(cluster: TestCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    name = create_namespace(cluster, _short_name(request))
    yield name
    cluster.core.delete_namespace(name)


@dataclass
class GpuNodes:
    """Creates kwok nodes for one test and deletes them afterwards."""

    cluster: TestCluster
    group: str
    created: list[str] = field(default_factory=list)

    def __call__(self, spec: Mapping[str, Any] | str) -> list[Node]:
        """Create the nodes of ``spec`` (a mapping or YAML, format of aispike_hub.kube.nodespec).

        Names get this test's prefix and the label ``aispike.io/test-group: <group>``, so
        tests never share nodes; returns the model nodes (with their final names and UUIDs).
        """
        data = yaml.safe_load(spec) if isinstance(spec, str) else json.loads(json.dumps(spec))
        for entry in data["nodes"]:
            entry["name"] = f"{self.group}-{entry['name']}"
            entry["labels"] = {**(entry.get("labels") or {}), TEST_GROUP_LABEL: self.group}
        sims = nodes_from_spec(data)
        manifests = []
        for sim in sims:
            manifests += node_manifests(sim.node, nvidia_gpu=sim.nvidia_gpu)
        self.created += [s.node.name for s in sims]
        self.cluster.kubectl(
            "apply",
            "-f",
            "-",
            stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}),
        )
        for sim in sims:
            wait_until(
                lambda n=sim.node.name: _node_ready(self.cluster, n),
                60,
                f"node {sim.node.name} Ready",
            )
        return [s.node for s in sims]

    @property
    def selector(self) -> dict[str, str]:
        """nodeSelector that keeps a pod on this test's nodes."""
        return {TEST_GROUP_LABEL: self.group}

    def delete_all(self) -> None:
        for name in self.created:
            for delete in (
                lambda n=name: self.cluster.custom.delete_cluster_custom_object(
                    "resource.k8s.io", "v1", "resourceslices", resource_slice_name(n)
                ),
                lambda n=name: self.cluster.core.delete_node(n),
            ):
                try:
                    delete()
                except ApiException as e:
                    if e.status != 404:
                        raise


def _node_ready(cluster: TestCluster, name: str) -> bool:
    try:
        node = cluster.core.read_node(name)
    except ApiException:
        return False
    return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])


@pytest.fixture
def gpu_nodes(cluster: TestCluster, request: pytest.FixtureRequest) -> Iterator[GpuNodes]:
    nodes = GpuNodes(cluster, f"t{secrets.token_hex(3)}")
    yield nodes
    nodes.delete_all()


# --- pod runner and hubs -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def pod_runner(cluster: TestCluster) -> Iterator[PodRunner]:
    runner = PodRunner(cluster.api, namespaces=SESSION_NAMESPACES.__contains__).start()
    yield runner
    runner.stop()


@dataclass
class RunningHub:
    """A JupyterHub process (with its configurable-http-proxy) started by ``hub_factory``."""

    name: str
    url: str
    """Public URL (the proxy), e.g. http://127.0.0.1:PORT/."""
    hub_port: int
    token: str
    """Token of the ``tests`` service: admin on users and servers, may access every server."""
    workdir: Path
    process: subprocess.Popen[bytes]

    @property
    def log_path(self) -> Path:
        return self.workdir / "jupyterhub.log"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def api(self, method: str, path: str, **kw: Any) -> requests.Response:
        """Call the hub's REST API as the ``tests`` service."""
        headers = {"Authorization": f"token {self.token}", **kw.pop("headers", {})}
        return requests.request(
            method, f"{self.url}hub/api{path}", headers=headers, timeout=kw.pop("timeout", 30), **kw
        )

    def get(self, path: str, **kw: Any) -> requests.Response:
        """GET a path of the public URL (e.g. ``user/alice/api/status``) with the token."""
        headers = {"Authorization": f"token {self.token}", **kw.pop("headers", {})}
        return requests.get(
            f"{self.url}{path.lstrip('/')}", headers=headers, timeout=kw.pop("timeout", 30), **kw
        )

    def stop(self) -> None:
        """End the hub, its proxy and its notebook servers (whole process trees, SIGKILL last)."""
        pid_file = self.workdir / "jupyterhub-proxy.pid"
        extra: list[int] = []
        with contextlib.suppress(FileNotFoundError, ValueError):
            extra.append(int(pid_file.read_text().strip()))
        end_group(self.process, grace=45, extra_pids=extra)
        # The hub may have restarted its proxy while stopping: end the one it wrote last too.
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


BASE_HUB_CONFIG = """\
# Written by tests/integration/conftest.py: a hub on loopback for one test session.
c = get_config()  # noqa: F821
c.JupyterHub.bind_url = "http://127.0.0.1:{proxy_port}/"
c.JupyterHub.hub_bind_url = "http://127.0.0.1:{hub_port}"
c.JupyterHub.hub_connect_url = "http://127.0.0.1:{hub_port}"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.ConfigurableHTTPProxy.command = [{chp!r}]
c.JupyterHub.db_url = "sqlite:///{workdir}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{workdir}/jupyterhub_cookie_secret"
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.cleanup_servers = True
c.JupyterHub.services = [{{"name": "tests", "api_token": {token!r}}}]
c.JupyterHub.load_roles = [{{
    "name": "tests",
    "scopes": ["admin:users", "admin:servers", "access:servers", "read:users", "tokens", "proxy"],
    "services": ["tests"],
}}]
c.Spawner.start_timeout = 90
c.Spawner.http_timeout = 60
"""


@pytest.fixture(scope="session")
def hub_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., RunningHub]]:
    """Start a real hub with a test's config, once per ``name`` in the session.

    ``config`` is Python appended to the base config (which puts everything on loopback, uses
    the dummy authenticator and registers a ``tests`` service with an admin token).
    """
    if _MISSING:
        unavailable(_MISSING)
    chp = find_tool("configurable-http-proxy")
    if chp is None:
        unavailable("configurable-http-proxy not found in "
                    f"{where_tools_are_looked_for('configurable-http-proxy')}")
    hubs: dict[str, RunningHub] = {}

    def start(name: str, config_text: str = "", timeout: float = 60) -> RunningHub:
        if name in hubs:
            return hubs[name]
        workdir = tmp_path_factory.mktemp(f"hub-{name}")
        ports = {
            "proxy_port": _free_port(),
            "hub_port": _free_port(),
            "proxy_api_port": _free_port(),
        }
        token = secrets.token_hex(16)
        config_file = workdir / "jupyterhub_config.py"
        config_file.write_text(
            BASE_HUB_CONFIG.format(**ports, chp=str(chp), workdir=workdir, token=token)
            + "\n# --- the test's config ---\n"
            + textwrap.dedent(config_text)
        )
        with open(workdir / "jupyterhub.log", "ab") as out:
            process = start_group(
                [sys.executable, "-m", "jupyterhub", "-f", str(config_file)],
                cwd=workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        hub = RunningHub(
            name,
            f"http://127.0.0.1:{ports['proxy_port']}/",
            ports["hub_port"],
            token,
            workdir,
            process,
        )
        hubs[name] = hub

        def answers() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"jupyterhub exited:\n{hub.log_text()[-4000:]}")
            try:
                return hub.api("GET", "/", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_until(answers, timeout, f"hub {name} to answer")
        return hub

    yield start
    for hub in hubs.values():
        hub.stop()


@pytest.fixture(scope="session")
def hub_namespace(cluster: TestCluster) -> Iterator[str]:
    name = create_namespace(cluster, f"hub-{secrets.token_hex(3)}")
    yield name
    cluster.core.delete_namespace(name)


@pytest.fixture(scope="session")
def kube_hub(
    hub_factory: Callable[..., RunningHub], hub_namespace: str, pod_runner: PodRunner
) -> RunningHub:
    """A hub whose KubeSpawner starts notebook pods in ``hub_namespace`` (run by pod_runner)."""
    return hub_factory(
        "kubespawner",
        f"""
        c.JupyterHub.spawner_class = "kubespawner.KubeSpawner"
        c.KubeSpawner.namespace = {hub_namespace!r}
        # kwok runs no containers: the image is never pulled, the pod runner runs the command.
        c.KubeSpawner.image = "quay.io/jupyter/base-notebook:2026-01-05"
        c.KubeSpawner.cmd = ["jupyterhub-singleuser"]
        c.KubeSpawner.start_timeout = 90
        c.KubeSpawner.http_timeout = 60
        """,
    )


def new_username() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"
