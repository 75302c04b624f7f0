"""tests/tools.py: ending a started process ends everything it started, in any session."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from tools import alive, descendants, end_group, find_tool, start_group

# A parent that ignores SIGTERM (as a hub restarting its proxy may) and starts a child in a
# session of its own (as JupyterHub starts its proxy and notebook servers).
PARENT = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                         start_new_session=True)
print(child.pid, flush=True)
time.sleep(600)
"""


def test_end_group_ends_children_in_other_sessions_and_a_parent_ignoring_sigterm() -> None:
    process = start_group([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    child = int(process.stdout.readline())
    deadline = time.monotonic() + 10
    while child not in descendants(process.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert child in descendants(process.pid)
    end_group(process, grace=1.0)
    assert process.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 5
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child)


def test_find_tool_finds_programs_on_path_and_not_missing_ones() -> None:
    python = find_tool(Path(sys.executable).name)
    assert python is not None and python.exists()
    assert find_tool("no-such-tool-aispike") is None
