"""Configuration of the service itself: health checks, watchdog, progress, shutdown."""

from __future__ import annotations

from pydantic import Field

from drivers.config_model import StrictModel


class ServiceConfig(StrictModel):
    """How the daemon checks its own health, reports progress and stops."""

    health_interval_s: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description=(
            "Seconds between health checks; the systemd watchdog is pinged after each one, at "
            "least twice per WatchdogSec."
        ),
    )
    progress_interval_s: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description="Least time between two 'progress' messages of a running sample (s).",
    )
    stuck_grace_s: float = Field(
        default=120.0,
        gt=0,
        le=3600,
        description=(
            "A job running this much longer than its own limits (scan time budget plus stall "
            "timeout, homing timeout) is declared stuck: the watchdog is no longer pinged, so "
            "systemd restarts the daemon (s)."
        ),
    )
    worker_stall_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description=(
            "The MQTT command intake or link thread, busy with one request or message and "
            "showing no progress for this long, is declared stuck: a health fault, and the "
            "watchdog is no longer pinged, so systemd restarts the daemon (s). (The job worker "
            "uses the job's own limits plus stuck_grace_s, the acquisition thread "
            "acquisition.stall_timeout_s.)"
        ),
    )
    shutdown_timeout_s: float = Field(
        default=20.0,
        gt=0,
        le=600,
        description=(
            "On SIGTERM, longest wait for a running sample to stop and its aborted report to be "
            "stored (s); keep it below the unit's TimeoutStopSec."
        ),
    )
