"""No result is lost: broker outages and SIGKILLed daemons, with the real daemon process.

The daemon runs as a child process (``algocyte-agent run``) that is killed with
SIGKILL; the broker keeps sessions across its own restarts, and the test's
subscriber uses a persistent session, as integrators are told to (docs/mqtt.md).
The moment "the report is stored but not yet acknowledged" is made deterministic by
stopping the broker before the sample ends and waiting until the result sits in the
daemon's outbox.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.daemon.delivery import WATERMARK_FILE
from agent.report.service import RESTART_REASON
from agent.transport.replay import is_replayed
from tests.broker import Broker, Watcher, running_broker, wait_for
from tests.daemon_support import (
    BASE,
    DaemonProcess,
    Requester,
    outbox_result_ids,
    results_for,
    sample_status,
    sim_config_text,
    wait_result,
    write_config,
)

# Real daemons killed and restarted around simulated samples: about a minute.
pytestmark = pytest.mark.slow


@dataclass
class Rig:
    tmp: Path
    broker: Broker
    watcher: Watcher
    config: Path
    state_dir: Path
    starts: int = 0

    def daemon(self) -> DaemonProcess:
        """A started daemon, connected and subscribed (it said 'online') when the broker is up."""
        self.starts += 1
        topic = f"{BASE}/availability"

        def onlines() -> int:
            return sum(1 for m in self.watcher.on(topic) if m.payload == b"online")

        # (A last will 'offline' of the killed daemon may still arrive around it.)
        before = onlines()
        process = DaemonProcess(self.config, self.tmp / f"daemon-{self.starts}.log")
        try:
            process.wait_ready()
            wait_for(lambda: onlines() > before, 20, "the daemon's 'online'")
        except BaseException:
            process.stop()
            raise
        return process

    def requester(self) -> Requester:
        return Requester(self.watcher)

    def result_counts(self, sample_id: str) -> Counter[str]:
        return Counter(m.json()["result_id"] for m in results_for(self.watcher, sample_id))


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    state_dir = tmp_path / "state"
    with running_broker(tmp_path / "broker", persistent=True) as broker:
        watcher = Watcher(broker.port, f"{BASE}/#", client_id="lis-subscriber", persistent=True)
        config = write_config(tmp_path / "agent.yaml", sim_config_text(state_dir, broker.port))
        try:
            yield Rig(tmp_path, broker, watcher, config, state_dir)
        finally:
            watcher.close()


def test_sigkill_mid_sample_is_reported_aborted_after_restart(rig: Rig) -> None:
    daemon = rig.daemon()
    try:
        assert rig.requester().call("start_sample", sample_id="S-KILLED")["status"] == "ok"
        wait_for(
            lambda: any(
                m.json()["sample_id"] == "S-KILLED" and m.json()["fields_scanned"] >= 1
                for m in rig.watcher.on(f"{BASE}/progress")
            ),
            40,
            "the first analysed field",
        )
        daemon.kill()
        assert sample_status(rig.state_dir, "S-KILLED") == "running"
        assert not results_for(rig.watcher, "S-KILLED")
    finally:
        daemon.stop()

    restarted = rig.daemon()
    try:
        report = wait_result(rig.watcher, "S-KILLED", timeout=20)
        assert report["status"] == "aborted"
        assert report["reason"] == RESTART_REASON
        assert report["provenance"]["finished_at"] is None
        assert report["wbc_counted"] > 0  # how far it got, never a differential
        assert report["differential"] == {}
        assert sample_status(rig.state_dir, "S-KILLED") == "aborted"
        rig.watcher.wait(
            lambda msgs: any(
                m.topic == f"{BASE}/events"
                and m.json()["code"] == "sample.aborted"
                and m.json()["sample_id"] == "S-KILLED"
                for m in msgs
            ),
            10,
            "the sample.aborted event",
        )
        # It is now idle and takes a new sample with the same id.
        assert rig.requester().call("status")["data"]["state"] == "idle"
    finally:
        restarted.stop()


def delivered_sequence(state_dir: Path) -> int:
    try:
        return int(json.loads((state_dir / WATERMARK_FILE).read_text())["sequence"])
    except (OSError, ValueError, KeyError):
        return 0


def run_sample_while_the_broker_is_down(rig: Rig, sample_id: str) -> str:
    """Start a sample, stop the broker, wait until its result waits in the outbox."""
    assert rig.requester().call("start_sample", sample_id=sample_id)["status"] == "ok"
    rig.broker.stop()
    ids: list[str] = wait_for(
        lambda: outbox_result_ids(rig.state_dir), 90, f"the result of {sample_id} in the outbox"
    )
    assert sample_status(rig.state_dir, sample_id) == "finished"
    # Queued means handed over completely: the delivery watermark has moved past it too
    # (a kill before that would, by design, queue it a second time at the next start).
    wait_for(lambda: delivered_sequence(rig.state_dir) >= 1, 10, "the delivery watermark")
    assert len(set(ids)) == 1
    return ids[0]


def test_result_of_a_sample_run_during_a_broker_outage_arrives_exactly_once(rig: Rig) -> None:
    daemon = rig.daemon()
    try:
        result_id = run_sample_while_the_broker_is_down(rig, "S-OUTAGE")
        rig.broker.start()
        report = wait_result(rig.watcher, "S-OUTAGE", timeout=30)
        assert report["result_id"] == result_id and report["status"] == "preliminary"
        wait_for(lambda: not outbox_result_ids(rig.state_dir), 10, "the outbox to empty")
        wait_for(
            lambda: results_for(rig.watcher, "S-OUTAGE", "results/fhir"), 10, "the FHIR bundle"
        )
        time.sleep(1.0)  # a duplicate, if any, would arrive now
        assert rig.result_counts("S-OUTAGE") == Counter({result_id: 1})
        assert len(results_for(rig.watcher, "S-OUTAGE", "results/fhir")) == 1
    finally:
        daemon.stop()


def test_result_stored_but_unacknowledged_when_killed_is_delivered_after_restart(rig: Rig) -> None:
    daemon = rig.daemon()
    try:
        result_id = run_sample_while_the_broker_is_down(rig, "S-UNACKED")
        daemon.kill()  # the report is in the outbox; no PUBACK ever came
    finally:
        daemon.stop()
    rig.broker.start()
    assert not results_for(rig.watcher, "S-UNACKED")
    restarted = rig.daemon()
    try:
        report = wait_result(rig.watcher, "S-UNACKED", timeout=30)
        assert report["result_id"] == result_id and report["status"] == "preliminary"
        wait_for(lambda: not outbox_result_ids(rig.state_dir), 10, "the outbox to empty")
        plain = results_for(rig.watcher, "S-UNACKED")
        assert [m.json()["result_id"] for m in plain] == [result_id]
        assert is_replayed(plain[0].payload)  # sent again from the outbox after the restart
        assert results_for(rig.watcher, "S-UNACKED", "results/fhir")
    finally:
        restarted.stop()
