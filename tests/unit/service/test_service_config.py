"""A config the service cannot use stops it with the file and line; it never starts on defaults
(no quotas, a new database), as issue 26 found it doing after a syntax error."""

from __future__ import annotations

from pathlib import Path

import pytest

from aispike_hub.service.app import main


def refuse(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("aispike-hub service: cannot start: "), err
    return err


def test_a_syntax_error_names_the_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "aispike_service_config.py"
    config.write_text("c = get_config()\nc.AISpikeService.queue_timeout = 60\nc.AISpike(\n")
    assert f"{config}:3:" in refuse([f"--config={config}"], capsys)


def test_an_error_while_running_the_config_names_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "aispike_service_config.py"
    config.write_text("c = get_config()\nc.AISpikeService.policy = undefined_name\n")
    err = refuse([f"--config={config}"], capsys)
    assert f"{config}:2: NameError" in err, err


def test_a_broken_json_config_names_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "aispike_service_config.json"
    config.write_text('{\n  "AISpikeService": {\n    "queue_timeout": ,\n  }\n}\n')
    assert "line 3" in refuse([f"--config={config}"], capsys)


def test_a_config_file_named_on_the_command_line_must_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.py"
    assert f"{missing}: no such config file" in refuse([f"--config={missing}"], capsys)


def test_a_bad_policy_names_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "aispike_service_config.py"
    config.write_text("c = get_config()\n"
                      "c.AISpikeService.policy = {'defaults': {'quota': {'gpu_memory': 'lots'}}}\n")
    err = refuse([f"--config={config}", "--db-url=sqlite://"], capsys)
    assert "policy: defaults.quota.gpu_memory" in err, err
