"""The camera interface every camera backend implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

BgrImage = npt.NDArray[np.uint8]
"""An H x W x 3 uint8 image in OpenCV's BGR channel order."""


@dataclass(frozen=True)
class CameraSettings:
    """What can be set on every camera. None leaves the backend's current value."""

    width: int
    height: int
    exposure_us: int | None = None
    analogue_gain: float | None = None
    white_balance_gains: tuple[float, float] | None = None
    """Red and blue gains relative to green; None keeps the current balance."""


@dataclass(frozen=True)
class FrameMetadata:
    """What is known about a frame besides its pixels."""

    timestamp: float
    """Wall-clock time of the capture, seconds since the epoch (UTC)."""
    exposure_us: int
    analogue_gain: float
    extra: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Frame:
    """One captured image with its metadata."""

    image: BgrImage
    metadata: FrameMetadata


class Camera(Protocol):
    """A microscope camera. Errors are ``drivers.errors.DeviceError`` subclasses."""

    def configure(self, settings: CameraSettings) -> None:
        """Apply resolution, exposure, gain and white balance."""

    def capture(self) -> Frame:
        """Capture one frame (blocking, with a timeout)."""

    def close(self) -> None:
        """Release the device. Safe to call twice."""
