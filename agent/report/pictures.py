"""The reviewer's pictures: cell crops, a gallery per class, and a map of the scan.

Reviewers check a differential faster by looking than by reading: a gallery shows
every cell of one class side by side (odd ones out stand out), and the scan map
shows where on the slide the fields and cells were. OpenCV and numpy only, so it
runs on the analyzer board.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import cv2
import numpy as np

from agent.errors import InputError
from agent.report.classes import CLASS_COLOURS_BGR, DISPLAY_NAMES, REVIEW_LABELS
from agent.report.dedup import Box, FieldGeometry
from drivers.camera.base import BgrImage

TILE_PX = 96
"""Side of one cell's square in a gallery."""
CAPTION_PX = 16
"""Height of the caption under each gallery tile."""
PAD_PX = 4
GALLERY_COLUMNS = 10
TITLE_PX = 28
"""Height of the title bar of every picture."""

MAP_PX = 1000
"""Longer side of the scan map's slide area."""
MAP_MARGIN_PX = 20
LEGEND_PX = 240
"""Width of the scan map's legend panel."""
LEGEND_ROW_PX = 22
DOT_RADIUS_PX = 3

WHITE = (255, 255, 255)
BLACK = (0, 0, 0)
GREY = (150, 150, 150)
RED = (0, 0, 220)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def encode_png(image: BgrImage) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise InputError("cannot encode an image as PNG")
    return bytes(buf.tobytes())


def read_image(path: Path) -> BgrImage | None:
    """A BGR image from ``path``, or None when it is missing or unreadable."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        return None
    return cast(BgrImage, np.asarray(image, dtype=np.uint8))


def crop_cell(image: BgrImage, box_px: Box, margin: float) -> BgrImage:
    """The cell's box plus ``margin`` (fraction of its size) of context, inside the image."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = box_px
    mx, my = (x1 - x0) * margin, (y1 - y0) * margin
    a = max(0, math.floor(x0 - mx))
    b = max(0, math.floor(y0 - my))
    c = min(w, math.ceil(x1 + mx))
    d = min(h, math.ceil(y1 + my))
    if c <= a or d <= b:
        raise InputError(f"cell box {box_px} lies outside the {w}x{h} image")
    return np.ascontiguousarray(image[b:d, a:c])


def _fit(image: BgrImage, side: int) -> BgrImage:
    """``image`` scaled to fit a ``side`` square, centred on white."""
    tile = np.full((side, side, 3), 255, np.uint8)
    h, w = image.shape[:2]
    scale = side / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (nw, nh), interpolation=interpolation)
    ox, oy = (side - nw) // 2, (side - nh) // 2
    tile[oy : oy + nh, ox : ox + nw] = resized
    return tile


@dataclass(frozen=True)
class GalleryCell:
    """One tile of a gallery: the crop and what to write under it."""

    cell_id: int
    confidence: float
    crop: BgrImage
    reviewed: bool = False


def gallery_shape(shown: int, columns: int = GALLERY_COLUMNS) -> tuple[int, int]:
    """(height, width) of a gallery picture showing ``shown`` cells."""
    cols = max(1, min(columns, shown))
    rows = max(1, math.ceil(shown / columns))
    width = PAD_PX + cols * (TILE_PX + PAD_PX)
    width = max(width, 360)  # room for the title
    height = TITLE_PX + PAD_PX + rows * (TILE_PX + CAPTION_PX + PAD_PX)
    return (height, width)


def gallery(
    label: str, cells: Sequence[GalleryCell], total: int, columns: int = GALLERY_COLUMNS
) -> BgrImage:
    """All (up to ``len(cells)``) cells of one class in a grid, with id and confidence.

    ``total`` is how many cells the class has; when more than shown, the title says so.
    A reviewer's relabel is marked with a '*' after the id.
    """
    shown = len(cells)
    height, width = gallery_shape(shown, columns)
    canvas = np.full((height, width, 3), 255, np.uint8)
    colour = CLASS_COLOURS_BGR.get(label, GREY)
    cv2.rectangle(canvas, (0, 0), (width - 1, TITLE_PX - 1), colour, -1)
    title = f"{DISPLAY_NAMES.get(label, label)}: {total} cell{'s' if total != 1 else ''}"
    if shown < total:
        title += f" (first {shown} shown)"
    cv2.putText(canvas, title, (PAD_PX, TITLE_PX - 9), FONT, 0.55, WHITE, 1, cv2.LINE_AA)
    for i, cell in enumerate(cells):
        r, c = divmod(i, columns)
        x = PAD_PX + c * (TILE_PX + PAD_PX)
        y = TITLE_PX + PAD_PX + r * (TILE_PX + CAPTION_PX + PAD_PX)
        canvas[y : y + TILE_PX, x : x + TILE_PX] = _fit(cell.crop, TILE_PX)
        caption = f"#{cell.cell_id}{'*' if cell.reviewed else ''} {cell.confidence:.2f}"
        cv2.putText(canvas, caption, (x + 2, y + TILE_PX + 12), FONT, 0.38, BLACK, 1, cv2.LINE_AA)
    return canvas


@dataclass(frozen=True)
class MapCell:
    """A cell on the scan map."""

    x_um: float
    y_um: float
    label: str


def _map_area(fields: Sequence[FieldGeometry]) -> tuple[Box, float, int, int]:
    if not fields:
        raise InputError("a scan map needs at least one field")
    bounds = [f.slide_bounds() for f in fields]
    x0 = min(b[0] for b in bounds)
    y0 = min(b[1] for b in bounds)
    x1 = max(b[2] for b in bounds)
    y1 = max(b[3] for b in bounds)
    span = max(x1 - x0, y1 - y0)
    scale = MAP_PX / span  # px per um
    return (x0, y0, x1, y1), scale, round((x1 - x0) * scale), round((y1 - y0) * scale)


def scan_map_shape(fields: Sequence[FieldGeometry], labels: int) -> tuple[int, int]:
    """(height, width) of the scan map of ``fields`` with ``labels`` legend rows."""
    _, _, mw, mh = _map_area(fields)
    legend_h = TITLE_PX + 2 * MAP_MARGIN_PX + (labels + 3) * LEGEND_ROW_PX
    return (
        max(TITLE_PX + mh + 2 * MAP_MARGIN_PX, legend_h),
        mw + 2 * MAP_MARGIN_PX + LEGEND_PX,
    )


def _scale_bar_um(span_um: float) -> float:
    """A round length near a fifth of the map's span (um)."""
    target = span_um / 5.0
    for step in (10_000, 5_000, 2_000, 1_000, 500, 200, 100, 50, 20, 10):
        if step <= target:
            return float(step)
    return 10.0


def scan_map(fields: Sequence[FieldGeometry], cells: Sequence[MapCell], title: str) -> BgrImage:
    """Scanned fields as rectangles over the slide area, cells as dots coloured by class.

    Out-of-focus fields are outlined in red. Slide +y is drawn downwards, as in the
    camera images.
    """
    (x0, y0, x1, y1), scale, mw, mh = _map_area(fields)
    present = [label for label in REVIEW_LABELS if any(c.label == label for c in cells)]
    height, width = scan_map_shape(fields, len(present))
    canvas = np.full((height, width, 3), 255, np.uint8)
    ox, oy = MAP_MARGIN_PX, TITLE_PX + MAP_MARGIN_PX

    def to_px(x: float, y: float) -> tuple[int, int]:
        return (ox + round((x - x0) * scale), oy + round((y - y0) * scale))

    cv2.putText(canvas, title, (MAP_MARGIN_PX, TITLE_PX - 8), FONT, 0.6, BLACK, 1, cv2.LINE_AA)
    cv2.rectangle(canvas, (ox - 1, oy - 1), (ox + mw + 1, oy + mh + 1), (235, 235, 235), -1)
    bad = 0
    for f in fields:
        b = f.slide_bounds()
        colour = GREY if f.focus_ok else RED
        bad += 0 if f.focus_ok else 1
        cv2.rectangle(canvas, to_px(b[0], b[1]), to_px(b[2], b[3]), colour, 1)
    counts: dict[str, int] = {}
    for c in cells:
        counts[c.label] = counts.get(c.label, 0) + 1
        cv2.circle(
            canvas,
            to_px(c.x_um, c.y_um),
            DOT_RADIUS_PX,
            CLASS_COLOURS_BGR.get(c.label, GREY),
            -1,
            cv2.LINE_AA,
        )
    # Legend.
    lx = ox + mw + MAP_MARGIN_PX + 10
    ly = TITLE_PX + MAP_MARGIN_PX + 6
    for label in present:
        cv2.circle(canvas, (lx + 6, ly), 6, CLASS_COLOURS_BGR.get(label, GREY), -1, cv2.LINE_AA)
        text = f"{DISPLAY_NAMES.get(label, label)} ({counts[label]})"
        cv2.putText(canvas, text, (lx + 18, ly + 5), FONT, 0.45, BLACK, 1, cv2.LINE_AA)
        ly += LEGEND_ROW_PX
    cv2.rectangle(canvas, (lx, ly - 6), (lx + 12, ly + 6), GREY, 1)
    cv2.putText(
        canvas, f"field ({len(fields)})", (lx + 18, ly + 5), FONT, 0.45, BLACK, 1, cv2.LINE_AA
    )
    ly += LEGEND_ROW_PX
    cv2.rectangle(canvas, (lx, ly - 6), (lx + 12, ly + 6), RED, 1)
    cv2.putText(
        canvas, f"out of focus ({bad})", (lx + 18, ly + 5), FONT, 0.45, BLACK, 1, cv2.LINE_AA
    )
    ly += LEGEND_ROW_PX
    bar_um = _scale_bar_um(max(x1 - x0, y1 - y0))
    bar_px = max(1, round(bar_um * scale))
    cv2.line(canvas, (lx, ly), (lx + bar_px, ly), BLACK, 2)
    bar_text = f"{bar_um / 1000:g} mm" if bar_um >= 1000 else f"{bar_um:g} um"
    cv2.putText(canvas, bar_text, (lx, ly + 16), FONT, 0.45, BLACK, 1, cv2.LINE_AA)
    return canvas
