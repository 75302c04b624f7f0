"""The README's first command, in a browser: ``aispike-hub demo`` on a machine without GPUs.

The demo runs as a user runs it (the CLI, a subprocess, Ctrl-C at the end) with the simulated
inventory "2x A100 80GB": a real JupyterHub with configurable-http-proxy, the AISpike service,
the local spawner and real JupyterLab servers.  Debian's Chromium (driven by Playwright) logs in
as a student, sees the form say the GPUs are simulated, starts a server with a 4 GiB slice, sees
the lab extension's status bar show it (and the server extension's API say the same), stops it;
then a Ctrl-C stops everything.  On the way the form's live fit preview says "does not fit" for
a slice over the student's quota and "fits" for the 4 GiB one (the local spawner's preview
through the AISpike service).

Run as root (as CI runs), the demo isolates users: first, bob's server is checked from the
inside (code run in his kernel over the Jupyter kernel protocol) to run as the system user
``jupyter-bob`` and to be unable to read any of the hub's secrets, whose modes are asserted too.
Not root: the banner says plainly that every server runs as you.

With ``AISPIKE_UPDATE_SCREENSHOTS=1`` the README's screenshot (docs/demo.png) is taken again.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tools import end_group, start_group, unavailable

pytestmark = pytest.mark.browser
ROOT = Path(__file__).parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]



def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


DEMO_USERS = ("alice", "bob", "carol", "admin")
SECRETS = ("service-token", "admin-password", "jupyterhub_cookie_secret", "jupyterhub.sqlite",
           "jupyterhub_config.py", "aispike_service_config.py", "aispike_service.sqlite")
"""The hub's files no notebook may read (in the demo's workdir)."""


@dataclass
class Demo:
    url: str
    workdir: Path
    process: subprocess.Popen[bytes]
    out: Path
    root: bool = False

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def log(self) -> str:
        path = self.workdir / "jupyterhub.log"
        return path.read_text(errors="replace") if path.exists() else "(no hub log)"


def _system_users() -> set[str]:
    return {f"jupyter-{u}" for u in DEMO_USERS if _exists(f"jupyter-{u}")}


def _exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _kill_processes_of(uids: set[int]) -> None:
    """Kill what the demo's system users still run (a failed test's notebook servers)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if entry.stat().st_uid in uids:
                    os.kill(int(entry.name), signal.SIGKILL)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    try:
        import playwright  # noqa: F401
    except ImportError:
        unavailable("playwright is not installed (pip install -e '.[test]')")
    if not os.path.exists(CHROMIUM):
        unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    root = os.getuid() == 0
    # Run as root the users' servers run as system users: the demo's directories live where
    # they could go (pytest's own temporary directory is closed to them), so that only the
    # demo's own modes keep them out of the hub's files.
    base = Path(tempfile.mkdtemp(prefix="aispike-demo-test-", dir="/tmp")) if root else \
        tmp_path_factory.mktemp("demo")
    os.chmod(base, 0o755)
    users_before = _system_users()
    out = base / "demo.out"
    port = _free_port()
    with open(out, "wb") as f:
        process = start_group(
            [sys.executable, "-m", "aispike_hub.cli", "demo", f"--workdir={base / 'state'}",
             f"--public-dir={base / 'public'}", f"--port={port}", "--gpus=2x A100 80GB"],
            cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    d = Demo(f"http://127.0.0.1:{port}/", base / "state", process, out, root)
    try:
        deadline = time.monotonic() + 120
        while "Ctrl-C stops everything" not in d.output():
            if process.poll() is not None or time.monotonic() > deadline:
                if "configurable-http-proxy is needed" in d.output():
                    unavailable("configurable-http-proxy is missing (scripts/test-cluster build)")
                raise AssertionError(f"the demo did not start:\n{d.output()}\n{d.log()[-6000:]}")
            time.sleep(0.3)
        yield d
    finally:
        if process.poll() is None:  # only if the test failed before its Ctrl-C
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=60)
        # the demo, its hub, proxy and notebook servers, whatever is left of them
        end_group(process, grace=10)
        if root:
            created = _system_users() - users_before
            _kill_processes_of({pwd.getpwnam(u).pw_uid for u in created})
            for name in created:
                subprocess.run(["userdel", "--remove", name], check=False,
                               capture_output=True)
            shutil.rmtree(base, ignore_errors=True)


def _login(browser: Any, url: str, user: str, password: str, next_url: str) -> Any:
    page = browser.new_context(viewport={"width": 1400, "height": 850}).new_page()
    page.goto(f"{url}hub/login?next={next_url}")
    page.fill("#username_input", user)
    page.fill("#password_input", password)
    page.click("#login_submit")
    return page


KERNEL_RUN = """
async ([user, code]) => {
  const x = decodeURIComponent((document.cookie.match(/_xsrf=([^;]+)/) || [])[1] || '');
  const base = '/user/' + user + '/';
  const r = await fetch(base + 'api/kernels', {method: 'POST', body: '{}',
    headers: {'X-XSRFToken': x, 'Content-Type': 'application/json'}});
  const kernel = await r.json();
  const ws = new WebSocket('ws://' + location.host + base + 'api/kernels/' + kernel.id +
                           '/channels');
  const id = 'aispike-test-' + Math.random();
  return await new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error('no answer from the kernel: ' + out)), 90000);
    ws.onopen = () => ws.send(JSON.stringify({
      header: {msg_id: id, username: user, session: 'test', msg_type: 'execute_request',
               version: '5.3', date: new Date().toISOString()},
      parent_header: {}, metadata: {}, channel: 'shell', buffers: [],
      content: {code: code, silent: false, store_history: false, user_expressions: {},
                allow_stdin: false, stop_on_error: true}}));
    ws.onmessage = (event) => {
      const m = JSON.parse(event.data);
      if (!m.parent_header || m.parent_header.msg_id !== id) return;
      if (m.msg_type === 'stream') out += m.content.text;
      if (m.msg_type === 'error') out += m.content.ename + ': ' + m.content.evalue;
      // The end of the execution: the kernel idle again (after all of its output).
      if (m.msg_type === 'status' && m.content.execution_state === 'idle') {
        clearTimeout(timer); ws.close(); resolve(out);
      }
    };
    ws.onerror = () => reject(new Error('kernel websocket error'));
  });
}
"""

INSIDE = """
import json, os, pwd
report = {"uid": os.getuid(), "user": pwd.getpwuid(os.getuid()).pw_name,
          "server_user": pwd.getpwuid(os.stat(f"/proc/{os.getppid()}").st_uid).pw_name,
          "home": os.environ.get("HOME"), "environ": dict(os.environ), "read": {}}
for path in %r:
    try:
        with open(path, "rb") as f:
            f.read(1)
        report["read"][path] = "READ"
    except OSError as e:
        report["read"][path] = type(e).__name__
try:
    os.listdir(%r)
    report["listed_workdir"] = True
except OSError:
    report["listed_workdir"] = False
print(json.dumps(report))
"""


def test_demo_isolates_users_from_each_other_and_from_the_hub(demo: Demo) -> None:
    from playwright.sync_api import sync_playwright

    banner = demo.output()
    if not demo.root:
        assert "NO ISOLATION: every user's server runs as you" in banner, banner
        pytest.skip("isolating users needs root (the banner says every server runs as you)")
    assert "each user's server runs as a system user of its own, jupyter-<name>" in banner
    work = demo.workdir
    # The hub's files: a directory only root enters, secrets only root reads.
    assert stat.S_IMODE(work.stat().st_mode) == 0o700
    for name in SECRETS:
        path = work / name
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
            assert path.stat().st_uid == 0, name
    for name in ("service-token", "admin-password", "jupyterhub_config.py",
                 "jupyterhub_cookie_secret", "jupyterhub.sqlite"):
        assert (work / name).exists(), name
    token = (work / "service-token").read_text().strip()
    admin_password = (work / "admin-password").read_text().strip()
    cookie_secret = (work / "jupyterhub_cookie_secret").read_bytes().strip()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = _login(browser, demo.url, "bob", "aispike-demo", "%2Fhub%2Fspawn")
            page.wait_for_selector("#aispike-form", timeout=60_000)
            page.click("form#spawn_form [type=submit]")
            page.wait_for_url(re.compile(r".*/user/bob/lab.*"), timeout=180_000)
            files = [str(work / name) for name in SECRETS]
            answer = page.evaluate(KERNEL_RUN, ["bob", INSIDE % (files, str(work))])
            inside = json.loads(answer.strip().splitlines()[-1])
            page.goto(f"{demo.url}hub/home")
            page.click("#stop")
            page.wait_for_selector("#start", state="visible", timeout=60_000)
        finally:
            browser.close()

    account = pwd.getpwnam("jupyter-bob")
    # bob's kernel and the server it runs under are jupyter-bob's, nobody else's ...
    assert inside["user"] == "jupyter-bob" and inside["uid"] == account.pw_uid, inside
    assert inside["server_user"] == "jupyter-bob", inside
    assert inside["home"] == account.pw_dir
    assert stat.S_IMODE(os.stat(account.pw_dir).st_mode) == 0o700
    assert os.stat(account.pw_dir).st_uid == account.pw_uid
    # ... who can read none of the hub's files, nor list the directory they are in ...
    assert all(v != "READ" for v in inside["read"].values()), inside["read"]
    assert inside["listed_workdir"] is False
    # ... and whose environment carries none of the hub's secrets.
    values = "\n".join(inside["environ"].values())
    assert token not in values and admin_password not in values
    assert cookie_secret.decode(errors="replace") not in values
    for name in ("CONFIGPROXY_AUTH_TOKEN", "JPY_COOKIE_SECRET", "AISPIKE_SERVICE_TOKEN"):
        assert name not in inside["environ"], name
    assert inside["environ"].get("JUPYTERHUB_USER") == "bob"


def test_demo_login_start_4gib_slice_status_bar_stop_and_ctrl_c(demo: Demo) -> None:
    from playwright.sync_api import sync_playwright

    banner = demo.output()
    assert demo.url in banner and "2x A100 80GB (simulated" in banner, banner
    assert re.search(r"students:\s+alice, bob", banner), banner
    assert "'aispike-demo'" in banner, banner

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1400, "height": 850}).new_page()
            page.goto(f"{demo.url}hub/login?next=%2Fhub%2Fspawn")
            page.fill("#username_input", "alice")
            page.fill("#password_input", "aispike-demo")
            page.click("#login_submit")
            page.wait_for_selector("#aispike-form", timeout=60_000)
            form = page.inner_text("#aispike-form")
            assert "simulated" in form and "2x A100 80GB" in form, form
            assert "your quota: 8 GiB" in form, form  # the student's quota, from the service
            page.select_option("#aispike-gpu-count", "1")
            # The live fit preview (the service's api/fit, asked as alice with the token the
            # local spawner minted) answers as the slice changes: over her quota it does not
            # fit, within it it does.
            page.fill("#aispike-gpu-gib", "9")
            refused = _fit_answer(page, "refused")
            assert "Cannot start" in refused and "8 GiB" in refused, refused
            page.fill("#aispike-gpu-gib", "4")
            fits = _fit_answer(page, "fits")
            assert fits.startswith("Fits now"), fits
            if os.environ.get("AISPIKE_UPDATE_SCREENSHOTS"):
                page.screenshot(path=str(ROOT / "docs" / "demo.png"))
            page.click("form#spawn_form [type=submit]")
            page.wait_for_url(re.compile(r".*/user/alice/lab.*"), timeout=120_000)

            # The server extension's API (through the browser's session) says the slice ...
            answer = page.evaluate(
                "async () => { const x = (document.cookie.match(/_xsrf=([^;]+)/) || [])[1];"
                " const r = await fetch('/user/alice/aispike/api/slice',"
                " {headers: {'X-XSRFToken': decodeURIComponent(x || '')}});"
                " return {status: r.status, text: await r.text()}; }")
            assert answer["status"] == 200, answer
            slice_doc = json.loads(answer["text"])["slice"]
            assert slice_doc["limit_mib"] == 4096, slice_doc
            assert slice_doc["backend"] == "local", slice_doc
            # ... and so does the lab extension's status bar.
            item = page.locator(".aispike-StatusItem")
            item.wait_for(state="visible", timeout=90_000)
            page.wait_for_function(
                "() => /4 GiB/.test(document.querySelector('.aispike-StatusItem')?.textContent"
                " || '')", timeout=60_000)
            title = item.get_attribute("title") or ""
            assert "GPU slice: 4 GiB on GPU 0 (A100 80GB) (simulated)" in title, title
            text = item.text_content() or ""
            assert text == "GPU 0 · 4 GiB (simulated)", text
            for internal in ("GPU -1", "GPU ?", "on any", "no GPU slice", "unknown GPU"):
                assert internal not in text and internal not in title, (internal, text, title)

            # The AISpike service admitted it where the local spawner placed it.
            page.goto(f"{demo.url}hub/home")
            page.click("#stop")
            page.wait_for_selector("#start", state="visible", timeout=60_000)
        finally:
            browser.close()

    _admin_panel_adds_up(demo)
    log = demo.log()
    assert "Placed 4 GiB on GPU 0 (A100 80GB) (simulated)" in log, log[-6000:]
    demo.process.send_signal(signal.SIGINT)  # Ctrl-C
    assert demo.process.wait(timeout=90) == 0, demo.output()
    assert "Stopped." in demo.output()
    with contextlib.suppress(FileNotFoundError):
        pid = int((demo.workdir / "jupyterhub-proxy.pid").read_text())
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    machine = json.loads((demo.workdir / "machine.json").read_text())
    assert machine["nodes"][0]["labels"]["aispike.io/inventory"] == "simulated"


def _admin_panel_adds_up(demo: Demo) -> None:
    """The admin's map: its totals add up to the capacity, "fragmented" is one figure; the
    history says when there is not enough of it to draw; times are the browser's."""
    from playwright.sync_api import sync_playwright

    password = (demo.workdir / "admin-password").read_text().strip()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 900},
                                          timezone_id="Asia/Kolkata", locale="en-GB")
            page = context.new_page()
            page.goto(f"{demo.url}hub/login?next=%2Fservices%2Faispike%2F")
            page.fill("#username_input", "admin")
            page.fill("#password_input", password)
            page.click("#login_submit")
            page.wait_for_selector("#aispike-panel[data-loaded]", timeout=60_000)
            totals = page.inner_text("#map-totals")
            figures = re.search(r"([\d.]+) GiB = (.*)$", totals)
            assert figures, totals
            parts = re.findall(r"([a-z ]+) ([\d.]+) GiB", figures.group(2))
            names = [n.strip() for n, _ in parts]
            assert names[:3] == ["busy", "idle", "no verdict"] and "free" in names, totals
            assert names.count("fragmented") == 1 and totals.count("fragmented") == 1, totals
            assert abs(sum(float(v) for _, v in parts) - float(figures.group(1))) < 0.2, totals
            assert float(figures.group(1)) == 160, totals

            page.goto(f"{demo.url}services/aispike/admin/history")
            page.wait_for_selector("#aispike-panel[data-loaded='history']", timeout=60_000)
            for chart in page.locator(".chart").all():
                lines = chart.locator("polyline").count()
                if lines == 0:  # fewer than two points: said, not drawn
                    assert "Not enough history yet" in chart.inner_text(), chart.inner_text()
                    assert chart.locator("svg").count() == 0

            page.goto(f"{demo.url}services/aispike/admin/idle")
            page.wait_for_selector("#aispike-panel[data-loaded='idle']", timeout=60_000)
            summary = page.inner_text("#idle-summary")
            # A time of the service (UTC, ISO 8601) reads as the browser's local time.
            assert not re.search(r"\d{4}-\d\d-\d\dT\d\d:", summary), summary
        finally:
            browser.close()


def _fit_answer(page: Any, kind: str) -> str:
    """The fit preview's text once it shows ``kind`` (fits, waits, refused, unknown)."""
    page.wait_for_selector(f"#aispike-fit.{kind}", timeout=30_000)
    return str(page.inner_text("#aispike-fit"))
