"""One contract, every camera backend that can run here (and the Pi camera on the board).

Each backend is opened through the factory from a ``CameraConfig``, exactly as the
agent does, and must: deliver 8-bit BGR frames of the configured size with sane
metadata; honour a new exposure; either deliver a new size or refuse it with
UnsupportedFeatureError; close twice; refuse to capture once closed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from drivers.camera.base import Camera, CameraSettings
from drivers.camera.config import CameraConfig
from drivers.camera.factory import open_camera, settings_from_config
from drivers.errors import DeviceConnectionError, DeviceError, UnsupportedFeatureError
from drivers.sim.analyzer import SimulatedAnalyzer
from drivers.sim.config import SimulatorConfig

W, H = 640, 480

Opener = Callable[[], tuple[Camera, CameraConfig]]


def _sim_analyzer() -> SimulatedAnalyzer:
    return SimulatedAnalyzer(
        SimulatorConfig(seed=3), CameraConfig(type="simulated", width=W, height=H)
    )


@pytest.fixture
def simulated_in_process() -> Iterator[Opener]:
    with _sim_analyzer() as analyzer:
        config = CameraConfig(type="simulated", width=W, height=H, exposure_us=4000)
        yield lambda: (open_camera(config, analyzer), config)


@pytest.fixture
def simulated_over_socket(tmp_path: Path) -> Iterator[Opener]:
    with _sim_analyzer() as analyzer:
        address = analyzer.serve_camera(f"unix://{tmp_path / 'cam.sock'}")
        config = CameraConfig(type="simulated", device=address, width=W, height=H, exposure_us=4000)
        yield lambda: (open_camera(config), config)


@pytest.fixture
def opencv_video(tmp_path: Path) -> Opener:
    path = tmp_path / "scan.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"FFV1"), 5.0, (W, H))
    assert writer.isOpened()
    rng = np.random.default_rng(0)
    for _ in range(4):
        writer.write(rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
    writer.release()
    config = CameraConfig(type="opencv", device=str(path), width=W, height=H, exposure_us=4000)
    return lambda: (open_camera(config), config)


@pytest.fixture
def opencv_still(tmp_path: Path) -> Opener:
    path = tmp_path / "field.png"
    cv2.imwrite(str(path), np.full((H, W, 3), (200, 150, 100), np.uint8))
    config = CameraConfig(type="opencv", device=str(path), width=W, height=H, exposure_us=4000)
    return lambda: (open_camera(config), config)


@pytest.fixture
def picamera2_board() -> Opener:
    pytest.importorskip("picamera2", reason="needs the Raspberry Pi camera stack (hardware)")
    config = CameraConfig(type="picamera2", width=2028, height=1520, exposure_us=4000)
    return lambda: (open_camera(config), config)


BACKENDS = [
    "simulated_in_process",
    "simulated_over_socket",
    "opencv_video",
    "opencv_still",
    pytest.param("picamera2_board", marks=pytest.mark.hardware),
]


@pytest.fixture(params=BACKENDS)
def opened(request: pytest.FixtureRequest) -> Iterator[tuple[Camera, CameraConfig]]:
    opener: Opener = request.getfixturevalue(request.param)
    cam, config = opener()
    try:
        yield cam, config
    finally:
        cam.close()


def test_frames_are_bgr_of_the_configured_size(opened: tuple[Camera, CameraConfig]) -> None:
    cam, config = opened
    before = time.time()
    for _ in range(3):
        frame = cam.capture()
        assert frame.image.dtype == np.uint8
        assert frame.image.shape == (config.height, config.width, 3)
        assert frame.image.flags["C_CONTIGUOUS"] or frame.image.base is not None
        md = frame.metadata
        assert before - 1 <= md.timestamp <= time.time() + 1
        assert md.analogue_gain > 0
        assert isinstance(md.exposure_us, int)
    assert frame.image.std() > 0 or frame.image.mean() > 0


def test_new_exposure_is_honoured(opened: tuple[Camera, CameraConfig]) -> None:
    cam, config = opened
    cam.configure(replace(settings_from_config(config), exposure_us=8000))
    frame = cam.capture()
    assert abs(frame.metadata.exposure_us - 8000) <= 800


def test_new_size_is_delivered_or_refused(opened: tuple[Camera, CameraConfig]) -> None:
    cam, config = opened
    new = CameraSettings(width=config.width // 2, height=config.height // 2)
    try:
        cam.configure(new)
        frame = cam.capture()
    except UnsupportedFeatureError as e:
        assert str(e)
    else:
        assert frame.image.shape == (new.height, new.width, 3)


def test_close_twice_then_capture_is_an_error(opened: tuple[Camera, CameraConfig]) -> None:
    cam, _ = opened
    cam.capture()
    cam.close()
    cam.close()
    with pytest.raises(DeviceError):
        cam.capture()


def test_picamera2_missing_is_one_clear_error_not_a_fallback() -> None:
    try:
        import picamera2  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("picamera2 is installed here")
    with pytest.raises(UnsupportedFeatureError) as info:
        open_camera(CameraConfig(type="picamera2"))
    message = str(info.value)
    assert "algocyte-agent[pi]" in message
    assert "libcamera" in message


def test_simulated_without_simulator_or_address_is_an_error() -> None:
    with pytest.raises(DeviceConnectionError, match="no in-process simulator"):
        open_camera(CameraConfig(type="simulated"))


def test_unreachable_simulator_address_is_a_connection_error(tmp_path: Path) -> None:
    config = CameraConfig(
        type="simulated", device=f"unix://{tmp_path / 'nobody.sock'}", open_timeout_s=1.0
    )
    with pytest.raises(DeviceConnectionError, match="algocyte-agent sim"):
        open_camera(config)
