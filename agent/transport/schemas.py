"""JSON Schemas of the MQTT interface, registered in ``agent.schemas`` (written to docs/).

Published documents use the serialization schema (what subscribers receive);
requests and command arguments the validation schema (what the analyzer accepts).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel

from agent.transport.commands import COMMANDS
from agent.transport.payloads import (
    EventPayload,
    InfoPayload,
    ProgressPayload,
    RequestEnvelope,
    ResponseEnvelope,
    StatePayload,
)

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

SchemaBuilder = Callable[[], dict[str, Any]]


def _builder(
    model: type[BaseModel], title: str, mode: Literal["validation", "serialization"]
) -> SchemaBuilder:
    def build() -> dict[str, Any]:
        schema = model.model_json_schema(mode=mode)
        schema["$schema"] = SCHEMA_DIALECT
        schema["title"] = title
        return schema

    return build


def args_schema_file(command: str) -> str:
    return f"mqtt-args-{command}.schema.json"


MQTT_SCHEMAS: dict[str, SchemaBuilder] = {
    "mqtt-info.schema.json": _builder(InfoPayload, "MQTT info (retained)", "serialization"),
    "mqtt-state.schema.json": _builder(StatePayload, "MQTT state (retained)", "serialization"),
    "mqtt-progress.schema.json": _builder(ProgressPayload, "MQTT progress", "serialization"),
    "mqtt-event.schema.json": _builder(EventPayload, "MQTT events", "serialization"),
    "mqtt-request.schema.json": _builder(
        RequestEnvelope, "MQTT request envelope (request/<command>)", "validation"
    ),
    "mqtt-response.schema.json": _builder(
        ResponseEnvelope, "MQTT response (response/<command>)", "serialization"
    ),
    **{
        args_schema_file(name): _builder(model, f"MQTT {name} arguments", "validation")
        for name, model in COMMANDS.items()
    },
}
"""docs/ file name -> schema builder, for every MQTT document and command."""
