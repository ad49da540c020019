"""The OpenCV backend on real files: what it reads, how it fails."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from drivers.camera.base import CameraSettings
from drivers.camera.config import CameraConfig
from drivers.camera.factory import open_camera
from drivers.errors import DeviceConnectionError, UnsupportedFeatureError

W, H = 320, 240


def write_video(path: Path, frames: list[np.ndarray]) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"FFV1"), 5.0, (W, H))
    assert writer.isOpened()
    for f in frames:
        writer.write(f)
    writer.release()


def cfg(device: str, **kw: object) -> CameraConfig:
    return CameraConfig(type="opencv", device=device, width=W, height=H, **kw)  # type: ignore[arg-type]


def test_video_frames_in_order_then_looped(tmp_path: Path) -> None:
    frames = [np.full((H, W, 3), v, np.uint8) for v in (10, 80, 150)]
    path = tmp_path / "v.avi"
    write_video(path, frames)
    cam = open_camera(cfg(str(path)))
    got = [int(cam.capture().image.mean()) for _ in range(5)]
    # FFV1 is lossless: exactly the frames written, and the file plays in a loop.
    assert got == [10, 80, 150, 10, 80]
    cam.close()


def test_grey_still_image_becomes_bgr(tmp_path: Path) -> None:
    path = tmp_path / "grey.png"
    cv2.imwrite(str(path), np.full((H, W), 99, np.uint8))
    cam = open_camera(cfg(str(path)))
    image = cam.capture().image
    assert image.shape == (H, W, 3)
    assert (image == 99).all()
    cam.close()


def test_white_balance_gains_are_applied_to_the_pixels(tmp_path: Path) -> None:
    path = tmp_path / "still.png"
    cv2.imwrite(str(path), np.full((H, W, 3), 100, np.uint8))
    cam = open_camera(cfg(str(path), white_balance_gains=(1.5, 0.5)))
    b, g, r = cam.capture().image[0, 0]
    assert (b, g, r) == (50, 100, 150)
    cam.close()


def test_size_mismatch_is_refused_with_both_sizes(tmp_path: Path) -> None:
    path = tmp_path / "still.png"
    cv2.imwrite(str(path), np.zeros((100, 200, 3), np.uint8))
    cam = open_camera(cfg(str(path)))
    with pytest.raises(UnsupportedFeatureError, match=r"200x100.*320x240"):
        cam.capture()
    cam.configure(CameraSettings(200, 100))
    assert cam.capture().image.shape == (100, 200, 3)
    cam.close()


def test_missing_and_corrupt_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DeviceConnectionError, match="no such file"):
        open_camera(cfg(str(tmp_path / "absent.png")))
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(DeviceConnectionError, match="not a readable image"):
        open_camera(cfg(str(bad)))
    with pytest.raises(DeviceConnectionError, match="no such file"):
        open_camera(cfg(str(tmp_path / "absent.avi")))


def test_corrupt_video_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.avi"
    bad.write_bytes(b"RIFF....AVI garbage" * 10)
    with pytest.raises(DeviceConnectionError):
        cam = open_camera(cfg(str(bad)))
        cam.capture()


def test_absent_v4l2_device_is_a_clear_error() -> None:
    with pytest.raises(DeviceConnectionError, match=r"cannot open camera\.device 63"):
        open_camera(cfg("63", open_timeout_s=2.0))


def test_config_requires_a_device_for_opencv() -> None:
    with pytest.raises(ValueError, match=r"needs camera\.device"):
        CameraConfig(type="opencv")
