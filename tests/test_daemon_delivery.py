"""Reports reach the outbox even when the daemon dies between storing and queueing them.

The sink is a real ``MqttLink`` that is never started: ``submit_result`` then only
writes the outbox, which is what is checked here (delivery itself is the transport's
and the end-to-end tests' business).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.daemon.delivery import WATERMARK_FILE, DeliveryError, ReportPublisher
from agent.report.service import ReportService
from agent.transport.commands import CommandArgs
from agent.transport.link import MqttLink
from agent.transport.outbox import Outbox
from tests.report_fixtures import Clock, make_config, model_cards, run_sample


class NoCommands:
    def handle(self, command: str, args: CommandArgs) -> Any:
        return None


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[tuple[ReportService, Outbox, MqttLink]]:
    config = make_config(tmp_path / "state")
    reports = ReportService(config, model_cards(), clock=Clock())
    outbox = Outbox.in_state_dir(config.storage.state_dir)
    link = MqttLink(config.mqtt, config.device_id, outbox, NoCommands())
    yield reports, outbox, link
    reports.close()
    outbox.close()


def queued(outbox: Outbox) -> list[tuple[str, str]]:
    return [(row.key, row.topic) for row in outbox.pending(limit=1000)]


LABELS = ["neutrophil"] * 60 + ["lymphocyte"] * 40


def test_issue_queues_report_and_fhir_in_sequence_order(
    parts: tuple[ReportService, Outbox, MqttLink], tmp_path: Path
) -> None:
    reports, outbox, link = parts
    publisher = ReportPublisher(reports, link, reports.config.storage.state_dir)
    first = publisher.issue(lambda: run_sample(reports, "S-1", LABELS))
    second = publisher.issue(lambda: run_sample(reports, "S-2", LABELS))
    assert queued(outbox) == [
        (first.result_id, "results"),
        (first.result_id, "results/fhir"),
        (second.result_id, "results"),
        (second.result_id, "results/fhir"),
    ]
    rows = outbox.pending()
    assert json.loads(rows[0].payload)["result_id"] == first.result_id
    bundle = json.loads(rows[1].payload)
    assert bundle["resourceType"] == "Bundle"
    assert bundle["identifier"]["value"] == f"urn:uuid:{first.result_id}"
    assert publisher.watermark == second.sequence
    state = json.loads((reports.config.storage.state_dir / WATERMARK_FILE).read_text())
    assert state == {"sequence": second.sequence}


def test_report_stored_but_not_queued_before_a_crash_is_queued_at_start(
    parts: tuple[ReportService, Outbox, MqttLink],
) -> None:
    reports, outbox, link = parts
    state_dir = reports.config.storage.state_dir
    publisher = ReportPublisher(reports, link, state_dir)
    delivered = publisher.issue(lambda: run_sample(reports, "S-1", LABELS))
    # The daemon dies right after the store committed these, before queueing them:
    lost = [run_sample(reports, "S-2", LABELS), run_sample(reports, "S-3", LABELS)]
    amended = reports.reclassify("S-1", 1, "monocyte", "dr who")

    restarted = ReportPublisher(reports, link, state_dir)
    caught = restarted.catch_up()
    assert [r.result_id for r in caught] == [
        lost[0].result_id,
        lost[1].result_id,
        amended.result_id,
    ]
    keys = [key for key, topic in queued(outbox) if topic == "results"]
    assert keys == [delivered.result_id, *(r.result_id for r in caught)]
    assert restarted.watermark == amended.sequence
    assert restarted.catch_up() == []
    assert len(queued(outbox)) == 8


def test_first_start_on_an_existing_store_does_not_resend_history(
    parts: tuple[ReportService, Outbox, MqttLink],
) -> None:
    reports, outbox, link = parts
    old = run_sample(reports, "S-OLD", LABELS)
    publisher = ReportPublisher(reports, link, reports.config.storage.state_dir)
    assert publisher.watermark == old.sequence
    assert publisher.catch_up() == []
    assert outbox.count() == 0


def test_republish_marks_the_stored_report_as_replayed(
    parts: tuple[ReportService, Outbox, MqttLink],
) -> None:
    reports, outbox, link = parts
    publisher = ReportPublisher(reports, link, reports.config.storage.state_dir)
    report = publisher.issue(lambda: run_sample(reports, "S-1", LABELS))
    publisher.republish(reports.latest_result("S-1"))
    rows = outbox.pending()
    assert [r.key for r in rows] == [report.result_id] * 4
    assert [r.replay for r in rows] == [False, False, True, True]
    assert publisher.watermark == report.sequence


def test_corrupt_watermark_is_a_clear_error(
    parts: tuple[ReportService, Outbox, MqttLink],
) -> None:
    reports, _, link = parts
    state_dir = reports.config.storage.state_dir
    (state_dir / WATERMARK_FILE).write_text('{"sequence": "seven"}')
    with pytest.raises(DeliveryError, match="non-negative integer"):
        ReportPublisher(reports, link, state_dir)
