"""docs/mqtt.md cannot drift: its examples, schemas, topics, commands and keys match the code."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.transport import topics
from agent.transport.commands import COMMANDS
from agent.transport.config import MqttConfig
from agent.transport.examples import REQUESTS, example_names, examples, render
from agent.transport.requests import ENVELOPE_KEYS, InboundRequest, validate_request
from agent.transport.schemas import MQTT_SCHEMAS, args_schema_file

DOCS = Path(__file__).resolve().parent.parent / "docs"
DOC = (DOCS / "mqtt.md").read_text(encoding="utf-8")

SCHEMA_OF_EXAMPLE = {
    "info": "mqtt-info.schema.json",
    "state": "mqtt-state.schema.json",
    "progress": "mqtt-progress.schema.json",
    "event": "mqtt-event.schema.json",
    "response-ok": "mqtt-response.schema.json",
    "response-error": "mqtt-response.schema.json",
}


def test_examples_in_the_doc_are_the_generated_ones() -> None:
    assert render(DOC) == DOC, (
        "docs/mqtt.md is stale: python -m agent.transport.examples docs/mqtt.md"
    )
    assert sorted(example_names(DOC)) == sorted(examples())


@pytest.mark.parametrize("name", sorted(SCHEMA_OF_EXAMPLE))
def test_published_examples_match_their_committed_schema(name: str) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((DOCS / SCHEMA_OF_EXAMPLE[name]).read_text(encoding="utf-8"))
    jsonschema.validate(json.loads(examples()[name]), schema)


@pytest.mark.parametrize("command", sorted(REQUESTS))
def test_example_requests_are_accepted_by_the_analyzer_and_the_schemas(command: str) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    body = REQUESTS[command]
    request = InboundRequest(command=command, payload=json.dumps(body).encode())
    now = datetime(2025, 3, 1, 9, 30, 10, tzinfo=UTC)
    valid = validate_request(request, max_bytes=65536, max_age_s=60, now=now, now_monotonic=0)
    assert valid.command == command
    args = {k: v for k, v in body.items() if k not in ENVELOPE_KEYS}
    schema = json.loads((DOCS / args_schema_file(command)).read_text(encoding="utf-8"))
    jsonschema.validate(args, schema)
    envelope = json.loads((DOCS / "mqtt-request.schema.json").read_text(encoding="utf-8"))
    jsonschema.validate(body, envelope)


def test_args_schemas_reject_what_the_analyzer_rejects() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((DOCS / args_schema_file("start_sample")).read_text(encoding="utf-8"))
    for bad in ({"sample_id": "S", "target_wbc": 99}, {"sample_id": "S", "x": 1}, {}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_every_mqtt_schema_is_linked_and_every_link_exists() -> None:
    linked = set(re.findall(r"\(([\w.-]+\.schema\.json)\)", DOC))
    assert set(MQTT_SCHEMAS) <= linked
    missing = [name for name in linked if not (DOCS / name).exists()]
    assert not missing, f"docs/mqtt.md links to missing files: {missing}"


def test_every_topic_and_command_is_documented() -> None:
    for suffix in (
        topics.AVAILABILITY,
        topics.INFO,
        topics.STATE,
        topics.PROGRESS,
        topics.RESULTS,
        topics.RESULTS_FHIR,
        topics.EVENTS,
    ):
        assert f"`…/{suffix}`" in DOC, suffix
    assert "`…/request/<command>`" in DOC and "`…/response/<command>`" in DOC
    for command in COMMANDS:
        assert f"| `{command}` |" in DOC, command


def test_every_mqtt_config_key_is_in_the_docs_table() -> None:
    table = DOC.split("## Configuration (`mqtt:`)")[1].split("\n## ")[0]
    for key in MqttConfig.model_fields:
        assert f"`{key}`" in table, key
