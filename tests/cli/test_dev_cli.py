"""The `q2c` command's dev-stack commands when nothing runs (typer's runner, no processes)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from cli.app import app

runner = CliRunner()


def test_status_of_a_stack_that_is_not_up(tmp_path: Path) -> None:
    state = tmp_path / ".q2c"
    result = runner.invoke(app, ["dev", "status", "--json", "--state-dir", str(state)])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["healthy"] is False
    assert [p["name"] for p in report["parts"]] == [
        "temporal",
        "tryton",
        "salesforce",
        "stripe",
        "service",
        "worker",
    ]
    assert not any(p["running"] for p in report["parts"])


def test_down_of_a_stack_that_is_not_up_is_harmless(tmp_path: Path) -> None:
    result = runner.invoke(app, ["dev", "down", "--state-dir", str(tmp_path / ".q2c")])
    assert result.exit_code == 0


def test_no_arguments_prints_help() -> None:
    result = runner.invoke(app, [])
    assert "dev" in result.stdout and "Usage" in result.stdout
