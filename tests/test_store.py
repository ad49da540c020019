"""The sample store: lifecycle, sequence numbers, review trail, safe folders, disk budget."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.errors import InputError
from agent.report.service import ReportService
from agent.report.store import DB_NAME, SampleStore
from tests.report_fixtures import (
    Clock,
    differential_labels,
    fcell,
    field_image,
    make_config,
    model_cards,
    run_sample,
)

COUNTS = {"neutrophil": 30, "lymphocyte": 15, "monocyte": 3, "eosinophil": 1, "basophil": 1}
LABELS = differential_labels(COUNTS)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ReportService]:
    svc = ReportService(make_config(tmp_path), model_cards(), clock=Clock())
    yield svc
    svc.close()


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# -- sequence and persistence -----------------------------------------------------------


def test_sequence_survives_reopening_the_store(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    first = ReportService(config, clock=Clock())
    sequences = [run_sample(first, f"S-{i}", LABELS).sequence for i in range(3)]
    first.close()
    assert sequences == [1, 2, 3]

    again = ReportService(config, clock=Clock())
    assert again.store.last_sequence() == 3
    r = run_sample(again, "S-9", LABELS)
    assert r.sequence == 4
    # And every stored version is still there after the restart.
    assert again.get_result(r.result_id) == r
    assert [x.sequence for x in again.store.reports("S-0")] == [1]
    again.close()


def test_database_is_wal(tmp_path: Path, service: ReportService) -> None:
    run_sample(service, "S-1", LABELS)
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# -- sample ids -------------------------------------------------------------------------

BAD_IDS = ["../../etc", "..", ".", ".hidden", "a/b", "a\\b", "", "x" * 65, "a\x00b", "S 1", "é"]


@pytest.mark.parametrize("sample_id", BAD_IDS)
def test_path_like_sample_ids_are_rejected(
    tmp_path: Path, service: ReportService, sample_id: str
) -> None:
    before = sorted(p.name for p in tmp_path.parent.iterdir())
    with pytest.raises(InputError, match="sample id"):
        service.begin_sample(sample_id)
    assert sorted(p.name for p in tmp_path.parent.iterdir()) == before
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == []
    with pytest.raises(InputError):
        service.get_cell_image(sample_id, 1)


def test_accepted_ids_stay_inside_the_samples_folder(service: ReportService) -> None:
    for sample_id in ["S-1", "2026:03:01.A_7", "a..b"]:
        folder = service.store.sample_dir(sample_id)
        assert folder.parent == (service.store.state_dir / "samples").resolve()


# -- lifecycle --------------------------------------------------------------------------


def test_a_sample_id_cannot_be_reused_unless_aborted(service: ReportService) -> None:
    run_sample(service, "S-1", LABELS)
    with pytest.raises(InputError, match="already finished"):
        service.begin_sample("S-1")
    run = service.begin_sample("S-2")
    run.add_field(
        field_image(0, 0, 0, [((10, 10, 40, 40), "neutrophil")]), [fcell((10, 10, 40, 40))]
    )
    aborted = run.abort("slide not detected")
    # Running it again is allowed: old cells go, the aborted report stays.
    again = run_sample(service, "S-2", LABELS)
    assert again.wbc_counted == len(LABELS)
    assert len(service.store.cells("S-2")) == len(LABELS)
    assert [r.status for r in service.store.reports("S-2")] == ["aborted", "preliminary"]
    assert service.get_result(aborted.result_id).status == "aborted"


def test_killed_daemon_leaves_a_running_sample_that_is_reported_aborted(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    crashed = ReportService(config, clock=Clock())
    run = crashed.begin_sample("S-1", accession="A9")
    image = field_image(0, 0, 0, [((10, 10, 40, 40), "neutrophil"), ((60, 10, 90, 40), "ig")])
    run.add_field(image, [fcell((10, 10, 40, 40)), fcell((60, 10, 90, 40), "ig")])
    crashed.store.close()  # the process dies: no finish, no abort

    restarted = ReportService(config, clock=Clock())
    assert [s.sample_id for s in restarted.store.incomplete_samples()] == ["S-1"]
    reports = restarted.recover_incomplete()
    assert len(reports) == 1
    r = reports[0]
    assert (r.sample_id, r.status, r.accession) == ("S-1", "aborted", "A9")
    assert r.reason is not None and "stopped" in r.reason
    assert r.provenance.finished_at is None
    assert r.fields == 1 and r.wbc_counted == 2
    assert restarted.store.incomplete_samples() == []
    assert restarted.recover_incomplete() == []
    restarted.close()


def test_cell_images_are_served_as_png(service: ReportService) -> None:
    run_sample(service, "S-1", LABELS)
    cells = service.store.cells("S-1")
    assert len(cells) == len(LABELS)
    png = service.get_cell_image("S-1", cells[0].cell_id)
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    # The first cell's box is x, y 12..38 px; 25% margin (6.5 px) each side, rounded
    # outwards to whole pixels: 5..45, 40 px.
    assert image.shape == (40, 40, 3)
    with pytest.raises(InputError, match="no cell 999"):
        service.get_cell_image("S-1", 999)
    with pytest.raises(InputError, match="unknown sample"):
        service.get_cell_image("S-404", 1)


def test_cells_keep_slide_position_field_box_and_probabilities(service: ReportService) -> None:
    run = service.begin_sample("S-1")
    image = field_image(4, 1000.0, 2000.0, [((100, 60, 130, 90), "monocyte")])
    run.add_field(image, [fcell((100, 60, 130, 90), "monocyte", 0.77)])
    run.finish()
    (cell,) = service.store.cells("S-1")
    assert cell.field_index == 4
    assert cell.box_px == (100, 60, 130, 90)
    assert (cell.x_um, cell.y_um) == pytest.approx(image.to_slide(115, 75))
    assert (cell.label, cell.top_label, cell.confidence) == ("monocyte", "monocyte", 0.77)
    assert cell.probabilities == {"monocyte": 0.77}
    assert cell.reviewer_label is None


# -- review -----------------------------------------------------------------------------


def test_reclassify_and_finalize_keep_the_original_and_the_trail(service: ReportService) -> None:
    original = run_sample(service, "S-1", LABELS)
    cell = next(c for c in service.store.cells("S-1") if c.label == "neutrophil")

    amended = service.reclassify("S-1", cell.cell_id, "monocyte", "Dr. Ada")
    assert amended.status == "amended"
    assert amended.result_id != original.result_id
    assert amended.supersedes == original.result_id
    assert amended.sequence == original.sequence + 1
    assert amended.differential["neutrophil"].count == 29
    assert amended.differential["monocyte"].count == 4
    assert amended.provenance.started_at == original.provenance.started_at
    assert amended.provenance.issued_at > original.provenance.issued_at
    (entry,) = amended.audit
    assert (entry.reviewer, entry.action, entry.cell_id) == ("Dr. Ada", "reclassify", cell.cell_id)
    assert (entry.old_label, entry.new_label) == ("neutrophil", "monocyte")
    assert entry.result_id == amended.result_id

    second = service.reclassify("S-1", cell.cell_id, "artefact", "Dr. Bo")
    assert second.supersedes == amended.result_id
    assert second.audit[-1].old_label == "monocyte"
    assert second.artefacts == 1 and second.wbc_counted == len(LABELS) - 1

    final = service.finalize("S-1", "Dr. Ada")
    assert final.status == "final"
    assert final.supersedes == second.result_id
    assert final.differential == second.differential
    assert [a.action for a in final.audit] == ["reclassify", "reclassify", "finalize"]

    # The original is unchanged and every version is kept, in order.
    assert service.get_result(original.result_id) == original
    versions = service.store.reports("S-1")
    assert [v.status for v in versions] == ["preliminary", "amended", "amended", "final"]
    assert service.latest_result("S-1") == final
    assert service.store.cells("S-1")[cell.cell_id - 1].effective_label == "artefact"
    assert len(service.store.audit("S-1")) == 3

    # A correction after sign-off is an amendment again.
    later = service.reclassify("S-1", cell.cell_id, "neutrophil", "Dr. Ada")
    assert later.status == "amended" and later.differential == original.differential


def test_review_errors_change_nothing(service: ReportService) -> None:
    run_sample(service, "S-1", LABELS)
    service.finalize("S-1", "Dr. Ada")
    seq = service.store.last_sequence()
    trail = service.store.audit("S-1")
    with pytest.raises(InputError, match="already final"):
        service.finalize("S-1", "Dr. Ada")
    with pytest.raises(InputError, match="already neutrophil"):
        service.reclassify("S-1", 1, "neutrophil", "Dr. Ada")
    with pytest.raises(InputError, match="unknown label"):
        service.reclassify("S-1", 1, "blast", "Dr. Ada")
    with pytest.raises(InputError, match="no cell"):
        service.reclassify("S-1", 999, "monocyte", "Dr. Ada")
    with pytest.raises(InputError, match="reviewer"):
        service.reclassify("S-1", 1, "monocyte", "  ")
    assert service.store.last_sequence() == seq  # no number was used up
    assert service.store.audit("S-1") == trail
    assert service.store.cells("S-1")[0].reviewer_label is None

    running = service.begin_sample("S-2")
    with pytest.raises(InputError, match="running"):
        service.finalize("S-2", "Dr. Ada")
    running.abort("cancelled by the user")
    with pytest.raises(InputError, match="aborted"):
        service.reclassify("S-2", 1, "monocyte", "Dr. Ada")


# -- disk budget ------------------------------------------------------------------------


def test_pruning_respects_the_budget_oldest_first_never_running(
    tmp_path: Path, service: ReportService
) -> None:
    store = service.store
    running = service.begin_sample("S-0-running")  # the oldest sample, still running
    image = field_image(0, 0, 0, [((10, 10, 40, 40), "neutrophil")])
    running.add_field(image, [fcell((10, 10, 40, 40))])
    reports = [run_sample(service, f"S-{i}", LABELS) for i in range(1, 5)]
    samples_dir = tmp_path / "samples"
    sizes = {s.sample_id: s.bytes for s in store.samples()}
    for sample_id, size in sizes.items():  # accounting matches the files on disk
        assert size == folder_size(samples_dir / sample_id)
    assert store.usage_bytes() == sum(sizes.values())

    budget = sizes["S-0-running"] + sizes["S-3"] + sizes["S-4"]
    pruned = store.prune(budget)
    assert pruned == ["S-1", "S-2"]
    assert store.usage_bytes() <= budget
    assert not (samples_dir / "S-1").exists() and not (samples_dir / "S-2").exists()
    assert (samples_dir / "S-0-running" / "cells").is_dir()
    assert store.sample("S-1").pruned and not store.sample("S-3").pruned
    # Reports stay retrievable; images say why they are gone.
    assert service.get_result(reports[0].result_id) == reports[0]
    with pytest.raises(InputError, match="disk budget"):
        service.get_cell_image("S-1", 1)

    # Even a budget of nothing keeps the running sample and the latest finished one.
    assert store.prune(0) == ["S-3"]
    assert (samples_dir / "S-0-running").is_dir() and (samples_dir / "S-4").is_dir()
    running.finish()


def test_store_refuses_a_database_from_a_newer_agent(tmp_path: Path) -> None:
    SampleStore(tmp_path, "d1").close()
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        db.execute("PRAGMA user_version = 99")
    from agent.report.store import StoreError

    with pytest.raises(StoreError, match="newer agent"):
        SampleStore(tmp_path, "d1")
