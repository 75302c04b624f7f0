"""``aispike-hub demo``: a complete AISpike hub on this machine, for a first look.

One command starts JupyterHub on localhost with everything that exists: the shared-password
authenticator, sqlite, the local spawner (:class:`aispike_hub.spawner.local.LocalGPUSpawner`:
slices of this machine's GPUs, or of a simulated "2x A100 80GB" when it has none), the AISpike
service (quotas, queue, fit preview, idle monitor, admin panel) and, when built, the lab
extension with the server extension.  Demo users and groups with quotas are created; the URL and
the logins are printed.  Ctrl-C stops the hub, which stops the service, the proxy and every
notebook server.  Works as root (the servers get ``--allow-root``).

Everything is written under ``--workdir`` (config, databases, logs, users' homes): delete it to
start afresh.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from traitlets import Bool, Dict, Float, Integer, Unicode, default
from traitlets.config import Application

from aispike_hub.cli import package_version

CHP_VERSION = "5.3.0"
DEFAULT_SIMULATED = "2x A100 80GB"
LABEXTENSION = "aispike-hub-lab"

DEMO_POLICY: dict[str, Any] = {
    "defaults": {"quota": {"gpu_memory": "8Gi", "servers": 1}, "tier": "low"},
    "groups": {
        "students": {"member": {"quota": {"gpu_memory": "8Gi", "servers": 1},
                                "max_slice": "8Gi"},
                     "quota": {"gpu_memory": "24Gi"}},
        "researchers": {"member": {"quota": {"gpu_memory": "80Gi", "servers": 2},
                                   "tier": "normal"}},
    },
    "users": {"admin": {"quota": {"gpu_memory": "unlimited", "servers": 4}, "tier": "high"}},
}
"""Quotas of the demo (docs/quotas.md): students share 24 GiB with 8 GiB each, researchers get
80 GiB each and a higher tier, the admin is unlimited."""

DEMO_GROUPS: dict[str, list[str]] = {
    "students": ["alice", "bob"],
    "researchers": ["carol"],
    "gpu-admins": ["admin"],
}


def find_proxy(cache: Path) -> str:
    """configurable-http-proxy: on PATH, in the test stack's cache, or installed there by npm."""
    found = shutil.which("configurable-http-proxy")
    if found:
        return found
    for candidate in [*sorted(cache.glob("node/*/node_modules/.bin/configurable-http-proxy")),
                      cache / "node" / "node_modules" / ".bin" / "configurable-http-proxy"]:
        if candidate.exists():
            return str(candidate)
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("aispike-hub demo: configurable-http-proxy is needed (JupyterHub's "
                         "proxy): install Node.js and npm, or `npm install -g "
                         f"configurable-http-proxy@{CHP_VERSION}`")
    target = cache / "node"
    target.mkdir(parents=True, exist_ok=True)
    print(f"Installing configurable-http-proxy {CHP_VERSION} into {target} (npm) ...",
          flush=True)
    subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(target),
                    f"configurable-http-proxy@{CHP_VERSION}"], check=True)
    return str(target / "node_modules" / ".bin" / "configurable-http-proxy")


def labextension_dir() -> Path | None:
    """The prebuilt lab extension of this package, if it was built (``npm run build``)."""
    here = Path(__file__).parent / "labextension"
    return here if (here / "package.json").exists() else None


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def machine_has_gpus() -> bool:
    from aispike_hub.agent.nvml import read_machine

    reading = read_machine()
    return reading.available and bool(reading.gpus)


class DemoApp(Application):
    """Start a complete AISpike hub on localhost (see the module docstring)."""

    name = "aispike-hub demo"
    version = package_version()
    description = __doc__ or ""

    port = Integer(8000, help="Port of the hub's public URL (0: any free port).").tag(config=True)
    ip = Unicode("127.0.0.1", help="Address the hub listens on.").tag(config=True)
    workdir = Unicode(help="Directory for config, databases, logs and users' homes.").tag(
        config=True)

    @default("workdir")
    def _workdir(self) -> str:
        state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
        return os.path.join(state, "aispike-hub", "demo")

    gpus = Unicode(
        "auto",
        help=f"""GPUs of the demo: "auto" (this machine's, or a simulated "{DEFAULT_SIMULATED}"
        when it has none), "nvml" (this machine's only) or a simulated inventory such as
        "2x A100 80GB + 1x T4 16GB".""",
    ).tag(config=True)
    password = Unicode(
        "aispike-demo", help="The shared password every demo user logs in with.").tag(config=True)
    admin_password = Unicode(
        help="""Password of the admin users (at least 32 characters); default: generated once
        and kept in the workdir's admin-password file.""").tag(config=True)
    policy = Dict(DEMO_POLICY, help="Quota policy of the demo (docs/quotas.md).").tag(config=True)
    groups = Dict(DEMO_GROUPS, help="Demo groups and their members.").tag(config=True)
    admin_users = Unicode("admin", help="Comma-separated hub admins (they see the admin "
                          "panel).").tag(config=True)
    idle_timeout = Unicode("1h", help="Idle timeout of the idle monitor (e.g. 30min, 1h).").tag(
        config=True)
    idle_mode = Unicode("warn", help="Idle monitor mode: dry-run, warn or stop.").tag(config=True)
    proxy = Unicode(help="configurable-http-proxy command (default: found or installed by "
                    "npm into the cache).").tag(config=True)
    cache_dir = Unicode(help="Cache (configurable-http-proxy); default "
                        "$AISPIKE_CACHE or ~/.cache/aispike-hub.").tag(config=True)

    @default("cache_dir")
    def _cache_dir(self) -> str:
        return os.environ.get("AISPIKE_CACHE") or os.path.expanduser("~/.cache/aispike-hub")

    start_timeout = Float(60.0, help="Seconds to wait for the hub to answer.").tag(config=True)
    print_only = Bool(False, help="Write the config and print the command; start nothing.").tag(
        config=True)

    aliases = {  # noqa: RUF012 (traitlets reads this class attribute)
        "port": "DemoApp.port",
        "ip": "DemoApp.ip",
        "workdir": "DemoApp.workdir",
        "gpus": "DemoApp.gpus",
        "password": "DemoApp.password",
        "idle-timeout": "DemoApp.idle_timeout",
        "idle-mode": "DemoApp.idle_mode",
        "proxy": "DemoApp.proxy",
    }
    flags = {  # noqa: RUF012
        "print-only": ({"DemoApp": {"print_only": True}}, "write the config, start nothing"),
    }

    def simulated_gpus(self) -> str:
        if self.gpus == "nvml":
            return ""
        if self.gpus == "auto":
            return "" if machine_has_gpus() else DEFAULT_SIMULATED
        return self.gpus

    def users(self) -> list[str]:
        names = {u for members in self.groups.values() for u in members}
        names |= {u.strip() for u in self.admin_users.split(",") if u.strip()}
        return sorted(names)

    def write_config(self) -> Path:
        """Write the hub's, the service's and the notebooks' config under ``workdir``."""
        from aispike_hub.spawner.local import LocalGPUSpawner, parse_simulated

        work = Path(self.workdir).absolute()
        work.mkdir(parents=True, exist_ok=True)
        simulated = self.simulated_gpus()
        if simulated:
            parse_simulated(simulated)  # a bad inventory fails here, with how to write it
        port = self.port or _free_port()
        hub_port, api_port, service_port = _free_port(), _free_port(), _free_port()
        token = secrets.token_hex(32)
        (work / "service-token").write_text(token)
        if not self.admin_password:
            stored = work / "admin-password"
            if not stored.exists():
                stored.write_text(secrets.token_urlsafe(24))
                os.chmod(stored, 0o600)
            self.admin_password = stored.read_text().strip()
        os.chmod(work / "service-token", 0o600)
        probe = LocalGPUSpawner(simulated_gpus=simulated, machine_cpus=32.0 if simulated else 0,
                                machine_memory_gib=256 if simulated else 0)
        spec = probe.spec()
        (work / "machine.json").write_text(json.dumps(spec, indent=1))
        service_url = f"http://127.0.0.1:{service_port}"
        (work / "aispike_service_config.py").write_text(
            "c = get_config()  # noqa: F821\n"
            f"c.AISpikeService.db_url = {f'sqlite:///{work}/aispike_service.sqlite'!r}\n"
            f"c.AISpikeService.nodes_file = {str(work / 'machine.json')!r}\n"
            f"c.AISpikeService.policy = {self.policy!r}\n"
            "c.AISpikeService.reset_policy = True\n"
            "c.AISpikeService.preemption_grace = 30.0\n"
            "c.IdleMonitor.poll_interval = 30.0\n"
            f"c.IdleMonitor.timeout = {self.idle_timeout!r}\n"
            f"c.IdleMonitor.mode = {self.idle_mode!r}\n"
            f"c.IdleMonitor.proxy_url = {f'http://127.0.0.1:{port}'!r}\n"
            "c.AdminPanel.pool_labels = ['aispike.io/inventory']\n"
        )
        # The notebooks' Jupyter config: the server extension on, the lab extension found.
        jupyter_path = work / "jupyter"
        (jupyter_path / "config").mkdir(parents=True, exist_ok=True)
        (jupyter_path / "config" / "jupyter_server_config.json").write_text(json.dumps(
            {"ServerApp": {"jpserver_extensions": {"aispike_hub.serverext": True}}}))
        lab = labextension_dir()
        link = jupyter_path / "data" / "labextensions" / LABEXTENSION
        if lab is not None and not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(lab, target_is_directory=True)
        environment = {
            "AISPIKE_SERVICE_URL": f"{service_url}/services/aispike/",
            "JUPYTER_CONFIG_PATH": str(jupyter_path / "config"),
            "JUPYTER_PATH": str(jupyter_path / "data"),
        }
        proxy = self.proxy or find_proxy(Path(self.cache_dir))
        args = ["--allow-root"] if os.getuid() == 0 else []
        admins = [u.strip() for u in self.admin_users.split(",") if u.strip()]
        config = f'''\
# Written by `aispike-hub demo`: a complete AISpike hub on this machine.
c = get_config()  # noqa: F821
c.JupyterHub.bind_url = "http://{self.ip}:{port}/"
c.JupyterHub.hub_bind_url = "http://127.0.0.1:{hub_port}"
c.JupyterHub.hub_connect_url = "http://127.0.0.1:{hub_port}"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{api_port}"
c.ConfigurableHTTPProxy.command = [{proxy!r}]
c.JupyterHub.db_url = "sqlite:///{work}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{work}/jupyterhub_cookie_secret"
c.JupyterHub.pid_file = "{work}/jupyterhub.pid"
c.JupyterHub.cleanup_servers = True
c.JupyterHub.default_url = "/hub/home"

c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = {self.password!r}
c.SharedPasswordAuthenticator.admin_password = {self.admin_password!r}
c.Authenticator.allowed_users = {set(self.users())!r}
c.Authenticator.admin_users = {set(admins)!r}
c.JupyterHub.load_groups = {{name: {{"users": members}} for name, members in
                             {dict(self.groups)!r}.items()}}

c.JupyterHub.spawner_class = "aispike_hub.spawner.local.LocalGPUSpawner"
c.LocalGPUSpawner.simulated_gpus = {simulated!r}
c.LocalGPUSpawner.machine_cpus = {32.0 if simulated else 0.0!r}
c.LocalGPUSpawner.machine_memory_gib = {256 if simulated else 0!r}
c.LocalGPUSpawner.system_users = False
c.LocalGPUSpawner.home_dir_template = "{work}/home/{{username}}"
c.LocalGPUSpawner.default_gpu_gib = 4
c.LocalGPUSpawner.cmd = [{sys.executable!r}, "-m", "jupyterhub.singleuser"]
c.LocalGPUSpawner.args = {args!r}
c.LocalGPUSpawner.default_url = "/lab"
c.LocalGPUSpawner.environment = {environment!r}
# The server extension calls the service (notices, quota) with the server's own token.
c.LocalGPUSpawner.server_token_scopes = [
    "users:activity!user", "access:servers!server", "access:services!service=aispike"]
c.LocalGPUSpawner.start_timeout = 120
c.LocalGPUSpawner.http_timeout = 90

AISPIKE_TOKEN = open("{work}/service-token").read().strip()
c.JupyterHub.custom_scopes = {{
    "custom:aispike:admin": {{"description": "AISpike admin: panel, quotas, idle actions"}},
    "custom:aispike:admit": {{"description": "ask AISpike to admit spawns"}},
    "custom:aispike:idle": {{"description": "read the AISpike idle report"}},
    "custom:aispike:notify": {{"description": "post notices to AISpike users"}},
}}
c.JupyterHub.services = [{{
    "name": "aispike", "url": "{service_url}", "api_token": AISPIKE_TOKEN,
    "command": [{sys.executable!r}, "-m", "aispike_hub.cli", "service",
                "--config={work}/aispike_service_config.py"],
    "cwd": "{work}",
    "oauth_no_confirm": True,
    "oauth_client_allowed_scopes": ["custom:aispike:admin"],
}}]
c.JupyterHub.load_roles = [
    {{"name": "aispike", "services": ["aispike"],
      "scopes": ["admin:servers", "list:users", "read:users", "read:users:activity",
                 "read:users:groups", "read:groups", "read:servers", "servers",
                 "access:servers", "custom:aispike:admit"]}},
    {{"name": "aispike-admins", "groups": ["gpu-admins"],
      "scopes": ["custom:aispike:admin", "custom:aispike:idle",
                 "access:services!service=aispike"]}},
    {{"name": "user", "scopes": ["self", "access:services!service=aispike"]}},
]
c.AdmissionClient.url = "{service_url}/services/aispike/"
c.AdmissionClient.api_token = AISPIKE_TOKEN
'''
        path = work / "jupyterhub_config.py"
        path.write_text(config)
        self.url = f"http://{self.ip}:{port}/"
        self.simulated = simulated
        self.lab = lab
        return path

    def banner(self) -> str:
        gpus = (f"{self.simulated} (simulated: this machine has no GPU)" if self.simulated
                else "this machine's GPUs (NVML)")
        lines = [
            "", f"AISpike Hub demo: {self.url}", f"  GPUs:     {gpus}",
            f"  password: {self.password!r} for every user but the admins",
        ]
        for group, members in self.groups.items():
            lines.append(f"  {group + ':':<13} {', '.join(members)}")
        lines += [
            f"  admins:       {self.admin_users} (password {self.admin_password!r})",
            f"  admin panel: {self.url}services/aispike/ (as an admin)",
            "  lab extension: " + ("on" if self.lab
                                   else "not built (npm run build in labextension/)"),
            f"  files, logs: {self.workdir}", "Ctrl-C stops everything.", "",
        ]
        return "\n".join(lines)

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}hub/api/", timeout=2) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def start(self) -> None:
        config = self.write_config()
        command = [sys.executable, "-m", "jupyterhub", "-f", str(config)]
        if self.print_only:
            print(" ".join(command))
            return
        log_path = Path(self.workdir) / "jupyterhub.log"
        # This package importable by the hub, the service and the notebooks however it was
        # installed (JupyterHub keeps PYTHONPATH in their environments).
        package_root = str(Path(__file__).absolute().parents[1])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [package_root, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
        with open(log_path, "ab") as log:
            hub = subprocess.Popen(command, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True, env=env)
        stopping = False

        def stop(*_: Any) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        deadline = time.monotonic() + self.start_timeout
        while not self.answers():
            if hub.poll() is not None or stopping or time.monotonic() > deadline:
                self.shutdown(hub)
                tail = log_path.read_text(errors="replace")[-3000:]
                raise SystemExit(f"aispike-hub demo: the hub did not start; its log "
                                 f"({log_path}) ends with:\n{tail}")
            time.sleep(0.3)
        print(self.banner(), flush=True)
        while not stopping and hub.poll() is None:
            time.sleep(0.3)
        print("Stopping the hub, the service and every notebook server ...", flush=True)
        self.shutdown(hub)
        print("Stopped.", flush=True)

    def shutdown(self, hub: subprocess.Popen[bytes]) -> None:
        if hub.poll() is None:
            hub.send_signal(signal.SIGTERM)
            try:
                hub.wait(timeout=60)
            except subprocess.TimeoutExpired:
                hub.kill()
                hub.wait(timeout=10)
        pid_file = Path(self.workdir) / "jupyterhub-proxy.pid"
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError, ValueError, PermissionError):
                os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``aispike-hub demo``."""
    app = DemoApp()
    app.initialize(list(argv) if argv is not None else None)
    app.start()
