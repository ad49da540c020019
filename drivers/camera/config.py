"""Configuration of the microscope camera.

One flat section for every backend, chosen by ``type``; keys that only one backend
uses say so, and a key set for a backend that ignores it is an error (it would be a
silent no-op otherwise).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from drivers.config_model import StrictModel

CameraType = Literal["picamera2", "opencv", "simulated"]


class CameraConfig(StrictModel):
    """The microscope camera: which backend, which sensor mode, and the optics' scale."""

    type: CameraType = Field(
        default="picamera2",
        description=(
            "Backend: 'picamera2' (Raspberry Pi camera, needs the 'pi' extra and libcamera), "
            "'opencv' (V4L2 device, video file or URL) or 'simulated' (needs a simulator section)."
        ),
    )
    device: str | None = Field(
        default=None,
        description=(
            "For 'opencv': device index (0) or path (/dev/video0), a video or image file, or a "
            "URL. For 'simulated': the frame-server address printed by 'algocyte-agent sim' "
            "(unix:///path.sock or tcp://host:port); empty for the in-process simulator."
        ),
    )
    camera_index: int = Field(
        default=0,
        ge=0,
        le=15,
        description="For 'picamera2': which camera on the board (0 = first).",
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
    white_balance_gains: tuple[float, float] | None = Field(
        default=None,
        description=(
            "Fixed [red, blue] colour gains relative to green; empty leaves white balance to "
            "calibration (and to the camera's auto white balance until then)."
        ),
    )
    open_timeout_s: float = Field(
        default=10.0, gt=0, le=120, description="Longest wait for the camera to open (s)."
    )
    capture_timeout_s: float = Field(
        default=5.0, gt=0, le=120, description="Longest wait for one frame (s)."
    )

    @model_validator(mode="after")
    def _keys_fit_backend(self) -> CameraConfig:
        if self.type == "opencv" and not self.device:
            raise ValueError(
                "camera.type 'opencv' needs camera.device (an index such as 0, /dev/video0, "
                "a video or image file, or a URL)"
            )
        if self.type == "picamera2" and self.device:
            raise ValueError(
                "camera.device is not used by 'picamera2'; choose the camera with camera_index"
            )
        if (
            self.type == "simulated"
            and self.device
            and not (self.device.startswith("unix://") or self.device.startswith("tcp://"))
        ):
            raise ValueError(
                "for 'simulated', camera.device is the frame-server address printed by "
                "'algocyte-agent sim' (unix:///path.sock or tcp://host:port), or empty for the "
                f"in-process simulator; got '{self.device}'"
            )
        if self.white_balance_gains is not None and not all(
            0.0 < g <= 32.0 for g in self.white_balance_gains
        ):
            raise ValueError(
                f"white_balance_gains must be two numbers in (0, 32], got {self.white_balance_gains}"
            )
        return self
