"""The Raspberry Pi camera backend (libcamera through picamera2).

``picamera2`` is imported when the camera is opened, never at import time, so this
module loads anywhere; on a machine without it, opening fails with one clear
``UnsupportedFeatureError`` that says what to install.

The camera runs a still configuration whose main stream is 8-bit BGR: picamera2's
``RGB888`` format is stored B, G, R per pixel, which is OpenCV's order. A fixed
exposure switches auto exposure off (``AeEnable``), fixed colour gains switch auto
white balance off (``AwbEnable``), and after a change of exposure or gain the frames
still in flight with the old values are dropped, so a capture never returns a frame
taken before ``configure`` returned.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from typing import Any

import numpy as np

from drivers.camera.base import BgrImage, CameraSettings, Frame, FrameMetadata
from drivers.camera.config import CameraConfig
from drivers.errors import (
    DeviceConnectionError,
    DeviceError,
    DeviceTimeoutError,
    UnsupportedFeatureError,
)

_log = logging.getLogger(__name__)

MAIN_FORMAT = "RGB888"
"""libcamera's RGB888 is B, G, R in memory: OpenCV's BGR."""
BUFFER_COUNT = 2
MIN_FRAME_US = 100
DEFAULT_MAX_FRAME_US = 100_000
FRAME_OVERHEAD_US = 5_000
"""Frame time beyond the exposure (readout), so a long exposure is not clipped (us)."""
SETTLE_FRAMES = 8
"""Most frames dropped after a settings change while waiting for them to take effect."""
EXPOSURE_TOLERANCE = 0.1
"""A frame's exposure within this fraction of the request counts as the new setting."""

INSTALL_HINT = (
    "camera.type is 'picamera2' but the picamera2 library is not available here. On the "
    "Raspberry Pi: install libcamera and picamera2 from Raspberry Pi OS "
    "(sudo apt install python3-picamera2; create the venv with --system-site-packages) and "
    "the agent's Pi extra (pip install 'algocyte-agent[pi]'). Elsewhere choose "
    "camera.type 'opencv' or 'simulated'."
)


def _import_picamera2() -> Any:
    try:
        from picamera2 import Picamera2  # type: ignore[import-not-found,unused-ignore]
    except ImportError as e:
        raise UnsupportedFeatureError(f"{INSTALL_HINT} ({e})") from e
    return Picamera2


class Picamera2Camera:
    """A ``drivers.camera.base.Camera`` on a Raspberry Pi camera module."""

    def __init__(self, config: CameraConfig) -> None:
        picamera2_class = _import_picamera2()
        self._index = config.camera_index
        self._capture_timeout = config.capture_timeout_s
        self._open_timeout = config.open_timeout_s
        self._lock = threading.Lock()
        self._closed = False
        self._started = False
        self._size: tuple[int, int] | None = None
        self._settings: CameraSettings | None = None
        try:
            self._cam = picamera2_class(camera_num=config.camera_index)
        except (RuntimeError, IndexError, OSError) as e:
            raise DeviceConnectionError(
                f"no Raspberry Pi camera {config.camera_index} could be opened: {e} (is the "
                "ribbon cable seated, and is the camera enabled? 'rpicam-hello --list-cameras' "
                "lists what libcamera sees)"
            ) from e

    # -- Camera protocol ---------------------------------------------------------------------

    def configure(self, settings: CameraSettings) -> None:
        with self._lock:
            self._check_open()
            controls = _controls_for(settings)
            size = (settings.width, settings.height)
            try:
                if size != self._size:
                    if self._started:
                        self._cam.stop()
                        self._started = False
                    config = self._cam.create_still_configuration(
                        main={"size": size, "format": MAIN_FORMAT},
                        buffer_count=BUFFER_COUNT,
                        controls=controls,
                    )
                    self._cam.configure(config)
                    actual = tuple(self._cam.camera_configuration()["main"]["size"])
                    if actual != size:
                        raise UnsupportedFeatureError(
                            f"the Pi camera cannot deliver {size[0]}x{size[1]}; libcamera chose "
                            f"{actual[0]}x{actual[1]} (set camera.width/height to a sensor mode)"
                        )
                    self._size = size
                    self._cam.start()
                    self._started = True
                else:
                    self._cam.set_controls(controls)
            except DeviceError:
                raise
            except (RuntimeError, ValueError, KeyError, OSError) as e:
                raise DeviceError(f"the Pi camera refused its settings: {e}") from e
            self._settings = settings
            self._wait_for_settings(settings)

    def _wait_for_settings(self, settings: CameraSettings) -> None:
        """Drop frames still exposed with the old settings."""
        if settings.exposure_us is None:
            return
        for _ in range(SETTLE_FRAMES):
            _, metadata = self._capture_request()
            got = float(metadata.get("ExposureTime", 0))
            if abs(got - settings.exposure_us) <= EXPOSURE_TOLERANCE * settings.exposure_us:
                return
        _log.warning(
            "Pi camera exposure did not reach %d us within %d frames",
            settings.exposure_us,
            SETTLE_FRAMES,
        )

    def _capture_request(self) -> tuple[BgrImage, dict[str, Any]]:
        try:
            job = self._cam.capture_request(wait=False)
            request = job.get_result(timeout=self._capture_timeout)
        except concurrent.futures.TimeoutError as e:
            raise DeviceTimeoutError(
                f"the Pi camera gave no frame within {self._capture_timeout:g} s"
            ) from e
        except RuntimeError as e:
            raise DeviceConnectionError(f"the Pi camera failed to capture: {e}") from e
        try:
            image = np.ascontiguousarray(request.make_array("main"), dtype=np.uint8)
            metadata = dict(request.get_metadata())
        finally:
            request.release()
        if image.ndim != 3 or image.shape[2] != 3:
            raise DeviceError(f"the Pi camera delivered an image of shape {image.shape}")
        return image, metadata

    def capture(self) -> Frame:
        with self._lock:
            self._check_open()
            if not self._started:
                raise DeviceError("the Pi camera must be configured before the first capture")
            image, md = self._capture_request()
        extra: dict[str, float] = {}
        gains = md.get("ColourGains")
        if gains is not None and len(gains) == 2:
            extra["colour_gain_red"], extra["colour_gain_blue"] = float(gains[0]), float(gains[1])
        for key, name in (
            ("ColourTemperature", "colour_temperature_k"),
            ("Lux", "lux"),
            ("SensorTimestamp", "sensor_timestamp_ns"),
        ):
            if key in md:
                extra[name] = float(md[key])
        return Frame(
            image=image,
            metadata=FrameMetadata(
                timestamp=time.time(),
                exposure_us=int(md.get("ExposureTime", 0)),
                analogue_gain=float(md.get("AnalogueGain", 1.0)),
                extra=extra,
            ),
        )

    def _check_open(self) -> None:
        if self._closed:
            raise DeviceConnectionError("the Pi camera is closed")

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self._started:
                    self._cam.stop()
            except RuntimeError as e:
                _log.warning("Pi camera did not stop cleanly: %s", e)
            finally:
                self._started = False
                self._cam.close()


def _controls_for(settings: CameraSettings) -> dict[str, Any]:
    """libcamera controls for ``settings`` (auto algorithms on where nothing is fixed)."""
    controls: dict[str, Any] = {}
    if settings.exposure_us is not None:
        controls["AeEnable"] = False
        controls["ExposureTime"] = int(settings.exposure_us)
        # libcamera clips the exposure to the frame duration: let the frame be long enough.
        controls["FrameDurationLimits"] = (
            MIN_FRAME_US,
            max(DEFAULT_MAX_FRAME_US, int(settings.exposure_us) + FRAME_OVERHEAD_US),
        )
        controls["AnalogueGain"] = float(settings.analogue_gain or 1.0)
    else:
        controls["AeEnable"] = True
        if settings.analogue_gain is not None:
            controls["AnalogueGain"] = float(settings.analogue_gain)
    if settings.white_balance_gains is not None:
        controls["AwbEnable"] = False
        controls["ColourGains"] = (
            float(settings.white_balance_gains[0]),
            float(settings.white_balance_gains[1]),
        )
    else:
        controls["AwbEnable"] = True
    return controls
