"""What the tests share about the machine: where helper programs are, and ending what they start.

- :func:`find_tool`: one lookup for the programs the tests drive (configurable-http-proxy, helm,
  kubectl, chromium, pg_ctl), in the places the project's own set-up puts them: ``PATH``, the
  test-cluster build (``scripts/test-cluster build``), the proxy that build or ``aispike-hub demo``
  installed with npm, Debian's packages.  A test that cannot find one names where it looked.
- :func:`start_group` / :func:`end_group`: a hub or demo started by a test runs in a process group
  of its own, and ending it kills the group and every process it started in other groups
  (JupyterHub starts its proxy and notebook servers in new sessions), so a failing or
  interrupted test leaves nothing behind.  Groups still registered when pytest exits (SIGTERM,
  a crash) are killed at exit.

Standard library only: the unit tests import it without the integration extra.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "test-cluster"


IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
"""Under CI a missing real component is a failure, never a skip."""


def unavailable(why: str) -> None:
    """A real component the test needs is missing: a failure with ``CI=true`` (a CI run that
    skipped it proved nothing), a skip that says what is missing elsewhere."""
    import pytest

    if IN_CI:
        pytest.fail(f"CI=true and {why}", pytrace=False)
    pytest.skip(why)


def cache_dir() -> Path:
    """``${AISPIKE_CACHE:-~/.cache/aispike-hub}``: the test-cluster build and the demo's npm."""
    return Path(os.environ.get("AISPIKE_CACHE", Path.home() / ".cache" / "aispike-hub"))


def stack_paths() -> dict[str, Any]:
    """``scripts/test-cluster paths``: where the pinned binaries and the proxy are (JSON)."""
    out = subprocess.run([sys.executable, str(SCRIPT), "paths"], capture_output=True, text=True,
                         check=True)
    return dict(json.loads(out.stdout))


def tool_dirs(name: str) -> list[Path]:
    """Folders the project's set-up installs ``name`` into, most specific first."""
    paths = stack_paths()
    cache = cache_dir()
    dirs = [Path(paths["bin"]), Path(paths["proxy_bin"])]
    # the demo's npm install (aispike_hub/demo.py find_proxy) and other proxy versions
    npm_bins = glob.glob(str(cache / "node" / "*" / "node_modules" / ".bin"))
    dirs += [Path(p) for p in sorted(npm_bins)]
    dirs.append(cache / "node" / "node_modules" / ".bin")
    dirs.append(REPO / ".venv" / "bin")
    if name == "pg_ctl":
        dirs += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    dirs.append(Path("/usr/bin"))
    return dirs


def find_tool(name: str) -> Path | None:
    """``name`` where the project's set-up installed it, else on PATH, else in the other caches.

    The pinned builds come first (``scripts/test-cluster build``'s helm and kubectl, its
    configurable-http-proxy), so a different version elsewhere on PATH does not change a test.
    None if absent everywhere.
    """
    dirs = tool_dirs(name)
    for folder in dirs[:2]:
        candidate = folder / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name)
    if found:
        return Path(found)
    for folder in dirs[2:]:
        candidate = folder / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def where_tools_are_looked_for(name: str) -> str:
    """For skip/fail messages: where :func:`find_tool` looked for ``name``."""
    return f"{', '.join(str(d) for d in tool_dirs(name))} and PATH (scripts/test installs it)"


# --- process groups --------------------------------------------------------------------------

_GROUPS: dict[int, subprocess.Popen[Any]] = {}


def start_group(argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
    """``Popen`` in a new session (its own process group), registered for :func:`end_group`."""
    process: subprocess.Popen[Any] = subprocess.Popen(list(argv), start_new_session=True,
                                                      **kwargs)
    _GROUPS[process.pid] = process
    return process


def _children() -> dict[int, list[int]]:
    """parent pid -> child pids, from /proc (Linux)."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # the command may hold spaces and parentheses: fields after the last ")"
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, whatever session it moved to."""
    tree = _children()
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _signal_all(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def end_group(process: subprocess.Popen[Any], grace: float = 20.0,
              extra_pids: Iterable[int] = ()) -> None:
    """Stop ``process``, its group and everything it started: SIGTERM, then SIGKILL.

    The tree is read before the first signal (a dying hub's children are re-parented away from
    it) and again before the SIGKILL (a hub may restart its proxy on SIGTERM).
    """
    _GROUPS.pop(process.pid, None)
    pids = {*descendants(process.pid), *extra_pids}
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)
    _signal_all(pids, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if process.poll() is not None and not any(alive(p) for p in pids):
            break
        if process.poll() is None:
            pids.update(descendants(process.pid))
        time.sleep(0.2)
    if process.poll() is None:
        pids.update(descendants(process.pid))
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    _signal_all(pids, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@atexit.register
def _end_all_groups() -> None:
    """What a test started and could not end (pytest killed by SIGTERM, a crash) ends here."""
    for process in list(_GROUPS.values()):
        end_group(process, grace=5.0)
