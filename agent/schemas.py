"""The JSON Schemas the project publishes, by the file name they have in docs/.

One registry so the generator script and the staleness test agree on what exists;
each feature adds its own entries (config here, MQTT payloads from the transport).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent.config.model import AgentConfig
from agent.report.model import report_json_schema
from agent.transport.schemas import MQTT_SCHEMAS

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def config_schema() -> dict[str, Any]:
    schema = AgentConfig.model_json_schema(mode="validation")
    schema["$schema"] = SCHEMA_DIALECT
    schema["title"] = "algocyte-agent configuration (agent.yaml)"
    return schema


SCHEMAS: dict[str, Callable[[], dict[str, Any]]] = {
    "config.schema.json": config_schema,
    "report.schema.json": report_json_schema,
    **MQTT_SCHEMAS,
}
