"""Where the focus is over the slide: a surface fitted to the fields focused so far.

A slide is tilted and a little curved, so the focal z varies smoothly with x and y.
After a few focused fields the surface predicts a new field's focus well enough that
a three-image local check confirms it, instead of a full search. The model grows with
the evidence: the mean of the points (fewer than 3), a plane, then a quadratic once
``quadratic_min_points`` are known and spread in both directions. Points far off the
fit (a field focused on debris) are left out of it, and the residuals of nearby
fields correct the prediction for what a global quadratic cannot follow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

SurfaceKind = Literal["none", "constant", "plane", "quadratic"]

_OUTLIER_ROUNDS = 3
_MAD_SIGMAS = 4.0
"""A point is an outlier beyond this many robust standard deviations (and outlier_um)."""
_SHRINK_WEIGHT = 1.0
"""Prior weight of 'no correction': one close neighbour moves a prediction half its residual."""


@dataclass(frozen=True)
class FocusPoint:
    """A field's position and its focal z (um)."""

    x_um: float
    y_um: float
    z_um: float


class FocusSurface:
    """Focal z as a function of slide position, refitted as points are added."""

    def __init__(
        self, *, quadratic_min_points: int, outlier_um: float, local_radius_um: float
    ) -> None:
        self._quadratic_min = max(6, quadratic_min_points)
        self._outlier_um = outlier_um
        self._radius = local_radius_um
        self._points: list[FocusPoint] = []
        self._inlier = np.zeros(0, dtype=bool)
        self._coef = np.zeros(0)
        self._kind: SurfaceKind = "none"
        self._centre = (0.0, 0.0)
        self._scale = 1.0
        self._residuals = np.zeros(0)

    @property
    def kind(self) -> SurfaceKind:
        return self._kind

    @property
    def points(self) -> tuple[FocusPoint, ...]:
        return tuple(self._points)

    @property
    def inliers(self) -> int:
        return int(self._inlier.sum())

    @property
    def rms_um(self) -> float:
        """Root-mean-square residual of the fit over its inliers (um); 0 with < 4 points."""
        if self._residuals.size == 0 or not self._inlier.any():
            return 0.0
        return float(np.sqrt(np.mean(self._residuals[self._inlier] ** 2)))

    def nearest_distance_um(self, x_um: float, y_um: float) -> float:
        """Distance (um) from (x, y) to the nearest point in the fit; inf with none."""
        if not self._points or not self._inlier.any():
            return math.inf
        x = np.array([p.x_um for p in self._points])[self._inlier]
        y = np.array([p.y_um for p in self._points])[self._inlier]
        return float(np.sqrt(((x - x_um) ** 2 + (y - y_um) ** 2).min()))

    def add(self, x_um: float, y_um: float, z_um: float) -> None:
        """Add a focused field and refit."""
        if not all(math.isfinite(v) for v in (x_um, y_um, z_um)):
            raise ValueError(f"focus point is not finite: ({x_um}, {y_um}, {z_um})")
        self._points.append(FocusPoint(x_um, y_um, z_um))
        self._refit()

    def predict(self, x_um: float, y_um: float) -> float | None:
        """Predicted focal z at (x, y) in um, or None before any point is known."""
        if self._kind == "none":
            return None
        base = self._evaluate(np.array([x_um]), np.array([y_um]))[0]
        return float(base + self._local_correction(x_um, y_um))

    # -- fitting --------------------------------------------------------------------

    def _design(
        self, x: npt.NDArray[np.float64], y: npt.NDArray[np.float64], kind: SurfaceKind
    ) -> npt.NDArray[np.float64]:
        u = (x - self._centre[0]) / self._scale
        v = (y - self._centre[1]) / self._scale
        ones = np.ones_like(u)
        if kind == "constant":
            return ones[:, None]
        if kind == "plane":
            return np.stack([ones, u, v], axis=1)
        return np.stack([ones, u, v, u * u, u * v, v * v], axis=1)

    def _evaluate(
        self, x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        return self._design(x, y, self._kind) @ self._coef

    def _choose_kind(self, x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> SurfaceKind:
        n = x.size
        if (
            n >= self._quadratic_min
            and np.linalg.matrix_rank(self._design(x, y, "quadratic"), tol=1e-6) == 6
        ):
            return "quadratic"
        if n >= 3:
            return "plane"
        return "constant"

    def _refit(self) -> None:
        x = np.array([p.x_um for p in self._points])
        y = np.array([p.y_um for p in self._points])
        z = np.array([p.z_um for p in self._points])
        self._centre = (float(x.mean()), float(y.mean()))
        spread = float(max(x.std(), y.std()))
        self._scale = spread if spread > 0 else 1.0
        inlier = np.ones(z.size, dtype=bool)
        for _ in range(_OUTLIER_ROUNDS):
            kind = self._choose_kind(x[inlier], y[inlier])
            design = self._design(x[inlier], y[inlier], kind)
            coef, *_ = np.linalg.lstsq(design, z[inlier], rcond=None)
            self._kind, self._coef = kind, coef
            residuals = z - self._design(x, y, kind) @ coef
            if z.size < 4:
                break
            mad = float(np.median(np.abs(residuals[inlier] - np.median(residuals[inlier]))))
            limit = max(self._outlier_um, _MAD_SIGMAS * 1.4826 * mad)
            new_inlier = np.abs(residuals) <= limit
            if new_inlier.sum() < 3 or np.array_equal(new_inlier, inlier):
                break
            inlier = new_inlier
        self._inlier = inlier
        self._residuals = z - self._evaluate(x, y)

    def _local_correction(self, x_um: float, y_um: float) -> float:
        """Gaussian-weighted mean residual of nearby inliers, shrunk towards 0 when few."""
        if self._radius <= 0 or self._residuals.size < 3:
            return 0.0
        x = np.array([p.x_um for p in self._points])[self._inlier]
        y = np.array([p.y_um for p in self._points])[self._inlier]
        r = self._residuals[self._inlier]
        d2 = ((x - x_um) ** 2 + (y - y_um) ** 2) / (self._radius**2)
        w = np.exp(-d2)
        w[d2 > 9.0] = 0.0
        return float((w * r).sum() / (w.sum() + _SHRINK_WEIGHT))
