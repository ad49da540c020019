"""The terminal table: every number of the report where a reader expects it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.report.service import ReportService
from agent.report.table import WIDTH, render_table
from tests.report_fixtures import Clock, differential_labels, make_config, model_cards, run_sample

COUNTS = {
    "neutrophil": 118,
    "lymphocyte": 52,
    "monocyte": 14,
    "eosinophil": 9,
    "basophil": 2,
    "ig": 5,
    "erythroblast": 3,
    "unidentified": 8,
}
TRUTH = {
    "neutrophil": 120,
    "lymphocyte": 50,
    "monocyte": 15,
    "eosinophil": 10,
    "basophil": 2,
    "ig": 3,
}


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ReportService]:
    svc = ReportService(make_config(tmp_path), model_cards(), clock=Clock())
    yield svc
    svc.close()


def row(text: str, name: str) -> list[str]:
    line = next(x for x in text.splitlines() if x.startswith(name))
    return line[len(name) :].split()


def test_table_with_truth(service: ReportService) -> None:
    report = run_sample(
        service, "S-1", differential_labels(COUNTS), accession="ACC-1", target_wbc=200, truth=TRUTH
    )
    text = render_table(report)
    assert "PRELIMINARY" in text and "ACC-1" in text and report.result_id in text
    # Count, %, CI low, '-', CI high, truth %, difference.
    assert row(text, "Neutrophils") == ["118", "59.0", "52.1", "-", "65.6", "60.0", "-1.0"]
    assert row(text, "Immature granulocytes") == ["5", "2.5", "1.1", "-", "5.7", "1.5", "+1.0"]
    assert "Truth %" in text
    assert row(text, "Identified white cells")[0] == "200"
    assert "8  (3.8% of 208 white-cell events)" in text
    assert "3  (1.5 per 100 white cells)" in text
    assert "[ig_present]" in text
    assert "Timing: total 180.0 s" in text
    assert "wbc-classifier 1.2.0 (bbbbbbbbbbbb)" in text
    assert all(len(line) <= WIDTH for line in text.splitlines())


def test_table_without_truth_and_after_review(service: ReportService) -> None:
    run_sample(service, "S-1", differential_labels(COUNTS), target_wbc=200)
    final = service.finalize("S-1", "Dr. Ada")
    text = render_table(final)
    assert "Truth" not in text
    assert "FINAL" in text and f"Replaces {final.supersedes}" in text
    assert "Dr. Ada: signed off (final)" in text


def test_table_of_an_aborted_sample(service: ReportService) -> None:
    aborted = service.begin_sample("S-2").abort("door opened")
    text = render_table(aborted)
    assert "ABORTED" in text and "Aborted: door opened" in text
    assert "Neutrophils" not in text
    assert "[aborted]" in text
