"""The virtual microscope's optics: where focus is, how defocus blurs, how light falls off.

Pure functions and small value objects over numpy arrays; the camera model composes
them. Units: stage/slide coordinates and z in um, blur in pixels of the output image.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import numpy.typing as npt

from drivers.camera.base import BgrImage
from drivers.sim.config import OpticsConfig
from drivers.sim.smear import Rect

MAX_DIRECT_SIGMA_PX = 4.0
"""Blurs wider than this are done on a shrunk image (same result, a fraction of the work)."""
MIN_SIGMA_PX = 0.05
MAX_DEFOCUS_SIGMA_PX = 120.0
"""Widest defocus blur rendered (px); reached about 80 um from focus at the defaults."""
"""Below this a blur changes nothing visible and is skipped."""


class FocalSurface:
    """Best-focus stage z over the slide: a tilted, slightly bowed plane (um).

    ``z(x, y) = focus_z + tilt_x * (x - xc) + tilt_y * (y - yc) + bow * r^2 / R^2`` where
    (xc, yc) is the smear's centre, r the distance from it and R the half-length of the
    smear, so the bow is the height of the smear's ends above the tilted plane.
    """

    def __init__(self, config: OpticsConfig, smear_extent: Rect) -> None:
        self._z0 = config.focus_z_um
        self._tx = config.focus_tilt_x_um_per_mm / 1000.0
        self._ty = config.focus_tilt_y_um_per_mm / 1000.0
        self._bow = config.focus_bow_um
        self._xc, self._yc = smear_extent.centre
        self._r2 = max(((smear_extent.x1 - smear_extent.x0) / 2.0) ** 2, 1.0)

    def z_at(self, x_um: float, y_um: float) -> float:
        """The stage z (um) at which the slide point (x, y) is in best focus."""
        dx, dy = x_um - self._xc, y_um - self._yc
        return self._z0 + self._tx * dx + self._ty * dy + self._bow * (dx * dx + dy * dy) / self._r2


def defocus_sigma_px(dz_um: float, blur_um_per_um: float, pixel_size_um: float) -> float:
    """Gaussian sigma (output px) of the blur at ``dz_um`` from best focus.

    Capped at ``MAX_DEFOCUS_SIGMA_PX``: far from focus the field is a featureless wash
    either way, and an uncapped blur would need a huge neighbourhood of the slide.
    """
    return min(abs(dz_um) * blur_um_per_um / pixel_size_um, MAX_DEFOCUS_SIGMA_PX)


def blur_margin_px(sigma_px: float) -> int:
    """Pixels of context a blur of ``sigma_px`` needs around the output."""
    return math.ceil(3.0 * sigma_px) + 2


def gaussian_blur(image: BgrImage, sigma_px: float) -> BgrImage:
    """Gaussian blur of ``sigma_px``, fast for wide blurs.

    A wide blur is computed on an image shrunk by an integer factor (area averaging),
    blurred by the remaining sigma and enlarged again; the variance the shrinking and
    the linear enlargement add is subtracted, so the total blur grows smoothly with
    ``sigma_px`` (no step where the method switches).
    """
    if sigma_px < MIN_SIGMA_PX:
        return image
    if sigma_px <= MAX_DIRECT_SIGMA_PX:
        out: BgrImage = np.asarray(
            cv2.GaussianBlur(image, (0, 0), sigma_px, borderType=cv2.BORDER_REFLECT), np.uint8
        )
        return out
    factor = max(2, int(sigma_px // 2.0))
    h, w = image.shape[:2]
    small = np.asarray(
        cv2.resize(image, (max(1, w // factor), max(1, h // factor)), interpolation=cv2.INTER_AREA),
        np.uint8,
    )
    # Box of width f adds (f^2 - 1) / 12, linear enlargement about f^2 / 6 (full-res px^2).
    added = (factor * factor - 1) / 12.0 + factor * factor / 6.0
    rest = math.sqrt(max(sigma_px * sigma_px - added, 0.0)) / factor
    if rest >= MIN_SIGMA_PX:
        small = np.asarray(
            cv2.GaussianBlur(small, (0, 0), rest, borderType=cv2.BORDER_REFLECT), np.uint8
        )
    big: BgrImage = np.asarray(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR), np.uint8)
    return big


def vignetting_map(width: int, height: int, strength: float) -> npt.NDArray[np.float32]:
    """Relative brightness over the field: 1 in the centre, ``1 - strength`` in the corners."""
    xs = (np.arange(width, dtype=np.float32) - (width - 1) / 2.0) / (width / 2.0)
    ys = (np.arange(height, dtype=np.float32) - (height - 1) / 2.0) / (height / 2.0)
    r2 = (xs[None, :] ** 2 + ys[:, None] ** 2) / 2.0  # 1 at the corners
    out: npt.NDArray[np.float32] = (1.0 - strength * r2).astype(np.float32)
    return out


def drift_factor(capture_index: int, amplitude: float, period_captures: int, phase: float) -> float:
    """Slow brightness drift of the lamp, by capture count (deterministic)."""
    return 1.0 + amplitude * math.sin(2.0 * math.pi * capture_index / period_captures + phase)
