"""The virtual camera: focus, light, colour and noise behave like a microscope camera's."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from drivers.camera.base import CameraSettings
from drivers.errors import DeviceConnectionError, UnsupportedFeatureError
from drivers.sim.camera_model import ManualStage, VirtualCamera
from drivers.sim.cell_library import DEMO_LIBRARY, CellLibrary
from drivers.sim.config import OpticsConfig, SimulatorConfig
from drivers.sim.slide import VirtualSlide
from drivers.stage.base import Position
from tests.sim_helpers import expected_pixel, field_rect, nucleus_pixels

W, H = 1014, 760


@pytest.fixture(scope="module")
def slide() -> VirtualSlide:
    return VirtualSlide(SimulatorConfig(seed=21, rbc_per_wbc=60.0), CellLibrary(DEMO_LIBRARY))


def camera(slide: VirtualSlide, **optics: object) -> tuple[VirtualCamera, ManualStage]:
    stage = ManualStage(led_level=700)
    cam = VirtualCamera(slide, stage, OpticsConfig(**optics), width=W, height=H)  # type: ignore[arg-type]
    cam.configure(CameraSettings(W, H, exposure_us=5000))
    return cam, stage


def laplacian_sharpness(image: np.ndarray) -> float:
    """A standard autofocus metric: variance of the Laplacian of the mean-normalised green."""
    g = cv2.resize(image[..., 1], None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    g = g.astype(np.float32) / max(float(g.mean()), 1.0)
    return float(cv2.Laplacian(g, cv2.CV_32F, ksize=3).var())


NO_NOISE = {"read_noise_dn": 0.0, "electrons_per_dn": 10_000.0, "drift": 0.0}


def test_blur_grows_monotonically_with_defocus(slide: VirtualSlide) -> None:
    cam, stage = camera(slide, **NO_NOISE)
    x, y = slide.monolayer_core().centre
    z0 = cam.best_focus_z(x, y)
    scores = []
    for dz in (0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 8.0, 16.0, 40.0):
        stage.move_to(x, y, z0 + dz)
        scores.append(laplacian_sharpness(cam.capture().image))
    assert all(a > b for a, b in itertools.pairwise(scores)), scores
    # Symmetric about focus.
    stage.move_to(x, y, z0 - 2.0)
    assert laplacian_sharpness(cam.capture().image) == pytest.approx(scores[3], rel=0.02)
    # One micrometre off focus is visibly, though only slightly, softer.
    assert 0.2 < scores[2] / scores[0] < 0.85


def test_autofocus_sweep_finds_best_z_within_half_a_micrometre(slide: VirtualSlide) -> None:
    cam, stage = camera(slide)  # with noise and drift, as a scan sees it
    for x, y in [slide.monolayer_core().centre, (30_000.0, 9_000.0), (40_000.0, 16_000.0)]:
        truth = cam.best_focus_z(x, y)
        start = round(truth) + 1.3  # the search does not know the truth
        zs = start + np.arange(-4.0, 4.01, 0.5)
        scores = []
        for z in zs:
            stage.move_to(x, y, float(z))
            scores.append(laplacian_sharpness(cam.capture().image))
        i = int(np.argmax(scores))
        # Parabola through the peak and its neighbours, as an autofocus would.
        a, b, _ = np.polyfit(zs[i - 1 : i + 2], scores[i - 1 : i + 2], 2)
        best = -b / (2 * a)
        assert abs(best - truth) < 0.5, (x, y, truth, best)


def test_focal_surface_is_tilted_and_bowed(slide: VirtualSlide) -> None:
    cam, _ = camera(slide, focus_tilt_x_um_per_mm=2.0, focus_tilt_y_um_per_mm=0.0, focus_bow_um=0.0)
    xc, yc = slide.smear_extent().centre
    assert cam.best_focus_z(xc + 1000, yc) - cam.best_focus_z(xc, yc) == pytest.approx(2.0)
    bowed, _ = camera(
        slide, focus_tilt_x_um_per_mm=0.0, focus_tilt_y_um_per_mm=0.0, focus_bow_um=5.0
    )
    ext = slide.smear_extent()
    assert bowed.best_focus_z(ext.x1, yc) - bowed.best_focus_z(xc, yc) == pytest.approx(5.0)


def test_brightness_follows_led_exposure_and_gain(slide: VirtualSlide) -> None:
    cam, stage = camera(slide, drift=0.0, vignetting=0.0)
    glass = (slide.config.smear.feather_end_um + 3000, 12_000.0)
    stage.move_to(*glass, cam.best_focus_z(*glass))

    def mean_green() -> float:
        return float(cam.capture().image[..., 1].mean())

    stage.set_led(700)
    full = mean_green()
    stage.set_led(350)
    half = mean_green()
    assert half == pytest.approx(full / 2, rel=0.05)
    stage.set_led(0)
    assert mean_green() < 3
    stage.set_led(350)
    cam.configure(CameraSettings(W, H, exposure_us=10_000))
    assert mean_green() == pytest.approx(full, rel=0.05)
    cam.configure(CameraSettings(W, H, exposure_us=5_000, analogue_gain=2.0))
    assert mean_green() == pytest.approx(full, rel=0.05)


def test_white_balance_gains_colour_the_image(slide: VirtualSlide) -> None:
    cam, stage = camera(slide, drift=0.0)
    glass = (slide.config.smear.feather_end_um + 3000, 12_000.0)
    stage.move_to(*glass, 2500.0)
    neutral = cam.capture().image.reshape(-1, 3).mean(axis=0)
    # Auto white balance's starting point makes clear glass grey.
    assert neutral[0] == pytest.approx(neutral[1], rel=0.03)
    assert neutral[2] == pytest.approx(neutral[1], rel=0.03)
    s = cam.settings
    cam.configure(CameraSettings(W, H, white_balance_gains=(s.red_gain * 1.3, s.blue_gain * 0.8)))
    tinted = cam.capture().image.reshape(-1, 3).mean(axis=0)
    assert tinted[2] == pytest.approx(1.3 * neutral[2], rel=0.03)
    assert tinted[0] == pytest.approx(0.8 * neutral[0], rel=0.03)
    assert tinted[1] == pytest.approx(neutral[1], rel=0.03)


def test_vignetting_darkens_the_corners(slide: VirtualSlide) -> None:
    cam, stage = camera(slide, vignetting=0.2, drift=0.0)
    glass = (slide.config.smear.feather_end_um + 3000, 12_000.0)
    stage.move_to(*glass, 2500.0)
    g = cam.capture().image[..., 1].astype(np.float32)
    centre = g[H // 2 - 20 : H // 2 + 20, W // 2 - 20 : W // 2 + 20].mean()
    corner = g[:20, :20].mean()
    assert corner / centre == pytest.approx(0.8, abs=0.03)


def test_same_position_same_frame_noise_differs_between_captures(slide: VirtualSlide) -> None:
    a, sa = camera(slide)
    b, sb = camera(slide)
    x, y = slide.monolayer_core().centre
    for s in (sa, sb):
        s.move_to(x, y, a.best_focus_z(x, y))
    fa1, fb1 = a.capture().image, b.capture().image
    assert np.array_equal(fa1, fb1)
    fa2 = a.capture().image
    diff = fa2.astype(np.int16) - fa1.astype(np.int16)
    assert np.abs(diff).mean() > 0.5  # new noise...
    assert abs(float(diff.mean())) < 2.0  # ...on the same picture (the drift is slow)


def test_frame_shows_the_cells_the_truth_lists(slide: VirtualSlide) -> None:
    cam, stage = camera(slide)
    x, y = slide.monolayer_core().centre
    x += 1234.5
    stage.move_to(x, y, cam.best_focus_z(x, y))
    frame = cam.capture().image
    glass_green = float(np.percentile(frame[..., 1], 99.5))
    cells = slide.cells_in(field_rect(x, y, W, H, 0.2), white_only=True)
    inner = [
        c
        for c in cells
        if all(
            30 < v < lim - 30
            for v, lim in zip(expected_pixel(c, x, y, W, H, 0.2), (W, H), strict=True)
        )
    ]
    assert inner
    for cell in inner:
        px, py = expected_pixel(cell, x, y, W, H, 0.2)
        assert nucleus_pixels(frame, px, py, cell.radius_um / 0.2, glass_green) > 40, cell


def test_true_pixel_size_other_than_the_reference(slide: VirtualSlide) -> None:
    cam, stage = camera(slide, pixel_size_um=0.25)
    assert cam.field_size_um() == pytest.approx((W * 0.25, H * 0.25))
    x, y = slide.monolayer_core().centre
    stage.move_to(x, y, cam.best_focus_z(x, y))
    frame = cam.capture().image
    assert frame.shape == (H, W, 3)
    glass_green = float(np.percentile(frame[..., 1], 99.5))
    for cell in slide.cells_in(field_rect(x, y, W - 80, H - 80, 0.25), white_only=True):
        px, py = expected_pixel(cell, x, y, W, H, 0.25)
        assert nucleus_pixels(frame, px, py, cell.radius_um / 0.25, glass_green) > 25, cell


def test_bad_settings_and_closed_camera_are_errors(slide: VirtualSlide) -> None:
    cam, _ = camera(slide)
    with pytest.raises(UnsupportedFeatureError, match="4056x3040"):
        cam.configure(CameraSettings(5000, 4000))
    with pytest.raises(UnsupportedFeatureError):
        cam.configure(CameraSettings(W, H, white_balance_gains=(0.0, 1.0)))
    cam.close()
    cam.close()
    with pytest.raises(DeviceConnectionError):
        cam.capture()


def test_render_matches_capture_at_that_position(slide: VirtualSlide) -> None:
    cam, stage = camera(slide)
    p = Position(31_000.0, 12_000.0, 2500.0)
    stage.move_to(p.x_um, p.y_um, p.z_um)
    captured = cam.capture().image
    assert np.array_equal(cam.render(p, 700, capture_index=0), captured)
