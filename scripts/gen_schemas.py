#!/usr/bin/env python3
"""Regenerate the JSON Schemas in docs/ from the pydantic models.

The schemas are committed so integrators can read them without installing the agent;
tests/test_schemas.py fails when a committed schema is stale, so run this after
changing a model (``make schemas``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.schemas import SCHEMAS  # noqa: E402


def render(schema: dict[str, object]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def main() -> int:
    for filename, build in SCHEMAS.items():
        path = ROOT / "docs" / filename
        path.write_text(render(build()), encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
