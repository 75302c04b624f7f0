"""The README's first command, in a browser: ``aispike-hub demo`` on a machine without GPUs.

The demo runs as a user runs it (the CLI, a subprocess, Ctrl-C at the end) with the simulated
inventory "2x A100 80GB": a real JupyterHub with configurable-http-proxy, the AISpike service,
the local spawner and real JupyterLab servers.  Debian's Chromium (driven by Playwright) logs in
as a student, sees the form say the GPUs are simulated, starts a server with a 4 GiB slice, sees
the lab extension's status bar show it (and the server extension's API say the same), stops it;
then a Ctrl-C stops everything.  On the way the form's live fit preview says "does not fit" for
a slice over the student's quota and "fits" for the 4 GiB one (the local spawner's preview
through the AISpike service).

With ``AISPIKE_UPDATE_SCREENSHOTS=1`` the README's screenshot (docs/demo.png) is taken again.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tools import end_group, start_group

pytestmark = pytest.mark.browser
ROOT = Path(__file__).parents[2]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


def unavailable(why: str) -> None:
    """A missing component: a failure under CI, a skip elsewhere."""
    if IN_CI:
        pytest.fail(f"CI=true and {why}")
    pytest.skip(why)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Demo:
    url: str
    workdir: Path
    process: subprocess.Popen[bytes]
    out: Path

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def log(self) -> str:
        path = self.workdir / "jupyterhub.log"
        return path.read_text(errors="replace") if path.exists() else "(no hub log)"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    try:
        import playwright  # noqa: F401
    except ImportError:
        unavailable("playwright is not installed (pip install -e '.[test]')")
    if not os.path.exists(CHROMIUM):
        unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    work = tmp_path_factory.mktemp("demo")
    out = work / "demo.out"
    port = _free_port()
    with open(out, "wb") as f:
        process = start_group(
            [sys.executable, "-m", "aispike_hub.cli", "demo", f"--workdir={work / 'state'}",
             f"--port={port}", "--gpus=2x A100 80GB"],
            cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    d = Demo(f"http://127.0.0.1:{port}/", work / "state", process, out)
    deadline = time.monotonic() + 120
    while "Ctrl-C stops everything" not in d.output():
        if process.poll() is not None or time.monotonic() > deadline:
            end_group(process, grace=5)
            if "configurable-http-proxy is needed" in d.output():
                unavailable("configurable-http-proxy is missing (scripts/test-cluster build)")
            raise AssertionError(f"the demo did not start:\n{d.output()}\n{d.log()[-6000:]}")
        time.sleep(0.3)
    yield d
    # after a failure before the test's Ctrl-C: the demo, its hub, proxy and notebook servers
    end_group(process, grace=30)


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
            assert "GPU slice: 4 GiB" in (item.get_attribute("title") or "")

            # The AISpike service admitted it where the local spawner placed it.
            page.goto(f"{demo.url}hub/home")
            page.click("#stop")
            page.wait_for_selector("#start", state="visible", timeout=60_000)
        finally:
            browser.close()

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


def _fit_answer(page: Any, kind: str) -> str:
    """The fit preview's text once it shows ``kind`` (fits, waits, refused, unknown)."""
    page.wait_for_selector(f"#aispike-fit.{kind}", timeout=30_000)
    return str(page.inner_text("#aispike-fit"))
