"""Issuing reports and handing them to the MQTT outbox so that none is ever lost in between.

A report is stored by the sample store (its own SQLite file) and then queued in the
outbox (another file). A crash between those two commits would leave a report that
is kept but never sent. So every report is issued here, one at a time, in sequence
order: build and store it, queue it, then advance a small durable watermark (the
sequence of the last report queued). At start-up every stored report above the
watermark is queued again. A crash after queueing but before the watermark moved
queues it twice; subscribers de-duplicate on ``result_id`` (docs/mqtt.md).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Final, Protocol

from agent.errors import AnalyzerError
from agent.report.model import Report
from agent.report.service import ReportService
from agent.transport import topics

_log = logging.getLogger(__name__)

WATERMARK_FILE: Final = "delivered-sequence.json"
"""In the state directory: the sequence of the last report queued in the outbox."""


class ResultSink(Protocol):
    """Where result documents go (``agent.transport.link.MqttLink``)."""

    def submit_result(
        self, result_id: str, documents: list[tuple[str, bytes]], *, replay: bool = False
    ) -> None: ...


class DeliveryError(AnalyzerError):
    """The delivery watermark cannot be read or written."""


class ReportPublisher:
    """Issues reports (build, store, queue) in sequence order and re-publishes stored ones."""

    def __init__(self, reports: ReportService, sink: ResultSink, state_dir: Path) -> None:
        self._reports = reports
        self._sink = sink
        self._path = state_dir / WATERMARK_FILE
        self._lock = threading.Lock()
        self._watermark = self._read_watermark()

    @property
    def watermark(self) -> int:
        return self._watermark

    def documents(self, report: Report) -> list[tuple[str, bytes]]:
        """The report's JSON and its FHIR bundle, as (topic suffix, payload) pairs."""
        bundle = self._reports.fhir_bundle(report)
        return [
            (topics.RESULTS, report.to_json().encode("utf-8")),
            (topics.RESULTS_FHIR, json.dumps(bundle, separators=(",", ":")).encode("utf-8")),
        ]

    def issue(self, build: Callable[[], Report]) -> Report:
        """Build (and store) a report with ``build``, queue it for delivery, move the watermark.

        ``build`` is one of ``SampleRun.finish``/``abort`` or ``ReportService.reclassify``:
        it allocates the report's sequence, so it runs under the lock that keeps
        sequences and deliveries in the same order.
        """
        with self._lock:
            report = build()
            self._queue(report)
            return report

    def republish(self, report: Report) -> None:
        """Queue a stored report again, marked as replayed (``get_result``)."""
        self._sink.submit_result(report.result_id, self.documents(report), replay=True)

    def catch_up(self) -> list[Report]:
        """Queue the stored reports a crash left unqueued (above the watermark), oldest first."""
        with self._lock:
            store = self._reports.store
            last = store.last_sequence()
            if last <= self._watermark:
                return []
            missing = last - self._watermark
            found: list[Report] = []
            for record in reversed(store.samples()):
                found.extend(
                    r for r in store.reports(record.sample_id) if r.sequence > self._watermark
                )
                if len(found) >= missing:
                    break
            found.sort(key=lambda r: r.sequence)
            for report in found:
                _log.warning(
                    "report %s (sample %s, #%d) was stored but not queued before the last "
                    "stop; queueing it now",
                    report.result_id,
                    report.sample_id,
                    report.sequence,
                )
                self._queue(report)
            self._write_watermark(max(last, self._watermark))
            return found

    # -- internals ---------------------------------------------------------------------

    def _queue(self, report: Report) -> None:
        self._sink.submit_result(report.result_id, self.documents(report))
        if report.sequence > self._watermark:
            self._write_watermark(report.sequence)

    def _read_watermark(self) -> int:
        try:
            data = json.loads(self._path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            # First start with this state directory (or the file was removed): what the
            # store already holds is taken as delivered rather than flooding subscribers.
            value = self._reports.store.last_sequence()
            self._write_watermark(value)
            return value
        except (OSError, ValueError) as e:
            raise DeliveryError(f"cannot read the delivery watermark {self._path}: {e}") from e
        stored = data.get("sequence") if isinstance(data, dict) else None
        if not isinstance(stored, int) or stored < 0:
            raise DeliveryError(f"{self._path}: 'sequence' must be a non-negative integer")
        return stored

    def _write_watermark(self, value: int) -> None:
        tmp = self._path.with_suffix(".tmp")
        try:
            with tmp.open("w", encoding="utf-8") as f:
                json.dump({"sequence": value}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._path)
            dir_fd = os.open(self._path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as e:
            raise DeliveryError(f"cannot write the delivery watermark {self._path}: {e}") from e
        self._watermark = value
