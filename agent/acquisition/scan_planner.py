"""Which fields to visit, in what order, and when to stop: a pure planner.

Design (how the monolayer is found):

1. **Survey.** The scan area is cut into ``survey.columns`` x ``survey.rows`` cells; the
   centre of each is visited once, in serpentine order along the smear (x), focused and
   judged by its red-cell coverage (empty / monolayer / thick). The survey's focal
   points also seed the focus surface across the whole smear.
2. **Ranking.** Monolayer cells (that could be focused) are ranked by how close their
   coverage is to ``field_classes.ideal_coverage`` (cells touching, not piled); ties
   go to the cell nearest the better one. This is the "band": the part of the smear where a
   differential is read.
3. **Serpentine.** Fields lie on one grid over the scan area, each a field's size
   apart less ``field_overlap``, so neighbouring fields share that fraction and no two
   fields overlap more, even across cells. The fields whose centres lie in the best
   cell are visited in two serpentines (rows along x, alternating direction) that
   start at the cell's centre row, where the survey judged it: first that row and
   the rows above it, then the rows below it; then the next cell, and so on.
4. **Skipping.** Every captured field is judged again from its own image; empty or
   thick fields are skipped (not analysed). After ``max_consecutive_skips`` skipped
   fields in a row the scan has left the good zone going outwards, so the rest of
   that serpentine (half-cell) is abandoned.
5. **Stopping.** ``next_field`` returns None, with ``stop_reason`` set, once the white
   cells reported reach ``target_wbc``, ``max_fields`` fields were captured, the time
   budget would be overrun by one more field (at the mean time per field so far), or
   no planned field is left.

Time comes from an injected clock so the budget is tested without waiting.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from agent.acquisition.config import AcquisitionConfig
from agent.acquisition.field_classes import FieldKind

StopReason = Literal[
    "target_reached", "max_fields", "time_budget", "area_exhausted", "no_monolayer"
]


@dataclass(frozen=True)
class SurveyPoint:
    """The centre of one survey cell."""

    index: int
    row: int
    col: int
    x_um: float
    y_um: float


@dataclass(frozen=True)
class SurveyObservation:
    """What the survey saw at one point."""

    point: SurveyPoint
    kind: FieldKind
    coverage: float
    focused: bool
    """False when the point could not be focused: its coverage is then a blurred guess."""


@dataclass(frozen=True)
class PlannedField:
    """A field to capture: its centre in slide coordinates (um) and its survey cell."""

    order: int
    """Position in the plan (0 first)."""
    x_um: float
    y_um: float
    row: int
    col: int
    half: int = 0
    """0: the cell's centre row and those above it; 1: the rows below the centre."""


@dataclass(frozen=True)
class FieldRecord:
    """What became of a planned field."""

    field: PlannedField
    kind: FieldKind
    coverage: float
    analysed: bool


class ScanPlanner:
    """Plans the survey and the serpentine, and decides when the scan stops."""

    def __init__(
        self,
        config: AcquisitionConfig,
        field_width_um: float,
        field_height_um: float,
        *,
        clock: Callable[[], float],
    ) -> None:
        if field_width_um <= 0 or field_height_um <= 0:
            raise ValueError("field size must be positive")
        self._config = config
        self._field_w = field_width_um
        self._field_h = field_height_um
        self._clock = clock
        self._started = clock()
        area = config.scan_area
        self._cell_w = (area.x_max_um - area.x_min_um) / config.survey.columns
        self._cell_h = (area.y_max_um - area.y_min_um) / config.survey.rows
        self._observations: dict[tuple[int, int], SurveyObservation] = {}
        self._cells: list[tuple[int, int]] = []
        self._queue: list[PlannedField] = []
        self._planned = False
        self._records: list[FieldRecord] = []
        self._consecutive_skips = 0
        self._wbc = 0
        self._scan_started: float | None = None
        self._stop: StopReason | None = None

    # -- survey --------------------------------------------------------------------

    def survey_points(self) -> list[SurveyPoint]:
        """Survey cell centres in serpentine order along x (columns), alternating in y."""
        area = self._config.scan_area
        points: list[SurveyPoint] = []
        for col in range(self._config.survey.columns):
            rows = range(self._config.survey.rows)
            for row in rows if col % 2 == 0 else reversed(rows):
                points.append(
                    SurveyPoint(
                        index=len(points),
                        row=row,
                        col=col,
                        x_um=area.x_min_um + (col + 0.5) * self._cell_w,
                        y_um=area.y_min_um + (row + 0.5) * self._cell_h,
                    )
                )
        return points

    def record_survey(
        self, point: SurveyPoint, kind: FieldKind, coverage: float, *, focused: bool = True
    ) -> None:
        """What the survey saw at ``point``; call before ``plan``.

        A point that could not be focused is never chosen for the scan: a blurred image
        of a smear's edge (half glass, half thick) can pass for a monolayer.
        """
        self._observations[(point.row, point.col)] = SurveyObservation(
            point, kind, coverage, focused
        )

    @property
    def survey(self) -> tuple[SurveyObservation, ...]:
        return tuple(self._observations[k] for k in sorted(self._observations))

    # -- plan ----------------------------------------------------------------------

    @property
    def step_x_um(self) -> float:
        return self._field_w * (1.0 - self._config.field_overlap)

    @property
    def step_y_um(self) -> float:
        return self._field_h * (1.0 - self._config.field_overlap)

    def _grid(self, start: float, stop: float, size: float, step: float) -> list[float]:
        """Field centres from ``start`` so that every field lies inside [start, stop]."""
        if stop - start < size:
            return []
        n = math.floor((stop - start - size) / step + 1e-9) + 1
        return [start + size / 2.0 + k * step for k in range(n)]

    def ranked_cells(self) -> list[tuple[int, int]]:
        """Monolayer survey cells, best first (coverage nearest ideal, then nearest the best)."""
        ideal = self._config.field_classes.ideal_coverage
        mono = [o for o in self._observations.values() if o.kind == "monolayer" and o.focused]
        if not mono:
            return []
        mono.sort(key=lambda o: (abs(o.coverage - ideal), o.point.col, o.point.row))
        ranked = [mono.pop(0)]
        while mono:
            last = ranked[-1].point
            # Prefer quality, but among near-equal cells the one next door (short moves).
            mono.sort(
                key=lambda o: (
                    round(abs(o.coverage - ideal), 2),
                    abs(o.point.col - last.col) + abs(o.point.row - last.row),
                )
            )
            ranked.append(mono.pop(0))
        return [(o.point.row, o.point.col) for o in ranked]

    def _cell_fields(
        self, row: int, col: int, xs: list[float], ys: list[float]
    ) -> list[list[tuple[float, float]]]:
        """The cell's fields as two serpentines from its centre: upwards, then downwards.

        The survey judged the cell at its centre; its edges may already be a different
        zone (the smear's side, the start of the thick zone), so the scan starts where
        the judgement holds and works outwards.
        """
        area = self._config.scan_area
        x0 = area.x_min_um + col * self._cell_w
        y0 = area.y_min_um + row * self._cell_h
        cx = [x for x in xs if x0 <= x < x0 + self._cell_w]
        cy = [y for y in ys if y0 <= y < y0 + self._cell_h]
        if not cx or not cy:
            return []
        centre = min(range(len(cy)), key=lambda i: abs(cy[i] - (y0 + self._cell_h / 2.0)))
        halves = [cy[centre:], cy[:centre][::-1]]
        out: list[list[tuple[float, float]]] = []
        for rows in halves:
            fields: list[tuple[float, float]] = []
            for i, y in enumerate(rows):
                fields.extend((x, y) for x in (cx if i % 2 == 0 else reversed(cx)))
            if fields:
                out.append(fields)
        return out

    def plan(self) -> int:
        """Build the serpentine from the survey; returns the number of fields planned."""
        area = self._config.scan_area
        xs = self._grid(area.x_min_um, area.x_max_um, self._field_w, self.step_x_um)
        ys = self._grid(area.y_min_um, area.y_max_um, self._field_h, self.step_y_um)
        self._cells = self.ranked_cells()
        self._queue = []
        for row, col in self._cells:
            for half, fields in enumerate(self._cell_fields(row, col, xs, ys)):
                for x, y in fields:
                    self._queue.append(PlannedField(len(self._queue), x, y, row, col, half))
        self._planned = True
        if not self._cells:
            self._stop = "no_monolayer"
        return len(self._queue)

    @property
    def planned(self) -> tuple[PlannedField, ...]:
        """Fields still to visit, in order."""
        return tuple(self._queue)

    # -- scan ----------------------------------------------------------------------

    @property
    def stop_reason(self) -> StopReason | None:
        return self._stop

    @property
    def wbc_found(self) -> int:
        return self._wbc

    @property
    def records(self) -> tuple[FieldRecord, ...]:
        return tuple(self._records)

    @property
    def fields_captured(self) -> int:
        return len(self._records)

    @property
    def fields_skipped(self) -> int:
        return sum(1 for r in self._records if not r.analysed)

    @property
    def elapsed_s(self) -> float:
        return self._clock() - self._started

    def _mean_field_s(self) -> float:
        if self._scan_started is None or not self._records:
            return 0.0
        return (self._clock() - self._scan_started) / len(self._records)

    def _check_stop(self) -> StopReason | None:
        cfg = self._config
        if self._stop is not None:
            return self._stop
        if self._wbc >= cfg.target_wbc:
            return "target_reached"
        if len(self._records) >= cfg.max_fields:
            return "max_fields"
        if self.elapsed_s + self._mean_field_s() > cfg.time_budget_s:
            return "time_budget"
        if not self._queue:
            return "area_exhausted"
        return None

    def next_field(self) -> PlannedField | None:
        """The next field to capture, or None (and ``stop_reason`` set) when the scan ends."""
        if not self._planned:
            raise RuntimeError("plan() must be called before next_field()")
        if self._scan_started is None:
            self._scan_started = self._clock()
        self._stop = self._check_stop()
        if self._stop is not None:
            return None
        return self._queue.pop(0)

    def record_field(
        self, field: PlannedField, kind: FieldKind, coverage: float, analysed: bool
    ) -> None:
        """What the captured ``field`` turned out to be; skips the rest of a bad half-cell.

        ``analysed`` is False for a field that was not handed on (wrong kind, or it could
        not be focused); too many of those in a row abandon the field's survey cell.
        """
        self._records.append(FieldRecord(field, kind, coverage, analysed))
        if analysed:
            self._consecutive_skips = 0
            return
        self._consecutive_skips += 1
        if self._consecutive_skips >= self._config.field_classes.max_consecutive_skips:
            # Moving outwards from the cell's centre has left the good zone: the rest of
            # this half of the cell lies further out still.
            part = (field.row, field.col, field.half)
            self._queue = [f for f in self._queue if (f.row, f.col, f.half) != part]
            self._consecutive_skips = 0

    def add_wbc(self, count: int) -> None:
        """White cells found in an analysed field (the consumer's feedback)."""
        if count < 0:
            raise ValueError(f"white-cell count cannot be negative: {count}")
        self._wbc += count

    def stop(self, reason: StopReason) -> None:
        """End the scan early for ``reason`` (the next ``next_field`` returns None)."""
        self._stop = reason
