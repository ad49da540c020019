"""The simulated analyzer set up for the acquisition's end-to-end tests.

Everything is real: the GRBL driver over the virtual controller's pseudo-terminal,
the virtual camera on the virtual slide. Only the controller's timing is fast (motion
time is not what these tests measure). ``TruthRecordingCamera`` passes every call to
the real camera and notes where the stage truly was at each capture, so a test can
compare a field's focus with the slide's true focal surface.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from agent.acquisition.config import AcquisitionConfig
from drivers.camera.config import CameraConfig
from drivers.camera.factory import open_camera
from drivers.sim.analyzer import SimulatedAnalyzer
from drivers.sim.config import SimulatorConfig
from drivers.sim.controller_config import FAST_TIMING
from drivers.sim.truth_camera import TruthRecordingCamera
from drivers.stage.base import Stage
from drivers.stage.config import StageConfig
from drivers.stage.factory import build_stage


@dataclass
class SimRig:
    analyzer: SimulatedAnalyzer
    stage: Stage
    camera: TruthRecordingCamera
    stage_config: StageConfig
    camera_config: CameraConfig

    def focus_error_um(self, captured_at: float) -> float:
        """True z minus best-focus z of the frame captured at ``captured_at``."""
        p = self.camera.positions[captured_at]
        return p.z_um - self.analyzer.best_focus_z(p.x_um, p.y_um)


def fast_stage_config() -> StageConfig:
    return StageConfig(
        port="simulator",
        xy_feed_mm_min=12_000.0,
        z_feed_mm_min=3_000.0,
        motion_timeout_s=20.0,
        homing_timeout_s=20.0,
    )


@contextmanager
def sim_rig(seed: int, **simulator: Any) -> Iterator[SimRig]:
    """A connected, homed stage and a camera on a virtual slide of ``seed``."""
    stage_config = fast_stage_config()
    camera_config = CameraConfig(type="simulated")
    sim_config = SimulatorConfig(seed=seed, controller=FAST_TIMING, **simulator)
    with SimulatedAnalyzer(sim_config, camera_config, stage_config.limits) as analyzer:
        stage = build_stage(stage_config, simulator_port=analyzer.port_path)
        stage.connect()
        stage.home()
        camera = TruthRecordingCamera(open_camera(camera_config, analyzer), analyzer)
        try:
            yield SimRig(analyzer, stage, camera, stage_config, camera_config)
        finally:
            camera.close()
            stage.close()


def quick_config(**overrides: Any) -> AcquisitionConfig:
    """A scan config that reaches the monolayer quickly: a coarse survey along the smear."""
    values: dict[str, Any] = {
        "survey": {"columns": 4, "rows": 2},
        "focus": {"initial_range_um": 120.0},
    }
    values.update(overrides)
    return AcquisitionConfig.model_validate(values)
