"""The README's first command, as a newcomer runs it: a fresh clone, an empty HOME, no venv.

The test reads the first ```bash block of README.md (one line), clones this repository's
committed HEAD into a temporary folder and runs that line there with ``bash`` in a process group
of its own, with ``HOME`` an empty folder, no virtual environment active (no ``VIRTUAL_ENV``, no
venv on ``PATH``, no ``PYTHONPATH``) and only pip's and npm's download caches shared with this
machine so that it takes minutes, not tens of minutes.  One thing is added to the line: a
``--port`` for the demo (the line passes arguments through to ``aispike-hub demo``), so that a hub
already on port 8000 does not matter.

It then waits for the hub's login page in Chromium, checks that ``jupyter labextension list`` in
the virtual environment the command created lists the lab extension (enabled, OK) and that the
server extension is enabled there, and ends the whole process group.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tools import alive, descendants, end_group, start_group, unavailable

pytestmark = pytest.mark.browser
REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
SETUP_TIMEOUT = float(os.environ.get("AISPIKE_README_TIMEOUT", "1200"))
"""Seconds for the first command to create its venv, build and serve the login page."""



def readme_command(index: int) -> str:
    """The one line of the README's ``index``-th ```bash block (0: the demo, 1: the tests)."""
    blocks = re.findall(r"^```bash\n(.*?)^```", (REPO / "README.md").read_text(), re.M | re.S)
    lines = [line for line in blocks[index].splitlines() if line.strip()]
    assert len(lines) == 1, f"README block {index} is not one line: {blocks[index]!r}"
    return lines[0].strip()


def test_readme_opens_with_the_two_commands() -> None:
    assert readme_command(0) == "scripts/demo"
    assert readme_command(1) == "scripts/test"
    ci = (REPO / ".ci" / "run").read_text()
    assert "scripts/test" in ci and "pip install" not in ci and "apt-get" not in ci


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def newcomer_env(home: Path) -> dict[str, str]:
    """This process's environment as a fresh login would have it: empty HOME, no venv active."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "KUBECONFIG", "JUPYTER_PATH",
                        "JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "AISPIKE_CACHE")
           and not k.startswith(("PYTEST", "XDG_"))}
    path = [p for p in env.get("PATH", "").split(os.pathsep)
            if p and not (Path(p).parent / "pyvenv.cfg").exists()]
    real_home = Path(os.environ.get("HOME", "/root"))
    env.update(
        HOME=str(home),
        PATH=os.pathsep.join(path),
        # download caches only (wheels, npm tarballs), never an installed environment
        PIP_CACHE_DIR=os.environ.get("PIP_CACHE_DIR", str(real_home / ".cache" / "pip")),
        NPM_CONFIG_CACHE=os.environ.get("NPM_CONFIG_CACHE", str(real_home / ".npm")),
    )
    return env


@dataclass
class Newcomer:
    clone: Path
    url: str
    process: subprocess.Popen[bytes]
    out: Path

    def output(self) -> str:
        return self.out.read_text(errors="replace")


def _login_page(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}hub/login", timeout=3) as r:
            return r.status == 200 and b"username_input" in r.read()
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="module")
def newcomer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Newcomer]:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        unavailable("git or a git checkout is missing (the test clones this repository)")
    if not os.path.exists(CHROMIUM):
        unavailable(f"{CHROMIUM} is missing (apt-get install chromium; scripts/test does)")
    root = os.getuid() == 0
    # As root the demo runs each user's server as a system user of its own, who must be able to
    # read the clone's environment: a root newcomer clones where others can read (as the README
    # says), not into pytest's own temporary directory, which is closed to them.
    base = Path(tempfile.mkdtemp(prefix="aispike-newcomer-", dir="/tmp")) if root else \
        tmp_path_factory.mktemp("newcomer")
    if root:
        os.chmod(base, 0o755)
    clone, home = base / "aispike-hub", base / "home"
    home.mkdir()
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    port = _free_port()
    line = f"{readme_command(0)} --port={port}"
    if root:  # the servers' environment goes here, not into /opt (the default)
        line += f" --public-dir={base / 'public'}"
    out = base / "first-command.out"
    with open(out, "wb") as f:
        process = start_group(["bash", "-c", line], cwd=clone, env=newcomer_env(home),
                              stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    n = Newcomer(clone, f"http://127.0.0.1:{port}/", process, out)
    try:
        deadline = time.monotonic() + SETUP_TIMEOUT
        while not _login_page(n.url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"`{line}` did not serve the login page:\n"
                                     f"{n.output()[-8000:]}")
            time.sleep(2)
        yield n
    finally:
        tree = [process.pid, *descendants(process.pid)]
        end_group(process, grace=60)
        left = [pid for pid in tree if alive(pid)]
        if root:
            shutil.rmtree(base, ignore_errors=True)
        assert not left, f"processes left behind: {left}"


def test_first_command_serves_the_login_page_with_the_lab_extension(newcomer: Newcomer) -> None:
    from playwright.sync_api import sync_playwright

    os.environ.pop("DISPLAY", None)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{newcomer.url}hub/login")
            page.wait_for_selector("#username_input", timeout=30_000)
            assert page.is_visible("#password_input")
        finally:
            browser.close()

    venv = newcomer.clone / ".venv"
    assert (venv / "pyvenv.cfg").exists(), "the first command created no .venv in the clone"
    env = {**newcomer_env(newcomer.clone.parent / "home"),
           "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    labs = subprocess.run([str(venv / "bin" / "jupyter"), "labextension", "list"],
                          capture_output=True, text=True, env=env, timeout=120)
    listing = re.sub(r"\x1b\[[0-9;]*m", "", labs.stdout + labs.stderr)  # no colours
    assert re.search(r"aispike-hub-lab v\S+ enabled\s+OK", listing), listing
    servers = subprocess.run([str(venv / "bin" / "jupyter"), "server", "extension", "list"],
                             capture_output=True, text=True, env=env, timeout=120)
    listing = re.sub(r"\x1b\[[0-9;]*m", "", servers.stdout + servers.stderr)
    assert re.search(r"aispike_hub\.serverext\s+enabled", listing), listing
    version = subprocess.run([str(venv / "bin" / "aispike-hub"), "--version"],
                             capture_output=True, text=True, env=env, timeout=60)
    assert version.returncode == 0 and version.stdout.strip() not in ("", "0.0"), version
