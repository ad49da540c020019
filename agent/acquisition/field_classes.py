"""What kind of smear a field shows: empty, monolayer or thick, from its red-cell coverage.

Red cells and nuclei absorb green, clear background does not, so the share of pixels
clearly darker than the background in green is the cell coverage. A monolayer (cells
side by side, background between them) is where a differential is read; a thick field
(cells piled on each other, no background) or an empty one (feathered end, off the
smear) is skipped. Coverage needs the background level: the calibrated one, since a
thick field has no background of its own to measure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from agent.acquisition.config import FieldClassConfig
from drivers.camera.base import BgrImage

FieldKind = Literal["empty", "monolayer", "thick"]

ANALYSIS_DOWNSAMPLE = 4
"""Images are judged shrunk this much: cells stay tens of pixels wide, noise averages out."""

_BACKGROUND_PERCENTILE = 99.0
"""The brightest pixels of a field with any background are background."""


def shrink(image: BgrImage, factor: int = ANALYSIS_DOWNSAMPLE) -> npt.NDArray[np.float32]:
    """``image`` shrunk by area averaging, as float32 in [0, 1] (BGR)."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 BGR image, got shape {image.shape}")
    h, w = image.shape[:2]
    size = (max(1, w // factor), max(1, h // factor))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA) if factor > 1 else image
    out: npt.NDArray[np.float32] = np.asarray(small, dtype=np.float32) / np.float32(255.0)
    return out


_FIT_STRIDE = 4
"""Every 4th pixel in each direction feeds the background fit (plenty for 6 terms)."""
_FIT_ROUNDS = 3


@dataclass(frozen=True)
class Background:
    """The background of one field (levels in fractions of full scale).

    Light falls off towards a field's corners (vignetting), so the background is a
    smooth map, not a number: levels are those at the map's brightest point and
    ``flat`` is the map relative to that point (1 there, below 1 towards the corners).
    """

    blue: float
    green: float
    red: float
    fraction: float
    """Share of the field that is background."""
    brightest_green: float
    """The field's 99th-percentile green level (how bright its clearest part is)."""
    flat: npt.NDArray[np.float32]
    """Relative background level over the shrunk field (max 1)."""


def _quadratic_fit(
    plane: npt.NDArray[np.float32], mask: npt.NDArray[np.bool_]
) -> npt.NDArray[np.float32]:
    """A 2-D quadratic fitted to ``plane`` where ``mask`` is set, evaluated everywhere."""
    h, w = plane.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    u = (xs - w / 2.0) / (w / 2.0)
    v = (ys - h / 2.0) / (h / 2.0)
    terms = [np.ones_like(u), u, v, u * u, u * v, v * v]
    sel = mask[::_FIT_STRIDE, ::_FIT_STRIDE]
    design = np.stack([t[::_FIT_STRIDE, ::_FIT_STRIDE][sel] for t in terms], axis=1)
    values = plane[::_FIT_STRIDE, ::_FIT_STRIDE][sel]
    if len(values) < 2 * len(terms):
        return np.full_like(plane, float(np.median(plane[mask])) if mask.any() else 0.0)
    coef, *_ = np.linalg.lstsq(design.astype(np.float64), values.astype(np.float64), rcond=None)
    fit = sum(float(c) * t for c, t in zip(coef, terms, strict=True))
    return np.asarray(fit, dtype=np.float32)


def estimate_background(small_bgr: npt.NDArray[np.float32], cell_darkness: float) -> Background:
    """Background of a shrunk field: a smooth map through its clear pixels.

    Starts from the pixels near the field's brightest green (in any field with clear
    glass, those are glass), fits a quadratic map through them, keeps the pixels within
    half of ``cell_darkness`` of the map and refits, so vignetted corners count as
    background and cells (darker by at least ``cell_darkness``) do not. A thick field
    has no background; its ``fraction`` may still look plausible, so the caller must
    not calibrate on a field it has no reason to think clear.
    """
    green = small_bgr[:, :, 1]
    top = float(np.percentile(green, _BACKGROUND_PERCENTILE))
    mask = green >= top * (1.0 - cell_darkness)
    fit = np.full_like(green, top)
    for _ in range(_FIT_ROUNDS):
        if not mask.any():
            break
        fit = _quadratic_fit(green, mask)
        mask = green >= fit * (1.0 - cell_darkness / 2.0)
    peak = float(fit.max())
    if not mask.any() or peak <= 0.0:
        return Background(0.0, 0.0, 0.0, 0.0, top, np.ones_like(green))
    flat = np.asarray(np.clip(fit / peak, 1e-3, 1.0), dtype=np.float32)
    levels = [float(np.median(small_bgr[:, :, c][mask] / flat[mask])) for c in range(3)]
    return Background(levels[0], levels[1], levels[2], float(mask.mean()), top, flat)


def red_cell_coverage(
    green: npt.NDArray[np.float32],
    background_green: float,
    cell_darkness: float,
    flat: npt.NDArray[np.float32] | None = None,
) -> float:
    """Share of a shrunk green plane darker than the background by ``cell_darkness``.

    ``flat`` (from the calibration's ``Background``) corrects for vignetting; one of
    another shape (a different sensor mode) is ignored.
    """
    if background_green <= 0.0:
        raise ValueError("background level must be positive")
    level = np.float32(background_green * (1.0 - cell_darkness))
    if flat is not None and flat.shape == green.shape:
        return float((green < level * flat).mean())
    return float((green < level).mean())


def classify_coverage(coverage: float, config: FieldClassConfig) -> FieldKind:
    """Empty below ``empty_below``, thick above ``thick_above``, monolayer between."""
    if coverage < config.empty_below:
        return "empty"
    if coverage > config.thick_above:
        return "thick"
    return "monolayer"


@dataclass(frozen=True)
class FieldClass:
    """The verdict on one field."""

    kind: FieldKind
    coverage: float


def classify_field(
    image: BgrImage,
    background_green: float,
    config: FieldClassConfig,
    flat: npt.NDArray[np.float32] | None = None,
) -> FieldClass:
    """Classify a full-size field against the calibrated background (level and flat map)."""
    green = shrink(image)[:, :, 1]
    coverage = red_cell_coverage(green, background_green, config.cell_darkness, flat)
    return FieldClass(classify_coverage(coverage, config), coverage)
