"""Exposure metering, calibration and white balance; background and field classification."""

from __future__ import annotations

import numpy as np
import pytest

from agent.acquisition.cancel import CancelToken
from agent.acquisition.config import FieldClassConfig, IlluminationConfig
from agent.acquisition.errors import CalibrationError, Cancelled
from agent.acquisition.field_classes import (
    classify_field,
    estimate_background,
    shrink,
)
from agent.acquisition.illumination import Gains, calibrate, meter
from tests.acquisition_synthetic import BACKGROUND, render, transmission_field

LIGHT_PER_US = 1.0 / 4000.0
"""Scene light per us of exposure in these tests: 4000 us gives full transmission."""
TINT = (0.8, 1.0, 1.3)
"""A warm LED seen by the sensor (B, G, R response)."""


class LinearCamera:
    """A linear sensor over a fixed transmission map (a synthetic scene, not a device)."""

    def __init__(self, transmission: np.ndarray) -> None:
        self.transmission = transmission
        self.calls: list[tuple[int, Gains | None]] = []

    def __call__(self, exposure_us: int, gains: Gains | None) -> np.ndarray:
        self.calls.append((exposure_us, gains))
        r, b = gains if gains is not None else (1.0, 1.0)
        channel = (TINT[0] * b, TINT[1], TINT[2] * r)
        return render(
            self.transmission, light=exposure_us * LIGHT_PER_US, gains_bgr=channel, noise=0.004
        )


@pytest.fixture(scope="module")
def monolayer() -> np.ndarray:
    return transmission_field(0.45, seed=5)


def test_calibration_reaches_the_target_and_neutral_background(monolayer: np.ndarray) -> None:
    config = IlluminationConfig()
    camera = LinearCamera(monolayer)
    result = calibrate(camera, 1000, config, FieldClassConfig().cell_darkness)
    bg = result.background
    assert bg.green == pytest.approx(config.target_background, abs=config.tolerance)
    assert bg.red == pytest.approx(bg.green, abs=config.tolerance)
    assert bg.blue == pytest.approx(bg.green, abs=config.tolerance)
    assert result.gains is not None
    assert result.gains[0] == pytest.approx(1 / TINT[2] * BACKGROUND[1] / BACKGROUND[2], rel=0.05)
    # the start background is the one at the first exposure, before any change
    assert result.start_background.green == pytest.approx(
        1000 * LIGHT_PER_US * BACKGROUND[1], abs=0.02
    )


def test_calibration_recovers_from_a_clipped_start(monolayer: np.ndarray) -> None:
    config = IlluminationConfig()
    result = calibrate(LinearCamera(monolayer), 40_000, config, 0.15)
    assert result.exposure_us < 10_000
    assert result.background.green == pytest.approx(config.target_background, abs=config.tolerance)


def test_fixed_exposure_sets_white_balance_only(monolayer: np.ndarray) -> None:
    camera = LinearCamera(monolayer)
    result = calibrate(camera, 2000, IlluminationConfig(), 0.15, fixed_exposure=True)
    assert {exposure for exposure, _ in camera.calls} == {2000}
    assert result.exposure_us == 2000
    assert result.background.red == pytest.approx(result.background.green, abs=0.03)


def test_white_balance_can_be_off(monolayer: np.ndarray) -> None:
    camera = LinearCamera(monolayer)
    result = calibrate(camera, 2000, IlluminationConfig(white_balance=False), 0.15)
    assert result.gains is None
    assert all(gains is None for _, gains in camera.calls)


def test_thick_field_cannot_calibrate() -> None:
    thick = transmission_field(0.99, seed=1, overlap=True, radius_px=22)
    with pytest.raises(CalibrationError, match="no clear background"):
        calibrate(LinearCamera(thick), 3000, IlluminationConfig(), 0.15)


def test_too_little_light_is_a_clear_error(monolayer: np.ndarray) -> None:
    config = IlluminationConfig(max_exposure_us=500)
    with pytest.raises(CalibrationError, match="led_pwm"):
        calibrate(LinearCamera(monolayer), 200, config, 0.15)


def test_metering_keeps_the_brightest_part_unclipped(monolayer: np.ndarray) -> None:
    config = IlluminationConfig()
    camera = LinearCamera(monolayer)
    exposure = meter(camera, 50_000, config)
    top = estimate_background(shrink(camera(exposure, None)), 0.0).brightest_green
    assert 0.5 < top < 0.95


def test_cancel_stops_calibration(monolayer: np.ndarray) -> None:
    token = CancelToken()
    token.cancel("door opened")
    with pytest.raises(Cancelled, match="door opened"):
        calibrate(LinearCamera(monolayer), 1000, IlluminationConfig(), 0.15, cancel=token)


# -- background and field classes ---------------------------------------------------------


def test_background_of_a_monolayer_is_the_glass(monolayer: np.ndarray) -> None:
    bg = estimate_background(shrink(render(monolayer, noise=0.01)), 0.15)
    assert bg.green == pytest.approx(BACKGROUND[1], abs=0.02)
    assert bg.red == pytest.approx(BACKGROUND[2], abs=0.02)
    assert 0.35 < bg.fraction < 0.7


@pytest.mark.parametrize(
    ("coverage", "overlap", "kind"),
    [
        (0.0, False, "empty"),
        (0.03, False, "empty"),
        (0.45, False, "monolayer"),
        (0.99, True, "thick"),
    ],
)
def test_field_classes(coverage: float, overlap: bool, kind: str) -> None:
    config = FieldClassConfig()
    field = transmission_field(coverage, seed=9, overlap=overlap, nuclei=0)
    image = render(field, noise=0.01, light=0.85 / BACKGROUND[1])
    verdict = classify_field(image, 0.85, config)
    assert verdict.kind == kind, verdict
    assert verdict.coverage == pytest.approx(min(coverage, 1.0), abs=0.08)


def test_classification_does_not_depend_on_the_field_brightness_once_calibrated() -> None:
    """A thick field is darker overall; judged against the calibrated level it stays thick."""
    thick = transmission_field(0.99, seed=2, overlap=True, nuclei=0)
    image = render(thick, light=0.85 / BACKGROUND[1])
    assert classify_field(image, 0.85, FieldClassConfig()).kind == "thick"


def test_vignetted_glass_is_still_empty_and_the_level_is_the_centre() -> None:
    glass = transmission_field(0.0, nuclei=0)
    image = render(glass, vignetting=0.3, noise=0.005)
    bg = estimate_background(shrink(image), 0.15)
    assert bg.green == pytest.approx(BACKGROUND[1], abs=0.01)
    assert bg.fraction > 0.95
    assert bg.flat.min() == pytest.approx(0.7, abs=0.03)
    config = FieldClassConfig()
    assert classify_field(image, bg.green, config, bg.flat).coverage < 0.01
    # without the flat map the dark corners would pass for cells
    assert classify_field(image, bg.green, config).coverage > 0.05


def test_vignetted_monolayer_coverage_with_the_flat_map(monolayer: np.ndarray) -> None:
    glass = render(transmission_field(0.0, nuclei=0), vignetting=0.2)
    flat = estimate_background(shrink(glass), 0.15).flat
    image = render(monolayer, vignetting=0.2, noise=0.005)
    verdict = classify_field(image, BACKGROUND[1], FieldClassConfig(), flat)
    assert verdict.coverage == pytest.approx(0.45, abs=0.06)
    mono_bg = estimate_background(shrink(image), 0.15)
    assert mono_bg.green == pytest.approx(BACKGROUND[1], abs=0.02)
    assert np.abs(mono_bg.flat - flat).max() < 0.05
