"""Render the aispike-hub chart with the pinned helm of the test stack (no cluster needed)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "helm" / "aispike-hub"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
KUBE_VERSION = "1.36.3"


def helm_binary() -> Path:
    """The helm that ``scripts/test-cluster build`` pinned (tools.find_tool); skip (or in CI
    fail) without it."""
    from tools import find_tool, unavailable, where_tools_are_looked_for

    helm = find_tool("helm")
    if helm is None:
        unavailable(f"helm is missing: not found in {where_tools_are_looked_for('helm')}")
    return helm


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(helm_binary()), *args], capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def template_args(values: Sequence[Path] = (), sets: Sequence[str] = ()) -> list[str]:
    args = ["template", "rel", str(CHART), "--namespace", "hubns", "--kube-version", KUBE_VERSION]
    for v in values:
        args += ["--values", str(v)]
    for s in sets:
        args += ["--set", s]
    return args


def render(values: Sequence[Path] = (), sets: Sequence[str] = ()) -> list[dict[str, Any]]:
    out = helm(*template_args(values, sets)).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs: Sequence[dict[str, Any]], kind: str) -> Iterator[dict[str, Any]]:
    return (d for d in docs if d["kind"] == kind)


def one(docs: Sequence[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in by_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
    return found[0]
