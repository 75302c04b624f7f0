"""Shared helpers for the agent's unit tests: recorded NVML machines and fake /proc trees."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aispike_hub.agent.recorded import RecordedNvml

NVML_FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "nvml"
ALL_FIXTURES = sorted(p.name for p in NVML_FIXTURES.glob("*.json"))


def load_fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((NVML_FIXTURES / name).read_text(encoding="utf-8"))
    return data


def recorded(name: str, faults: dict[tuple[str, int | None], str] | None = None) -> RecordedNvml:
    return RecordedNvml(load_fixture(name), faults)


def make_proc(
    root: Path,
    pid: int,
    ppid: int = 1,
    cgroup: str = "0::/user.slice/user-1000.slice/session-1.scope\n",
    environ: dict[str, str] | None = None,
    comm: str = "python3",
) -> None:
    """A /proc/<pid> directory with the files the agent reads (stat, cgroup, environ)."""
    d = root / str(pid)
    d.mkdir(parents=True, exist_ok=True)
    (d / "stat").write_text(f"{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 4194304 0 0\n")
    (d / "cgroup").write_text(cgroup)
    env = environ or {"PATH": "/usr/bin"}
    (d / "environ").write_bytes(b"\0".join(f"{k}={v}".encode() for k, v in env.items()) + b"\0")
