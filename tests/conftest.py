"""Shared by every test folder: :mod:`tools` importable, and a SIGTERM that ends what tests started.

``tests/`` goes on ``sys.path`` (pytest's rootdir-relative import of this conftest does that), so
any test imports ``tools`` (:func:`tools.find_tool`, :func:`tools.start_group`).  A SIGTERM to
pytest (a CI timeout, ``kill``) becomes a KeyboardInterrupt, as Ctrl-C is: pytest then tears the
fixtures down, and the hubs and demos they started end with them.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure() -> None:
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)
