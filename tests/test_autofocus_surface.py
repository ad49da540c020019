"""The focus surface: constant, plane, quadratic, outliers, local correction."""

from __future__ import annotations

import numpy as np
import pytest

from agent.acquisition.focus_surface import FocusSurface


def _surface(**kw: float) -> FocusSurface:
    args = {"quadratic_min_points": 8, "outlier_um": 3.0, "local_radius_um": 0.0}
    args.update(kw)
    return FocusSurface(**args)  # type: ignore[arg-type]


def _tilted(x: float, y: float) -> float:
    return 2500.0 + 0.002 * (x - 30_000) - 0.001 * (y - 12_000)


def _curved(x: float, y: float) -> float:
    return _tilted(x, y) + 4e-8 * (x - 35_000) ** 2 + 2e-8 * (y - 10_000) ** 2


def test_no_points_no_prediction() -> None:
    assert _surface().predict(1.0, 2.0) is None


def test_one_or_two_points_predict_their_mean() -> None:
    s = _surface()
    s.add(10_000, 10_000, 2500.0)
    assert s.kind == "constant"
    assert s.predict(50_000, 20_000) == pytest.approx(2500.0)
    s.add(20_000, 10_000, 2502.0)
    assert s.predict(0, 0) == pytest.approx(2501.0)


def test_plane_from_three_points_is_exact() -> None:
    s = _surface()
    for x, y in ((10_000, 5_000), (40_000, 6_000), (20_000, 20_000)):
        s.add(x, y, _tilted(x, y))
    assert s.kind == "plane"
    for x, y in ((15_000, 15_000), (55_000, 3_000)):
        assert s.predict(x, y) == pytest.approx(_tilted(x, y), abs=1e-6)


def test_quadratic_once_enough_spread_points() -> None:
    s = _surface()
    rng = np.random.default_rng(1)
    for _ in range(12):
        x, y = float(rng.uniform(10_000, 60_000)), float(rng.uniform(3_000, 22_000))
        s.add(x, y, _curved(x, y))
    assert s.kind == "quadratic"
    for x, y in ((30_000, 12_000), (50_000, 20_000)):
        assert s.predict(x, y) == pytest.approx(_curved(x, y), abs=1e-3)


def test_collinear_points_stay_a_plane() -> None:
    s = _surface()
    for k in range(10):
        x = 10_000 + 3_000 * k
        s.add(x, 12_000, _tilted(x, 12_000))
    assert s.kind == "plane"
    assert s.predict(25_000, 12_000) == pytest.approx(_tilted(25_000, 12_000), abs=1e-6)


def test_an_outlier_is_left_out() -> None:
    s = _surface()
    rng = np.random.default_rng(2)
    for _ in range(15):
        x, y = float(rng.uniform(10_000, 60_000)), float(rng.uniform(3_000, 22_000))
        s.add(x, y, _curved(x, y) + float(rng.normal(0, 0.2)))
    s.add(30_000, 12_000, _curved(30_000, 12_000) + 40.0)  # focused on dust
    assert s.inliers == 15
    assert s.predict(30_500, 12_500) == pytest.approx(_curved(30_500, 12_500), abs=0.6)
    assert s.rms_um < 0.5


def test_local_correction_follows_a_bump_the_fit_cannot() -> None:
    rng = np.random.default_rng(3)

    def bumpy(x: float, y: float) -> float:
        return _tilted(x, y) + 3.0 * np.exp(-((x - 30_000) ** 2 + (y - 12_000) ** 2) / 2e6)

    plain, local = _surface(), _surface(local_radius_um=1_500.0)
    points = [
        (float(rng.uniform(10_000, 50_000)), float(rng.uniform(3_000, 22_000))) for _ in range(20)
    ]
    points += [(30_000 + dx, 12_000 + dy) for dx in (-400, 0, 400) for dy in (-300, 0, 300)]
    for x, y in points:
        plain.add(x, y, bumpy(x, y))
        local.add(x, y, bumpy(x, y))
    truth = bumpy(30_200, 12_100)
    assert abs(local.predict(30_200, 12_100) - truth) < abs(plain.predict(30_200, 12_100) - truth)  # type: ignore[operator]


def test_non_finite_point_is_refused() -> None:
    with pytest.raises(ValueError):
        _surface().add(1.0, float("nan"), 3.0)
