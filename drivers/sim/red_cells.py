"""Red-cell images: a bank of pre-rendered discocytes in optical density, to stamp by the hundred.

A red cell is a biconcave disc, thick at the rim and thin in the middle, so in a stained
smear it is pink with a paler centre. Its absorbance follows its thickness (Evans and
Fung's shape, 1972) with the stain's colour measured on the PBC images' red cells
(relative OD of their rims, B:G:R). In the thin feathered end cells flatten and lose
the pale centre; the bank holds some of those too. Sprites are additive OD, so two
overlapping cells are darker where they overlap, as in a thick smear.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

RIM_OD_BGR = np.array([0.12, 0.20, 0.14], dtype=np.float32)
"""Optical density (B, G, R) of a red cell's rim: the 97th percentile of PBC red-cell pixels."""
PALLOR_FLOOR = 0.18
"""Absorbance never drops below this fraction of the rim's, even at the thinnest point."""
SUPERSAMPLE = 4
OPTICAL_BLUR_PX = 0.7
"""Blur of an in-focus red cell's edge (Gaussian sigma, px at the reference scale)."""
EF_C0, EF_C2, EF_C4 = 0.81, 7.83, -4.39
"""Evans-Fung thickness coefficients (um) of a normal red cell."""


@dataclass(frozen=True)
class RedCellSprite:
    """One red cell as an OD patch (H x W x 3) whose centre pixel is the cell's centre."""

    od: npt.NDArray[np.float32]
    flat: bool
    """True for a flattened cell without central pallor (feathered end)."""

    @property
    def half(self) -> int:
        return int(self.od.shape[0]) // 2


def _profile(rho: npt.NDArray[np.float64], pallor: float) -> npt.NDArray[np.float64]:
    """Relative absorbance across the disc (1 at the thickest point, 0 outside)."""
    inside = rho < 1.0
    r2 = np.where(inside, rho**2, 1.0)
    ef = np.sqrt(np.maximum(1.0 - r2, 0.0)) * (EF_C0 + EF_C2 * r2 + EF_C4 * r2**2)
    ef = ef / 2.5657  # the shape's maximum, at rho = 0.7
    disc = np.sqrt(np.maximum(1.0 - r2, 0.0)) ** 0.25
    shape = pallor * (PALLOR_FLOOR + (1 - PALLOR_FLOOR) * ef) + (1 - pallor) * disc * 0.8
    return np.where(inside, shape, 0.0)


def render_red_cell(
    diameter_px: float, aspect: float, angle_rad: float, pallor: float, tint: float
) -> npt.NDArray[np.float32]:
    """One red cell, ``diameter_px`` across its long axis, as an OD patch."""
    half = int(np.ceil(diameter_px / 2 + 3 * OPTICAL_BLUR_PX)) + 1
    size = 2 * half + 1
    ss = SUPERSAMPLE
    coords = (np.arange(size * ss) + 0.5) / ss - size / 2.0
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    u = (xx * c + yy * s) / (diameter_px / 2)
    v = (-xx * s + yy * c) / (diameter_px / 2 / aspect)
    rel = _profile(np.hypot(u, v), pallor).astype(np.float32)
    rel = np.asarray(cv2.resize(rel, (size, size), interpolation=cv2.INTER_AREA), np.float32)
    rel = np.asarray(cv2.GaussianBlur(rel, (0, 0), OPTICAL_BLUR_PX), np.float32)
    od = rel[:, :, None] * (RIM_OD_BGR * tint)[None, None, :]
    out: npt.NDArray[np.float32] = np.ascontiguousarray(od, dtype=np.float32)
    return out


class RedCellBank:
    """A fixed set of red-cell sprites of varied size, shape and stain, chosen by index."""

    def __init__(
        self, diameter_um: float, pixel_size_um: float, seed: int, count: int = 64
    ) -> None:
        rng = np.random.default_rng([seed, 0xEB0])
        self.sprites: list[RedCellSprite] = []
        for i in range(count):
            flat = i % 4 == 3  # a quarter of the bank: flattened cells for the thin end
            d_um = max(4.0, rng.normal(diameter_um, 0.06 * diameter_um))
            aspect = 1.0 + abs(rng.normal(0.0, 0.05))
            pallor = 0.0 if flat else float(np.clip(rng.normal(0.9, 0.1), 0.5, 1.0))
            tint = float(np.clip(rng.normal(1.0, 0.08), 0.75, 1.25))
            if flat:
                d_um *= 0.92  # spherocytic: a little smaller and without pallor
                tint *= 1.1
            od = render_red_cell(
                d_um / pixel_size_um, aspect, float(rng.uniform(0, np.pi)), pallor, tint
            )
            self.sprites.append(RedCellSprite(od=od, flat=flat))
        self.normal = np.array([i for i, s in enumerate(self.sprites) if not s.flat])
        self.flat = np.array([i for i, s in enumerate(self.sprites) if s.flat])
        self.max_half = max(s.half for s in self.sprites)
