"""The JSON documents the analyzer publishes over MQTT (except results, which the report builds).

These models are the published contract: docs/mqtt.md shows an example of each and
docs/mqtt-*.schema.json holds their JSON Schemas, both generated from here. Unknown
fields are rejected when the daemon builds them, so a typo cannot reach a subscriber.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, JsonValue

from agent.report.sample_ids import SAMPLE_ID_PATTERN


def utc_now() -> datetime:
    return datetime.now(UTC)


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
"""A timestamp with an explicit offset, stored and published in UTC (ISO-8601, 'Z')."""

SampleId = Annotated[
    str,
    Field(
        pattern=SAMPLE_ID_PATTERN,
        description="The laboratory's sample id: 1-64 letters, digits, '_', '.', ':', '-'.",
    ),
]


class Payload(BaseModel):
    """Base of every published document: frozen, and strict about its fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelInfo(Payload):
    """One model the analyzer runs, identified by the hash of its file."""

    name: str = Field(min_length=1, max_length=64, description="Model name, e.g. 'detector'.")
    version: str = Field(min_length=1, max_length=64, description="Model version.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the ONNX file.")


class InfoPayload(Payload):
    """What this analyzer is: published retained on ``info`` at every connect."""

    device_id: str = Field(description="The analyzer's name (config 'device_id').")
    software_version: str = Field(min_length=1, description="algocyte-agent version.")
    result_schema_version: str = Field(
        min_length=1, description="Version of the JSON schema of documents on 'results'."
    )
    models: list[ModelInfo] = Field(description="The models in use.")
    capabilities: list[str] = Field(
        default_factory=list,
        description="Optional features, e.g. 'fhir-r4', 'cell-images', 'reclassify'.",
    )
    commands: list[str] = Field(
        default_factory=list, description="Commands accepted on request/<command>."
    )


AnalyzerState = Literal["idle", "busy", "error", "maintenance"]


class StatePayload(Payload):
    """What the analyzer is doing now: published retained on ``state`` at every change."""

    state: AnalyzerState = Field(description="idle, busy (a sample runs), error, maintenance.")
    sample_id: SampleId | None = Field(default=None, description="The sample in progress.")
    phase: str | None = Field(
        default=None,
        max_length=64,
        description="Step of the current sample, e.g. 'homing', 'focusing', 'scanning'.",
    )
    since: UtcDatetime = Field(
        default_factory=utc_now, description="When this state began (UTC, ISO-8601)."
    )


class ProgressPayload(Payload):
    """How far the current scan is: published on ``progress`` (QoS 0, may be dropped)."""

    sample_id: SampleId
    fields_scanned: int = Field(ge=0, description="Fields imaged so far.")
    wbc_found: int = Field(ge=0, description="White cells counted so far.")
    target_wbc: int = Field(ge=1, description="White cells the scan stops at.")
    eta_s: float | None = Field(
        default=None, ge=0, description="Estimated seconds left; null when unknown."
    )


Severity = Literal["info", "warning", "error", "critical"]


class EventPayload(Payload):
    """A warning or fault worth telling the clinic: published on ``events`` via the outbox."""

    event_id: str = Field(
        default_factory=lambda: uuid.uuid4().hex,
        min_length=1,
        max_length=64,
        description="Unique id; subscribers de-duplicate on it.",
    )
    at: UtcDatetime = Field(default_factory=utc_now, description="When it happened (UTC).")
    code: str = Field(
        pattern=r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$",
        max_length=64,
        description="Stable machine-readable code, e.g. 'stage.alarm', 'mqtt.refused'.",
    )
    severity: Severity
    message: str = Field(min_length=1, max_length=2000, description="For a human operator.")
    sample_id: SampleId | None = Field(default=None, description="The sample concerned, if any.")
    replayed: bool = Field(
        default=False,
        description="True when re-sent from the outbox after a reconnect or restart.",
    )


class ResponseEnvelope(Payload):
    """The answer to every request, on ``response/<command>``."""

    transaction: JsonValue = Field(
        default=None, description="The request's 'transaction', or null if it was unreadable."
    )
    status: Literal["ok", "error"]
    data: JsonValue = Field(default=None, description="The command's result when status is ok.")
    error: str | None = Field(default=None, description="Why it failed, when status is error.")


class RequestEnvelope(BaseModel):
    """The fields every request carries beside its command's arguments (schema only).

    Requests are parsed by ``agent.transport.requests``; this model documents them.
    """

    model_config = ConfigDict(extra="allow")

    transaction: JsonValue = Field(
        description="Any JSON value chosen by the requester; echoed in the response."
    )
    sent_at: UtcDatetime | None = Field(
        default=None,
        description="When the request was sent (ISO-8601 with offset); older than "
        "mqtt.command_max_age_s is refused.",
    )
    expires_at: UtcDatetime | None = Field(
        default=None, description="After this instant (ISO-8601 with offset) it is refused."
    )
