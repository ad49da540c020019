"""Synthetic smear fields and focus curves for the acquisition's unit tests.

Not a camera double: pure generators of images and curves with known truth (coverage,
peak position), so the metrics, classifiers and searches can be checked exactly.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from agent.acquisition.focus_search import FocusSample

BACKGROUND = (0.92, 0.90, 0.88)
"""Transmission of clear glass per channel (B, G, R)."""
RBC = (0.80, 0.58, 0.88)
"""Transmission of a red cell (B, G, R): absorbs green most."""
NUCLEUS = (0.45, 0.25, 0.45)


def transmission_field(
    coverage: float,
    *,
    seed: int = 0,
    width: int = 640,
    height: int = 480,
    radius_px: int = 18,
    nuclei: int = 1,
    overlap: bool = False,
) -> np.ndarray:
    """A float32 H x W x 3 transmission map of a smear with about ``coverage`` red cells.

    With ``overlap`` cells are drawn multiplicatively (piled cells absorb twice), as in
    a thick zone.
    """
    rng = np.random.default_rng(seed)
    img = np.empty((height, width, 3), np.float32)
    img[:] = BACKGROUND
    mask = np.zeros((height, width), np.uint8)
    area = math.pi * radius_px**2
    tries = 0
    while mask.mean() / 255.0 < coverage and tries < 20_000:
        tries += 1
        cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
        cell = np.zeros((height, width), np.uint8)
        cv2.circle(cell, (cx, cy), radius_px, 255, -1)
        if not overlap and (cell & mask).sum() > 0.05 * area * 255:
            continue
        inside = cell > 0
        for c in range(3):
            if overlap:
                img[:, :, c][inside] *= RBC[c] / BACKGROUND[c]
            else:
                img[:, :, c][inside] = RBC[c]
        mask |= cell
    for _ in range(nuclei):
        cx, cy = int(rng.integers(40, width - 40)), int(rng.integers(40, height - 40))
        nucleus = np.zeros((height, width), np.uint8)
        cv2.circle(nucleus, (cx, cy), radius_px // 2, 255, -1)
        for c in range(3):
            img[:, :, c][nucleus > 0] = NUCLEUS[c]
    return img


def render(
    transmission: np.ndarray,
    *,
    light: float = 1.0,
    blur_sigma_px: float = 0.0,
    noise: float = 0.0,
    gains_bgr: tuple[float, float, float] = (1.0, 1.0, 1.0),
    vignetting: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """A uint8 BGR image of a transmission map under ``light`` with defocus and noise.

    ``vignetting`` is the light lost in the corners (radial, quadratic in the radius).
    """
    img = transmission * np.float32(light)
    if vignetting:
        h, w = img.shape[:2]
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        r2 = (((xs - w / 2) / (w / 2)) ** 2 + ((ys - h / 2) / (h / 2)) ** 2) / 2.0
        img = img * (1.0 - vignetting * r2)[:, :, None]
    if blur_sigma_px > 0:
        img = cv2.GaussianBlur(img, (0, 0), blur_sigma_px)
    img = img * np.asarray(gains_bgr, np.float32)
    if noise > 0:
        img = img + np.random.default_rng(seed).normal(0, noise, img.shape).astype(np.float32)
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


class CurveProbe:
    """A focus probe over a synthetic Gaussian focus curve (records the z visited)."""

    def __init__(
        self,
        peak_um: float,
        *,
        width_um: float = 2.0,
        height: float = 100.0,
        floor: float = 1.0,
        coarse_width_um: float = 15.0,
        noise: float = 0.0,
        textured: bool = True,
        seed: int = 0,
    ) -> None:
        self.peak = peak_um
        self.width = width_um
        self.height = height
        self.floor = floor
        self.coarse_width = coarse_width_um
        self.noise = noise
        self.textured = textured
        self.rng = np.random.default_rng(seed)
        self.visited: list[float] = []

    def score(self, z: float) -> float:
        return self.floor + self.height * math.exp(-((z - self.peak) ** 2) / (2 * self.width**2))

    def __call__(self, z_um: float) -> FocusSample:
        self.visited.append(z_um)
        jitter = 1.0 + (self.rng.normal(0, self.noise) if self.noise else 0.0)
        fine = self.score(z_um) * jitter if self.textured else self.floor * jitter
        dz = z_um - self.peak
        coarse = (
            self.floor + self.height * math.exp(-(dz**2) / (2 * self.coarse_width**2))
            if self.textured
            else self.floor
        ) * jitter
        return FocusSample(z_um, fine, coarse, self.textured, key=len(self.visited))
