"""Building the configured camera backend.

The backend is exactly the one ``camera.type`` names: a missing Pi camera is an error,
never a reason to fall back to another backend or to the simulator.
"""

from __future__ import annotations

import logging

from drivers.camera.base import Camera, CameraSettings
from drivers.camera.config import CameraConfig
from drivers.camera.simulated import SimulatedCameraSource
from drivers.errors import DeviceConnectionError

_log = logging.getLogger(__name__)


def settings_from_config(config: CameraConfig) -> CameraSettings:
    """The settings a freshly opened camera gets from the config."""
    return CameraSettings(
        width=config.width,
        height=config.height,
        exposure_us=config.exposure_us,
        analogue_gain=config.analogue_gain,
        white_balance_gains=config.white_balance_gains,
    )


def _build(config: CameraConfig, simulator: SimulatedCameraSource | None) -> Camera:
    if config.type == "picamera2":
        from drivers.camera.picamera2 import Picamera2Camera

        return Picamera2Camera(config)
    if config.type == "opencv":
        from drivers.camera.opencv import OpenCvCamera

        return OpenCvCamera(config)
    if config.device:
        from drivers.camera.simulated import SimulatedCameraClient

        return SimulatedCameraClient(
            config.device,
            open_timeout_s=config.open_timeout_s,
            capture_timeout_s=config.capture_timeout_s,
        )
    if simulator is None:
        raise DeviceConnectionError(
            "camera.type is 'simulated' without a camera.device address, but no in-process "
            "simulator is running; start one (the simulator section does that for the daemon) "
            "or set camera.device to the address printed by 'algocyte-agent sim'"
        )
    return simulator.open_camera()


def open_camera(config: CameraConfig, simulator: SimulatedCameraSource | None = None) -> Camera:
    """Open and configure the camera ``config`` describes.

    Args:
        config: the camera section.
        simulator: the in-process simulated analyzer, for ``type: simulated`` without
            a ``device`` address (``drivers.sim.analyzer.SimulatedAnalyzer`` is one).

    Raises:
        DeviceError: the camera cannot be opened or refuses the configured settings.
    """
    camera = _build(config, simulator)
    try:
        camera.configure(settings_from_config(config))
    except BaseException:
        camera.close()
        raise
    _log.info("camera %s open at %dx%d", config.type, config.width, config.height)
    return camera
