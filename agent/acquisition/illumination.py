"""Exposure and white balance: brought to the configured background level on clear glass.

Pure loops over an injected ``Exposer`` (apply exposure and gains, capture one frame),
so they are tested on the simulator and reasoned about without a camera. Two steps:

* ``meter``: a first exposure that puts the brightest part of any field at a safe level
  (no clipping), so the autofocus and survey see usable images before calibration.
* ``calibrate``: on a field with clear background, scale the exposure until the
  background's green level is ``target_background`` and set the red and blue gains so
  the background is neutral. It also reports the background level at the exposure it
  started from, which is the reference for judging fields taken at that exposure.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

from agent.acquisition.cancel import CancelToken
from agent.acquisition.config import IlluminationConfig
from agent.acquisition.errors import CalibrationError
from agent.acquisition.field_classes import Background, estimate_background, shrink
from drivers.camera.base import BgrImage

_log = logging.getLogger(__name__)

Gains = tuple[float, float]
"""Red and blue gains relative to green."""

Exposer = Callable[[int, Gains | None], BgrImage]
"""Apply an exposure (us) and white-balance gains (None: leave them), capture, return the image."""

SATURATED = 0.98
"""Green level (fraction of full scale) treated as clipped."""
METERING_HEADROOM = 0.85
"""Metering aims the brightest pixels this far below the target, leaving room for glass."""
MIN_EXPOSURE_US = 10
GAIN_RANGE = (0.25, 8.0)


@dataclass(frozen=True)
class Illumination:
    """The outcome of a calibration."""

    exposure_us: int
    gains: Gains | None
    background: Background
    """The background at the final settings."""
    start_background: Background
    """The background at the exposure calibration started from (before any change)."""
    iterations: int


def _next_exposure(exposure_us: int, level: float, target: float, max_us: int) -> int:
    # Clipped levels say nothing about how far over; halve and look again.
    new = exposure_us / 2.0 if level >= SATURATED else exposure_us * target / max(level, 1e-3)
    return int(min(max_us, max(MIN_EXPOSURE_US, round(new))))


def meter(
    expose: Exposer,
    start_exposure_us: int,
    config: IlluminationConfig,
    *,
    cancel: CancelToken | None = None,
) -> int:
    """An exposure that puts the field's brightest green just under the target level.

    Content-blind (any field will do), so it runs before anything is known about the
    slide; calibration on clear glass refines it.
    """
    target = config.target_background * METERING_HEADROOM
    exposure = start_exposure_us
    for _ in range(config.max_iterations):
        if cancel is not None:
            cancel.check()
        bg = estimate_background(shrink(expose(exposure, None)), 0.0)
        level = bg.brightest_green
        if level < SATURATED and abs(level - target) <= config.tolerance:
            return exposure
        new = _next_exposure(exposure, level, target, config.max_exposure_us)
        if new == exposure:
            break
        exposure = new
    _log.info("metering settled at %d us without reaching its level", exposure)
    return exposure


def _balanced(bg: Background, tolerance: float) -> bool:
    return abs(bg.red - bg.green) <= tolerance and abs(bg.blue - bg.green) <= tolerance


def calibrate(
    expose: Exposer,
    start_exposure_us: int,
    config: IlluminationConfig,
    cell_darkness: float,
    *,
    fixed_exposure: bool = False,
    cancel: CancelToken | None = None,
) -> Illumination:
    """Bring the background to ``target_background`` (and neutral, with white balance).

    With ``fixed_exposure`` the exposure is left alone (the operator fixed it) and
    only the white balance is set. Raises ``CalibrationError`` when the field has too
    little background, or the target cannot be reached within ``max_iterations``.
    """
    exposure = start_exposure_us
    gains: Gains | None = (1.0, 1.0) if config.white_balance else None
    start: Background | None = None
    bg: Background | None = None
    for iteration in range(1, config.max_iterations + 1):
        if cancel is not None:
            cancel.check()
        bg = estimate_background(shrink(expose(exposure, gains)), cell_darkness)
        if start is None:
            start = bg
        if bg.fraction < config.min_background_fraction:
            raise CalibrationError(
                f"no clear background to calibrate on (only {bg.fraction:.0%} of the field); "
                "set acquisition.illumination.position to a cell-free place on the slide"
            )
        level_ok = fixed_exposure or (
            bg.green < SATURATED and abs(bg.green - config.target_background) <= config.tolerance
        )
        balance_ok = gains is None or _balanced(bg, config.tolerance)
        if level_ok and balance_ok:
            return Illumination(exposure, gains, bg, start, iteration)
        if gains is not None and not balance_ok and bg.green < SATURATED:
            gains = (
                _clip_gain(gains[0] * bg.green / max(bg.red, 1e-3)),
                _clip_gain(gains[1] * bg.green / max(bg.blue, 1e-3)),
            )
        if not level_ok:
            exposure = _next_exposure(
                exposure, bg.green, config.target_background, config.max_exposure_us
            )
    last = f"{bg.green:.2f}" if bg is not None else "?"
    raise CalibrationError(
        f"illumination did not reach the background target {config.target_background:.2f} "
        f"(last {last} at {exposure} us) in {config.max_iterations} tries; check the LED "
        "(acquisition.led_pwm) and acquisition.illumination.max_exposure_us"
    )


def _clip_gain(value: float) -> float:
    if not math.isfinite(value):
        return 1.0
    return min(GAIN_RANGE[1], max(GAIN_RANGE[0], value))
