"""The scan planner: survey order, band ranking, serpentine, overlap, skipping, stopping."""

from __future__ import annotations

import itertools

import pytest

from agent.acquisition.config import AcquisitionConfig
from agent.acquisition.field_classes import FieldKind
from agent.acquisition.scan_planner import ScanPlanner

FIELD_W, FIELD_H = 405.6, 304.0


class FakeClock:
    """An injected clock the test advances by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _config(**overrides: object) -> AcquisitionConfig:
    base: dict[str, object] = {
        "scan_area": {"x_min_um": 0, "x_max_um": 4000, "y_min_um": 0, "y_max_um": 3000},
        "survey": {"columns": 4, "rows": 3},
        "field_overlap": 0.05,
    }
    base.update(overrides)
    return AcquisitionConfig.model_validate(base)


def _planner(
    kinds: dict[tuple[int, int], tuple[FieldKind, float]] | None = None,
    clock: FakeClock | None = None,
    **overrides: object,
) -> ScanPlanner:
    planner = ScanPlanner(_config(**overrides), FIELD_W, FIELD_H, clock=clock or FakeClock())
    for point in planner.survey_points():
        kind, coverage = (kinds or {}).get((point.row, point.col), ("monolayer", 0.45))
        planner.record_survey(point, kind, coverage)
    planner.plan()
    return planner


def test_survey_is_a_serpentine_over_cell_centres() -> None:
    planner = ScanPlanner(_config(), FIELD_W, FIELD_H, clock=FakeClock())
    points = planner.survey_points()
    assert [(p.col, p.row) for p in points] == [
        (0, 0), (0, 1), (0, 2), (1, 2), (1, 1), (1, 0),
        (2, 0), (2, 1), (2, 2), (3, 2), (3, 1), (3, 0),
    ]  # fmt: skip
    assert (points[0].x_um, points[0].y_um) == (500.0, 500.0)
    assert (points[-1].x_um, points[-1].y_um) == (3500.0, 500.0)


def test_fields_overlap_by_the_configured_fraction_and_stay_in_the_area() -> None:
    planner = _planner()
    fields = planner.planned
    xs = sorted({round(f.x_um, 6) for f in fields})
    ys = sorted({round(f.y_um, 6) for f in fields})
    assert xs[1] - xs[0] == pytest.approx(FIELD_W * 0.95)
    assert ys[1] - ys[0] == pytest.approx(FIELD_H * 0.95)
    assert min(xs) - FIELD_W / 2 >= 0 and max(xs) + FIELD_W / 2 <= 4000
    assert min(ys) - FIELD_H / 2 >= 0 and max(ys) + FIELD_H / 2 <= 3000
    # one grid: no field position is planned twice
    assert len({(f.x_um, f.y_um) for f in fields}) == len(fields)


def test_two_serpentines_from_the_centre_of_a_cell() -> None:
    planner = _planner(
        {(r, c): ("empty", 0.0) for r in range(3) for c in range(4) if (r, c) != (1, 1)}
    )
    fields = planner.planned
    assert {(f.row, f.col) for f in fields} == {(1, 1)}
    rows: dict[float, list[float]] = {}
    for f in fields:
        rows.setdefault(f.y_um, []).append(f.x_um)
    ys = list(rows)
    # the cell spans y 1000-2000: its centre row (nearest 1500) first, upwards, then downwards
    centre = min(ys, key=lambda y: abs(y - 1500))
    upper = sorted(y for y in ys if y >= centre)
    lower = sorted((y for y in ys if y < centre), reverse=True)
    assert ys == upper + lower
    for half in (upper, lower):
        for i, y in enumerate(half):
            assert rows[y] == sorted(rows[y], reverse=i % 2 == 1)
    # within each serpentine, consecutive fields are neighbours: one step along x or in y
    for half_index in (0, 1):
        part = [f for f in fields if f.half == half_index]
        for a, b in itertools.pairwise(part):
            dx, dy = abs(a.x_um - b.x_um), abs(a.y_um - b.y_um)
            assert (dx, dy) in (
                pytest.approx((FIELD_W * 0.95, 0.0)),
                pytest.approx((0.0, FIELD_H * 0.95)),
            )


def test_best_monolayer_cell_first_then_the_next_best() -> None:
    kinds: dict[tuple[int, int], tuple[FieldKind, float]] = {
        (r, c): ("thick", 0.9) for r in range(3) for c in range(4)
    }
    kinds[(0, 3)] = ("monolayer", 0.30)
    kinds[(2, 2)] = ("monolayer", 0.44)
    kinds[(1, 0)] = ("empty", 0.01)
    planner = _planner(kinds)
    assert planner.ranked_cells() == [(2, 2), (0, 3)]
    cells = [(f.row, f.col) for f in planner.planned]
    assert cells == sorted(cells, key=lambda rc: 0 if rc == (2, 2) else 1)


def test_no_monolayer_means_no_fields() -> None:
    planner = _planner({(r, c): ("thick", 0.9) for r in range(3) for c in range(4)})
    assert planner.next_field() is None
    assert planner.stop_reason == "no_monolayer"


def test_stops_when_the_target_is_reached() -> None:
    planner = _planner(target_wbc=100)
    for _ in range(3):
        f = planner.next_field()
        assert f is not None
        planner.record_field(f, "monolayer", 0.4, True)
        planner.add_wbc(40)
    assert planner.wbc_found == 120
    assert planner.next_field() is None
    assert planner.stop_reason == "target_reached"


def test_stops_at_max_fields_counting_skipped_ones() -> None:
    planner = _planner(max_fields=5)
    for i in range(5):
        f = planner.next_field()
        assert f is not None
        planner.record_field(f, "empty" if i % 2 else "monolayer", 0.1, i % 2 == 0)
    assert planner.next_field() is None
    assert planner.stop_reason == "max_fields"
    assert planner.fields_skipped == 2


def test_time_budget_with_an_injected_clock() -> None:
    clock = FakeClock()
    planner = _planner(clock=clock, time_budget_s=100.0)
    clock.now += 40.0  # survey
    for _ in range(5):
        f = planner.next_field()
        assert f is not None
        clock.now += 10.0
        planner.record_field(f, "monolayer", 0.4, True)
    # 90 s spent, 10 s per field: one more would end exactly at the budget
    assert planner.next_field() is not None
    clock.now += 10.0
    assert planner.next_field() is None
    assert planner.stop_reason == "time_budget"


def test_area_exhausted() -> None:
    kinds = {(r, c): ("empty", 0.0) for r in range(3) for c in range(4)}
    kinds[(0, 0)] = ("monolayer", 0.45)
    planner = _planner(kinds)  # type: ignore[arg-type]
    n = len(planner.planned)
    for _ in range(n):
        f = planner.next_field()
        assert f is not None
        planner.record_field(f, "monolayer", 0.45, True)
    assert planner.next_field() is None
    assert planner.stop_reason == "area_exhausted"


def test_consecutive_skips_abandon_the_rest_of_a_half_cell() -> None:
    kinds: dict[tuple[int, int], tuple[FieldKind, float]] = {
        (r, c): ("empty", 0.0) for r in range(3) for c in range(4)
    }
    kinds[(1, 0)] = ("monolayer", 0.52)
    kinds[(1, 1)] = ("monolayer", 0.40)
    planner = _planner(kinds, field_classes={"max_consecutive_skips": 3})
    for half in (0, 1):
        assert len([f for f in planner.planned if (f.row, f.col, f.half) == (1, 0, half)]) > 3
        for _ in range(3):
            f = planner.next_field()
            assert f is not None and (f.row, f.col, f.half) == (1, 0, half)
            planner.record_field(f, "thick", 0.9, False)
    f = planner.next_field()
    assert f is not None and (f.row, f.col, f.half) == (1, 1, 0)


def test_a_skip_streak_is_broken_by_a_good_field() -> None:
    planner = _planner(field_classes={"max_consecutive_skips": 2})
    cell = None
    for kind in ("thick", "monolayer", "thick", "monolayer", "thick"):
        f = planner.next_field()
        assert f is not None
        cell = cell or (f.row, f.col)
        assert (f.row, f.col) == cell
        planner.record_field(f, kind, 0.5, kind == "monolayer")  # type: ignore[arg-type]


def test_next_field_before_plan_is_a_programming_error() -> None:
    planner = ScanPlanner(_config(), FIELD_W, FIELD_H, clock=FakeClock())
    with pytest.raises(RuntimeError):
        planner.next_field()


def test_negative_count_is_refused() -> None:
    with pytest.raises(ValueError):
        _planner().add_wbc(-1)


def test_bad_area_is_a_config_error() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="x_min_um"):
        _config(scan_area={"x_min_um": 5000, "x_max_um": 4000, "y_min_um": 0, "y_max_um": 1})


def test_a_survey_point_that_could_not_be_focused_is_not_scanned() -> None:
    planner = ScanPlanner(_config(), FIELD_W, FIELD_H, clock=FakeClock())
    for point in planner.survey_points():
        if (point.row, point.col) == (1, 1):
            # a blurred half-glass, half-thick edge looks like an ideal monolayer
            planner.record_survey(point, "monolayer", 0.52, focused=False)
        elif (point.row, point.col) == (2, 3):
            planner.record_survey(point, "monolayer", 0.30)
        else:
            planner.record_survey(point, "thick", 0.9)
    planner.plan()
    assert planner.ranked_cells() == [(2, 3)]
