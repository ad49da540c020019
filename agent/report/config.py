"""Configuration of where samples, cell images and the outbox are kept."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from drivers.config_model import StrictModel


class StorageConfig(StrictModel):
    """The state directory and its disk budget."""

    state_dir: Path = Field(
        default=Path("/var/lib/algocyte"),
        description="Samples, cell crops and the result outbox live here (systemd StateDirectory).",
    )
    disk_budget_mb: int = Field(
        default=2048,
        ge=16,
        le=1_000_000,
        description="Oldest samples are pruned once their files exceed this many megabytes.",
    )

    @field_validator("state_dir")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        """Allow ``~`` so a desktop user's config can keep state in their home."""
        return value.expanduser()
