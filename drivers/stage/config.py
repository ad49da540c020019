"""Configuration of the stage controller link and its motion limits."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from drivers.config_model import StrictModel

SIMULATOR_PORT = "simulator"
"""``stage.port`` value that selects the in-process simulated controller's pseudo-terminal."""


class AxisRange(StrictModel):
    """Soft limits of one axis, in micrometres of machine position."""

    min_um: float = Field(description="Lowest position the agent may command (um).")
    max_um: float = Field(description="Highest position the agent may command (um).")

    @model_validator(mode="after")
    def _ordered(self) -> AxisRange:
        if self.min_um >= self.max_um:
            raise ValueError(f"min_um ({self.min_um}) must be below max_um ({self.max_um})")
        return self


class StageLimits(StrictModel):
    """Soft limits checked before any byte is sent: a move outside them is refused."""

    x: AxisRange = Field(default=AxisRange(min_um=0.0, max_um=75_000.0))
    y: AxisRange = Field(default=AxisRange(min_um=0.0, max_um=25_000.0))
    z: AxisRange = Field(default=AxisRange(min_um=0.0, max_um=5_000.0))


class StageConfig(StrictModel):
    """The motorized XYZ stage and its serial controller."""

    protocol: Literal["grbl"] = Field(
        default="grbl", description="Serial protocol spoken by the controller."
    )
    port: str = Field(
        default="/dev/ttyACM0",
        min_length=1,
        description=(
            "Serial device of the controller (e.g. /dev/ttyACM0, /dev/serial/by-id/...), or "
            f"'{SIMULATOR_PORT}' for the in-process simulated controller (needs a simulator section)."
        ),
    )
    baudrate: int = Field(default=115_200, ge=1_200, le=4_000_000, description="Serial speed.")
    command_timeout_s: float = Field(
        default=5.0, gt=0, le=120, description="Longest wait for 'ok' to an ordinary command."
    )
    motion_timeout_s: float = Field(
        default=60.0, gt=0, le=600, description="Longest wait for a move to finish."
    )
    homing_timeout_s: float = Field(
        default=120.0, gt=0, le=900, description="Longest wait for homing to finish."
    )
    connect_timeout_s: float = Field(
        default=10.0, gt=0, le=120, description="Longest wait for the controller's banner."
    )
    home_on_start: bool = Field(
        default=True, description="Home the stage at the start of every sample."
    )
    xy_feed_mm_min: float = Field(
        default=600.0, gt=0, le=20_000, description="Feed rate for XY moves (mm/min)."
    )
    z_feed_mm_min: float = Field(
        default=60.0, gt=0, le=5_000, description="Feed rate for Z (focus) moves (mm/min)."
    )
    reconnect_attempts: int = Field(
        default=5,
        ge=1,
        le=100,
        description=(
            "How many times reconnect() reopens the port after the link was lost "
            "(USB unplugged) before giving up."
        ),
    )
    reconnect_interval_s: float = Field(
        default=2.0, gt=0, le=60, description="Wait between two reconnect attempts (s)."
    )
    limits: StageLimits = Field(default_factory=StageLimits)
