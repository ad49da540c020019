"""Configuration of the scan: how many white cells, where, and how long it may take."""

from __future__ import annotations

from pydantic import Field

from drivers.config_model import StrictModel


class AcquisitionConfig(StrictModel):
    """How a sample is scanned."""

    target_wbc: int = Field(
        default=200, ge=100, le=500, description="White cells to count before the scan stops."
    )
    time_budget_s: float = Field(
        default=270.0, gt=0, le=3600, description="Longest time a sample's scan may take (s)."
    )
    field_overlap: float = Field(
        default=0.05, ge=0.0, le=0.5, description="Fraction of a field shared with its neighbour."
    )
    led_pwm: int = Field(
        default=700, ge=0, le=1000, description="LED brightness as GRBL spindle value S (0-1000)."
    )
