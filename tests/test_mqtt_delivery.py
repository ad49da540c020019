"""No result is lost: broker outages, lost PUBACKs, SIGKILL, and the last will.

These tests run the link in-process and, where a crash is needed, in a child
process (tests/mqtt_link_helper.py) that is killed with SIGKILL.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.transport.commands import CommandArgs
from agent.transport.outbox import Outbox
from agent.transport.replay import is_replayed
from tests.broker import (
    Broker,
    LinkProcess,
    MqttFront,
    running_broker,
    started_link,
    wait_for,
    watching,
)

_log = logging.getLogger(__name__)

BASE = "algocyte/dev-1"
RESULTS = f"{BASE}/results"


class NoCommands:
    def handle(self, command: str, args: CommandArgs) -> Any:
        return None


def report(result_id: str) -> bytes:
    return json.dumps({"result_id": result_id, "status": "final"}).encode()


def bundle(result_id: str) -> bytes:
    return json.dumps({"resourceType": "Bundle", "id": result_id, "type": "collection"}).encode()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with running_broker(tmp_path / "broker", persistent=True) as b:
        yield b


def test_broker_outage_delivers_each_result_once_in_order_marked_replayed(
    broker: Broker, tmp_path: Path
) -> None:
    # The watcher keeps a persistent session, as an integrator's subscriber should, so
    # the broker queues for it whatever arrives before it has reconnected.
    with (
        watching(broker.port, f"{BASE}/results/#", persistent=True) as watcher,
        started_link(broker.port, tmp_path / "state", NoCommands()) as link,
    ):
        link.submit_result("before", [("results", report("before"))])
        watcher.wait_topic(RESULTS)
        wait_for(lambda: link.outbox.count() == 0, what="the first PUBACK")

        broker.stop()
        wait_for(lambda: not link.connected, what="the link to notice the outage")
        ids = [f"r{i}" for i in range(5)]
        for rid in ids:
            link.submit_result(rid, [("results", report(rid)), ("results/fhir", bundle(rid))])
        assert link.outbox.count() == 10 and not link.connected
        time.sleep(0.5)  # stays down a while; backoff grows meanwhile

        up = time.monotonic()
        broker.start()
        wait_for(lambda: link.connected, what="the link to reconnect")
        reconnected = time.monotonic() - up
        wait_for(lambda: link.outbox.count() == 0, what="the replay to be acknowledged")
        replayed = time.monotonic() - up
        watcher.wait_topic(RESULTS, 6)
        watcher.wait_topic(f"{BASE}/results/fhir", 5)
        time.sleep(0.3)  # a duplicate, if any, would arrive now

        plain = watcher.on(RESULTS)
        counts = Counter(m.json()["result_id"] for m in plain)
        assert counts == Counter({"before": 1, **dict.fromkeys(ids, 1)})
        assert [m.json()["result_id"] for m in plain] == ["before", *ids]
        assert not is_replayed(plain[0].payload)
        assert all(is_replayed(m.payload) for m in plain[1:])
        assert all(m.user_properties["replayed"] == "true" for m in plain[1:])
        fhir = watcher.on(f"{BASE}/results/fhir")
        assert [m.json()["id"] for m in fhir] == ids
        assert all(is_replayed(m.payload) for m in fhir)
        assert all("replayed" not in m.json() for m in fhir)  # FHIR stays valid: meta.tag
    _log.info(
        "outage: reconnected %.2f s after the broker came back; 10 messages replayed and "
        "acknowledged after %.2f s",
        reconnected,
        replayed,
    )


def test_message_whose_puback_is_lost_is_sent_again_once_after_reconnect(
    broker: Broker, tmp_path: Path
) -> None:
    front = MqttFront(broker.port)
    try:
        with (
            watching(broker.port, RESULTS) as watcher,
            started_link(front.port, tmp_path / "state", NoCommands()) as link,
        ):
            front.drop_pubacks = True
            link.submit_result("lost-ack", [("results", report("lost-ack"))])
            first = watcher.wait_topic(RESULTS)[0]
            assert not is_replayed(first.payload)
            wait_for(lambda: front.dropped_pubacks >= 1, what="the PUBACK to be lost")
            assert link.outbox.count() == 1  # not acknowledged, so not forgotten

            front.drop_pubacks = False
            front.cut()
            wait_for(lambda: link.outbox.count() == 0, what="the re-sent copy's PUBACK")
            time.sleep(0.3)
            copies = watcher.on(RESULTS)
            # Exactly one re-send: the outbox replay, not also paho's own retry.
            assert len(copies) == 2
            assert is_replayed(copies[1].payload)
    finally:
        front.close()


def test_result_refused_by_the_broker_stays_in_the_outbox_until_accepted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The broker's ACL lets the analyzer publish events but not results: MQTT 5
    # answers the result's PUBLISH with PUBACK 'Not authorized'.
    deny = "topic write algocyte/dev-1/availability\ntopic readwrite watch/#\n"
    with running_broker(tmp_path / "broker", acl=deny) as broker:
        with started_link(broker.port, tmp_path / "state", NoCommands()) as link:
            link.submit_result("denied", [("results", report("denied"))])
            wait_for(lambda: "Not authorized" in caplog.text, what="the refusal to be logged")
            assert [r.key for r in link.outbox.pending()] == ["denied"]
        broker.acl = None  # the operator fixes the ACL
        broker.stop()
        broker.start()
        with (
            watching(broker.port, RESULTS) as watcher,
            started_link(broker.port, tmp_path / "state", NoCommands()) as link,
        ):
            msg = watcher.wait_topic(RESULTS)[0]
            assert msg.json()["result_id"] == "denied" and is_replayed(msg.payload)
            wait_for(lambda: link.outbox.count() == 0, what="the accepted result's PUBACK")


def test_sigkill_after_the_outbox_write_before_puback_then_restart_delivers(
    broker: Broker, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    front = MqttFront(broker.port)
    front.drop_pubacks = True
    try:
        with watching(broker.port, RESULTS) as watcher:
            proc = LinkProcess(front.port, state)
            proc.send("wait-connected")
            proc.expect("connected")
            proc.send("submit crash-1")
            proc.expect("stored crash-1")
            watcher.wait_topic(RESULTS)  # it was sent ...
            wait_for(lambda: front.dropped_pubacks >= 1, what="the PUBACK to be lost")
            proc.kill()  # ... and the process dies before any acknowledgement
            with Outbox.in_state_dir(state) as box:
                assert [r.key for r in box.pending()] == ["crash-1"]

            restarted = LinkProcess(broker.port, state)
            try:
                copies = watcher.wait_topic(RESULTS, 2)
                assert copies[1].json()["result_id"] == "crash-1"
                assert is_replayed(copies[1].payload)
                with Outbox.in_state_dir(state) as box:
                    wait_for(lambda: box.count() == 0, what="the replay's PUBACK")
            finally:
                restarted.stop()
    finally:
        front.close()


def test_sigkill_right_after_submit_while_offline_then_restart_delivers(
    broker: Broker, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    with watching(broker.port, RESULTS, persistent=True) as watcher:
        broker.stop()
        proc = LinkProcess(broker.port, state)
        proc.send("submit offline-1")
        proc.expect("stored offline-1")
        proc.kill()
        broker.start()
        restarted = LinkProcess(broker.port, state)
        try:
            msg = watcher.wait_topic(RESULTS)[0]
            assert msg.json()["result_id"] == "offline-1" and is_replayed(msg.payload)
        finally:
            restarted.stop()


def test_last_will_offline_on_sigkill_and_online_again_after_restart(
    broker: Broker, tmp_path: Path
) -> None:
    availability = f"{BASE}/availability"
    with watching(broker.port, availability) as watcher:
        proc = LinkProcess(broker.port, tmp_path / "state")
        proc.send("wait-connected")
        proc.expect("connected")
        assert watcher.wait_topic(availability)[-1].payload == b"online"
        proc.kill()
        assert watcher.wait_topic(availability, 2)[-1].payload == b"offline"
        restarted = LinkProcess(broker.port, tmp_path / "state")
        assert watcher.wait_topic(availability, 3)[-1].payload == b"online"
        restarted.stop()
        assert watcher.wait_topic(availability, 4)[-1].payload == b"stopped"
    with watching(broker.port, availability) as late:
        msg = late.wait_topic(availability)[0]
        assert (msg.payload, msg.retain) == (b"stopped", True)
