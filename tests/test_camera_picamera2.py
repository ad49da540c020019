"""The picamera2 backend's calls into picamera2, checked against a TEST DOUBLE of the library.

The Pi camera cannot exist on this machine, so this is the one place a test double is
used: ``FakePicamera2`` records what the backend asks of picamera2 (the configuration,
the controls, capture and release of requests) and answers like picamera2 does. It
checks our side of the calls only; the real camera is exercised by the ``hardware``
contract test on the board.
"""

from __future__ import annotations

import concurrent.futures
import sys
import types
from typing import Any, ClassVar

import numpy as np
import pytest

from drivers.camera.base import CameraSettings
from drivers.camera.config import CameraConfig
from drivers.camera.factory import open_camera
from drivers.errors import (
    DeviceConnectionError,
    DeviceError,
    DeviceTimeoutError,
    UnsupportedFeatureError,
)


class FakeRequest:
    """Test double of picamera2's CompletedRequest."""

    def __init__(self, cam: FakePicamera2) -> None:
        self.cam = cam
        self.released = False

    def make_array(self, name: str) -> np.ndarray:
        w, h = self.cam.config["main"]["size"]
        image = np.zeros((h, w, 3), np.uint8)
        image[..., 0] = 200  # channel 0 of RGB888 is blue
        return image

    def get_metadata(self) -> dict[str, Any]:
        c = self.cam.controls
        return {
            "ExposureTime": c.get("ExposureTime", 9000) if not self.cam.lagging else 1234,
            "AnalogueGain": c.get("AnalogueGain", 1.0),
            "ColourGains": c.get("ColourGains", (1.8, 1.4)),
            "SensorTimestamp": 123456789,
            "Lux": 400.0,
        }

    def release(self) -> None:
        self.released = True


class FakeJob:
    def __init__(self, result: FakeRequest | None) -> None:
        self.result = result

    def get_result(self, timeout: float | None = None) -> FakeRequest:
        self.timeout = timeout
        if self.result is None:
            raise concurrent.futures.TimeoutError()
        return self.result


class FakePicamera2:
    """Test double of picamera2.Picamera2: records calls, answers like the library."""

    instances: ClassVar[list[FakePicamera2]] = []
    fail_open = False

    def __init__(self, camera_num: int = 0) -> None:
        if FakePicamera2.fail_open:
            raise RuntimeError("Camera __init__ sequence did not complete.")
        self.camera_num = camera_num
        self.calls: list[Any] = []
        self.controls: dict[str, Any] = {}
        self.config: dict[str, Any] = {}
        self.requests: list[FakeRequest] = []
        self.deliver_size: tuple[int, int] | None = None
        self.hang = False
        self.lagging = False
        FakePicamera2.instances.append(self)

    def create_still_configuration(
        self, main: dict[str, Any], buffer_count: int, controls: dict[str, Any]
    ) -> dict[str, Any]:
        self.calls.append(("create_still_configuration", dict(main), buffer_count))
        return {"main": dict(main), "controls": dict(controls)}

    def configure(self, config: dict[str, Any]) -> None:
        self.calls.append("configure")
        self.config = {"main": dict(config["main"])}
        if self.deliver_size is not None:
            self.config["main"]["size"] = self.deliver_size
        self.controls.update(config["controls"])

    def camera_configuration(self) -> dict[str, Any]:
        return self.config

    def start(self) -> None:
        self.calls.append("start")

    def stop(self) -> None:
        self.calls.append("stop")

    def close(self) -> None:
        self.calls.append("close")

    def set_controls(self, controls: dict[str, Any]) -> None:
        self.calls.append(("set_controls", dict(controls)))
        self.controls.update(controls)

    def capture_request(self, wait: bool | None = None) -> FakeJob:
        self.calls.append(("capture_request", wait))
        if self.hang:
            return FakeJob(None)
        request = FakeRequest(self)
        self.requests.append(request)
        return FakeJob(request)


@pytest.fixture
def fake_picamera2(monkeypatch: pytest.MonkeyPatch) -> type[FakePicamera2]:
    """Install the test double as the ``picamera2`` module."""
    module = types.ModuleType("picamera2")
    module.Picamera2 = FakePicamera2  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "picamera2", module)
    FakePicamera2.instances = []
    FakePicamera2.fail_open = False
    return FakePicamera2


def config(**kw: Any) -> CameraConfig:
    return CameraConfig(type="picamera2", width=2028, height=1520, **kw)


def test_opens_a_bgr_still_stream_at_the_sensor_mode(fake_picamera2: type[FakePicamera2]) -> None:
    cam = open_camera(config(camera_index=1, exposure_us=6000, white_balance_gains=(1.9, 1.5)))
    fake = fake_picamera2.instances[0]
    assert fake.camera_num == 1
    assert fake.calls[0] == (
        "create_still_configuration",
        {"size": (2028, 1520), "format": "RGB888"},
        2,
    )
    assert fake.calls[1:3] == ["configure", "start"]
    assert fake.controls["AeEnable"] is False
    assert fake.controls["ExposureTime"] == 6000
    assert fake.controls["AwbEnable"] is False
    assert fake.controls["ColourGains"] == (1.9, 1.5)
    frame = cam.capture()
    assert frame.image.shape == (1520, 2028, 3)
    assert tuple(frame.image[0, 0]) == (200, 0, 0)  # blue stays in OpenCV's channel 0
    assert frame.metadata.exposure_us == 6000
    assert frame.metadata.extra["colour_gain_red"] == 1.9
    assert all(r.released for r in fake.requests)
    # Captures never block forever: a timeout is always passed.
    assert ("capture_request", False) in fake.calls
    cam.close()
    cam.close()
    assert fake.calls[-2:] == ["stop", "close"]
    with pytest.raises(DeviceConnectionError):
        cam.capture()


def test_auto_exposure_and_white_balance_when_not_fixed(
    fake_picamera2: type[FakePicamera2],
) -> None:
    cam = open_camera(config())
    fake = fake_picamera2.instances[0]
    assert fake.controls["AeEnable"] is True
    assert fake.controls["AwbEnable"] is True
    assert "ExposureTime" not in fake.controls
    # Fixing the exposure later changes controls without reconfiguring the stream.
    cam.configure(CameraSettings(2028, 1520, exposure_us=20_000, analogue_gain=2.0))
    assert fake.calls.count("configure") == 1
    sets = [c for c in fake.calls if isinstance(c, tuple) and c[0] == "set_controls"]
    assert sets[-1][1]["ExposureTime"] == 20_000
    assert sets[-1][1]["AnalogueGain"] == 2.0
    assert sets[-1][1]["FrameDurationLimits"][1] >= 20_000
    cam.close()


def test_frames_with_the_old_exposure_are_dropped(fake_picamera2: type[FakePicamera2]) -> None:
    cam = open_camera(config())
    fake = fake_picamera2.instances[0]
    fake.lagging = True
    before = len(fake.requests)
    cam.configure(CameraSettings(2028, 1520, exposure_us=5000))
    # It waited (bounded) for frames with the new exposure, releasing every request.
    assert len(fake.requests) - before == 8
    assert all(r.released for r in fake.requests)
    cam.close()


def test_a_size_libcamera_cannot_deliver_is_refused(fake_picamera2: type[FakePicamera2]) -> None:
    module = sys.modules["picamera2"]
    original = module.Picamera2  # type: ignore[attr-defined]

    class Shrinking(FakePicamera2):
        def __init__(self, camera_num: int = 0) -> None:
            super().__init__(camera_num)
            self.deliver_size = (2032, 1520)

    module.Picamera2 = Shrinking  # type: ignore[attr-defined]
    try:
        with pytest.raises(UnsupportedFeatureError, match="2032x1520"):
            open_camera(config())
    finally:
        module.Picamera2 = original  # type: ignore[attr-defined]
    # The half-opened camera was closed again.
    assert fake_picamera2.instances[-1].calls[-1] == "close"


def test_no_frame_is_a_timeout(fake_picamera2: type[FakePicamera2]) -> None:
    cam = open_camera(config(capture_timeout_s=0.5))
    fake_picamera2.instances[0].hang = True
    with pytest.raises(DeviceTimeoutError, match=r"0\.5 s"):
        cam.capture()
    cam.close()


def test_no_camera_on_the_board_is_a_connection_error(
    fake_picamera2: type[FakePicamera2],
) -> None:
    fake_picamera2.fail_open = True
    with pytest.raises(DeviceConnectionError, match="rpicam-hello"):
        open_camera(config())


def test_capture_before_configure_is_an_error(fake_picamera2: type[FakePicamera2]) -> None:
    from drivers.camera.picamera2 import Picamera2Camera

    cam = Picamera2Camera(config())
    with pytest.raises(DeviceError, match="configured"):
        cam.capture()
    cam.close()
