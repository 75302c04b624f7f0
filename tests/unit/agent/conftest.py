"""pytest fixtures of the agent's unit tests (helpers live in agent_fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def proc_root(tmp_path: Path) -> Path:
    """An empty directory standing in for /proc (filled with agent_fixtures.make_proc)."""
    root = tmp_path / "proc"
    root.mkdir()
    return root
