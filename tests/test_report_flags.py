"""Each flag fires at its configured threshold, not before, with a message a clinician can read."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agent.report.builder import SampleSummary, build_report
from agent.report.config import FlagConfig
from agent.report.model import Provenance, Report
from tests.report_fixtures import TIMINGS, differential_labels

T = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
PROVENANCE = Provenance(
    software_version="1.0",
    device_id="test-01",
    config_hash="c" * 64,
    models=[],
    started_at=T,
    finished_at=T,
    issued_at=T,
)


def report(
    counts: dict[str, int],
    *,
    target: int = 100,
    fields: int = 10,
    out_of_focus: int = 0,
    faults: tuple[str, ...] = (),
    config: FlagConfig | None = None,
) -> Report:
    summary = SampleSummary(
        sample_id="S1",
        accession=None,
        target_wbc=target,
        fields=fields,
        fields_out_of_focus=out_of_focus,
        edge_cells_skipped=0,
        duplicates_merged=0,
        timings=TIMINGS,
        hardware_faults=faults,
    )
    return build_report(
        summary, differential_labels(counts), PROVENANCE, config or FlagConfig(), sequence=1
    )


def codes(r: Report) -> list[str]:
    return r.flag_codes()


NORMAL = {"neutrophil": 60, "lymphocyte": 30, "monocyte": 6, "eosinophil": 3, "basophil": 1}


def test_normal_sample_has_no_flags() -> None:
    assert codes(report(NORMAL)) == []


def test_target_not_reached() -> None:
    assert "target_not_reached" not in codes(report(NORMAL, target=100))
    r = report(NORMAL, target=101)
    assert "target_not_reached" in codes(r)
    message = next(f.message for f in r.flags if f.code == "target_not_reached")
    assert "100" in message and "101" in message and "confidence intervals" in message


def test_no_white_cells() -> None:
    r = report({"unidentified": 3, "platelet": 1})
    assert codes(r)[0] == "no_white_cells"
    assert "target_not_reached" not in codes(r)
    assert all(v.percent is None and v.ci95 is None for v in r.differential.values())
    assert r.nrbc_per_100_wbc is None


@pytest.mark.parametrize(
    ("unidentified", "fires"),
    [(11, False), (12, True)],  # 11/111 = 9.9%, 12/112 = 10.7% against a 10% threshold
)
def test_many_unidentified_threshold(unidentified: int, fires: bool) -> None:
    r = report({**NORMAL, "unidentified": unidentified})
    assert ("many_unidentified" in codes(r)) is fires


def test_unidentified_threshold_is_configurable() -> None:
    counts = {**NORMAL, "unidentified": 5}  # 4.8% of events
    assert "many_unidentified" not in codes(report(counts))
    assert "many_unidentified" in codes(report(counts, config=FlagConfig(unidentified_percent=4.0)))


@pytest.mark.parametrize(("bad", "fires"), [(0, False), (2, False), (3, True)])
def test_focus_failures_threshold(bad: int, fires: bool) -> None:
    # 10 fields, threshold 0.2: 2 bad is 20% (not above), 3 bad is 30%.
    assert ("focus_failures" in codes(report(NORMAL, out_of_focus=bad))) is fires


@pytest.mark.parametrize(("ig", "fires"), [(1, False), (2, True)])
def test_ig_present_at_threshold(ig: int, fires: bool) -> None:
    counts = {**NORMAL, "neutrophil": 60 - ig, "ig": ig}  # ig per 100 white cells
    r = report(counts)
    assert r.differential["ig"].percent == float(ig)
    assert ("ig_present" in codes(r)) is fires


@pytest.mark.parametrize(("nrbc", "fires"), [(0, False), (1, True)])
def test_nrbc_present_at_threshold(nrbc: int, fires: bool) -> None:
    r = report({**NORMAL, "erythroblast": nrbc})
    assert r.nrbc_per_100_wbc == float(nrbc)
    assert ("nrbc_present" in codes(r)) is fires


def test_nrbc_threshold_is_configurable() -> None:
    counts = {**NORMAL, "erythroblast": 2}
    assert "nrbc_present" not in codes(report(counts, config=FlagConfig(nrbc_per_100_wbc=2.5)))


@pytest.mark.parametrize(("clumps", "fires"), [(2, False), (3, True)])
def test_platelet_clumps_threshold(clumps: int, fires: bool) -> None:
    assert ("platelet_clumps" in codes(report({**NORMAL, "platelet": clumps}))) is fires


def test_hardware_faults_come_first_with_their_text() -> None:
    r = report(NORMAL, faults=("stage lost steps on the Y axis",))
    assert codes(r)[0] == "hardware_fault"
    assert "stage lost steps on the Y axis" in r.flags[0].message
    assert r.hardware_faults == ["stage lost steps on the Y axis"]


def test_every_message_is_a_sentence_without_jargon() -> None:
    r = report(
        {"neutrophil": 40, "ig": 5, "erythroblast": 3, "platelet": 4, "unidentified": 30},
        out_of_focus=5,
        faults=("LED current low",),
    )
    assert set(codes(r)) == {
        "hardware_fault",
        "target_not_reached",
        "many_unidentified",
        "focus_failures",
        "ig_present",
        "nrbc_present",
        "platelet_clumps",
    }
    for flag in r.flags:
        assert (flag.message[0].isupper() or flag.message[0].isdigit()) and flag.message.endswith(
            "."
        )
        assert "None" not in flag.message and "_" not in flag.message
