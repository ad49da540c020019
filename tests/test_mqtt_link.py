"""The MQTT link against a real mosquitto: status topics, results, commands, protocol versions."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.errors import InputError
from agent.transport.commands import CommandArgs, StartSampleArgs
from agent.transport.intake import COMMAND_QUEUE_DEPTH
from agent.transport.link import MqttLink
from agent.transport.payloads import (
    EventPayload,
    InfoPayload,
    ModelInfo,
    ProgressPayload,
    StatePayload,
)
from tests.broker import (
    Broker,
    MqttFront,
    Watcher,
    link_config,
    running_broker,
    started_link,
    wait_for,
    watching,
)

BASE = "algocyte/dev-1"


class RecordingHandler:
    """A command handler shaped like the daemon's: records each call, answers per command."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, CommandArgs]] = []

    def handle(self, command: str, args: CommandArgs) -> Any:
        self.calls.append((command, args))
        match command:
            case "start_sample":
                if getattr(args, "sample_id", "") == "BUSY":
                    raise InputError("a sample is already running")
                return {"accepted": True, "sample_id": args.model_dump()["sample_id"]}
            case "status":
                return StatePayload(state="idle")
            case "get_cell_image":
                return {"png_base64": "iVBORw0KGgo="}
            case "self_test":
                raise RuntimeError("camera driver exploded")
            case "home":
                return {"not": object()}  # not JSON
            case _:
                return {"command": command, "args": args.model_dump()}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with running_broker(tmp_path / "broker") as b:
        yield b


@pytest.fixture
def handler() -> RecordingHandler:
    return RecordingHandler()


@pytest.fixture
def link(broker: Broker, tmp_path: Path, handler: RecordingHandler) -> Iterator[MqttLink]:
    with started_link(broker.port, tmp_path / "state", handler) as link:
        yield link


@pytest.fixture
def watcher(broker: Broker) -> Iterator[Watcher]:
    with watching(broker.port, f"{BASE}/#", "replies/#") as w:
        yield w


def request(watcher: Watcher, command: str, body: dict[str, Any], **publish: Any) -> dict[str, Any]:
    """Send one request and return the JSON of its response on response/<command>."""
    topic = f"{BASE}/response/{command}"
    before = len(watcher.on(topic))
    watcher.publish(f"{BASE}/request/{command}", json.dumps(body), **publish)
    responses = watcher.wait_topic(topic, before + 1)
    result: dict[str, Any] = responses[before].json()
    return result


def info_payload() -> InfoPayload:
    return InfoPayload(
        device_id="dev-1",
        software_version="0.1.0",
        result_schema_version="1.0",
        models=[ModelInfo(name="detector", version="1", sha256="0" * 64)],
        capabilities=["fhir-r4"],
        commands=["status"],
    )


# ------------------------------------------------------------------ status topics


def test_availability_is_online_then_stopped_and_retained(
    broker: Broker, tmp_path: Path, handler: RecordingHandler
) -> None:
    with started_link(broker.port, tmp_path / "state", handler) as link:
        assert link.connected and link.protocol == "5"
        with watching(broker.port, f"{BASE}/availability") as late:
            first = late.wait_topic(f"{BASE}/availability")[0]
            assert (first.payload, first.retain) == (b"online", True)
    assert not link.connected
    with watching(broker.port, f"{BASE}/availability") as after:
        msg = after.wait_topic(f"{BASE}/availability")[0]
        assert (msg.payload, msg.retain) == (b"stopped", True)


def test_info_and_state_are_retained_and_the_latest_wins(
    link: MqttLink, broker: Broker, watcher: Watcher
) -> None:
    link.publish_info(info_payload())
    link.publish_state(StatePayload(state="busy", sample_id="S-1", phase="scanning"))
    link.publish_state(StatePayload(state="idle"))
    watcher.wait_topic(f"{BASE}/state", 2)
    with watching(broker.port, f"{BASE}/info", f"{BASE}/state") as late:
        info = late.wait_topic(f"{BASE}/info")[0]
        state = late.wait_topic(f"{BASE}/state")[0]
    assert info.retain and InfoPayload.model_validate_json(info.payload) == info_payload()
    assert state.retain and StatePayload.model_validate_json(state.payload).state == "idle"
    assert state.json()["since"].endswith("Z")


def test_info_and_state_set_before_connecting_are_published_on_connect(
    broker: Broker, tmp_path: Path, handler: RecordingHandler, watcher: Watcher
) -> None:
    from agent.transport.outbox import Outbox

    with Outbox.in_state_dir(tmp_path / "state") as box:
        link = MqttLink(link_config(broker.port), "dev-1", box, handler)
        link.publish_info(info_payload())
        link.publish_state(StatePayload(state="maintenance"))
        link.publish_progress(
            ProgressPayload(sample_id="S", fields_scanned=0, wbc_found=0, target_wbc=200)
        )
        link.start()
        try:
            info = watcher.wait_topic(f"{BASE}/info")[0]
            assert InfoPayload.model_validate_json(info.payload) == info_payload()
            assert watcher.wait_topic(f"{BASE}/state")[0].json()["state"] == "maintenance"
            assert watcher.on(f"{BASE}/progress") == []  # QoS 0 while offline: dropped
        finally:
            link.stop()


def test_progress_is_qos0_and_not_retained(link: MqttLink, watcher: Watcher) -> None:
    link.publish_progress(
        ProgressPayload(sample_id="S-1", fields_scanned=12, wbc_found=40, target_wbc=200, eta_s=90)
    )
    msg = watcher.wait_topic(f"{BASE}/progress")[0]
    assert (msg.qos, msg.retain) == (0, False)
    assert msg.json() == {
        "sample_id": "S-1",
        "fields_scanned": 12,
        "wbc_found": 40,
        "target_wbc": 200,
        "eta_s": 90.0,
    }


# ------------------------------------------------------------------------ results


def report(result_id: str) -> bytes:
    return json.dumps({"result_id": result_id, "sample_id": "S-1", "status": "final"}).encode()


def bundle(result_id: str) -> bytes:
    return json.dumps(
        {"resourceType": "Bundle", "type": "collection", "identifier": {"value": result_id}}
    ).encode()


def test_result_documents_arrive_at_qos1_and_puback_empties_the_outbox(
    link: MqttLink, watcher: Watcher
) -> None:
    link.submit_result("r-1", [("results", report("r-1")), ("results/fhir", bundle("r-1"))])
    plain = watcher.wait_topic(f"{BASE}/results")[0]
    fhir = watcher.wait_topic(f"{BASE}/results/fhir")[0]
    assert plain.payload == report("r-1") and fhir.payload == bundle("r-1")
    assert plain.qos == 1 and not plain.retain
    assert plain.user_properties == {"result_id": "r-1", "replayed": "false"}
    assert (plain.content_type, fhir.content_type) == ("application/json", "application/fhir+json")
    wait_for(lambda: link.outbox.count() == 0, what="PUBACKs to empty the outbox")


def test_a_stored_report_sent_again_is_marked_replayed_on_first_send(
    link: MqttLink, watcher: Watcher
) -> None:
    link.submit_result(
        "again", [("results", report("again")), ("results/fhir", bundle("again"))], replay=True
    )
    plain = watcher.wait_topic(f"{BASE}/results")[0]
    fhir = watcher.wait_topic(f"{BASE}/results/fhir")[0]
    assert plain.json()["replayed"] is True and plain.user_properties["replayed"] == "true"
    assert fhir.json()["meta"]["tag"] == [
        {
            "system": "urn:algocyte:delivery",
            "code": "replayed",
            "display": "Sent again from the analyzer's outbox",
        }
    ]
    assert fhir.json()["identifier"] == {"value": "again"}


@pytest.mark.parametrize(
    ("documents", "fragment"),
    [
        ([], "no documents"),
        ([("state", b"{}")], "is not one of results, results/fhir"),
        ([("results", b"not json")], "not JSON"),
        ([("results", b"[1]")], "not a JSON object"),
        ([("results", report("other"))], "result_id is 'other'"),
    ],
)
def test_malformed_result_submission_is_refused_and_stores_nothing(
    link: MqttLink, documents: list[tuple[str, bytes]], fragment: str
) -> None:
    with pytest.raises(InputError, match=fragment):
        link.submit_result("r-1", documents)
    assert link.outbox.count() == 0


def test_events_go_through_the_outbox(link: MqttLink, watcher: Watcher) -> None:
    event = EventPayload(code="stage.alarm", severity="error", message="limit switch hit")
    link.publish_event(event)
    msg = watcher.wait_topic(f"{BASE}/events")[0]
    assert EventPayload.model_validate_json(msg.payload) == event
    assert msg.qos == 1 and msg.user_properties["event_id"] == event.event_id
    wait_for(lambda: link.outbox.count() == 0, what="the event's PUBACK")


def test_results_submitted_before_start_are_delivered_on_connect(
    broker: Broker, tmp_path: Path, handler: RecordingHandler, watcher: Watcher
) -> None:
    from agent.transport.outbox import Outbox

    with Outbox.in_state_dir(tmp_path / "state") as box:
        box.add("result", "early", [("results", report("early"))])
    with started_link(broker.port, tmp_path / "state", handler) as link:
        msg = watcher.wait_topic(f"{BASE}/results")[0]
        assert msg.json()["replayed"] is True and msg.user_properties["replayed"] == "true"
        wait_for(lambda: link.outbox.count() == 0, what="the replayed result's PUBACK")


# ----------------------------------------------------------------------- commands

HAPPY = [
    ("start_sample", {"sample_id": "S-1", "target_wbc": 200, "accession": "ACC-9"}),
    ("abort", {}),
    ("abort", {"sample_id": "S-1"}),
    ("status", {}),
    ("home", None),
    ("self_test", None),
    ("get_result", {"sample_id": "S-1"}),
    ("get_cell_image", {"sample_id": "S-1", "cell_id": 17}),
    ("reclassify", {"sample_id": "S-1", "cell_id": 17, "label": "monocyte", "reviewer": "dr b"}),
]


@pytest.mark.parametrize(("command", "args"), [(c, a) for c, a in HAPPY if a is not None])
def test_each_command_reaches_the_handler_with_typed_args(
    link: MqttLink,
    watcher: Watcher,
    handler: RecordingHandler,
    command: str,
    args: dict[str, Any],
) -> None:
    response = request(watcher, command, {"transaction": {"n": 1}, **args})
    assert response["status"] == "ok", response
    assert response["transaction"] == {"n": 1} and response["error"] is None
    [(called, parsed)] = handler.calls
    assert called == command
    assert parsed.model_dump(exclude_defaults=True) == args


def test_command_data_is_returned(link: MqttLink, watcher: Watcher) -> None:
    started = request(watcher, "start_sample", {"transaction": 1, "sample_id": "S-7"})
    assert started["data"] == {"accepted": True, "sample_id": "S-7"}
    status = request(watcher, "status", {"transaction": 2})
    assert status["data"]["state"] == "idle"
    image = request(watcher, "get_cell_image", {"transaction": 3, "sample_id": "S", "cell_id": 1})
    assert image["data"] == {"png_base64": "iVBORw0KGgo="}


def test_handler_failures_become_error_responses(
    link: MqttLink, watcher: Watcher, handler: RecordingHandler, caplog: pytest.LogCaptureFixture
) -> None:
    busy = request(watcher, "start_sample", {"transaction": "a", "sample_id": "BUSY"})
    assert busy == {
        "transaction": "a",
        "status": "error",
        "data": None,
        "error": "a sample is already running",
    }
    crash = request(watcher, "self_test", {"transaction": "b"})
    assert (
        crash["status"] == "error" and "internal error while handling self_test" in crash["error"]
    )
    assert "exploded" not in crash["error"]
    not_json = request(watcher, "home", {"transaction": "c"})
    assert not_json["status"] == "error" and "internal error" in not_json["error"]
    assert "not JSON" in caplog.text
    assert request(watcher, "status", {"transaction": "d"})["status"] == "ok"


class BlockingHandler(RecordingHandler):
    """Breaks the contract on purpose: start_sample blocks until released."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def handle(self, command: str, args: CommandArgs) -> Any:
        if command == "start_sample":
            self.release.wait(30)
        return super().handle(command, args)


def test_a_blocked_handler_delays_commands_only_and_overflow_is_answered_busy(
    broker: Broker, tmp_path: Path, watcher: Watcher
) -> None:
    handler = BlockingHandler()
    with started_link(broker.port, tmp_path / "state", handler) as link:
        watcher.publish(
            f"{BASE}/request/start_sample", json.dumps({"transaction": 0, "sample_id": "S"})
        )
        wait_for(lambda: link._intake.waiting == 0, what="the handler to be busy")
        # Results still flow while the command thread is stuck.
        link.submit_result("during", [("results", report("during"))])
        watcher.wait_topic(f"{BASE}/results")
        wait_for(lambda: link.outbox.count() == 0, what="PUBACK while a handler blocks")
        extra = COMMAND_QUEUE_DEPTH + 5
        for i in range(1, extra + 1):
            watcher.publish(f"{BASE}/request/status", json.dumps({"transaction": i}))
        busy = watcher.wait_topic(f"{BASE}/response/status", 5)
        assert all(b.json()["status"] == "error" and "busy" in b.json()["error"] for b in busy)
        handler.release.set()
        answers = watcher.wait_topic(f"{BASE}/response/status", extra)
        assert len(answers) == extra
        assert sum(a.json()["status"] == "ok" for a in answers) == COMMAND_QUEUE_DEPTH


def test_response_topic_and_correlation_data_are_honoured(link: MqttLink, watcher: Watcher) -> None:
    watcher.publish(
        f"{BASE}/request/status",
        json.dumps({"transaction": 11}),
        response_topic="replies/me",
        correlation_data=b"\x00corr-1",
    )
    reply = watcher.wait_topic("replies/me")[0]
    assert reply.correlation_data == b"\x00corr-1"
    assert reply.json()["transaction"] == 11 and reply.json()["status"] == "ok"
    plain = watcher.wait_topic(f"{BASE}/response/status")[0]
    assert plain.correlation_data == b"\x00corr-1"


def test_stale_start_sample_is_refused_and_not_run(
    link: MqttLink, watcher: Watcher, handler: RecordingHandler
) -> None:
    response = request(
        watcher,
        "start_sample",
        {"transaction": 1, "sample_id": "S-1", "sent_at": "2020-01-01T00:00:00Z"},
    )
    assert response["status"] == "error" and "stale" in response["error"]
    response = request(
        watcher,
        "start_sample",
        {"transaction": 2, "sample_id": "S-1", "expires_at": "2020-01-01T00:00:00+01:00"},
    )
    assert response["status"] == "error" and "expired" in response["error"]
    assert handler.calls == []


def test_retained_request_waiting_at_connect_is_refused(
    broker: Broker, tmp_path: Path, handler: RecordingHandler, watcher: Watcher
) -> None:
    watcher.publish(
        f"{BASE}/request/start_sample",
        json.dumps({"transaction": "old", "sample_id": "S-1"}),
        retain=True,
    )
    with started_link(broker.port, tmp_path / "state", handler):
        response = watcher.wait_topic(f"{BASE}/response/start_sample")[0].json()
    assert response["status"] == "error" and "retained" in response["error"]
    assert response["transaction"] == "old"
    assert handler.calls == []


@pytest.mark.slow  # ~4 s: mosquitto counts message expiry in whole seconds
def test_mqtt5_expired_request_is_never_run_after_a_reconnect(
    broker: Broker, tmp_path: Path, handler: RecordingHandler, watcher: Watcher
) -> None:
    # A persistent session: the broker queues requests while the analyzer is away.
    with started_link(broker.port, tmp_path / "state", handler, session_expiry_s=300):
        pass
    topic = f"{BASE}/request/start_sample"
    watcher.publish(topic, json.dumps({"transaction": "x", "sample_id": "OLD"}), expiry_s=1)
    sent_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))
    watcher.publish(
        topic, json.dumps({"transaction": "y", "sample_id": "OLD2", "sent_at": sent_at})
    )
    watcher.publish(topic, json.dumps({"transaction": "z", "sample_id": "NEW"}), expiry_s=600)
    time.sleep(2.5)  # let the first request's 1 s expiry pass inside the broker
    with started_link(broker.port, tmp_path / "state", handler, session_expiry_s=300):
        responses = watcher.wait_topic(f"{BASE}/response/start_sample", 2)
    by_tx = {r.json()["transaction"]: r.json() for r in responses}
    assert "x" not in by_tx  # expired in the broker: never delivered
    assert by_tx["y"]["status"] == "error" and "stale" in by_tx["y"]["error"]
    assert by_tx["z"]["status"] == "ok"
    assert [c[1] for c in handler.calls] == [StartSampleArgs(sample_id="NEW")]


# ------------------------------------------------------------- protocol versions


def test_falls_back_to_311_when_the_broker_refuses_mqtt5(
    broker: Broker, tmp_path: Path, handler: RecordingHandler, watcher: Watcher
) -> None:
    front = MqttFront(broker.port, reject_levels={5})
    try:
        with started_link(front.port, tmp_path / "state", handler) as link:
            assert link.protocol == "3.1.1"
            assert front.seen_levels[:2] == [5, 4]
            assert watcher.wait_topic(f"{BASE}/availability")[-1].payload == b"online"
            link.submit_result("r-311", [("results", report("r-311"))])
            msg = watcher.wait_topic(f"{BASE}/results")[0]
            assert msg.json()["result_id"] == "r-311" and msg.user_properties == {}
            wait_for(lambda: link.outbox.count() == 0, what="PUBACK over 3.1.1")
            response = request(watcher, "start_sample", {"transaction": 3, "sample_id": "S-3"})
            assert response["status"] == "ok"
            response = request(watcher, "start_sample", {"transaction": 4, "sample_id": 5})
            assert response["status"] == "error" and response["transaction"] == 4
    finally:
        front.close()


def test_protocol_311_when_configured(
    broker: Broker, tmp_path: Path, handler: RecordingHandler, watcher: Watcher
) -> None:
    front = MqttFront(broker.port)
    try:
        with started_link(front.port, tmp_path / "state", handler, protocol="3.1.1") as link:
            assert link.protocol == "3.1.1" and front.seen_levels == [4]
            assert request(watcher, "status", {"transaction": 1})["status"] == "ok"
    finally:
        front.close()


def test_forced_mqtt5_against_a_311_broker_is_a_refusal_not_a_connection(
    broker: Broker, tmp_path: Path, handler: RecordingHandler
) -> None:
    front = MqttFront(broker.port, reject_levels={5})
    try:
        with started_link(
            front.port, tmp_path / "state", handler, protocol="5", wait=False
        ) as link:
            wait_for(lambda: link.last_error, what="the refusal")
            assert "refused" in str(link.last_error)
            assert "protocol" in str(link.last_error).lower()
            assert not link.connected
            assert set(front.seen_levels) == {5}
    finally:
        front.close()
