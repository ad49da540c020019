"""Counting each cell once across overlapping fields, and the border rule, on constructed geometry.

Fields are 320 x 240 px at 0.5 um/px (160 x 120 um). Field A is centred at (0, 0):
x -80..80, y -60..60. Field B is centred at (120, 0): x 40..200, so A and B share
the strip x 40..80.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from agent.report.dedup import (
    CellMerger,
    FieldCell,
    FieldFindings,
    FieldGeometry,
    as_field_cell,
    deduplicate,
    truth_in_fields,
)
from tests.report_fixtures import fcell, field_image, geometry, slide_box_to_px

A = geometry(0, 0.0, 0.0)
B = geometry(1, 120.0, 0.0)


def seen(field: FieldGeometry, *boxes_um: tuple[float, float, float, float]) -> FieldFindings:
    return FieldFindings(field, [fcell(slide_box_to_px(field, b)) for b in boxes_um])


def test_geometry_matches_field_image() -> None:
    image = field_image(3, 12.5, -7.0, w=320, h=240, px=0.5)
    g = FieldGeometry.of(image)
    for px, py in [(0, 0), (100.5, 20.25), (320, 240)]:
        assert g.to_slide(px, py) == pytest.approx(image.to_slide(px, py))
    assert g.slide_bounds() == pytest.approx(image.slide_bounds())
    assert A.slide_bounds() == (-80.0, -60.0, 80.0, 60.0)


def test_cell_in_overlap_whole_in_both_fields_is_counted_once() -> None:
    cell = (55.0, -5.0, 65.0, 5.0)
    result = deduplicate([seen(A, cell), seen(B, cell)])
    assert len(result.cells) == 1
    only = result.cells[0]
    assert only.field_index == 0  # the first whole view is kept
    assert (only.x_um, only.y_um) == pytest.approx((60.0, 0.0))
    assert result.duplicates_merged == 1
    assert result.edge_cells_skipped == 0


def test_stage_error_of_a_few_um_still_merges() -> None:
    a_view = (55.0, -5.0, 65.0, 5.0)
    b_view = (56.5, -3.8, 66.5, 6.2)  # repositioning error of 1.5 um, 1.2 um
    result = deduplicate([seen(A, a_view), seen(B, b_view)])
    assert len(result.cells) == 1


def test_two_neighbouring_cells_in_the_overlap_stay_two() -> None:
    left, right = (50.0, -5.0, 60.0, 5.0), (61.0, -5.0, 71.0, 5.0)
    result = deduplicate([seen(A, left, right), seen(B, left, right)])
    assert len(result.cells) == 2
    assert result.duplicates_merged == 2


@pytest.mark.parametrize("order", ["cut-first", "whole-first"])
def test_cell_cut_by_a_border_is_counted_from_the_field_showing_it_whole(order: str) -> None:
    cell = (74.0, -5.0, 86.0, 5.0)  # crosses A's right edge at x = 80
    cut_px = slide_box_to_px(A, cell)
    assert A.touches_border(cut_px, 3) and cut_px[2] == 320
    fields = [seen(A, cell), seen(B, cell)]
    if order == "whole-first":
        fields.reverse()
    result = deduplicate(fields)
    assert len(result.cells) == 1
    assert result.cells[0].field_index == 1
    assert (result.cells[0].x_um, result.cells[0].y_um) == pytest.approx((80.0, 0.0))
    assert result.edge_cells_skipped == 0
    assert result.edge_views_resolved == 1


def test_cell_never_seen_whole_is_skipped_and_reported() -> None:
    cell = (-86.0, 0.0, -74.0, 10.0)  # crosses A's left edge; no field to the left
    result = deduplicate([seen(A, cell), seen(B)])
    assert result.cells == ()
    assert result.edge_cells_skipped == 1


def test_cell_cut_in_two_fields_is_skipped_once() -> None:
    # On the top edge (y = -60) of both A and B, inside their shared strip.
    cell = (55.0, -66.0, 65.0, -54.0)
    result = deduplicate([seen(A, cell), seen(B, cell)])
    assert result.cells == ()
    assert result.edge_cells_skipped == 1


def test_margin_decides_what_is_cut() -> None:
    # 2 px (1 um) from A's right edge: cut with a 3 px margin, whole with none.
    near_edge = (70.0, -5.0, 79.0, 5.0)
    assert len(deduplicate([seen(A, near_edge)], edge_margin_px=0).cells) == 1
    strict = deduplicate([seen(A, near_edge)], edge_margin_px=3)
    assert strict.cells == () and strict.edge_cells_skipped == 1


def test_boxes_of_one_field_are_never_merged() -> None:
    # Two overlapping detections in one field are the detector's business (NMS).
    g = A
    boxes = [(100.0, 100.0, 130.0, 130.0), (105.0, 105.0, 135.0, 135.0)]
    result = deduplicate([FieldFindings(g, [fcell(b) for b in boxes])])
    assert len(result.cells) == 2


def test_invalid_boxes_are_ignored() -> None:
    bad = [fcell((10.0, 10.0, 5.0, 20.0)), fcell((math.nan, 1.0, 2.0, 3.0))]
    result = deduplicate([FieldFindings(A, [*bad, fcell((50.0, 50.0, 70.0, 70.0))])])
    assert len(result.cells) == 1
    assert result.invalid_boxes == 2


def test_incremental_merger_returns_only_new_cells() -> None:
    merger = CellMerger()
    cell = (55.0, -5.0, 65.0, 5.0)
    assert len(merger.add_field(seen(A, cell))) == 1
    assert merger.add_field(seen(B, cell)) == []
    assert len(merger.cells) == 1


def test_random_slide_every_countable_cell_counted_exactly_once() -> None:
    """A 3 x 3 grid of overlapping fields over random cells.

    Expected from geometry alone: a cell is counted iff some field contains its box
    with the margin to spare; every such cell exactly once, every other one skipped.
    """
    rng = random.Random(7)
    margin_px = 3
    fields = [geometry(3 * r + c, c * 140.0, r * 100.0) for r in range(3) for c in range(3)]
    cells: list[tuple[float, float, float, float]] = []
    while len(cells) < 150:
        x, y = rng.uniform(-90, 370), rng.uniform(-70, 270)
        size = rng.uniform(8, 16)
        box = (x, y, x + size, y + size)
        if all(  # keep cells apart so each is unambiguous
            min(b[2], box[2]) - max(b[0], box[0]) < -1 or min(b[3], box[3]) - max(b[1], box[1]) < -1
            for b in cells
        ):
            cells.append(box)

    def visible(f: FieldGeometry, b: tuple[float, float, float, float]) -> bool:
        x0, y0, x1, y1 = f.slide_bounds()
        return b[2] > x0 and b[0] < x1 and b[3] > y0 and b[1] < y1

    def whole(f: FieldGeometry, b: tuple[float, float, float, float]) -> bool:
        m = margin_px * f.pixel_size_um
        x0, y0, x1, y1 = f.slide_bounds()
        return b[0] > x0 + m and b[1] > y0 + m and b[2] < x1 - m and b[3] < y1 - m

    findings = [
        FieldFindings(f, [fcell(slide_box_to_px(f, b)) for b in cells if visible(f, b)])
        for f in fields
    ]
    result = deduplicate(findings, edge_margin_px=margin_px)
    countable = [b for b in cells if any(whole(f, b) for f in fields)]
    never_whole = [b for b in cells if any(visible(f, b) for f in fields) and b not in countable]
    assert len(result.cells) == len(countable)
    assert result.edge_cells_skipped == len(never_whole)
    centres = sorted((round(c.x_um, 6), round(c.y_um, 6)) for c in result.cells)
    expected = sorted((round((b[0] + b[2]) / 2, 6), round((b[1] + b[3]) / 2, 6)) for b in countable)
    assert centres == expected
    assert result.duplicates_merged > 0  # the overlaps were exercised


def test_truth_counts_only_cells_inside_scanned_fields() -> None:
    cells = [(0.0, 0.0, "neutrophil"), (100.0, 0.0, "lymphocyte"), (500.0, 0.0, "neutrophil")]
    assert truth_in_fields(cells, [A, B]) == {"neutrophil": 1, "lymphocyte": 1}


def test_vision_findings_are_adapted() -> None:
    field_analysis = pytest.importorskip("agent.vision.field_analysis")
    classifier = pytest.importorskip("agent.vision.classifier")
    CellCall, CellFinding = classifier.CellCall, field_analysis.CellFinding

    call = CellCall(
        label="unidentified",
        top_label="monocyte",
        confidence=0.41,
        probabilities={"monocyte": 0.41, "lymphocyte": 0.39},
    )
    finding = CellFinding(
        bbox=(10.0, 12.0, 40.0, 44.0), detection_score=0.8, call=call, cut_by_border=False
    )
    cell = as_field_cell(finding)
    assert isinstance(cell, FieldCell)
    assert cell.box_px == (10.0, 12.0, 40.0, 44.0)
    assert (cell.label, cell.top_label, cell.confidence) == ("unidentified", "monocyte", 0.41)
    assert cell.probabilities == {"monocyte": 0.41, "lymphocyte": 0.39}
    assert cell.detection_score == 0.8
    # A probability vector is named by the classifier's labels.
    vec = FieldCell.from_vision(
        type("D", (), {"bbox": (0, 0, 5, 5), "score": 0.5})(),
        type(
            "C",
            (),
            {
                "label": "ig",
                "top_label": "ig",
                "confidence": 0.7,
                "probabilities": np.array([0.7, 0.3]),
            },
        )(),
        labels=["ig", "neutrophil"],
    )
    assert vec.probabilities == pytest.approx({"ig": 0.7, "neutrophil": 0.3})
