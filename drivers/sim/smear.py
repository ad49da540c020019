"""The shape of a blood smear on the slide: where it is thick, a monolayer, thin, or absent.

A wedge smear is thickest where the drop was placed and thins out towards the
feathered end. Here that is a smooth *coverage* field (expected layers of red cells at
a point: above 1 they overlap, around 0.5-1 they lie side by side, below that they are
sparse) over slide coordinates, with a tongue-shaped feathered edge (zones end earlier
at the smear's long sides) and some low-frequency patchiness, all fixed by the seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from drivers.sim.config import SmearConfig

Zone = Literal["glass", "thick", "monolayer", "thin"]

FloatArray = npt.NDArray[np.float64]

THICK_START_LAYERS = 2.6
"""Red-cell layers at the drop end of the smear."""
THICK_END_LAYERS = 1.05
"""...falling to this where the monolayer begins."""
MONOLAYER_START_LAYERS = 1.0
MONOLAYER_END_LAYERS = 0.45
"""The monolayer thins from side-by-side cells to cells with gaps between them."""
SIDE_TAPER_UM = 600.0
"""The smear thins to nothing over this distance at its long sides (um)."""
PATCHINESS = 0.10
"""Relative amplitude of the smooth random variation of the thickness."""
PATCH_WAVELENGTHS_UM = (900.0, 1700.0, 2900.0, 4300.0)


@dataclass(frozen=True)
class Rect:
    """An axis-aligned rectangle on the slide (um)."""

    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def centre(self) -> tuple[float, float]:
        return ((self.x0 + self.x1) / 2.0, (self.y0 + self.y1) / 2.0)

    def contains(self, x: float, y: float) -> bool:
        return self.x0 <= x < self.x1 and self.y0 <= y < self.y1


class SmearGeometry:
    """Coverage and zones of one virtual smear (coordinates in um)."""

    def __init__(self, config: SmearConfig, seed: int) -> None:
        self.config = config
        rng = np.random.default_rng([seed, 0x5EA5])
        n = len(PATCH_WAVELENGTHS_UM)
        self._patch_dirs = rng.uniform(0, np.pi, n)
        self._patch_phases = rng.uniform(0, 2 * np.pi, n)
        self._patch_k = 2 * np.pi / np.array(PATCH_WAVELENGTHS_UM)
        self._yc = (config.y_min_um + config.y_max_um) / 2.0
        self._half = (config.y_max_um - config.y_min_um) / 2.0

    def axial(self, x: FloatArray | float, y: FloatArray | float) -> FloatArray:
        """Position along the smear, corrected for the tongue shape of its feathered end.

        Zones are bands of this value: a point at the smear's side is as far along as a
        point ``edge_recess_um`` further on the axis.
        """
        eta = np.clip((np.asarray(y, dtype=np.float64) - self._yc) / self._half, -1.0, 1.0)
        out: FloatArray = np.asarray(x, dtype=np.float64) + self.config.edge_recess_um * eta**2
        return out

    def _layers_along(self, u: FloatArray) -> FloatArray:
        c = self.config
        xs = [c.x_start_um, c.thick_end_um, c.thick_end_um, c.monolayer_end_um, c.feather_end_um]
        ys = [
            THICK_START_LAYERS,
            THICK_END_LAYERS,
            MONOLAYER_START_LAYERS,
            MONOLAYER_END_LAYERS,
            0.0,
        ]
        # np.interp needs increasing x: nudge the repeated boundary by a hair.
        xs[2] += 1e-6
        out = np.interp(u, xs, ys, left=0.0, right=0.0)
        out[u < c.x_start_um] = 0.0
        return out

    def coverage(self, x: FloatArray | float, y: FloatArray | float) -> FloatArray:
        """Expected red-cell layers at (x, y): 0 on glass, about 0.5-1 in the monolayer."""
        xa = np.asarray(x, dtype=np.float64)
        ya = np.asarray(y, dtype=np.float64)
        layers = self._layers_along(np.atleast_1d(self.axial(xa, ya)))
        c = self.config
        side = np.minimum(ya - c.y_min_um, c.y_max_um - ya) / SIDE_TAPER_UM
        layers = layers * np.clip(np.atleast_1d(side), 0.0, 1.0)
        patch = np.zeros_like(layers)
        for d, ph, k in zip(self._patch_dirs, self._patch_phases, self._patch_k, strict=True):
            patch += np.sin(k * (np.cos(d) * xa + np.sin(d) * ya) + ph)
        layers = layers * (1.0 + PATCHINESS * patch / np.sqrt(len(self._patch_k)))
        out: FloatArray = np.maximum(layers, 0.0).reshape(np.shape(xa + ya))
        return out

    def zone(self, x: float, y: float) -> Zone:
        """The zone at one point."""
        c = self.config
        if not c.y_min_um <= y <= c.y_max_um:
            return "glass"
        u = float(self.axial(x, y))
        if u < c.x_start_um or u >= c.feather_end_um:
            return "glass"
        if u < c.thick_end_um:
            return "thick"
        if u < c.monolayer_end_um:
            return "monolayer"
        return "thin"

    def extent(self) -> Rect:
        """The bounding box of the whole smear."""
        c = self.config
        return Rect(c.x_start_um - c.edge_recess_um, c.y_min_um, c.feather_end_um, c.y_max_um)

    def monolayer_bounds(self) -> Rect:
        """The bounding box of the monolayer zone (curved, so not all of it is monolayer)."""
        c = self.config
        return Rect(c.thick_end_um - c.edge_recess_um, c.y_min_um, c.monolayer_end_um, c.y_max_um)

    def monolayer_core(self) -> Rect:
        """A rectangle that is monolayer everywhere (away from the sides' taper)."""
        c = self.config
        return Rect(
            c.thick_end_um,
            c.y_min_um + SIDE_TAPER_UM,
            c.monolayer_end_um - c.edge_recess_um,
            c.y_max_um - SIDE_TAPER_UM,
        )
