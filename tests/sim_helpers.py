"""Shared helpers for the simulator tests: where a slide's cells should appear in an image."""

from __future__ import annotations

import numpy as np

from drivers.camera.base import BgrImage
from drivers.sim.slide import CellTruth
from drivers.sim.smear import Rect

NUCLEUS_GREEN = 0.2
"""A pixel whose green is below this fraction of the glass level is nuclear chromatin;
red cells (even two overlapping) and the film never get that dark."""


def field_rect(x_um: float, y_um: float, width: int, height: int, pixel_um: float) -> Rect:
    """The slide rectangle a width x height view centred at (x, y) covers."""
    return Rect(
        x_um - width / 2 * pixel_um,
        y_um - height / 2 * pixel_um,
        x_um + width / 2 * pixel_um,
        y_um + height / 2 * pixel_um,
    )


def expected_pixel(
    cell: CellTruth, x_um: float, y_um: float, width: int, height: int, pixel_um: float
) -> tuple[float, float]:
    """Where ``cell`` should be in a view centred at (x, y) (FieldImage.to_slide inverted)."""
    return (
        (cell.x_um - x_um) / pixel_um + width / 2,
        (cell.y_um - y_um) / pixel_um + height / 2,
    )


def nucleus_pixels(
    image: BgrImage, px: float, py: float, radius_px: float, glass_green: float
) -> int:
    """Dark, nucleus-coloured pixels within ``radius_px`` of (px, py)."""
    h, w = image.shape[:2]
    x0, x1 = max(0, int(px - radius_px)), min(w, int(px + radius_px) + 1)
    y0, y1 = max(0, int(py - radius_px)), min(h, int(py + radius_px) + 1)
    if x0 >= x1 or y0 >= y1:
        return 0
    patch = image[y0:y1, x0:x1].astype(np.float32)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    inside = (xx - px) ** 2 + (yy - py) ** 2 <= radius_px**2
    b, g = patch[..., 0], patch[..., 1]
    nucleus = (g < NUCLEUS_GREEN * glass_green) & (b > g) & inside
    return int(nucleus.sum())


def dark_mask(image: BgrImage, glass_green: float) -> np.ndarray:
    """Nucleus-dark pixels of a whole image (bool H x W)."""
    g = image[..., 1].astype(np.float32)
    b = image[..., 0].astype(np.float32)
    return (g < NUCLEUS_GREEN * glass_green) & (b > g)
