"""The lab extension as a user gets it: built wheel, real JupyterHub, real JupyterLab, Chromium.

The package is built into a wheel from this tree (with the prebuilt lab extension from
``labextension/``: `npm ci && npm run build`, done by .ci/run) and installed with ``pip install
--prefix`` into a fresh prefix; the hub's single-user servers run from that prefix only
(``PYTHONPATH``, ``JUPYTER_PATH``, ``JUPYTER_CONFIG_PATH``), so the server extension is enabled by
the wheel's own ``jupyter_server_config.d`` file and JupyterLab finds the wheel's prebuilt
extension.  GPUs are a recorded NVML machine (one H200) whose notebook process stands for the
user's kernel; the slice is 8 GiB.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from .conftest import (
    CHROMIUM,
    CHROMIUM_ARGS,
    RunningHub,
    browser_or_skip,
    unavailable,
    wait_until,
)

pytestmark = pytest.mark.browser
ROOT = Path(__file__).parents[2]
DOCS = ROOT / "docs"
FIXTURE = ROOT / "tests" / "fixtures" / "nvml" / "h200-1gpu.json"
EXT = "aispike-hub-lab"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def build_wheel(out: Path) -> Path:
    if not (ROOT / "aispike_hub" / "labextension" / "package.json").exists():
        unavailable("the lab extension is not built: run `npm ci && npm run build` in "
                    "labextension/ (scripts/test does)")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(out), str(ROOT)], check=True, timeout=300)
    (wheel,) = out.glob("aispike_hub-*.whl")
    return wheel


@pytest.fixture(scope="module")
def prefix(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The built wheel, installed into a fresh prefix; the environment that uses only it."""
    work = tmp_path_factory.mktemp("lab-wheel")
    wheel = build_wheel(work / "dist")
    names = zipfile.ZipFile(wheel).namelist()
    root = prefix_dir = work / "prefix"
    # --ignore-installed: without it pip removes the package from the running environment
    # (an editable install of this checkout) before installing into the prefix
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed",
                    "--prefix", str(prefix_dir), str(wheel)], check=True, timeout=300)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(root), "platbase": str(root)}))
    conf = work / "conf"
    conf.mkdir()
    (conf / "jupyter_server_config.json").write_text(json.dumps(
        {"AISpikeLab": {"fixture_pids": "kernels", "min_interval": 1.0}}))
    env = {
        "PYTHONPATH": str(site),
        "JUPYTER_PATH": str(root / "share" / "jupyter"),
        "JUPYTER_CONFIG_PATH": os.pathsep.join([str(root / "etc" / "jupyter"), str(conf)]),
        "AISPIKE_NVML_FIXTURE": str(FIXTURE),
        "AISPIKE_GPU_MEMORY_LIMIT": "8192",
        "AISPIKE_BACKEND": "native",
        "AISPIKE_GPU_MODEL": "NVIDIA H200",
    }
    return {"wheel": wheel, "names": names, "site": site, "env": env}


def test_the_wheel_carries_the_prebuilt_extension_and_enables_it(prefix: dict[str, Any]) -> None:
    names = prefix["names"]
    data = f"aispike_hub-{prefix['wheel'].name.split('-')[1]}.data/data/"
    assert data + f"share/jupyter/labextensions/{EXT}/package.json" in names
    assert data + f"share/jupyter/labextensions/{EXT}/install.json" in names
    assert any(re.fullmatch(re.escape(data) + rf"share/jupyter/labextensions/{EXT}/static/"
                            r"remoteEntry\.[0-9a-f]+\.js", n) for n in names)
    assert data + "etc/jupyter/jupyter_server_config.d/aispike_hub.json" in names

    env = {**os.environ, **prefix["env"]}
    bin_dir = Path(sys.executable).parent
    lab = subprocess.run([str(bin_dir / "jupyter"), "labextension", "list"], env=env,
                         capture_output=True, text=True, timeout=120)
    out = ANSI.sub("", lab.stdout + lab.stderr)
    assert re.search(rf"{EXT} v\S+ enabled\s+OK \(python, aispike-hub\)", out), out
    # The server extension's enabling file is proven by the hub tests below: the single-user
    # servers load it from this prefix's etc/jupyter alone (`jupyter server extension list`
    # does not read JUPYTER_CONFIG_PATH).


HUB_CONFIG = """
import sys
from pathlib import Path
c.JupyterHub.spawner_class = "simple"
c.Spawner.cmd = [str(Path(sys.executable).parent / "jupyterhub-singleuser")]
c.Spawner.args = {args!r}
c.Spawner.default_url = "/lab"
c.Spawner.environment = {env!r}
c.Spawner.start_timeout = 90
"""


@pytest.fixture(scope="module")
def lab_hub(prefix: dict[str, Any], hub_factory: Callable[..., RunningHub]
            ) -> Iterator[RunningHub]:
    args = ["--allow-root"] if os.getuid() == 0 else []
    hub = hub_factory("lab-extension", HUB_CONFIG.format(args=args, env=prefix["env"]))
    yield hub
    for user in ("alice", "bob"):
        hub.api("DELETE", f"/users/{user}/server")


def token_for(hub: RunningHub, user: str) -> str:
    hub.api("POST", f"/users/{user}")  # 201, or 409 when the user exists
    r = hub.api("POST", f"/users/{user}/tokens", json={"note": "lab extension test"})
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


def start_server(hub: RunningHub, user: str) -> None:
    """Start ``user``'s server unless it runs (the tests share one)."""

    def ready() -> bool:
        model = hub.api("GET", f"/users/{user}").json()
        return bool((model.get("servers") or {}).get("", {}).get("ready"))

    hub.api("POST", f"/users/{user}")
    if ready():
        return
    r = hub.api("POST", f"/users/{user}/server")
    assert r.status_code in (201, 202), r.text

    try:
        wait_until(ready, 90, f"{user}'s server")
    except AssertionError:
        raise AssertionError(f"spawn failed; hub log:\n{hub.log_text()[-6000:]}") from None


def status(hub: RunningHub, owner: str, token: str) -> requests.Response:
    return requests.get(f"{hub.url}user/{owner}/aispike/api/status", timeout=30,
                        headers={"Authorization": f"token {token}"})


def test_another_users_token_gets_403(lab_hub: RunningHub) -> None:
    start_server(lab_hub, "alice")
    alice, bob = token_for(lab_hub, "alice"), token_for(lab_hub, "bob")
    mine = status(lab_hub, "alice", alice)
    assert mine.status_code == 200, mine.text
    assert mine.json()["slice"]["limit_mib"] == 8192 and mine.json()["user"] == "alice"
    for path in ("status", "slice", "usage", "service"):
        theirs = requests.get(f"{lab_hub.url}user/alice/aispike/api/{path}", timeout=30,
                              headers={"Authorization": f"token {bob}"})
        assert theirs.status_code == 403, (path, theirs.status_code, theirs.text[:300])


def test_status_bar_in_real_jupyterlab(lab_hub: RunningHub) -> None:
    sync_playwright = browser_or_skip()
    start_server(lab_hub, "alice")
    alice = token_for(lab_hub, "alice")
    # A kernel: the recorded machine's notebook process (4458 MiB, 91 %) stands for it.
    r = requests.post(f"{lab_hub.url}user/alice/api/kernels", json={"name": "python3"},
                      headers={"Authorization": f"token {alice}"}, timeout=60)
    assert r.status_code == 201, r.text
    wait_until(lambda: status(lab_hub, "alice", alice).json()["usage"]["memory_used_mib"]
               == 4458, 30, "the kernel's GPU use")

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1400, "height": 800}).new_page()
            page.goto(f"{lab_hub.url}hub/login?next=%2Fuser%2Falice%2Flab")
            page.fill("#username_input", "alice")
            page.fill("#password_input", "any")
            page.click("#login_submit")
            item = page.locator(".aispike-StatusItem")
            item.wait_for(state="visible", timeout=90_000)
            page.wait_for_function(
                "() => document.querySelector('.aispike-StatusItem')?.textContent"
                " === 'GPU 4.4 / 8 GiB'", timeout=30_000)
            assert item.get_attribute("data-level") == "ok"
            assert item.get_attribute("title").startswith("GPU slice: 8 GiB on GPU 0 (NVIDIA H200)")
            item.click()  # opens the side panel
            panel = page.locator("#aispike-gpu-panel")
            panel.wait_for(state="visible", timeout=30_000)
            page.wait_for_selector("#aispike-gpu-panel .aispike-Kernel svg.aispike-Sparkline",
                                   timeout=30_000)
            assert "8 GiB on GPU 0 (NVIDIA H200)" in panel.inner_text()
            page.get_by_text("GPU slice: 8 GiB on GPU 0 (NVIDIA H200)").wait_for(timeout=30_000)
            with contextlib.suppress(Exception):  # JupyterLab's "news?" toast hides a corner
                page.get_by_role("button", name="No").click(timeout=3_000)
            if os.environ.get("AISPIKE_UPDATE_SCREENSHOTS"):  # the docs' picture, on request
                DOCS.mkdir(exist_ok=True)
                page.screenshot(path=str(DOCS / "lab-extension.png"))
        finally:
            browser.close()
