"""``aispike-hub agent`` reaches the agent through the top-level command."""

from __future__ import annotations

import json

import pytest
from agent_fixtures import NVML_FIXTURES

from aispike_hub.cli import main


def test_agent_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    fixture = NVML_FIXTURES / "h200-1gpu.json"
    assert main(["agent", "--once", f"--nvml-fixture={fixture}", "--node-name=h200"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["resourceSlice"]["spec"]["devices"][0]["attributes"]["model"] == {
        "string": "NVIDIA H200"}


def test_unknown_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["nope"]) == 2
    assert main(["--help"]) == 0
    assert "agent" in capsys.readouterr().out
    assert main([]) == 2  # no command: usage on stderr, non-zero (tests/unit/test_cli.py)
