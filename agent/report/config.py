"""Configuration of the report (counting, flags, FHIR identifiers) and of where samples are kept.

The YAML section stays ``storage:`` (existing configs keep working); the report's
settings are sub-sections of it because the report and the sample store are one
feature: every report is built from, and stored beside, the cells it counts.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from drivers.config_model import StrictModel


class FlagConfig(StrictModel):
    """Thresholds at which a report carries a flag for the clinician."""

    unidentified_percent: float = Field(
        default=10.0,
        ge=0.0,
        le=100.0,
        description=(
            "Flag when unidentified cells exceed this percentage of all white-cell events "
            "(identified + unidentified)."
        ),
    )
    focus_failure_fraction: float = Field(
        default=0.2,
        ge=0.0,
        le=1.0,
        description="Flag when more than this fraction of the scanned fields were out of focus.",
    )
    ig_percent: float = Field(
        default=2.0,
        ge=0.0,
        le=100.0,
        description="Flag immature granulocytes when their percentage is at or above this value.",
    )
    nrbc_per_100_wbc: float = Field(
        default=1.0,
        ge=0.0,
        le=1000.0,
        description="Flag nucleated red cells when at or above this many per 100 white cells.",
    )
    platelet_clumps: int = Field(
        default=3,
        ge=1,
        le=10_000,
        description="Flag platelet clumps when at least this many were seen among the detections.",
    )


class CountingConfig(StrictModel):
    """How cells seen in overlapping fields are merged into one count."""

    edge_margin_px: int = Field(
        default=3,
        ge=0,
        le=200,
        description=(
            "A cell whose box comes this close (px) to the image border is cut by the field "
            "and is counted only from a field that shows it whole."
        ),
    )
    same_cell_overlap: float = Field(
        default=0.5,
        gt=0.0,
        le=1.0,
        description=(
            "Two boxes from different fields are one cell when their overlap (on the slide) "
            "covers at least this fraction of the smaller box."
        ),
    )
    crop_margin: float = Field(
        default=0.25,
        ge=0.0,
        le=2.0,
        description="Context kept around each cell crop, as a fraction of the box size.",
    )


class FhirConfig(StrictModel):
    """Identifier systems written into the FHIR bundle."""

    identifier_base: str = Field(
        default="urn:algocyte",
        min_length=4,
        pattern=r"^(urn:|https?://)\S+$",
        description=(
            "Base URI of this installation's identifier systems: sample ids are "
            "<base>:sample-id (URN) or <base>/sample-id (URL), and likewise device-id, "
            "observation-id."
        ),
    )
    accession_system: str | None = Field(
        default=None,
        pattern=r"^(urn:|https?://)\S+$",
        description="Identifier system of the laboratory's accession numbers; empty if unknown.",
    )


class StorageConfig(StrictModel):
    """The state directory and its disk budget, and how reports are built from what is kept."""

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
    flags: FlagConfig = Field(default_factory=FlagConfig)
    counting: CountingConfig = Field(default_factory=CountingConfig)
    fhir: FhirConfig = Field(default_factory=FhirConfig)
    gallery_max_cells: int = Field(
        default=200,
        ge=1,
        le=5000,
        description="Most cells shown in one class's gallery picture (the rest are counted).",
    )

    @field_validator("state_dir")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        """Allow ``~`` so a desktop user's config can keep state in their home."""
        return value.expanduser()
