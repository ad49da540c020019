"""Configuration of the microscope camera."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from drivers.config_model import StrictModel


class CameraConfig(StrictModel):
    """The microscope camera: which backend, which sensor mode, and the optics' scale."""

    type: Literal["picamera2", "opencv", "simulated"] = Field(
        default="picamera2",
        description=(
            "Backend: 'picamera2' (Raspberry Pi camera, needs the 'pi' extra and libcamera), "
            "'opencv' (V4L2 device, video file or URL) or 'simulated' (needs a simulator section)."
        ),
    )
    device: str | None = Field(
        default=None,
        description="For 'opencv': device index or path (/dev/video0), file or URL.",
    )
    width: int = Field(default=2028, ge=64, le=8192, description="Frame width in pixels.")
    height: int = Field(default=1520, ge=64, le=8192, description="Frame height in pixels.")
    pixel_size_um: float = Field(
        default=0.2,
        gt=0.01,
        le=5.0,
        description="Size of one camera pixel at the sample plane (um/px), from a calibration slide.",
    )
    exposure_us: int | None = Field(
        default=None,
        ge=10,
        le=1_000_000,
        description="Fixed exposure time (us); empty to calibrate at the start of every sample.",
    )
    analogue_gain: float = Field(default=1.0, ge=1.0, le=16.0, description="Sensor analogue gain.")
