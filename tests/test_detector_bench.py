"""``algocyte-agent bench`` runs on a machine with no data set and reports both models."""

from __future__ import annotations

import pytest

from tests.conftest import agent_cli


@pytest.mark.slow  # times both models at two thread settings: several seconds
def test_bench_reports_field_and_cell_latency() -> None:
    result = agent_cli("bench", "--repeats", "1")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "ms per field" in out
    assert "ms per cell" in out
    assert "1 thread" in out and "threads" in out


def test_bench_refuses_zero_repeats() -> None:
    result = agent_cli("bench", "--repeats", "0")
    assert result.returncode != 0
    assert "--repeats" in result.stderr
