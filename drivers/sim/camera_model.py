"""The virtual camera: the slide as seen through the virtual microscope at the stage's true position.

A capture asks the stage (the virtual GRBL controller, or anything that knows a true
position and an LED level) where the slide is, cuts that field out of the virtual
slide, blurs it by the distance from the focal surface, lights it with the LED's PWM
level, the exposure and the gains (through the sensor's colour response and the
configured white-balance gains), darkens the corners, lets the lamp drift slowly and
adds shot and read noise. Everything is deterministic given the slide's seed, the
position, the settings and the capture count.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, replace
from typing import Protocol

import cv2
import numpy as np
import numpy.typing as npt

from drivers.camera.base import BgrImage, CameraSettings, Frame, FrameMetadata
from drivers.errors import DeviceConnectionError, UnsupportedFeatureError
from drivers.sim.config import OpticsConfig
from drivers.sim.optics import (
    FocalSurface,
    blur_margin_px,
    defocus_sigma_px,
    drift_factor,
    gaussian_blur,
    vignetting_map,
)
from drivers.sim.slide import REFERENCE_PIXEL_UM, VirtualSlide
from drivers.stage.base import Position

_log = logging.getLogger(__name__)

DEFAULT_EXPOSURE_US = 4_000
"""Exposure before anything is configured (us)."""
MAX_WIDTH, MAX_HEIGHT = 4056, 3040
"""Largest sensor mode (the Raspberry Pi HQ camera's full resolution)."""
LED_FULL_SCALE = 1000
NOISE_BANK_MARGIN = 96
"""Extra rows/columns of the pre-drawn noise, so each capture can take a different window."""


class StageProbe(Protocol):
    """What the camera needs from the stage: where the slide really is and how bright the LED is."""

    def true_position(self) -> Position:
        """The stage's true position (um), between steps during motion."""

    @property
    def led_level(self) -> int:
        """The LED's PWM level, 0-1000."""


class ManualStage:
    """A stage probe set by hand: renders the slide without a controller (tools, tests)."""

    def __init__(self, position: Position | None = None, led_level: int = 700) -> None:
        self._lock = threading.Lock()
        self._position = position or Position(0.0, 0.0, 0.0)
        self._led = led_level

    def move_to(self, x_um: float, y_um: float, z_um: float) -> None:
        with self._lock:
            self._position = Position(x_um, y_um, z_um)

    def set_led(self, level: int) -> None:
        with self._lock:
            self._led = max(0, min(LED_FULL_SCALE, int(level)))

    def true_position(self) -> Position:
        with self._lock:
            return self._position

    @property
    def led_level(self) -> int:
        with self._lock:
            return self._led


@dataclass(frozen=True)
class SensorState:
    """The settings a capture uses."""

    width: int
    height: int
    exposure_us: int
    analogue_gain: float
    red_gain: float
    blue_gain: float


class VirtualCamera:
    """A ``drivers.camera.base.Camera`` that photographs the virtual slide."""

    def __init__(
        self,
        slide: VirtualSlide,
        stage: StageProbe,
        optics: OpticsConfig,
        *,
        width: int = 2028,
        height: int = 1520,
    ) -> None:
        self.slide = slide
        self.stage = stage
        self.optics = optics
        self.focal_surface = FocalSurface(optics, slide.smear_extent())
        self._lock = threading.Lock()
        self._closed = False
        self._count = 0
        rng = np.random.default_rng([slide.seed, 0xCA3])
        self._drift_phase = float(rng.uniform(0, 2 * math.pi))
        # White balance starts where an auto white balance would settle: neutral glass.
        self._state = SensorState(
            width=width,
            height=height,
            exposure_us=DEFAULT_EXPOSURE_US,
            analogue_gain=1.0,
            red_gain=1.0 / optics.sensor_red_response,
            blue_gain=1.0 / optics.sensor_blue_response,
        )
        self._check_size(width, height)
        self._vignette: npt.NDArray[np.float32] | None = None
        self._noise: npt.NDArray[np.float32] | None = None

    # -- Camera protocol -------------------------------------------------------------------

    def configure(self, settings: CameraSettings) -> None:
        """Apply the settings; None keeps the current value."""
        self._check_size(settings.width, settings.height)
        with self._lock:
            self._ensure_open()
            s = self._state
            red, blue = settings.white_balance_gains or (s.red_gain, s.blue_gain)
            if not (0.0 < red <= 32.0 and 0.0 < blue <= 32.0):
                raise UnsupportedFeatureError(
                    f"white-balance gains must be in (0, 32], got red {red}, blue {blue}"
                )
            new = replace(
                s,
                width=settings.width,
                height=settings.height,
                exposure_us=s.exposure_us if settings.exposure_us is None else settings.exposure_us,
                analogue_gain=(
                    s.analogue_gain if settings.analogue_gain is None else settings.analogue_gain
                ),
                red_gain=float(red),
                blue_gain=float(blue),
            )
            if new.exposure_us <= 0 or new.analogue_gain <= 0:
                raise UnsupportedFeatureError(
                    f"exposure and gain must be positive, got {new.exposure_us} us, "
                    f"gain {new.analogue_gain}"
                )
            if (new.width, new.height) != (s.width, s.height):
                self._vignette = None
                self._noise = None
            self._state = new

    def capture(self) -> Frame:
        """Photograph the slide where the stage really is now."""
        with self._lock:
            self._ensure_open()
            position = self.stage.true_position()
            led = self.stage.led_level
            index = self._count
            self._count += 1
            image = self._render(position, led, index, self._state)
            s = self._state
        return Frame(
            image=image,
            metadata=FrameMetadata(
                timestamp=time.time(),
                exposure_us=s.exposure_us,
                analogue_gain=s.analogue_gain,
                extra={
                    "capture_index": float(index),
                    "colour_gain_red": s.red_gain,
                    "colour_gain_blue": s.blue_gain,
                },
            ),
        )

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._noise = None
            self._vignette = None

    # -- what tests and tools may ask -------------------------------------------------------

    @property
    def settings(self) -> SensorState:
        with self._lock:
            return self._state

    @property
    def closed(self) -> bool:
        with self._lock:
            return self._closed

    @property
    def capture_count(self) -> int:
        with self._lock:
            return self._count

    def field_size_um(self) -> tuple[float, float]:
        """Width and height of the field of view at the slide (um)."""
        s = self.settings
        return (s.width * self.optics.pixel_size_um, s.height * self.optics.pixel_size_um)

    def best_focus_z(self, x_um: float, y_um: float) -> float:
        """The true best-focus stage z at slide point (x, y) (um)."""
        return self.focal_surface.z_at(x_um, y_um)

    def render(self, position: Position, led_level: int, capture_index: int = 0) -> BgrImage:
        """The frame a capture at ``position`` with the LED at ``led_level`` would give."""
        with self._lock:
            return self._render(position, led_level, capture_index, self._state)

    # -- the pipeline -------------------------------------------------------------------------

    def _check_size(self, width: int, height: int) -> None:
        if not (16 <= width <= MAX_WIDTH and 16 <= height <= MAX_HEIGHT):
            raise UnsupportedFeatureError(
                f"the simulated camera supports up to {MAX_WIDTH}x{MAX_HEIGHT}, "
                f"not {width}x{height}"
            )

    def _ensure_open(self) -> None:
        if self._closed:
            raise DeviceConnectionError("the simulated camera is closed")

    def _optical_image(self, position: Position, s: SensorState) -> BgrImage:
        """The in-focus-or-not image at the sensor, as transmittance (255 = clear glass)."""
        ps = self.optics.pixel_size_um
        dz = position.z_um - self.focal_surface.z_at(position.x_um, position.y_um)
        sigma = defocus_sigma_px(dz, self.optics.defocus_blur_um_per_um, ps)
        margin = blur_margin_px(sigma) if sigma > 0.05 else 0
        out_w, out_h = s.width + 2 * margin, s.height + 2 * margin
        scale = ps / REFERENCE_PIXEL_UM
        src_w, src_h = max(1, round(out_w * scale)), max(1, round(out_h * scale))
        gx0, gy0 = self.slide.pixel_origin(position.x_um, position.y_um, src_w, src_h)
        raw = self.slide.render_pixels(gx0, gy0, src_w, src_h)
        if (src_w, src_h) != (out_w, out_h):
            interp = cv2.INTER_AREA if scale > 1 else cv2.INTER_LINEAR
            raw = np.asarray(cv2.resize(raw, (out_w, out_h), interpolation=interp), np.uint8)
        blurred = gaussian_blur(raw, sigma)
        if margin:
            blurred = blurred[margin : margin + s.height, margin : margin + s.width]
        return np.ascontiguousarray(blurred)

    def _render(self, position: Position, led_level: int, index: int, s: SensorState) -> BgrImage:
        o = self.optics
        trans = self._optical_image(position, s)
        if self._vignette is None:
            v = vignetting_map(s.width, s.height, o.vignetting)
            self._vignette = np.ascontiguousarray(np.repeat(v[:, :, None], 3, axis=2))
        led = max(0, min(LED_FULL_SCALE, led_level)) / LED_FULL_SCALE
        drift = drift_factor(index, o.drift, o.drift_period_captures, self._drift_phase)
        level = o.brightness_dn_per_ms * (s.exposure_us / 1000.0) * led * s.analogue_gain * drift
        k = np.array(
            [
                o.sensor_blue_response * s.blue_gain,
                1.0,
                o.sensor_red_response * s.red_gain,
            ],
            dtype=np.float32,
        ) * np.float32(level / 255.0)
        signal = np.asarray(cv2.multiply(trans, self._vignette, dtype=cv2.CV_32F), np.float32)
        np.multiply(signal, k, out=signal)
        noisy = self._add_noise(signal, s, index)
        out: BgrImage = np.asarray(cv2.convertScaleAbs(np.maximum(noisy, 0.0, out=noisy)), np.uint8)
        return out

    def _add_noise(
        self, signal: npt.NDArray[np.float32], s: SensorState, index: int
    ) -> npt.NDArray[np.float32]:
        """Shot noise (grows with the signal and the gain) plus read noise, in DN."""
        o = self.optics
        if o.read_noise_dn == 0 and o.electrons_per_dn > 1e6:
            return signal
        if self._noise is None:
            rng = np.random.default_rng([self.slide.seed, 0x7015E])
            self._noise = rng.standard_normal(
                (s.height + NOISE_BANK_MARGIN, s.width + NOISE_BANK_MARGIN, 3), dtype=np.float32
            )
        rng = np.random.default_rng([self.slide.seed, 0xF4A, index])
        oy, ox = (int(v) for v in rng.integers(0, NOISE_BANK_MARGIN, 2))
        bank = self._noise[oy : oy + s.height, ox : ox + s.width]
        var = signal * np.float32(s.analogue_gain / o.electrons_per_dn)
        var += np.float32(o.read_noise_dn**2)
        std = cv2.sqrt(var)
        return np.asarray(cv2.add(signal, cv2.multiply(std, bank)), np.float32)
