"""Marking a document that is sent again from the outbox, so subscribers can tell.

A replayed document may already have been delivered (the broker's acknowledgement
can be lost with the connection), so subscribers de-duplicate on its id; the mark
tells them (and a human reading a log) why a second copy may arrive. The mark must
keep each document valid against its own schema:

* plain JSON documents (report, event) get ``"replayed": true`` at the top level,
  a field both schemas define;
* a FHIR resource (it has ``resourceType``) must not grow unknown elements, so it
  gets a ``meta.tag`` coding instead (system ``REPLAY_TAG_SYSTEM``, code 'replayed').

With MQTT 5 the link also adds the user property ``replayed=true``.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Final

_log = logging.getLogger(__name__)

REPLAY_TAG_SYSTEM: Final = "urn:algocyte:delivery"
REPLAY_TAG: Final[dict[str, str]] = {
    "system": REPLAY_TAG_SYSTEM,
    "code": "replayed",
    "display": "Sent again from the analyzer's outbox",
}


def mark_replayed(payload: bytes) -> bytes:
    """``payload`` (a JSON object) with the replay mark added."""
    try:
        doc: Any = json.loads(payload)
    except ValueError:
        _log.warning("cannot mark a replayed message that is not JSON; sending it unchanged")
        return payload
    if not isinstance(doc, dict):
        _log.warning("cannot mark a replayed JSON %s; sending it unchanged", type(doc).__name__)
        return payload
    if "resourceType" in doc:
        meta = doc.get("meta")
        if not isinstance(meta, dict):
            meta = {}
            doc["meta"] = meta
        tags = meta.get("tag")
        if not isinstance(tags, list):
            tags = []
            meta["tag"] = tags
        if not any(isinstance(t, dict) and t.get("system") == REPLAY_TAG_SYSTEM for t in tags):
            tags.append(dict(REPLAY_TAG))
    else:
        doc["replayed"] = True
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def is_replayed(payload: bytes) -> bool:
    """Whether a received document carries the replay mark (for subscribers and tests)."""
    try:
        doc: Any = json.loads(payload)
    except ValueError:
        return False
    if not isinstance(doc, dict):
        return False
    if "resourceType" in doc:
        meta = doc.get("meta")
        tags = meta.get("tag") if isinstance(meta, dict) else None
        return isinstance(tags, list) and any(
            isinstance(t, dict) and t.get("system") == REPLAY_TAG_SYSTEM for t in tags
        )
    return doc.get("replayed") is True
