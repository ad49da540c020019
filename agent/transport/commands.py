"""The commands the analyzer takes over MQTT, their arguments, and the daemon's handler contract.

Each command's arguments are a strict model: unknown arguments, wrong JSON types
(``"200"`` for a number, ``true`` for an integer) and out-of-range values are refused
before the daemon sees the request. The JSON Schemas in docs/mqtt-args-*.schema.json
are generated from these models.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agent.report.classes import REVIEW_LABELS
from agent.transport.payloads import SampleId

_PRINTABLE = r"^[^\x00-\x1f\x7f]+$"

CellId = Annotated[int, Field(ge=0, description="The cell's id in the sample's report.")]


class CommandArgs(BaseModel):
    """Base of every command's arguments: strict JSON types, no unknown keys."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class StartSampleArgs(CommandArgs):
    """Start analysing the slide in the analyzer."""

    sample_id: SampleId
    target_wbc: int | None = Field(
        default=None,
        ge=100,
        le=500,
        description="White cells to count; null = the configured acquisition.target_wbc.",
    )
    accession: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        pattern=_PRINTABLE,
        description="The laboratory's accession number, copied into the report.",
    )


class AbortArgs(CommandArgs):
    """Stop the sample in progress (its report is issued as 'aborted')."""

    sample_id: SampleId | None = Field(
        default=None,
        description="When given, abort only if this is the sample in progress.",
    )


class StatusArgs(CommandArgs):
    """Report the analyzer's state (the same content as the retained 'state')."""


class HomeArgs(CommandArgs):
    """Home the stage (refused while a sample runs)."""


class SelfTestArgs(CommandArgs):
    """Run the self-test: stage, camera, models."""


class GetResultArgs(CommandArgs):
    """Publish a stored report again on 'results' and 'results/fhir'."""

    sample_id: SampleId


class GetCellImageArgs(CommandArgs):
    """Return one cell's image as a base64-encoded PNG crop."""

    sample_id: SampleId
    cell_id: CellId


class ReclassifyArgs(CommandArgs):
    """A reviewer's correction of one cell's label; the report is re-issued as 'amended'."""

    sample_id: SampleId
    cell_id: CellId
    label: str = Field(
        description="The new label.", json_schema_extra={"enum": list(REVIEW_LABELS)}
    )
    reviewer: str = Field(
        min_length=1, max_length=64, pattern=_PRINTABLE, description="Who made the correction."
    )

    @field_validator("label")
    @classmethod
    def _known_label(cls, value: str) -> str:
        if value not in REVIEW_LABELS:
            raise ValueError(f"must be one of {', '.join(REVIEW_LABELS)}")
        return value


class FinalizeArgs(CommandArgs):
    """A reviewer signs the result off; the report is re-issued as 'final'."""

    sample_id: SampleId
    reviewer: str = Field(
        min_length=1, max_length=64, pattern=_PRINTABLE, description="Who signed the result off."
    )


COMMANDS: Final[dict[str, type[CommandArgs]]] = {
    "start_sample": StartSampleArgs,
    "abort": AbortArgs,
    "status": StatusArgs,
    "home": HomeArgs,
    "self_test": SelfTestArgs,
    "get_result": GetResultArgs,
    "get_cell_image": GetCellImageArgs,
    "reclassify": ReclassifyArgs,
    "finalize": FinalizeArgs,
}
"""Every command by the name used in its topic, ``request/<name>``."""

COMMAND_NAMES: Final[tuple[str, ...]] = tuple(COMMANDS)


class CommandHandler(Protocol):
    """What the daemon implements to act on validated commands.

    ``handle`` runs on the link's single command thread, one request at a time, in
    arrival order. It must return promptly (well under a second): a long operation
    such as ``start_sample`` only checks that it can start, enqueues the work for the
    daemon's own worker and returns. While it runs, later requests wait (the network
    thread is never blocked, so results, keepalives and acknowledgements still flow).

    The return value becomes the response's ``data``: a pydantic model or any JSON
    value. Raising ``agent.errors.AnalyzerError`` (e.g. ``InputError("no such sample")``)
    becomes an error response with that message; any other exception is logged with
    its traceback and answered with a generic error.
    """

    def handle(self, command: str, args: CommandArgs) -> Any: ...
