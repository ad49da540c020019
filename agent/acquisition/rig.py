"""The stage and camera as the acquisition uses them: backlash-free z, timed, cancellable.

Every z position is approached from below: a lead screw with backlash stops at a
slightly different height when it arrives from above, which would blur fields the
autofocus believed sharp. A move that would arrive from above (or a new XY position)
first goes ``backlash_um`` under the target. Time spent moving and capturing is
accumulated for the scan's timing report.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from agent.acquisition.cancel import CancelToken
from drivers.camera.base import Camera, CameraSettings, Frame
from drivers.stage.base import Stage

_log = logging.getLogger(__name__)

_SAME_UM = 1e-3
"""Positions closer than this (um) are the same position."""


@dataclass
class RigTimes:
    """Seconds spent in stage moves and camera captures (and counts)."""

    moving_s: float = 0.0
    capturing_s: float = 0.0
    moves: int = 0
    captures: int = 0


class Rig:
    """Stage + camera with backlash-aware focus moves and timing."""

    def __init__(
        self,
        stage: Stage,
        camera: Camera,
        *,
        width: int,
        height: int,
        analogue_gain: float,
        backlash_um: float,
        z_min_um: float,
        cancel: CancelToken,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stage = stage
        self.camera = camera
        self._width = width
        self._height = height
        self._gain = analogue_gain
        self._backlash = backlash_um
        self._z_min = z_min_um
        self._cancel = cancel
        self._clock = clock
        self._at: tuple[float, float, float] | None = None
        self.times = RigTimes()
        self.exposure_us: int | None = None
        self.gains: tuple[float, float] | None = None

    def _move(self, x: float | None, y: float | None, z: float | None) -> None:
        self._cancel.check()
        start = self._clock()
        try:
            self.stage.move_to(x, y, z, wait=True)
        finally:
            self.times.moving_s += self._clock() - start
            self.times.moves += 1

    def goto(self, x_um: float, y_um: float, z_um: float) -> None:
        """Move to (x, y, z), arriving at z from below.

        Every move this rig makes ends going up, so a move to a higher z (with or
        without XY) arrives from below as it is; a move down first goes
        ``backlash_um`` under the target. The first move of all does too.
        """
        at = self._at
        same_xy = at is not None and abs(at[0] - x_um) < _SAME_UM and abs(at[1] - y_um) < _SAME_UM
        if same_xy and at is not None and abs(at[2] - z_um) < _SAME_UM:
            return
        xy = (None, None) if same_xy else (x_um, y_um)
        if self._backlash <= 0 or (at is not None and z_um >= at[2]):
            # Already going up (the last move ended going up): one move, XY included.
            self._move(xy[0], xy[1], z_um)
        else:
            self._move(xy[0], xy[1], max(self._z_min, z_um - self._backlash))
            self._move(None, None, z_um)
        self._at = (x_um, y_um, z_um)

    def forget_position(self) -> None:
        """Someone else moved the stage: the next move takes up backlash again."""
        self._at = None

    @property
    def position(self) -> tuple[float, float, float] | None:
        """Last commanded (x, y, z) in um, or None before the first move."""
        return self._at

    def configure(self, exposure_us: int | None, gains: tuple[float, float] | None) -> None:
        """Apply exposure and white balance (None leaves the camera's own)."""
        self._cancel.check()
        self.camera.configure(
            CameraSettings(
                width=self._width,
                height=self._height,
                exposure_us=exposure_us,
                analogue_gain=self._gain,
                white_balance_gains=gains,
            )
        )
        self.exposure_us = exposure_us
        self.gains = gains

    def capture(self) -> Frame:
        self._cancel.check()
        start = self._clock()
        try:
            frame = self.camera.capture()
        finally:
            self.times.capturing_s += self._clock() - start
            self.times.captures += 1
        if frame.image.shape[:2] != (self._height, self._width):
            _log.debug(
                "camera gave %s, configured %dx%d", frame.image.shape, self._width, self._height
            )
        return frame
