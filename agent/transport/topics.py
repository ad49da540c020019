"""The analyzer's MQTT topic names, in one place so the link, the docs and the tests agree.

Every topic lives under ``<topic_root>/<device_id>/``; the suffixes are the published
interface (docs/mqtt.md) and are not configurable on purpose: integrators rely on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

AVAILABILITY: Final = "availability"
INFO: Final = "info"
STATE: Final = "state"
PROGRESS: Final = "progress"
RESULTS: Final = "results"
RESULTS_FHIR: Final = "results/fhir"
EVENTS: Final = "events"
REQUEST: Final = "request"
RESPONSE: Final = "response"

RESULT_SUFFIXES: Final[tuple[str, ...]] = (RESULTS, RESULTS_FHIR)
"""The topics a result document may be submitted to."""

OUTBOX_SUFFIXES: Final[tuple[str, ...]] = (*RESULT_SUFFIXES, EVENTS)
"""The topics whose messages go through the outbox (never lost)."""


@dataclass(frozen=True)
class Topics:
    """Full topic names for one analyzer."""

    base: str

    @classmethod
    def for_device(cls, topic_root: str, device_id: str) -> Topics:
        return cls(base=f"{topic_root.rstrip('/')}/{device_id}")

    def topic(self, suffix: str) -> str:
        return f"{self.base}/{suffix}"

    @property
    def availability(self) -> str:
        return self.topic(AVAILABILITY)

    @property
    def info(self) -> str:
        return self.topic(INFO)

    @property
    def state(self) -> str:
        return self.topic(STATE)

    @property
    def progress(self) -> str:
        return self.topic(PROGRESS)

    @property
    def request_filter(self) -> str:
        """Subscription filter for every command's request topic."""
        return self.topic(f"{REQUEST}/+")

    def response(self, command: str) -> str:
        return self.topic(f"{RESPONSE}/{command}")

    def command_of(self, topic: str) -> str | None:
        """The command named by a request topic, or None when ``topic`` is not one."""
        prefix = self.topic(f"{REQUEST}/")
        if not topic.startswith(prefix):
            return None
        command = topic[len(prefix) :]
        return command if command and "/" not in command else None
