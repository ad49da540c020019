"""The JSON Schemas committed in docs/ are the ones the models generate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.schemas import SCHEMAS

DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.mark.parametrize("filename", sorted(SCHEMAS))
def test_committed_schema_is_current(filename: str) -> None:
    committed = json.loads((DOCS / filename).read_text(encoding="utf-8"))
    assert committed == SCHEMAS[filename](), f"docs/{filename} is stale: run 'make schemas'"


def test_example_config_validates_against_config_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    from agent.config.loader import EXAMPLE_CONFIG, packaged_config_text

    data = yaml.safe_load(packaged_config_text(EXAMPLE_CONFIG))
    schema = json.loads((DOCS / "config.schema.json").read_text(encoding="utf-8"))
    jsonschema.validate(data, schema)
