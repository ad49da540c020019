"""Merging the cells of overlapping fields into one list of unique cells on the slide.

Neighbouring fields overlap, so a cell near a field's edge is seen twice; and a cell
cut by a field's border is seen only in part. Each cell must be counted exactly once
and classified from a whole view, so:

* every box is placed on the slide (um) with the field's stage position;
* two boxes from *different* fields are one cell when their overlap covers at least
  ``same_cell_overlap`` of the smaller box (a cut view is a sub-box of the whole
  view, so it matches however much of the cell is missing); boxes of one field are
  never merged (the detector's non-maximum suppression owns that);
* a box within ``edge_margin_px`` of its image border is a *cut* view: it is never
  counted itself; it waits until some field shows the same cell whole, and if none
  does by the end of the scan the cell is skipped and reported as such;
* of two whole views the first one scanned is kept (its crop is already stored).

The module is pure (no I/O, no clock), so it is tested with constructed geometry;
``CellMerger`` takes fields one at a time so the daemon can stop the scan as soon as
the target count is reached, and ``deduplicate`` is the one-call form.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from agent.acquisition.field import FieldImage
from drivers.camera.base import BgrImage

_log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]
"""An axis-aligned box (x0, y0, x1, y1): pixels in an image, or um on the slide."""

GRID_UM = 64.0
"""Bucket size of the spatial index (um): larger than any white cell, so a box spans at most 4."""


@dataclass(frozen=True)
class FieldGeometry:
    """Where a field lies on the slide: all dedup needs of a ``FieldImage``.

    ``x_um``/``y_um`` are the slide coordinates of the image centre; image +x is
    slide +x and image +y is slide +y.
    """

    index: int
    x_um: float
    y_um: float
    width_px: int
    height_px: int
    pixel_size_um: float
    focus_ok: bool = True

    @classmethod
    def of(cls, image: FieldImage) -> FieldGeometry:
        h, w = image.image.shape[:2]
        return cls(
            index=image.index,
            x_um=image.x_um,
            y_um=image.y_um,
            width_px=int(w),
            height_px=int(h),
            pixel_size_um=image.pixel_size_um,
            focus_ok=image.focus_ok,
        )

    def to_slide(self, px: float, py: float) -> tuple[float, float]:
        """Slide coordinates (um) of image pixel (px, py); same mapping as ``FieldImage``."""
        return (
            self.x_um + (px - self.width_px / 2.0) * self.pixel_size_um,
            self.y_um + (py - self.height_px / 2.0) * self.pixel_size_um,
        )

    def box_to_slide(self, box: Box) -> Box:
        x0, y0 = self.to_slide(box[0], box[1])
        x1, y1 = self.to_slide(box[2], box[3])
        return (x0, y0, x1, y1)

    def slide_bounds(self) -> Box:
        """The slide rectangle (um) this field covers."""
        return self.box_to_slide((0.0, 0.0, float(self.width_px), float(self.height_px)))

    def touches_border(self, box: Box, margin_px: float) -> bool:
        """Whether ``box`` (px) comes within ``margin_px`` of the image border (a cut cell)."""
        return (
            box[0] <= margin_px
            or box[1] <= margin_px
            or box[2] >= self.width_px - margin_px
            or box[3] >= self.height_px - margin_px
        )


class DetectionLike(Protocol):
    """What the detector gives for one cell (``agent.vision.detector.Detection``)."""

    @property
    def bbox(self) -> Sequence[float]: ...

    @property
    def score(self) -> float: ...


class CellCallLike(Protocol):
    """What the classifier says of one cell (``agent.vision.classifier.CellCall``)."""

    @property
    def label(self) -> str: ...

    @property
    def top_label(self) -> str: ...

    @property
    def confidence(self) -> float: ...

    @property
    def probabilities(self) -> Mapping[str, float] | Sequence[float]: ...


class VisionFindingLike(Protocol):
    """One cell as ``agent.vision.field_analysis.FieldAnalyzer.analyze`` returns it."""

    @property
    def bbox(self) -> Sequence[float]: ...

    @property
    def detection_score(self) -> float: ...

    @property
    def call(self) -> CellCallLike: ...


@dataclass(frozen=True)
class FieldCell:
    """One detected and classified cell in one field.

    ``label`` is the class the report counts (``unidentified`` when the classifier's
    confidence was below its threshold); ``top_label`` is its best guess regardless.
    ``crop`` is the cell's picture cut from the field, kept for the reviewer.
    """

    box_px: Box
    label: str
    top_label: str
    confidence: float
    probabilities: Mapping[str, float] = field(default_factory=dict)
    detection_score: float = 1.0
    crop: BgrImage | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_vision(
        cls,
        detection: DetectionLike,
        call: CellCallLike,
        labels: Sequence[str] = (),
        crop: BgrImage | None = None,
    ) -> FieldCell:
        """Adapt the vision helpers' outputs; ``labels`` names a probability vector."""
        probs = call.probabilities
        if isinstance(probs, Mapping):
            named = {str(k): float(v) for k, v in probs.items()}
        else:
            values = [float(v) for v in probs]
            names = (
                list(labels) if len(labels) == len(values) else [str(i) for i in range(len(values))]
            )
            named = dict(zip(names, values, strict=True))
        x0, y0, x1, y1 = (float(v) for v in detection.bbox[:4])
        return cls(
            box_px=(x0, y0, x1, y1),
            label=call.label,
            top_label=call.top_label,
            confidence=float(call.confidence),
            probabilities=named,
            detection_score=float(detection.score),
            crop=crop,
        )

    @classmethod
    def from_finding(cls, finding: VisionFindingLike, crop: BgrImage | None = None) -> FieldCell:
        """Adapt one ``agent.vision.field_analysis.CellFinding``.

        Its ``cut_by_border`` is not used: the border rule here has its own margin
        (``storage.counting.edge_margin_px``) so counting does not depend on it.
        """

        class _Detection:
            bbox = finding.bbox
            score = finding.detection_score

        return cls.from_vision(_Detection(), finding.call, crop=crop)


def as_field_cell(item: FieldCell | VisionFindingLike) -> FieldCell:
    """``item`` as a ``FieldCell`` (vision findings are adapted)."""
    return item if isinstance(item, FieldCell) else FieldCell.from_finding(item)


@dataclass(frozen=True)
class FieldFindings:
    """The cells found in one field, with the field's geometry."""

    field: FieldGeometry
    cells: Sequence[FieldCell]


@dataclass(frozen=True)
class UniqueCell:
    """A cell counted once: the whole view it is counted from and where it is on the slide."""

    finding: FieldCell
    field_index: int
    x_um: float
    y_um: float
    box_um: Box


@dataclass(frozen=True)
class DedupResult:
    """The unique cells of a scan and what was merged or left out on the way."""

    cells: tuple[UniqueCell, ...]
    duplicates_merged: int
    """Whole views dropped because an earlier field already showed the same cell whole."""
    edge_views_resolved: int
    """Cut views dropped because some field showed the same cell whole."""
    edge_cells_skipped: int
    """Cells only ever seen cut by a field border: not counted."""
    invalid_boxes: int
    """Boxes that were empty, inverted or not finite: ignored."""


@dataclass(eq=False)
class _Record:
    box_um: Box
    field_index: int
    cell: UniqueCell | None  # None for a pending cut view


def _overlap_of_smaller(a: Box, b: Box) -> float:
    """Intersection area over the smaller box's area (0..1)."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    smaller = min(area_a, area_b)
    return (w * h) / smaller if smaller > 0 else 0.0


def _union(a: Box, b: Box) -> Box:
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def _valid(box: Box) -> bool:
    return all(math.isfinite(v) for v in box) and box[2] > box[0] and box[3] > box[1]


class _Grid:
    """A bucket index of slide boxes, so matching stays O(1) per cell."""

    def __init__(self) -> None:
        self._buckets: dict[tuple[int, int], list[_Record]] = {}

    @staticmethod
    def _keys(box: Box) -> Iterable[tuple[int, int]]:
        for gx in range(math.floor(box[0] / GRID_UM), math.floor(box[2] / GRID_UM) + 1):
            for gy in range(math.floor(box[1] / GRID_UM), math.floor(box[3] / GRID_UM) + 1):
                yield (gx, gy)

    def add(self, record: _Record) -> None:
        for key in self._keys(record.box_um):
            self._buckets.setdefault(key, []).append(record)

    def remove(self, record: _Record) -> None:
        for key in self._keys(record.box_um):
            bucket = self._buckets.get(key, [])
            if record in bucket:
                bucket.remove(record)

    def near(self, box: Box) -> list[_Record]:
        seen: dict[int, _Record] = {}
        for key in self._keys(box):
            for record in self._buckets.get(key, ()):
                seen[id(record)] = record
        return list(seen.values())


class CellMerger:
    """Accumulates fields in scan order and keeps the unique, whole cells."""

    def __init__(self, edge_margin_px: float = 3.0, same_cell_overlap: float = 0.5) -> None:
        if not 0.0 < same_cell_overlap <= 1.0:
            raise ValueError(f"same_cell_overlap must be in (0, 1], got {same_cell_overlap}")
        self._margin = edge_margin_px
        self._min_overlap = same_cell_overlap
        self._whole = _Grid()
        self._pending = _Grid()
        self._pending_records: list[_Record] = []
        self._cells: list[UniqueCell] = []
        self._fields: list[FieldGeometry] = []
        self._duplicates = 0
        self._resolved = 0
        self._invalid = 0

    @property
    def cells(self) -> tuple[UniqueCell, ...]:
        return tuple(self._cells)

    @property
    def fields(self) -> tuple[FieldGeometry, ...]:
        return tuple(self._fields)

    def _match(self, grid: _Grid, box: Box, field_index: int) -> list[_Record]:
        return [
            r
            for r in grid.near(box)
            if r.field_index != field_index
            and _overlap_of_smaller(r.box_um, box) >= self._min_overlap
        ]

    def add_field(self, findings: FieldFindings) -> list[UniqueCell]:
        """Merge one field's cells; returns the cells newly counted from this field."""
        geometry = findings.field
        self._fields.append(geometry)
        accepted: list[UniqueCell] = []
        for finding in findings.cells:
            if not _valid(finding.box_px):
                self._invalid += 1
                _log.warning("field %d: ignoring an invalid box %s", geometry.index, finding.box_px)
                continue
            box_um = geometry.box_to_slide(finding.box_px)
            if geometry.touches_border(finding.box_px, self._margin):
                self._add_cut(box_um, geometry.index)
                continue
            if self._match(self._whole, box_um, geometry.index):
                self._duplicates += 1
                continue
            cx, cy = (box_um[0] + box_um[2]) / 2.0, (box_um[1] + box_um[3]) / 2.0
            cell = UniqueCell(
                finding=finding, field_index=geometry.index, x_um=cx, y_um=cy, box_um=box_um
            )
            self._whole.add(_Record(box_um, geometry.index, cell))
            self._cells.append(cell)
            accepted.append(cell)
            for pending in self._match(self._pending, box_um, geometry.index):
                self._pending.remove(pending)
                self._pending_records.remove(pending)
                self._resolved += 1
        return accepted

    def _add_cut(self, box_um: Box, field_index: int) -> None:
        if self._match(self._whole, box_um, field_index):
            self._resolved += 1
            return
        same = self._match(self._pending, box_um, field_index)
        if same:
            # Two cut views of one cell: keep one record covering both parts.
            record = same[0]
            self._pending.remove(record)
            record.box_um = _union(record.box_um, box_um)
            self._pending.add(record)
            return
        record = _Record(box_um, field_index, None)
        self._pending.add(record)
        self._pending_records.append(record)

    def result(self) -> DedupResult:
        return DedupResult(
            cells=tuple(self._cells),
            duplicates_merged=self._duplicates,
            edge_views_resolved=self._resolved,
            edge_cells_skipped=len(self._pending_records),
            invalid_boxes=self._invalid,
        )


def deduplicate(
    fields: Iterable[FieldFindings], edge_margin_px: float = 3.0, same_cell_overlap: float = 0.5
) -> DedupResult:
    """The unique, whole cells of a scan, in scan order."""
    merger = CellMerger(edge_margin_px=edge_margin_px, same_cell_overlap=same_cell_overlap)
    for f in fields:
        merger.add_field(f)
    return merger.result()


def truth_in_fields(
    cells: Iterable[tuple[float, float, str]], fields: Sequence[FieldGeometry]
) -> dict[str, int]:
    """Class counts of the (simulated) cells whose centres lie inside a scanned field.

    ``cells`` are (x_um, y_um, label) of the virtual slide's cells: the simulator's
    ground truth for comparing a report with what the scan could have seen.
    """
    bounds = [f.slide_bounds() for f in fields]
    counts: dict[str, int] = {}
    for x, y, label in cells:
        if any(b[0] <= x < b[2] and b[1] <= y < b[3] for b in bounds):
            counts[label] = counts.get(label, 0) + 1
    return counts
