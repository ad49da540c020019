"""The report a real sample run produces: counts, denominators, provenance, JSON Schema."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import jsonschema
import pytest

from agent import __version__
from agent.config import config_hash
from agent.report.builder import tally
from agent.report.classes import WBC_CLASSES
from agent.report.model import Report
from agent.report.service import ReportService
from tests.report_fixtures import (
    TIMINGS,
    Clock,
    differential_labels,
    make_config,
    model_cards,
    run_sample,
)

DOCS = Path(__file__).resolve().parent.parent / "docs"

COUNTS = {
    "neutrophil": 118,
    "lymphocyte": 52,
    "monocyte": 14,
    "eosinophil": 9,
    "basophil": 2,
    "ig": 5,
    "erythroblast": 3,
    "platelet": 1,
    "unidentified": 8,
}


@pytest.fixture
def service(tmp_path: Path) -> ReportService:
    svc = ReportService(make_config(tmp_path), model_cards(), clock=Clock())
    yield svc
    svc.close()


def test_counts_percentages_and_denominators(service: ReportService) -> None:
    r = run_sample(service, "S-1", differential_labels(COUNTS), accession="ACC-7", target_wbc=200)
    assert r.status == "preliminary" and r.sequence == 1
    assert uuid.UUID(r.result_id).version == 4
    assert r.wbc_counted == 200  # the six white-cell classes only
    assert {c: r.differential[c].count for c in WBC_CLASSES} == {c: COUNTS[c] for c in WBC_CLASSES}
    assert r.differential["neutrophil"].percent == 59.0
    assert r.differential["neutrophil"].ci95 == (52.1, 65.6)
    assert sum(v.percent or 0 for v in r.differential.values()) == pytest.approx(100.0)
    assert r.unidentified == 8
    assert r.unidentified_percent_of_events == 3.8  # 8 / 208
    assert r.nrbc == 3 and r.nrbc_per_100_wbc == 1.5
    assert r.platelet_clumps == 1
    assert r.accession == "ACC-7"
    assert r.fields == 9 and r.edge_cells_skipped == 0
    assert r.replayed is False and r.schema_version == "1.0"
    assert r.method.percent_denominator == "identified_white_cells"
    assert any("Absolute counts are not available" in n for n in r.notes)


def test_provenance(service: ReportService) -> None:
    r = run_sample(service, "S-2", differential_labels(COUNTS))
    p = r.provenance
    assert p.software_version == __version__
    assert p.device_id == "test-01"
    assert p.config_hash == config_hash(service.config)
    assert [(m.name, m.sha256) for m in p.models] == [
        ("wbc-detector", "a" * 64),
        ("wbc-classifier", "b" * 64),
    ]
    assert p.started_at < p.finished_at <= p.issued_at  # type: ignore[operator]
    dumped = json.loads(r.to_json())
    assert dumped["provenance"]["started_at"].endswith("Z")
    assert dumped["timings"] == TIMINGS.model_dump()


def test_real_reports_validate_against_the_published_schema(service: ReportService) -> None:
    schema = json.loads((DOCS / "report.schema.json").read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    first = run_sample(
        service,
        "S-3",
        differential_labels(COUNTS),
        truth={"neutrophil": 120, "lymphocyte": 50},
        hardware_faults=("camera frame dropped",),
    )
    amended = service.reclassify("S-3", 1, "lymphocyte", "Dr. Ada")
    final = service.finalize("S-3", "Dr. Ada")
    run = service.begin_sample("S-4")
    aborted = run.abort("door opened")
    empty = run_sample(service, "S-5", [])
    for report in (first, amended, final, aborted, empty):
        document = json.loads(report.to_json())
        errors = sorted(validator.iter_errors(document), key=str)
        assert not errors, errors[0]
        assert Report.model_validate(document) == report
    # The schema does reject a broken report.
    bad = json.loads(first.to_json())
    bad["status"] = "done"
    assert list(validator.iter_errors(bad))


def test_aborted_report_has_no_differential(service: ReportService) -> None:
    run = service.begin_sample("S-6", accession="A1", target_wbc=150)
    r = run.abort("stage limit switch triggered", hardware_faults=("Y limit switch",))
    assert r.status == "aborted"
    assert r.reason == "stage limit switch triggered"
    assert r.differential == {}
    assert r.flag_codes() == ["hardware_fault", "aborted"]
    assert r.target_wbc == 150 and r.accession == "A1"


def test_unknown_labels_count_as_unidentified() -> None:
    t = tally(["neutrophil", "band", "neutrophil", "unidentified"])
    assert t.wbc["neutrophil"] == 2
    assert t.unidentified == 2
    assert t.wbc_counted == 2
