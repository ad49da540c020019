"""Example MQTT payloads for docs/mqtt.md, built from the real models.

The examples in the document sit between ``<!-- example: NAME -->`` and
``<!-- /example -->`` markers; ``render`` replaces each block with the JSON built
here, so the document cannot drift from the models (tests/test_mqtt_docs.py fails
when it does). Regenerate with ``python -m agent.transport.examples docs/mqtt.md``.
"""

from __future__ import annotations

import json
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel

from agent.transport.commands import (
    AbortArgs,
    CommandArgs,
    FinalizeArgs,
    GetCellImageArgs,
    GetResultArgs,
    HomeArgs,
    ReclassifyArgs,
    SelfTestArgs,
    StartSampleArgs,
    StatusArgs,
)
from agent.transport.payloads import (
    EventPayload,
    InfoPayload,
    ModelInfo,
    ProgressPayload,
    ResponseEnvelope,
    StatePayload,
)

AT: Final = datetime(2025, 3, 1, 9, 30, 0, tzinfo=UTC)
TRANSACTION: Final = "lis-4711"

_BLOCK = re.compile(
    r"(<!-- example: (?P<name>[a-z0-9_./-]+) -->\n)```json\n.*?```\n(<!-- /example -->)", re.S
)


def _dump(value: BaseModel | dict[str, Any]) -> str:
    data = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
    return json.dumps(data, indent=2, ensure_ascii=False)


def _request(args: CommandArgs, **envelope: Any) -> dict[str, Any]:
    return {"transaction": TRANSACTION, **envelope, **args.model_dump(exclude_none=True)}


REQUESTS: Final[dict[str, dict[str, Any]]] = {
    "start_sample": _request(
        StartSampleArgs(sample_id="S-2025-0042", target_wbc=200, accession="ACC-778812"),
        sent_at="2025-03-01T09:30:00Z",
        expires_at="2025-03-01T09:31:00Z",
    ),
    "abort": _request(AbortArgs(sample_id="S-2025-0042")),
    "status": _request(StatusArgs()),
    "home": _request(HomeArgs()),
    "self_test": _request(SelfTestArgs()),
    "get_result": _request(GetResultArgs(sample_id="S-2025-0042")),
    "get_cell_image": _request(GetCellImageArgs(sample_id="S-2025-0042", cell_id=17)),
    "reclassify": _request(
        ReclassifyArgs(sample_id="S-2025-0042", cell_id=17, label="monocyte", reviewer="dr.jones")
    ),
    "finalize": _request(FinalizeArgs(sample_id="S-2025-0042", reviewer="dr.jones")),
}
"""One valid request per command (the docs show them; the tests send them)."""


def examples() -> dict[str, str]:
    """Example name -> pretty JSON text."""
    out = {
        "info": _dump(
            InfoPayload(
                device_id="analyzer-01",
                software_version="0.1.0",
                result_schema_version="1.0",
                models=[
                    ModelInfo(name="detector", version="1.0.0", sha256="3f" * 32),
                    ModelInfo(name="classifier", version="1.0.0", sha256="a7" * 32),
                ],
                capabilities=["fhir-r4", "cell-images", "reclassify"],
                commands=list(REQUESTS),
            )
        ),
        "state": _dump(
            StatePayload(state="busy", sample_id="S-2025-0042", phase="scanning", since=AT)
        ),
        "progress": _dump(
            ProgressPayload(
                sample_id="S-2025-0042", fields_scanned=57, wbc_found=132, target_wbc=200, eta_s=48
            )
        ),
        "event": _dump(
            EventPayload(
                event_id="6f1c0d5e9b7a4c2e8d3f1a0b2c4d6e8f",
                at=AT,
                code="stage.alarm",
                severity="error",
                message="Stage alarm 1: hard limit triggered; home the stage before the next sample",
                sample_id="S-2025-0042",
            )
        ),
        "response-ok": _dump(
            ResponseEnvelope(
                transaction=TRANSACTION,
                status="ok",
                data={"accepted": True, "sample_id": "S-2025-0042"},
            )
        ),
        "response-error": _dump(
            ResponseEnvelope(
                transaction=TRANSACTION,
                status="error",
                error="request is stale: sent 75 s ago, more than the 60 s allowed",
            )
        ),
    }
    for name, body in REQUESTS.items():
        out[f"request/{name}"] = json.dumps(body, indent=2, ensure_ascii=False)
    return out


def render(markdown: str) -> str:
    """``markdown`` with every example block replaced by the current example."""
    known = examples()

    def block(m: re.Match[str]) -> str:
        name = m.group("name")
        if name not in known:
            raise KeyError(f"docs ask for an unknown example {name!r}")
        return f"{m.group(1)}```json\n{known[name]}\n```\n{m.group(3)}"

    return _BLOCK.sub(block, markdown)


def example_names(markdown: str) -> list[str]:
    return [m.group("name") for m in _BLOCK.finditer(markdown)]


def main(argv: list[str]) -> int:
    """Rewrite the example blocks of the Markdown files named in ``argv``."""
    for name in argv:
        path = Path(name)
        path.write_text(render(path.read_text(encoding="utf-8")), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
