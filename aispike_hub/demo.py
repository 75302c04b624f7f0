"""``aispike-hub demo``: a complete AISpike hub on this machine, for a first look.

One command starts JupyterHub on localhost with everything that exists: the shared-password
authenticator, sqlite, the local spawner (:class:`aispike_hub.spawner.local.LocalGPUSpawner`:
slices of this machine's GPUs, or of a simulated "2x A100 80GB" when it has none), the AISpike
service (quotas, queue, fit preview, idle monitor, admin panel) and, when built, the lab
extension with the server extension.  Demo users and groups with quotas are created; the URL and
the logins are printed.  Ctrl-C stops the hub, which stops the service, the proxy and every
notebook server.

Run as root, each demo user's server runs as a system user of its own, ``jupyter-<name>``
(created when missing, home directory 0700, as The Littlest JupyterHub does), and the hub's
files (secrets, configs, databases, logs) are root's only: notebooks cannot read them.  Run as
anyone else, every server runs as that user, and the banner says so.

Every port the demo binds is checked before anything starts: one in use is reported at once
with the flag that changes it.  Everything of the hub is written under ``--workdir`` (config,
databases, logs; mode 0700, secrets 0600): delete it to start afresh.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from traitlets import Bool, Dict, Float, Integer, Unicode, default
from traitlets.config import Application

from aispike_hub import contract
from aispike_hub.cli import package_version
from aispike_hub.demo_host import (
    PortUse,
    free_port,
    log_tail,
    make_private,
    port_errors,
    private_dir,
    python_for_others,
    write_private,
)

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
    return free_port()


SYSTEM_USER_TEMPLATE = "jupyter-{username}"
"""The system user of a demo user's server when the demo runs as root."""
PRIVATE_FILES = ("jupyterhub.sqlite", "aispike_service.sqlite", "jupyterhub_cookie_secret",
                 "jupyterhub.log", "jupyterhub.pid", "jupyterhub-proxy.pid")
"""What the hub and the service write into the workdir (made 0600 once the hub answers)."""


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
    hub_port = Integer(0, help="Port of the hub's own API behind the proxy (0: any free "
                       "port).").tag(config=True)
    proxy_api_port = Integer(0, help="Port of the proxy's REST API (0: any free port).").tag(
        config=True)
    service_port = Integer(0, help="Port of the AISpike service (0: any free port).").tag(
        config=True)
    isolate = Bool(
        help="""Run each user's server as a system user of its own (jupyter-<name>, created
        when missing) so that notebooks cannot read each other's files or the hub's secrets.
        Needs root; default: on when run as root.""").tag(config=True)

    @default("isolate")
    def _isolate(self) -> bool:
        return os.getuid() == 0

    public_dir = Unicode(
        help="""Directory the users' servers read when isolated (their Jupyter config and,
        when this Python is closed to other users, a small environment over its packages):
        outside workdir, which only root can enter. Default /opt/aispike-hub/demo.""",
    ).tag(config=True)

    @default("public_dir")
    def _public_dir(self) -> str:
        return "/opt/aispike-hub/demo"

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
        "hub-port": "DemoApp.hub_port",
        "proxy-api-port": "DemoApp.proxy_api_port",
        "service-port": "DemoApp.service_port",
        "public-dir": "DemoApp.public_dir",
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
        "no-isolation": ({"DemoApp": {"isolate": False}},
                         "as root too, run every server as the demo's own user (no isolation)"),
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

    def choose_ports(self) -> dict[str, int]:
        """Every port the demo binds, each checked now: one in use stops the demo at once."""
        wanted = [(self.ip, PortUse(self.port, "the hub's public URL", "--port")),
                  ("127.0.0.1", PortUse(self.hub_port, "the hub's API", "--hub-port")),
                  ("127.0.0.1", PortUse(self.proxy_api_port, "the proxy's API",
                                        "--proxy-api-port")),
                  ("127.0.0.1", PortUse(self.service_port, "the AISpike service",
                                        "--service-port"))]
        given = [(ip, use) for ip, use in wanted if use.port]
        errors = port_errors(given)
        if errors:
            raise SystemExit("aispike-hub demo: cannot start, nothing was started:\n  "
                             + "\n  ".join(errors))
        taken = {use.port for _, use in given}
        chosen = []
        for ip, use in wanted:
            port = use.port
            while not port or (not use.port and port in taken):
                port = free_port(ip if ip not in ("", "0.0.0.0", "::") else "127.0.0.1")
            taken.add(port)
            chosen.append(port)
        return dict(zip(("public", "hub", "proxy_api", "service"), chosen, strict=True))

    def write_config(self) -> Path:
        """Write the hub's, the service's and the notebooks' config under ``workdir``."""
        from aispike_hub.spawner.local import LocalGPUSpawner
        from aispike_hub.spawner.machine import parse_simulated

        simulated = self.simulated_gpus()
        if simulated:
            parse_simulated(simulated)  # a bad inventory fails here, with how to write it
        if self.isolate and os.getuid() != 0:
            raise SystemExit("aispike-hub demo: isolating users needs root (each server runs "
                             "as a system user of its own); run as root or drop the setting")
        ports = self.choose_ports()
        port, hub_port, api_port = ports["public"], ports["hub"], ports["proxy_api"]
        service_port = ports["service"]
        work = Path(self.workdir).absolute()
        private_dir(work)  # secrets, configs, databases, logs: the hub's user only
        token = secrets.token_hex(32)
        write_private(work / "service-token", token)
        if not self.admin_password:
            stored = work / "admin-password"
            if not stored.exists():
                write_private(stored, secrets.token_urlsafe(24))
            os.chmod(stored, 0o600)
            self.admin_password = stored.read_text().strip()
        probe = LocalGPUSpawner(simulated_gpus=simulated, machine_cpus=32.0 if simulated else 0,
                                machine_memory_gib=256 if simulated else 0)
        spec = probe.spec()
        write_private(work / "machine.json", json.dumps(spec, indent=1))
        service_url = f"http://127.0.0.1:{service_port}"
        write_private(work / "aispike_service_config.py",
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
            f"c.AdminPanel.pool_labels = [{contract.INVENTORY_LABEL!r}]\n"
        )
        # The notebooks' Jupyter config: the server extension on, the lab extension found.
        # Isolated servers cannot enter the workdir: theirs is in public_dir (nothing secret).
        public = Path(self.public_dir).absolute() if self.isolate else work
        if self.isolate:
            if public == work or work in public.parents:
                raise SystemExit(f"aispike-hub demo: --public-dir ({public}) must be outside "
                                 f"--workdir ({work}), which only root can enter")
            public.mkdir(parents=True, exist_ok=True)
            os.chmod(public, 0o755)
        jupyter_path = public / "jupyter"
        (jupyter_path / "config").mkdir(parents=True, exist_ok=True)
        (jupyter_path / "config" / "jupyter_server_config.json").write_text(json.dumps(
            {"ServerApp": {"jpserver_extensions": {"aispike_hub.serverext": True}}}))
        lab = labextension_dir()
        link = jupyter_path / "data" / "labextensions" / LABEXTENSION
        if lab is not None and (not link.exists() or link.resolve() != lab.resolve()):
            link.parent.mkdir(parents=True, exist_ok=True)
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(lab, target_is_directory=True)
        if self.isolate:
            for here, dirs, files in os.walk(jupyter_path):
                for name in [here, *(os.path.join(here, d) for d in dirs)]:
                    os.chmod(name, 0o755)
                for name in files:
                    os.chmod(os.path.join(here, name), 0o644)
        # This environment's own Jupyter config and data (JupyterLab's server extension, the
        # kernelspecs) too: a server whose Python is not this one does not find them itself.
        environment = {
            "AISPIKE_SERVICE_URL": f"{service_url}/services/aispike/",
            "JUPYTER_CONFIG_PATH": os.pathsep.join(
                [str(jupyter_path / "config"), os.path.join(sys.prefix, "etc", "jupyter")]),
            "JUPYTER_PATH": os.pathsep.join(
                [str(jupyter_path / "data"), os.path.join(sys.prefix, "share", "jupyter")]),
        }
        proxy = self.proxy or find_proxy(Path(self.cache_dir))
        package_root = str(Path(__file__).absolute().parents[1])
        if self.isolate:
            server_python, self.server_python_note = python_for_others(
                public / "python", [package_root])
            args: list[str] = []
            users = (f'c.LocalGPUSpawner.system_users = True\n'
                     f'c.LocalGPUSpawner.system_user_template = {SYSTEM_USER_TEMPLATE!r}\n'
                     f'c.LocalGPUSpawner.create_system_users = True')
        else:
            server_python, self.server_python_note = sys.executable, ""
            args = ["--allow-root"] if os.getuid() == 0 else []
            users = (f'c.LocalGPUSpawner.system_users = False\n'
                     f'c.LocalGPUSpawner.home_dir_template = "{work}/home/{{username}}"')
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
{users}
c.LocalGPUSpawner.default_gpu_gib = 4
c.LocalGPUSpawner.cmd = [{server_python!r}, "-m", "jupyterhub.singleuser"]
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
        write_private(path, config)
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
            f"  files, logs: {self.workdir}", *self.isolation_lines(),
            "Ctrl-C stops everything.", "",
        ]
        return "\n".join(lines)

    server_python_note = ""

    def isolation_lines(self) -> list[str]:
        """What the banner says about whom the servers run as."""
        if self.isolate:
            out = ["  isolation: each user's server runs as a system user of its own, "
                   f"{SYSTEM_USER_TEMPLATE.format(username='<name>')} (created when missing, "
                   "home 0700); the hub's files above are root's only"]
            if self.server_python_note and self.server_python_note != \
                    "this environment's Python":
                out.append(f"  servers' Python: {self.server_python_note}")
            return out
        who = getpass.getuser()
        return [f"  NO ISOLATION: every user's server runs as you ({who}): any notebook can "
                "read the others' files and this hub's secrets (service token, admin "
                "password, database). Run as root to give each user a system account."]

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
        env = {k: v for k, v in os.environ.items()
               if k not in ("JUPYTERHUB_API_TOKEN", "CONFIGPROXY_AUTH_TOKEN")}
        env["PYTHONPATH"] = os.pathsep.join(
            [package_root, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as log:
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
                why = ("it exited" if hub.returncode is not None and not stopping
                       else "stopped" if stopping
                       else f"it did not answer within {self.start_timeout:.0f} s")
                tail = log_tail(log_path.read_text(errors="replace"))
                raise SystemExit(f"aispike-hub demo: the hub did not start ({why}); the last "
                                 f"lines of its log ({log_path}):\n{tail}")
            time.sleep(0.3)
        make_private(Path(self.workdir) / name for name in PRIVATE_FILES)
        print(self.banner(), flush=True)
        while not stopping and hub.poll() is None:
            time.sleep(0.3)
        print("Stopping the hub, the service and every notebook server ...", flush=True)
        self.shutdown(hub)
        print("Stopped.", flush=True)

    def hub_api(self, method: str, path: str) -> Any:
        """Call the hub's REST API with the service's token (it may list and stop servers)."""
        token = (Path(self.workdir) / "service-token").read_text().strip()
        request = urllib.request.Request(f"{self.url}hub/api/{path}", method=method,
                                         headers={"Authorization": f"token {token}"})
        with urllib.request.urlopen(request, timeout=10) as r:
            body = r.read()
        return json.loads(body) if body else None

    def stop_servers(self, timeout: float = 60.0) -> None:
        """Stop every notebook server while the AISpike service still runs.

        Why: on SIGTERM JupyterHub stops its services before the servers, so the servers'
        admissions could not be given back and the next demo would find alice still holding
        her slice (and her one server of quota).
        """
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                users = self.hub_api("GET", "users?state=active")
                running = [(u["name"], name) for u in users for name, server in
                           (u.get("servers") or {}).items() if not server.get("stopped")]
                if not running:
                    return
                for user, name in running:
                    path = (f"users/{user}/servers/{urllib.parse.quote(name)}" if name
                            else f"users/{user}/server")
                    with contextlib.suppress(urllib.error.HTTPError):
                        self.hub_api("DELETE", path)
                time.sleep(1.0)
        except (urllib.error.URLError, OSError, ValueError, KeyError) as e:
            print(f"aispike-hub demo: could not stop the servers first ({e}); the hub stops "
                  "them", flush=True)

    def shutdown(self, hub: subprocess.Popen[bytes]) -> None:
        if hub.poll() is None and self.answers():
            self.stop_servers()
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
        # Whatever the hub left in its process group (the proxy, the service).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(hub.pid, signal.SIGTERM)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``aispike-hub demo``."""
    app = DemoApp()
    app.initialize(list(argv) if argv is not None else None)
    app.start()
