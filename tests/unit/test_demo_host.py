"""``aispike-hub demo`` before it starts anything: ports, private files, whom servers run as."""

from __future__ import annotations

import os
import pwd
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from aispike_hub.demo_host import (
    PortUse,
    blocked_for_others,
    log_tail,
    port_errors,
    port_problem,
    private_dir,
    write_private,
)
from aispike_hub.spawner.local import LocalGPUSpawner

ROOT = Path(__file__).parents[2]


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield int(s.getsockname()[1])


def test_a_port_in_use_is_named_with_the_flag_that_changes_it(busy_port: int) -> None:
    assert port_problem("127.0.0.1", busy_port) == "already in use"
    errors = port_errors([("127.0.0.1", PortUse(busy_port, "the hub's public URL", "--port"))])
    assert errors == [f"port {busy_port} on 127.0.0.1 (the hub's public URL) is already in use: "
                      "stop what uses it, or choose another with --port=<port> (--port=0: any "
                      "free port)"]
    twice = port_errors([("127.0.0.1", PortUse(1, "a", "--port")),
                         ("127.0.0.1", PortUse(1, "b", "--service-port"))])
    assert any("given twice" in e and "--service-port" in e for e in twice)


@pytest.mark.parametrize("flag", ["--port", "--hub-port", "--proxy-api-port", "--service-port"])
def test_every_port_of_the_demo_is_checked(busy_port: int, flag: str) -> None:
    from aispike_hub.demo import DemoApp

    app = DemoApp()
    app.initialize([f"{flag}={busy_port}"])
    with pytest.raises(SystemExit, match=f"port {busy_port} .* {flag}=<port>"):
        app.choose_ports()


def test_the_demo_stops_at_once_on_a_port_in_use(busy_port: int, tmp_path: Path) -> None:
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "aispike_hub.cli", "demo", f"--workdir={tmp_path / 'w'}",
         f"--public-dir={tmp_path / 'p'}", "--gpus=2x A100 80GB", "--proxy=/bin/true",
         f"--service-port={busy_port}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode != 0
    assert f"port {busy_port}" in run.stderr and "--service-port=<port>" in run.stderr, run.stderr
    assert "nothing was started" in run.stderr
    assert time.monotonic() - started < 60  # no waiting for a hub that cannot start
    assert not (tmp_path / "w").exists()  # and nothing was written


def test_the_log_tail_is_whole_lines() -> None:
    text = "".join(f"line {i} " + "x" * 100 + "\n" for i in range(100))
    tail = log_tail(text, 5)
    assert tail.splitlines() == [f"line {i} " + "x" * 100 for i in range(95, 100)]


def test_secret_files_are_private_from_the_start(tmp_path: Path) -> None:
    state = tmp_path / "state"
    private_dir(state)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    path = state / "secret"
    path.write_text("old")
    os.chmod(path, 0o644)
    write_private(path, "new")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text() == "new"


def test_what_other_users_cannot_reach() -> None:
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        closed = base / "closed"
        (closed / "inner").mkdir(parents=True)
        os.chmod(base, 0o755)
        os.chmod(closed, 0o700)
        assert blocked_for_others(closed / "inner") == str(closed)
        os.chmod(closed, 0o755)
        os.chmod(closed / "inner", 0o755)
        assert blocked_for_others(closed / "inner") == ""
    finally:
        shutil.rmtree(base)


def _spawner(**kw: Any) -> Any:
    return LocalGPUSpawner(
        user=SimpleNamespace(name="alice", groups=[], url="/user/alice/", escaped_name="alice"),
        orm_spawner=SimpleNamespace(name="", server=None, state=None, user_options=None),
        simulated_gpus="2x A100 80GB", node_name="box", **kw)


def test_each_hub_user_runs_as_the_system_user_of_the_template(
        monkeypatch: pytest.MonkeyPatch) -> None:
    me = pwd.getpwuid(os.getuid())
    s = _spawner(system_users=True, system_user_template="jupyter-{username}")
    assert s.system_user == "jupyter-alice"
    seen: list[str] = []
    monkeypatch.setattr("jupyterhub.spawner.LocalProcessSpawner.make_preexec_fn",
                        lambda self, name: seen.append(name))
    s.make_preexec_fn("alice")
    assert seen == ["jupyter-alice"]  # the hub user's name is mapped, not used as is
    monkeypatch.setattr(pwd, "getpwnam", lambda name: me if name == "jupyter-alice" else
                        (_ for _ in ()).throw(KeyError(name)))
    env = s.user_env({})
    assert env["USER"] == "jupyter-alice" and env["HOME"] == me.pw_dir


def test_hub_only_variables_never_reach_a_server(monkeypatch: pytest.MonkeyPatch) -> None:
    from jupyterhub.spawner import LocalProcessSpawner

    monkeypatch.setattr(LocalProcessSpawner, "get_env", lambda self: {
        "CONFIGPROXY_AUTH_TOKEN": "p", "JPY_COOKIE_SECRET": "c", "PATH": "/bin"})
    env = _spawner(system_users=False).get_env()
    assert "CONFIGPROXY_AUTH_TOKEN" not in env and "JPY_COOKIE_SECRET" not in env
    assert env["PATH"] == "/bin"


def test_not_root_the_banner_says_every_server_runs_as_you(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from aispike_hub.demo import DemoApp

    monkeypatch.setattr(os, "getuid", lambda: 1000)
    app = DemoApp()
    app.initialize([])
    assert app.isolate is False
    (line,) = app.isolation_lines()
    assert line.startswith("  NO ISOLATION: every user's server runs as you (")
    assert "secrets" in line and "Run as root" in line
    forced = DemoApp()
    forced.initialize([])
    forced.isolate = True  # isolating needs root: said at once, before anything is written
    with pytest.raises(SystemExit, match="needs root"):
        forced.write_config()


def test_as_root_the_banner_says_how_users_are_isolated(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from aispike_hub.demo import DemoApp

    monkeypatch.setattr(os, "getuid", lambda: 0)
    app = DemoApp()
    app.initialize([])
    assert app.isolate is True
    assert "runs as a system user of its own, jupyter-<name>" in app.isolation_lines()[0]
    off = DemoApp()
    off.initialize(["--no-isolation"])
    assert off.isolate is False and "NO ISOLATION" in off.isolation_lines()[0]
