"""The OpenCV camera backend: a V4L2 (USB) camera, a video or image file, or a network stream.

``camera.device`` chooses the source: a device index (``0``) or path (``/dev/video0``)
opens a V4L2 camera; an existing file opens as a still image (``.jpg``, ``.png``,
...: every capture returns it) or as a video (played in a loop, for replaying a
recorded scan); anything with a ``scheme://`` opens as a stream URL.

``VideoCapture.read`` can block forever on a camera that stopped streaming, so reads
run in a worker thread with the configured timeout; a read that times out leaves the
camera unusable until it is reopened (the stuck call cannot be interrupted). UVC
cameras have no per-channel colour gains, so white-balance gains are applied to the
pixels here.
"""

from __future__ import annotations

import concurrent.futures
import logging
import re
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from drivers.camera.base import BgrImage, CameraSettings, Frame, FrameMetadata
from drivers.camera.config import CameraConfig
from drivers.errors import (
    DeviceConnectionError,
    DeviceError,
    DeviceTimeoutError,
    UnsupportedFeatureError,
)

_log = logging.getLogger(__name__)

STILL_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
V4L2_EXPOSURE_UNIT_US = 100
"""V4L2's exposure_time_absolute counts in units of 100 us."""
V4L2_MANUAL_EXPOSURE = 1
V4L2_AUTO_EXPOSURE = 3
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def _to_bgr8(image: npt.NDArray[Any]) -> BgrImage:
    """Whatever the source delivers (grey, BGRA, 16-bit) as 8-bit BGR."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise DeviceError(f"camera delivered {image.dtype} pixels; expected 8- or 16-bit")
    if image.ndim == 2:
        return np.asarray(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), np.uint8)
    if image.ndim == 3 and image.shape[2] == 4:
        return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGRA2BGR), np.uint8)
    if image.ndim == 3 and image.shape[2] == 3:
        return np.asarray(image, np.uint8)
    raise DeviceError(f"camera delivered an image of shape {image.shape}; expected colour")


class OpenCvCamera:
    """A ``drivers.camera.base.Camera`` over ``cv2.VideoCapture`` (or a still image)."""

    def __init__(self, config: CameraConfig) -> None:
        if not config.device:
            raise DeviceConnectionError("camera.type 'opencv' needs camera.device")
        self._source = config.device
        self._open_timeout = config.open_timeout_s
        self._read_timeout = config.capture_timeout_s
        self._lock = threading.Lock()
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="opencv-camera")
        self._cap: Any = None
        self._still: BgrImage | None = None
        self._is_file = False
        self._is_device = False
        self._stuck = False
        self._closed = False
        self._settings = CameraSettings(width=config.width, height=config.height)
        self._gains: tuple[float, float] | None = None
        try:
            self._open()
        except BaseException:
            self._worker.shutdown(wait=False)
            raise

    # -- opening -----------------------------------------------------------------------

    def _open(self) -> None:
        source = self._source
        path = Path(source).expanduser()
        if path.suffix.lower() in STILL_SUFFIXES and not _URL.match(source):
            image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if image is None:
                raise DeviceConnectionError(
                    f"camera.device {source}: not a readable image file"
                    + ("" if path.exists() else " (no such file)")
                )
            self._still = _to_bgr8(np.asarray(image))
            self._is_file = True
            return
        target: int | str
        api = cv2.CAP_ANY
        if source.isdigit():
            target, api, self._is_device = int(source), cv2.CAP_V4L2, True
        elif source.startswith("/dev/"):
            target, api, self._is_device = source, cv2.CAP_V4L2, True
        elif _URL.match(source):
            target, api = source, cv2.CAP_FFMPEG
        elif path.exists():
            target, self._is_file = str(path), True
        else:
            raise DeviceConnectionError(
                f"camera.device {source}: no such file, and not a device index, /dev path or URL"
            )
        timeout_ms = int(self._open_timeout * 1000)
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            timeout_ms,
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            int(self._read_timeout * 1000),
        ]

        def open_capture() -> Any:
            return cv2.VideoCapture(target, api, params)

        cap = self._run(open_capture, self._open_timeout, f"opening camera {source}")
        if not cap.isOpened():
            cap.release()
            raise DeviceConnectionError(
                f"cannot open camera.device {source}"
                + (
                    " (is the camera plugged in, and may this user open it?)"
                    if self._is_device
                    else ""
                )
            )
        self._cap = cap

    def _run(self, fn: Any, timeout_s: float, what: str) -> Any:
        if self._stuck:
            raise DeviceConnectionError(
                f"camera {self._source} stopped answering earlier; it must be reopened"
            )
        future = self._worker.submit(fn)
        try:
            return future.result(timeout=timeout_s)
        except concurrent.futures.TimeoutError as e:
            self._stuck = True
            raise DeviceTimeoutError(f"{what}: no answer within {timeout_s:g} s") from e

    # -- Camera protocol ---------------------------------------------------------------------

    def configure(self, settings: CameraSettings) -> None:
        with self._lock:
            self._check_open()
            if self._cap is not None and self._is_device:
                self._apply_device_settings(settings)
            self._settings = settings
            self._gains = settings.white_balance_gains or self._gains

    def _apply_device_settings(self, settings: CameraSettings) -> None:
        cap = self._cap

        def apply() -> list[str]:
            refused = []
            if not cap.set(cv2.CAP_PROP_FRAME_WIDTH, settings.width):
                refused.append("width")
            if not cap.set(cv2.CAP_PROP_FRAME_HEIGHT, settings.height):
                refused.append("height")
            if settings.exposure_us is not None:
                cap.set(cv2.CAP_PROP_AUTO_EXPOSURE, V4L2_MANUAL_EXPOSURE)
                if not cap.set(
                    cv2.CAP_PROP_EXPOSURE,
                    max(1, round(settings.exposure_us / V4L2_EXPOSURE_UNIT_US)),
                ):
                    refused.append("exposure")
            else:
                cap.set(cv2.CAP_PROP_AUTO_EXPOSURE, V4L2_AUTO_EXPOSURE)
            if settings.analogue_gain is not None and not cap.set(
                cv2.CAP_PROP_GAIN, settings.analogue_gain
            ):
                refused.append("gain")
            return refused

        refused = self._run(apply, self._open_timeout, f"configuring camera {self._source}")
        if refused:
            _log.warning("camera %s refused settings: %s", self._source, ", ".join(refused))

    def capture(self) -> Frame:
        with self._lock:
            self._check_open()
            image = self._read()
            s = self._settings
            if image.shape[1] != s.width or image.shape[0] != s.height:
                raise UnsupportedFeatureError(
                    f"camera {self._source} delivers {image.shape[1]}x{image.shape[0]} frames but "
                    f"camera.width/height ask for {s.width}x{s.height}"
                )
            if self._gains is not None:
                red, blue = self._gains
                gains = np.array([blue, 1.0, red], dtype=np.float32)
                image = np.clip(image * gains + 0.5, 0, 255).astype(np.uint8)
            exposure = s.exposure_us or 0
            if self._is_device and self._cap is not None:
                measured = float(self._cap.get(cv2.CAP_PROP_EXPOSURE))
                if measured > 0:
                    exposure = round(measured * V4L2_EXPOSURE_UNIT_US)
            return Frame(
                image=image,
                metadata=FrameMetadata(
                    timestamp=time.time(),
                    exposure_us=exposure,
                    analogue_gain=s.analogue_gain if s.analogue_gain is not None else 1.0,
                ),
            )

    def _read(self) -> BgrImage:
        if self._still is not None:
            return self._still.copy()
        cap = self._cap

        def read() -> Any:
            ok, frame = cap.read()
            if not ok and self._is_file:
                # A video file plays in a loop.
                cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                ok, frame = cap.read()
            return frame if ok else None

        frame = self._run(read, self._read_timeout, f"reading a frame from camera {self._source}")
        if frame is None:
            raise DeviceConnectionError(
                f"camera {self._source}: no frame"
                + (" (file is empty or unreadable)" if self._is_file else " (was it unplugged?)")
            )
        return _to_bgr8(np.asarray(frame))

    def _check_open(self) -> None:
        if self._closed:
            raise DeviceConnectionError(f"camera {self._source} is closed")

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()
        self._worker.shutdown(wait=False)
