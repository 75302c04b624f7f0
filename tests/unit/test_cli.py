"""``aispike-hub``: every ``--version`` prints the package's version; no command is an error."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest

from aispike_hub import __version__
from aispike_hub.cli import SUBCOMMANDS, main, package_version


def test_package_version_is_the_distributions() -> None:
    try:
        expected = importlib.metadata.version("aispike-hub")
    except importlib.metadata.PackageNotFoundError:
        expected = __version__
    assert package_version() == expected
    assert package_version() != "0.0"


def test_top_level_version_and_no_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == package_version()
    assert main([]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "usage: aispike-hub <command>" in captured.err


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_every_subcommand_prints_the_version(command: str) -> None:
    # A subprocess: traitlets' --version prints and exits, and the service imports the hub's
    # dependencies that the cheap subcommands must not need.
    proc = subprocess.run([sys.executable, "-m", "aispike_hub.cli", command, "--version"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == package_version(), proc.stdout
