"""Hardware faults in the running service: aborted reports that name them, error state, recovery.

The service runs in-process on the simulated analyzer (the real GRBL driver on the
virtual controller's pseudo-terminal) so the test can pull the controller's USB
cable and make homing fail; health checks are driven one at a time with ``tick()``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.config import load_config
from agent.daemon.progress import ServiceListener
from agent.daemon.sample_runner import SampleOutcome
from agent.daemon.service import AnalyzerService, open_service
from agent.errors import InputError
from agent.transport.commands import StartSampleArgs
from agent.transport.payloads import StatePayload
from drivers.sim.virtual_grbl import VirtualGrblController
from tests.broker import Watcher, free_port, running_broker, wait_for
from tests.daemon_support import BASE, sim_config_text, write_config

# The service with its simulated analyzer, and two samples that fail early: ~15 s.
pytestmark = pytest.mark.slow


class Outcomes(ServiceListener):
    def __init__(self) -> None:
        self.outcomes: list[SampleOutcome] = []
        self.states: list[StatePayload] = []
        self.done = threading.Event()

    def on_state(self, state: StatePayload) -> None:
        self.states.append(state)

    def on_outcome(self, outcome: SampleOutcome) -> None:
        self.outcomes.append(outcome)
        self.done.set()

    def wait(self, timeout: float = 60.0) -> SampleOutcome:
        assert self.done.wait(timeout), "the sample did not end"
        self.done.clear()
        return self.outcomes[-1]


@dataclass
class Running:
    service: AnalyzerService
    watcher: Watcher
    listener: Outcomes

    @property
    def controller(self) -> VirtualGrblController:
        simulator = self.service.hardware.simulator
        assert simulator is not None
        return simulator.controller

    def events(self, code: str) -> list[dict[str, Any]]:
        return [m.json() for m in self.watcher.on(f"{BASE}/events") if m.json()["code"] == code]


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("service")
    with running_broker(tmp / "broker") as broker:
        watcher = Watcher(broker.port, f"{BASE}/#")
        path = write_config(tmp / "agent.yaml", sim_config_text(tmp / "state", broker.port))
        service = open_service(load_config(path))
        listener = Outcomes()
        service.add_listener(listener)
        try:
            service.start()
            assert service.link.wait_connected(10)
            yield Running(service, watcher, listener)
        finally:
            service.shutdown()
            watcher.close()


def test_a_failed_homing_aborts_the_sample_with_the_fault_then_the_state_recovers(
    running: Running,
) -> None:
    service = running.service
    running.controller.faults.fail_next_homing(9)
    service.start_sample(StartSampleArgs(sample_id="S-HOMING"))
    outcome = running.listener.wait()
    report = outcome.report
    assert report.status == "aborted"
    assert report.reason is not None and report.reason.startswith("hardware error:")
    assert report.hardware_faults and "ALARM:9" in report.hardware_faults[0]
    assert "hardware_fault" in report.flag_codes()
    wait_for(lambda: service.state.state == "error", 10, "state 'error'")
    with pytest.raises(InputError, match="in error"):
        service.start_sample(StartSampleArgs(sample_id="S-REFUSED"))
    wait_for(lambda: running.events("sample.hardware_fault"), 10, "the fault event")

    health = service.tick()  # the stage answers its status query again: healthy
    assert health.ok and health.hardware_checked
    assert service.state.state == "idle"
    wait_for(lambda: running.events("health.recovered"), 10, "the recovery event")


def test_an_unplugged_controller_is_an_error_until_it_is_back(running: Running) -> None:
    service = running.service
    running.controller.unplug()
    try:
        health = service.tick()
        assert not health.ok
        assert [p.code for p in health.problems] == ["stage"]
        assert service.state.state == "error" and service.state.phase == "stage"
        event = wait_for(lambda: running.events("health.stage"), 10, "the health event")[-1]
        assert event["severity"] == "error" and event["message"]
        wait_for(
            lambda: [m.json() for m in running.watcher.on(f"{BASE}/state")][-1]["state"] == "error",
            10,
            "state 'error' on MQTT",
        )
        again = service.tick()  # the same problem is not published twice
        assert not again.ok
        assert len(running.events("health.stage")) == 1
    finally:
        running.controller.replug()
    health = service.tick()  # reopens the port on its own
    assert health.ok, health.summary()
    assert service.state.state == "idle"


def test_losing_the_controller_mid_scan_aborts_with_the_fault(running: Running) -> None:
    service = running.service
    armed = threading.Event()

    class ArmWhenScanning(ServiceListener):
        def on_state(self, state: StatePayload) -> None:
            if state.phase == "scanning" and not armed.is_set():
                armed.set()
                running.controller.faults.unplug_during_next_move(0.02)

    service.add_listener(ArmWhenScanning())
    service.start_sample(StartSampleArgs(sample_id="S-UNPLUGGED"))
    try:
        outcome = running.listener.wait(90)
    finally:
        running.controller.replug()
    report = outcome.report
    assert armed.is_set()
    assert report.status == "aborted" and report.sample_id == "S-UNPLUGGED"
    assert report.hardware_faults, report
    assert "hardware_fault" in report.flag_codes()
    assert report.fields >= 1 and report.wbc_counted >= 0
    wait_for(lambda: service.state.state == "error", 10, "state 'error'")
    health = service.tick()
    assert health.ok, health.summary()
    assert service.state.state == "idle"


def test_abort_during_homing_stops_the_stage_at_once(tmp_path: Path) -> None:
    # The default (slow) controller timing: homing alone takes several seconds.
    text = sim_config_text(tmp_path / "state", free_port(), fast=False)
    service = open_service(load_config(write_config(tmp_path / "agent.yaml", text)))
    listener = Outcomes()
    service.add_listener(listener)
    try:
        service.start()
        service.start_sample(StartSampleArgs(sample_id="S-HOMING-ABORT"))
        wait_for(lambda: service.state.phase == "homing", 10, "homing")
        asked = time.monotonic()
        service.abort_sample(None, "aborted on request (abort command)")
        outcome = listener.wait(30)
        took = time.monotonic() - asked
    finally:
        service.shutdown()
    assert outcome.report.status == "aborted"
    assert outcome.report.reason == "aborted on request (abort command)"
    assert not outcome.hardware_faults  # the stopped stage is the abort, not a fault
    assert took < 5.0, took  # homing from the power-on position alone takes longer
