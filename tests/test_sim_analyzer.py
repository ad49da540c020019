"""The simulated analyzer end to end: the real GRBL driver moves the stage, the camera sees the slide.

A scan of a few fields with the production stage driver over the virtual controller's
pseudo-terminal: every white cell the ground truth lists in a field is a nucleus at
the expected pixel of the captured frame, an empty field has none, and the LED the
driver sets is the light the camera sees.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from drivers.camera.base import Camera
from drivers.camera.config import CameraConfig
from drivers.camera.factory import open_camera
from drivers.sim.analyzer import SimulatedAnalyzer
from drivers.sim.config import SimulatorConfig
from drivers.stage.base import Stage
from drivers.stage.config import StageConfig
from drivers.stage.factory import build_stage
from tests.sim_helpers import dark_mask, expected_pixel, field_rect, nucleus_pixels

W, H = 1014, 760
PS = 0.2
Rig = tuple[SimulatedAnalyzer, Stage, Camera]

# The virtual controller homes and moves in real time, like the hardware (about 15 s).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    stage_config = StageConfig(port="simulator")
    camera_config = CameraConfig(type="simulated", width=W, height=H, exposure_us=5000)
    with SimulatedAnalyzer(
        SimulatorConfig(seed=17, rbc_per_wbc=50.0), camera_config, stage_config.limits
    ) as analyzer:
        stage = build_stage(stage_config, simulator_port=analyzer.port_path)
        stage.connect()
        stage.home()
        camera = open_camera(camera_config, analyzer)
        try:
            yield analyzer, stage, camera
        finally:
            camera.close()
            stage.close()


def test_scan_frames_show_the_true_cells(rig: Rig) -> None:
    analyzer, stage, camera = rig
    stage.set_led(700)
    core = analyzer.slide.monolayer_core()
    x0, y0 = core.centre
    checked = 0
    for dx in (0.0, 200.0, 400.0):
        x, y = x0 + dx, y0
        stage.move_to(x, y, analyzer.best_focus_z(x, y))
        pos = stage.position()
        frame = camera.capture().image
        glass_green = float(np.percentile(frame[..., 1], 99.5))
        cells = analyzer.slide.cells_in(field_rect(pos.x_um, pos.y_um, W, H, PS), white_only=True)
        for cell in cells:
            px, py = expected_pixel(cell, pos.x_um, pos.y_um, W, H, PS)
            if 30 < px < W - 30 and 30 < py < H - 30:
                assert nucleus_pixels(frame, px, py, cell.radius_um / PS, glass_green) > 40, cell
                checked += 1
    assert checked >= 3


def test_empty_glass_field_has_no_cells(rig: Rig) -> None:
    analyzer, stage, camera = rig
    smear = analyzer.config.smear
    x, y = smear.feather_end_um + 2_000, (smear.y_min_um + smear.y_max_um) / 2
    stage.set_led(700)
    stage.move_to(x, y, analyzer.best_focus_z(x, y))
    frame = camera.capture().image
    assert analyzer.slide.cells_in(field_rect(x, y, W, H, PS)) == []
    assert dark_mask(frame, float(np.percentile(frame[..., 1], 99.5))).sum() == 0
    assert frame[..., 1].std() < 10  # only noise and vignetting


def test_led_set_by_the_driver_lights_the_frame(
    rig: Rig,
) -> None:
    analyzer, stage, camera = rig
    x, y = analyzer.slide.monolayer_core().centre
    stage.move_to(x, y, analyzer.best_focus_z(x, y))
    stage.set_led(800)
    bright = float(camera.capture().image.mean())
    stage.set_led(200)
    dim = float(camera.capture().image.mean())
    stage.set_led(0)
    dark = float(camera.capture().image.mean())
    assert dim == pytest.approx(bright / 4, rel=0.1)
    assert dark < 3
    stage.set_led(700)
