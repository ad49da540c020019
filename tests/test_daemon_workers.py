"""A worker thread that dies or hangs is a health fault: an event, ``state`` error, no watchdog.

The service runs in-process on the simulated analyzer with a real broker and a real
unix datagram socket standing in for systemd's $NOTIFY_SOCKET. The command intake
thread is killed the way an uncaught ``BaseException`` would end it: an
asynchronous ``SystemExit`` raised in that thread (CPython's
``PyThreadState_SetAsyncExc``), delivered when a request wakes it. Health checks
are driven one at a time with ``tick()``.

The units below it (``Heartbeat``, ``WorkerWatch``, ``CommandIntake``) are checked
without a broker: a stall limit of zero makes "stuck" a matter of state, not of
time.
"""

from __future__ import annotations

import ctypes
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.config import load_config
from agent.daemon.sdnotify import SystemdNotifier
from agent.daemon.service import AnalyzerService, open_service
from agent.daemon.workers import WorkerWatch
from agent.heartbeat import Heartbeat
from agent.transport.commands import CommandArgs
from agent.transport.config import MqttConfig
from agent.transport.intake import CommandIntake, Reply
from agent.transport.payloads import StatePayload
from agent.transport.requests import InboundRequest
from tests.broker import Watcher, running_broker, started_link, wait_for
from tests.daemon_support import BASE, NotifySocket, Requester, sim_config_text, write_config


def kill_thread(thread: threading.Thread) -> None:
    """Raise SystemExit in ``thread`` at its next bytecode (it must be running Python)."""
    assert thread.ident is not None
    hit = ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread.ident), ctypes.py_object(SystemExit)
    )
    assert hit == 1


# ------------------------------------------------------------------- the service


@dataclass
class ServiceRig:
    service: AnalyzerService
    watcher: Watcher
    notify: NotifySocket
    """What 'systemd' received."""
    notifier: SystemdNotifier
    """The service's own notifier: what the test sends through it arrives in order."""


@pytest.fixture
def service_rig(tmp_path: Path) -> Iterator[ServiceRig]:
    with running_broker(tmp_path / "broker") as broker:
        notify = NotifySocket(tmp_path / "notify.sock")
        notifier = SystemdNotifier(str(notify.path))
        watcher = Watcher(broker.port, f"{BASE}/#")
        text = sim_config_text(tmp_path / "state", broker.port)
        service = open_service(
            load_config(write_config(tmp_path / "agent.yaml", text)), notifier=notifier
        )
        try:
            service.start()
            assert service.link.wait_connected(10)
            yield ServiceRig(service, watcher, notify, notifier)
        finally:
            service.shutdown()
            watcher.close()
            notify.close()


def _beat(service: AnalyzerService, name: str) -> Heartbeat:
    return next(b for b in service.link.heartbeats if b.name == name)


def _events(watcher: Watcher, code: str) -> list[dict[str, Any]]:
    return [m.json() for m in watcher.on(f"{BASE}/events") if m.json()["code"] == code]


KILLED = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
"""The SystemExit that ends a thread on purpose here is no stray error."""


@KILLED
def test_a_killed_command_intake_is_a_fault_an_event_and_the_watchdog_stops(
    service_rig: ServiceRig,
) -> None:
    rig = service_rig
    service, watcher, notify, notifier = rig.service, rig.watcher, rig.notify, rig.notifier
    requester = Requester(watcher)
    assert requester.call("status")["status"] == "ok"
    assert service.tick().ok
    wait_for(lambda: notify.times("WATCHDOG=1"), 10, "a watchdog ping while healthy")
    assert service.workers.faults() == []

    intake = _beat(service, "command intake").thread
    assert intake is not None and intake.is_alive()
    kill_thread(intake)
    requester.send("status")  # wakes the thread, which then dies of the SystemExit
    intake.join(10)
    assert not intake.is_alive()

    pings = len(notify.times("WATCHDOG=1"))
    service.tick()
    service.tick()
    notifier.notify("X-TEST=after-ticks")  # same socket: arrives after whatever the ticks sent
    wait_for(lambda: notify.times("X-TEST=after-ticks"), 10, "the marker")
    assert len(notify.times("WATCHDOG=1")) == pings  # the watchdog is no longer fed

    state = service.state
    assert (state.state, state.phase) == ("error", "workers")
    status_lines = [line for _, line in notify.lines() if line.startswith("STATUS=")]
    assert "command intake thread (mqtt-commands) has died" in status_lines[-1]
    event = wait_for(lambda: _events(watcher, "daemon.thread_died"), 10, "the event")
    assert len(event) == 1  # once, not at every check
    assert event[0]["severity"] == "critical"
    assert "command intake" in event[0]["message"] and "systemd restarts" in event[0]["message"]
    wait_for(
        lambda: any(
            m.json()["state"] == "error" and m.json()["phase"] == "workers"
            for m in watcher.on(f"{BASE}/state")
        ),
        10,
        "state error (workers) on MQTT",
    )


# ---------------------------------------------------------------------- the units


class GatedHandler:
    """Blocks every command until released, so the intake thread is busy on demand."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def handle(self, command: str, args: CommandArgs) -> Any:
        self.entered.set()
        self.release.wait(30)
        return {"ok": True}


def _status(transaction: str) -> InboundRequest:
    return InboundRequest("status", json.dumps({"transaction": transaction}).encode())


def test_a_busy_silent_intake_is_stuck_and_recovers_when_it_moves_again() -> None:
    handler = GatedHandler()
    replies: list[Reply] = []
    intake = CommandIntake(MqttConfig(), handler, replies.append)
    watch = WorkerWatch(stall_s=0.0)  # any silence while busy counts
    watch.add(intake.heartbeat)
    assert watch.faults() == []  # attached to nothing yet
    intake.start()
    try:
        assert watch.faults() == []  # idle is never stuck
        intake.offer(_status("blocked"))
        assert handler.entered.wait(10)
        [fault] = wait_for(watch.faults, 10, "the stuck fault")
        assert fault.kind == "stuck" and "command intake" in fault.message
        handler.release.set()
        wait_for(lambda: len(replies) == 1, 10, "the reply")
        wait_for(lambda: not watch.faults(), 10, "idle again")
    finally:
        handler.release.set()
        intake.stop(5)
    assert watch.faults() == []  # stopped on purpose: not dead


@KILLED
def test_an_intake_thread_that_dies_is_reported_dead() -> None:
    handler = GatedHandler()
    handler.release.set()
    replies: list[Reply] = []
    intake = CommandIntake(MqttConfig(), handler, replies.append)
    watch = WorkerWatch(stall_s=60.0)
    watch.add(intake.heartbeat)
    intake.start()
    thread = intake.heartbeat.thread
    assert thread is not None
    kill_thread(thread)
    intake.offer(_status("wake"))
    thread.join(10)
    [fault] = watch.faults()
    assert fault.kind == "died" and "has died" in fault.message
    intake.stop(1)


def test_a_reply_is_always_produced_even_when_the_response_cannot_be_encoded() -> None:
    class SurrogateData:
        def handle(self, command: str, args: CommandArgs) -> Any:
            return {"text": "\ud800"}  # a handler bug: not Unicode

    intake = CommandIntake(MqttConfig(), SurrogateData(), lambda reply: None)
    reply = intake.reply_to(_status("tx-1"))
    body = json.loads(reply.payload)
    assert body["status"] == "error" and body["transaction"] == "tx-1"
    assert "could not be encoded" in body["error"]


@KILLED
def test_a_link_thread_that_dies_is_reported_dead(tmp_path: Path) -> None:
    with (
        running_broker(tmp_path / "broker") as broker,
        started_link(broker.port, tmp_path / "state", GatedHandler()) as link,
    ):
        watch = WorkerWatch(stall_s=60.0)
        watch.add(*link.heartbeats)
        assert watch.faults() == []
        thread = next(b for b in link.heartbeats if b.name == "MQTT link").thread
        assert thread is not None
        kill_thread(thread)
        link.publish_state(StatePayload(state="idle"))  # an event wakes the link thread
        thread.join(10)
        [fault] = watch.faults()
        assert fault.kind == "died" and "MQTT link" in fault.message
