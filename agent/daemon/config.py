"""Configuration of the service itself."""

from __future__ import annotations

from pydantic import Field

from drivers.config_model import StrictModel


class ServiceConfig(StrictModel):
    """How the daemon checks its own health for the systemd watchdog."""

    health_interval_s: float = Field(
        default=5.0, gt=0, le=300, description="Seconds between health checks (and watchdog pings)."
    )
