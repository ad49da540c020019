"""Timing of the virtual GRBL controller (the ``simulator.controller`` config section).

The values seed the controller's GRBL settings ($110-$122 rates and accelerations,
$24/$25/$27 homing), so ``$$`` shows them and ``$N=`` changes them as on a board.
"""

from __future__ import annotations

from pydantic import Field

from drivers.config_model import StrictModel


class VirtualControllerConfig(StrictModel):
    """How fast the virtual stage moves and homes."""

    xy_max_speed_mm_s: float = Field(
        default=10.0, gt=0, le=1_000, description="X and Y maximum speed (mm/s; GRBL $110/$111)."
    )
    xy_accel_mm_s2: float = Field(
        default=50.0,
        gt=0,
        le=100_000,
        description="X and Y acceleration (mm/s^2; GRBL $120/$121); moves are trapezoidal.",
    )
    z_max_speed_mm_s: float = Field(
        default=1.0, gt=0, le=1_000, description="Z maximum speed (mm/s; GRBL $112)."
    )
    z_accel_mm_s2: float = Field(
        default=10.0, gt=0, le=100_000, description="Z acceleration (mm/s^2; GRBL $122)."
    )
    settle_s: float = Field(
        default=0.05,
        ge=0,
        le=5,
        description=(
            "Settling time after each move, during which the controller still reports Run "
            "(s), so a frame taken once the stage is idle is steady."
        ),
    )
    homing_seek_mm_s: float = Field(
        default=8.0, gt=0, le=1_000, description="Homing search speed (mm/s; GRBL $25)."
    )
    homing_feed_mm_s: float = Field(
        default=1.0,
        gt=0,
        le=1_000,
        description="Homing locate speed, the slow second touch of each switch (mm/s; GRBL $24).",
    )
    homing_pulloff_mm: float = Field(
        default=1.0,
        gt=0,
        le=10,
        description="Homing pull-off: the origin lies this far from each switch (mm; GRBL $27).",
    )


FAST_TIMING = VirtualControllerConfig(
    xy_max_speed_mm_s=200.0,
    xy_accel_mm_s2=5_000.0,
    z_max_speed_mm_s=50.0,
    z_accel_mm_s2=2_000.0,
    settle_s=0.0,
    homing_seek_mm_s=200.0,
    homing_feed_mm_s=50.0,
    homing_pulloff_mm=1.0,
)
"""A twenty-times-faster stage, for tests and quick demos where motion time does not matter."""
