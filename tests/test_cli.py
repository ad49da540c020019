"""The command line as an operator meets it: help, exit codes, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import agent_cli

SUBCOMMANDS = ["run", "demo", "sim", "classify", "analyze", "validate-config", "bench", "version"]


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command: str) -> None:
    result = agent_cli(command, "--help")
    assert result.returncode == 0, result.stderr
    assert f"usage: algocyte-agent {command}" in result.stdout
    assert "--config" in result.stdout


def test_version() -> None:
    result = agent_cli("version")
    assert result.returncode == 0
    assert result.stdout.startswith("algocyte-agent ")


def test_validate_config_on_shipped_example() -> None:
    result = agent_cli("validate-config", "agent/config/agent.example.yaml")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(": ok")


def test_validate_config_reports_each_problem_on_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "agent.yaml"
    bad.write_text(
        "device_id: a1\nacquisition:\n  target_wbc: 5\nstage:\n  prot: 9\n", encoding="utf-8"
    )
    result = agent_cli("validate-config", str(bad))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr
    assert f"{bad}:3: acquisition.target_wbc" in lines[0]
    assert f"{bad}:5: stage.prot: unknown key" in lines[1]
    assert "Traceback" not in result.stderr


def test_debug_shows_traceback(tmp_path: Path) -> None:
    result = agent_cli("--debug", "validate-config", str(tmp_path / "missing.yaml"))
    assert result.returncode != 0
    assert "Traceback" in result.stderr


def test_options_accepted_after_subcommand(tmp_path: Path) -> None:
    result = agent_cli("validate-config", "--debug", str(tmp_path / "missing.yaml"))
    assert "Traceback" in result.stderr


def test_run_never_falls_back_to_the_simulator(tmp_path: Path) -> None:
    result = agent_cli("run", "--config", str(tmp_path / "absent.yaml"))
    assert result.returncode == 2
    assert "configuration file not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_subcommand_is_a_usage_error() -> None:
    result = agent_cli("frobnicate")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
