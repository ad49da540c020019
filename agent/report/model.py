"""The differential report: the JSON document the analyzer publishes and keeps.

Every version of a sample's result (preliminary, amended, final, or aborted) is one
``Report`` with its own ``result_id`` and ``sequence``; an amended or final report
names the one it replaces in ``supersedes``. The JSON Schema of this model is
docs/report.schema.json.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from agent.report.classes import WbcClass

SCHEMA_VERSION: Literal["1.0"] = "1.0"

ReportStatus = Literal["preliminary", "final", "amended", "aborted"]

UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"


def _as_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


UtcTime = Annotated[datetime, AfterValidator(_as_utc)]
"""A timezone-aware instant, kept and written in UTC (ISO-8601 with 'Z')."""


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClassResult(_Doc):
    """One class of the differential."""

    count: int = Field(ge=0, description="Cells of this class counted.")
    percent: float | None = Field(
        ge=0,
        le=100,
        description="Per 100 identified white cells; null when none was identified.",
    )
    ci95: tuple[float, float] | None = Field(
        description="95% Wilson score interval of the percentage, in percent [low, high].",
    )


class Flag(_Doc):
    """Something the clinician should know before using the result."""

    code: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="Stable machine-readable code.")
    message: str = Field(min_length=1, description="Plain-language explanation.")


class Timings(_Doc):
    """Where the sample's time went (s)."""

    total_s: float = Field(ge=0, description="Sample start to report.")
    acquisition_s: float = Field(ge=0, description="Moving, focusing and capturing.")
    analysis_s: float = Field(ge=0, description="Detection and classification.")
    waiting_s: float = Field(ge=0, description="Waiting for hardware or the queue.")


class ModelInfo(_Doc):
    """A model that analysed the sample, from its model card."""

    name: str
    version: str
    task: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Provenance(_Doc):
    """What produced this result, so it can be reproduced and audited."""

    software: Literal["algocyte-agent"] = "algocyte-agent"
    software_version: str
    device_id: str
    config_hash: str = Field(description="sha256 of the effective configuration (secrets masked).")
    models: list[ModelInfo]
    started_at: UtcTime = Field(description="Sample started (UTC).")
    finished_at: UtcTime | None = Field(
        description="Scan and analysis finished (UTC); null when the analyzer stopped mid-sample."
    )
    issued_at: UtcTime = Field(description="This report version issued (UTC).")


class AuditEntry(_Doc):
    """One reviewer action on the sample."""

    at: UtcTime
    reviewer: str
    action: Literal["reclassify", "finalize"]
    cell_id: int | None = None
    old_label: str | None = None
    new_label: str | None = None
    result_id: str = Field(pattern=UUID_PATTERN, description="The report this action produced.")


class Method(_Doc):
    """How the numbers were computed, stated so no reader has to guess."""

    percent_denominator: Literal["identified_white_cells"] = "identified_white_cells"
    percent_definition: str = (
        "Each percentage is the class count divided by the identified white cells "
        "(wbc_counted: neutrophils, lymphocytes, monocytes, eosinophils, basophils and "
        "immature granulocytes). Unidentified cells, nucleated red cells and platelet "
        "clumps are not in the denominator."
    )
    unidentified_definition: str = (
        "White-cell events the classifier could not name with enough confidence; "
        "unidentified_percent_of_events = unidentified / (wbc_counted + unidentified)."
    )
    nrbc_definition: str = "Nucleated red cells per 100 identified white cells."
    ci: Literal["wilson_score_95"] = "wilson_score_95"
    dedup: str = (
        "Cells seen in two overlapping fields are counted once; cells cut by a field "
        "border are counted from a field that shows them whole, and skipped if none does."
    )


class Report(_Doc):
    """A white-cell differential result (one version of it)."""

    schema_version: Literal["1.0"] = SCHEMA_VERSION
    result_id: str = Field(pattern=UUID_PATTERN, description="UUID4 of this report version.")
    sample_id: str
    accession: str | None = Field(default=None, description="The laboratory's accession number.")
    sequence: int = Field(ge=1, description="Per-device, increasing with every report issued.")
    status: ReportStatus
    reason: str | None = Field(default=None, description="Why the sample was aborted.")
    supersedes: str | None = Field(
        default=None, pattern=UUID_PATTERN, description="result_id this report replaces."
    )
    replayed: bool = Field(
        default=False, description="Set by the transport when it publishes a stored report again."
    )
    differential: dict[WbcClass, ClassResult] = Field(
        description="The six white-cell classes; empty for an aborted sample."
    )
    wbc_counted: int = Field(ge=0, description="Identified white cells: the percentage base.")
    unidentified: int = Field(ge=0, description="White-cell events not identified.")
    unidentified_percent_of_events: float | None = Field(
        ge=0, le=100, description="Unidentified as a percentage of all white-cell events."
    )
    nrbc: int = Field(ge=0, description="Nucleated red cells counted.")
    nrbc_per_100_wbc: float | None = Field(
        ge=0, description="Nucleated red cells per 100 identified white cells."
    )
    platelet_clumps: int = Field(ge=0, description="Platelet clumps among the detections.")
    artefacts: int = Field(ge=0, description="Detections a reviewer marked as not a cell.")
    target_wbc: int = Field(ge=0, description="White cells the scan aimed to count.")
    fields: int = Field(ge=0, description="Fields scanned.")
    fields_out_of_focus: int = Field(ge=0, description="Scanned fields whose focus check failed.")
    edge_cells_skipped: int = Field(
        ge=0, description="Cells only ever seen cut by a field border: not counted."
    )
    duplicates_merged: int = Field(ge=0, description="Second views of cells already counted.")
    hardware_faults: list[str] = Field(default_factory=list)
    flags: list[Flag]
    notes: list[str] = Field(default_factory=list)
    method: Method = Field(default_factory=Method)
    timings: Timings
    provenance: Provenance
    audit: list[AuditEntry] = Field(
        default_factory=list, description="Every reviewer action up to this version."
    )
    truth: dict[str, int] | None = Field(
        default=None,
        description=(
            "Simulator only: class counts of the virtual slide's cells whose centres lie "
            "inside the scanned fields."
        ),
    )

    def to_json(self) -> str:
        """The published JSON text (UTC times with 'Z')."""
        return self.model_dump_json()

    def to_document(self) -> dict[str, Any]:
        """The published JSON as a dict (what the transport sends)."""
        return self.model_dump(mode="json")

    def flag_codes(self) -> list[str]:
        return [f.code for f in self.flags]


def report_json_schema() -> dict[str, object]:
    """The JSON Schema of a published report (docs/report.schema.json)."""
    schema = Report.model_json_schema(mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "algocyte-agent differential report"
    return schema
