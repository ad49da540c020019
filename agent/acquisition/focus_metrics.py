"""Sharpness of an image: pure functions the autofocus compares across z.

All metrics work on the green channel (haematoxylin/eosin-like stains absorb green most,
so cells have the most contrast there), shrunk by area averaging (less noise, less work)
and divided by its mean, which makes every score independent of LED level, exposure and
gain: a brighter image of the same field scores the same. A field with nothing on it
(clear glass) has no texture; its score is reported with ``textured=False`` so a caller
never mistakes noise for focus.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from agent.acquisition.config import FocusMetricName
from drivers.camera.base import BgrImage

FloatImage = npt.NDArray[np.float32]

_MIN_MEAN = 1e-3
"""Mean level (fraction of full scale) below which an image is black, not a field."""

_CONTRAST_DOWNSAMPLE = 8
"""Shrink factor for the texture test: coarse enough to average sensor noise away."""
_CONTRAST_HIGHPASS_PX = 12.0
"""Structure wider than this (px after shrinking; ~20 um at 0.2 um/px) is illumination
(vignetting, lamp falloff), not texture, and is removed before measuring the spread."""


def green_plane(image: BgrImage, downsample: int) -> FloatImage:
    """The green channel, shrunk ``downsample`` times by area averaging, in [0, 1]."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 BGR image, got shape {image.shape}")
    green = np.ascontiguousarray(image[:, :, 1])
    if downsample > 1:
        h, w = green.shape
        size = (max(1, w // downsample), max(1, h // downsample))
        return np.asarray(
            cv2.resize(green, size, interpolation=cv2.INTER_AREA), dtype=np.float32
        ) / np.float32(255.0)
    return np.asarray(green, dtype=np.float32) / np.float32(255.0)


def _normalised(plane: FloatImage) -> FloatImage | None:
    mean = float(plane.mean())
    if mean < _MIN_MEAN:
        return None
    return plane / np.float32(mean)


def laplacian_variance(plane: FloatImage) -> float:
    """Variance of the Laplacian of the mean-normalised plane (high spatial frequencies)."""
    norm = _normalised(plane)
    if norm is None:
        return 0.0
    lap = cv2.Laplacian(norm, cv2.CV_32F, ksize=3)
    return float(lap.var())


def tenengrad(plane: FloatImage) -> float:
    """Mean squared Sobel gradient magnitude of the mean-normalised plane."""
    norm = _normalised(plane)
    if norm is None:
        return 0.0
    gx = cv2.Sobel(norm, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(norm, cv2.CV_32F, 0, 1, ksize=3)
    return float(np.mean(gx * gx + gy * gy))


def brenner(plane: FloatImage) -> float:
    """Mean squared two-pixel difference (Brenner) of the mean-normalised plane."""
    norm = _normalised(plane)
    if norm is None:
        return 0.0
    dx = norm[:, 2:] - norm[:, :-2]
    dy = norm[2:, :] - norm[:-2, :]
    return float((np.mean(dx * dx) + np.mean(dy * dy)) / 2.0)


def normalised_variance(plane: FloatImage) -> float:
    """Intensity variance over mean squared: a low-frequency measure with a broad peak."""
    norm = _normalised(plane)
    if norm is None:
        return 0.0
    return float(norm.var())


_METRICS = {
    "laplacian": laplacian_variance,
    "tenengrad": tenengrad,
    "brenner": brenner,
    "variance": normalised_variance,
}


def sharpness(image: BgrImage, metric: FocusMetricName, downsample: int) -> float:
    """The named metric on ``image`` shrunk ``downsample`` times; higher is sharper."""
    return _METRICS[metric](green_plane(image, downsample))


def contrast(image: BgrImage) -> float:
    """Relative spread (std / mean) of the heavily shrunk, high-passed green channel.

    Sensor noise averages away at this scale and the smooth fall-off of the light
    (vignetting) is removed, so clear glass gives about 0 whatever the focus, while
    cells keep a clear spread until they are far (tens of um) out of focus.
    """
    plane = green_plane(image, _CONTRAST_DOWNSAMPLE)
    mean = float(plane.mean())
    if mean < _MIN_MEAN:
        return 0.0
    smooth = cv2.GaussianBlur(plane, (0, 0), _CONTRAST_HIGHPASS_PX)
    return float((plane - smooth).std()) / mean


@dataclass(frozen=True)
class FocusMeasure:
    """The sharpness of one image by the fine and the coarse metric."""

    score: float
    """Fine metric (peaks sharply at focus)."""
    coarse_score: float
    """Coarse metric (broad peak, for long sweeps)."""
    contrast: float
    """Relative intensity spread; see ``contrast``."""
    textured: bool
    """False when the field shows nothing to focus on (clear glass, black image)."""


def measure_focus(
    image: BgrImage,
    *,
    metric: FocusMetricName,
    downsample: int,
    coarse_metric: FocusMetricName,
    coarse_downsample: int,
    min_contrast: float,
) -> FocusMeasure:
    """Score one image for the autofocus."""
    spread = contrast(image)
    return FocusMeasure(
        score=sharpness(image, metric, downsample),
        coarse_score=sharpness(image, coarse_metric, coarse_downsample),
        contrast=spread,
        textured=spread >= min_contrast,
    )
