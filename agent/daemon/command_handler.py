"""The daemon's answer to each MQTT command (``agent.transport.commands.CommandHandler``).

Runs on the link's command thread, so every branch only checks, reads or enqueues:
a scan, homing and the self-test run on the service's worker thread and report
through ``state``, ``progress``, ``results`` and ``events``. Errors the requester can
act on are ``AnalyzerError``s: they become error responses with their message.
"""

from __future__ import annotations

import base64
import logging
from typing import Any, Protocol

from agent.errors import InputError
from agent.report.model import Report
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
from agent.transport.payloads import StatePayload

_log = logging.getLogger(__name__)


class CommandTarget(Protocol):
    """What the handler needs from the service (``agent.daemon.service.AnalyzerService``)."""

    def start_sample(self, args: StartSampleArgs) -> dict[str, Any]: ...

    def abort_sample(self, sample_id: str | None, reason: str) -> str: ...

    def enqueue_maintenance(self, kind: str) -> None: ...

    @property
    def state(self) -> StatePayload: ...

    def republish(self, sample_id: str) -> Report: ...

    def cell_image(self, sample_id: str, cell_id: int) -> bytes: ...

    def reclassify(self, sample_id: str, cell_id: int, label: str, reviewer: str) -> Report: ...

    def finalize(self, sample_id: str, reviewer: str) -> Report: ...


ABORT_REASON = "aborted on request (abort command)"


class DaemonCommandHandler:
    """Maps each validated command to the service; see the module docstring."""

    def __init__(self, target: CommandTarget) -> None:
        self._target = target

    def handle(self, command: str, args: CommandArgs) -> Any:
        match args:
            case StartSampleArgs():
                return self._target.start_sample(args)
            case AbortArgs():
                sample_id = self._target.abort_sample(args.sample_id, ABORT_REASON)
                return {"aborting": True, "sample_id": sample_id}
            case StatusArgs():
                return self._target.state
            case HomeArgs():
                self._target.enqueue_maintenance("home")
                return {"accepted": True}
            case SelfTestArgs():
                self._target.enqueue_maintenance("self_test")
                return {"accepted": True, "result": "published on 'events' when done"}
            case GetResultArgs():
                report = self._target.republish(args.sample_id)
                return _result_data(report)
            case GetCellImageArgs():
                png = self._target.cell_image(args.sample_id, args.cell_id)
                return {
                    "sample_id": args.sample_id,
                    "cell_id": args.cell_id,
                    "content_type": "image/png",
                    "png_base64": base64.b64encode(png).decode("ascii"),
                }
            case ReclassifyArgs():
                report = self._target.reclassify(
                    args.sample_id, args.cell_id, args.label, args.reviewer
                )
                return _result_data(report)
            case FinalizeArgs():
                report = self._target.finalize(args.sample_id, args.reviewer)
                return _result_data(report)
        raise InputError(f"the analyzer has no handler for {command!r}")


def _result_data(report: Report) -> dict[str, Any]:
    return {
        "sample_id": report.sample_id,
        "result_id": report.result_id,
        "status": report.status,
        "sequence": report.sequence,
        "supersedes": report.supersedes,
    }
