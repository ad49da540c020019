"""The real daemon for the end-to-end tests: a config, a process, a client, a fake systemd.

* ``sim_config_text`` is a simulator config with the fast controller timing
  (``drivers.sim.controller_config.FAST_TIMING``), a coarse survey and a slide dense in
  white cells, so a 100-cell sample (the minimum target) takes about 15 s.
* ``DaemonProcess`` runs ``algocyte-agent run --config ...`` as a child process (so it
  can be SIGKILLed), with its log in a file.
* ``Requester`` sends commands the way an integrator would (paho, QoS 1) and waits for
  the response carrying its transaction.
* ``NotifySocket`` is a unix datagram socket standing in for systemd's $NOTIFY_SOCKET.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from drivers.sim.controller_config import FAST_TIMING
from tests.broker import HOST, Received, Watcher, wait_for

REPO = Path(__file__).resolve().parent.parent
AGENT = Path(sys.executable).parent / "algocyte-agent"
DEVICE = "e2e-sim"
BASE = f"algocyte/{DEVICE}"
TARGET = 100
REQUEST_LIMIT = 4096
"""mqtt.max_request_bytes of the test daemon: the limit tests/test_mqtt_fuzz.py's cases assume."""


def sim_config_text(
    state_dir: Path,
    port: int,
    *,
    seed: int = 3,
    health_interval_s: float = 1.0,
    fast: bool = True,
    extra: str = "",
) -> str:
    """``fast=False`` keeps the controller's default (real-world) timing."""
    timing = ", ".join(f"{k}: {v}" for k, v in FAST_TIMING.model_dump().items())
    controller = f"  controller: {{{timing}}}\n" if fast else ""
    return f"""\
device_id: {DEVICE}
simulator:
  seed: {seed}
  rbc_per_wbc: 150
{controller}stage: {{port: simulator, xy_feed_mm_min: 12000, z_feed_mm_min: 3000, motion_timeout_s: 20,
  homing_timeout_s: 20}}
camera: {{type: simulated}}
acquisition: {{target_wbc: {TARGET}, survey: {{columns: 3, rows: 1}},
  focus: {{initial_range_um: 120}}}}
storage: {{state_dir: {state_dir}}}
mqtt: {{host: {HOST}, port: {port}, reconnect_min_s: 0.1, reconnect_max_s: 0.5,
  stop_timeout_s: 3, connect_timeout_s: 3, max_request_bytes: {REQUEST_LIMIT}}}
service: {{health_interval_s: {health_interval_s}, progress_interval_s: 0}}
{extra}"""


def write_config(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


class DaemonProcess:
    """``algocyte-agent run`` in a child process."""

    def __init__(self, config: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            [str(AGENT), "run", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, **(env or {})},
        )

    @property
    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_ready(self, timeout: float = 60.0) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                pytest.fail(f"the daemon exited with {self.proc.returncode}:\n{self.log}")
            return "agent.daemon.service: ready:" in self.log

        wait_for(ready, timeout, "the daemon to be ready")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()

    def terminate(self, timeout: float = 40.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        with contextlib.suppress(OSError):
            self._log.close()


class Requester:
    """Sends requests on a watcher's connection and returns the matching response."""

    _ids = itertools.count(1)

    def __init__(self, watcher: Watcher, base: str = BASE) -> None:
        self.watcher = watcher
        self.base = base

    def send(self, command: str, **args: Any) -> str:
        transaction = f"t{next(self._ids)}-{time.monotonic_ns()}"
        body = {"transaction": transaction, **args}
        self.watcher.publish(f"{self.base}/request/{command}", json.dumps(body))
        return transaction

    def response(self, command: str, transaction: str, timeout: float = 10.0) -> dict[str, Any]:
        topic = f"{self.base}/response/{command}"

        def found(msgs: list[Received]) -> dict[str, Any] | None:
            for m in msgs:
                if m.topic == topic:
                    doc: dict[str, Any] = m.json()
                    if doc.get("transaction") == transaction:
                        return doc
            return None

        result: dict[str, Any] = self.watcher.wait(found, timeout, f"the response to {command}")
        return result

    def call(self, command: str, timeout: float = 10.0, **args: Any) -> dict[str, Any]:
        return self.response(command, self.send(command, **args), timeout)


def results_for(watcher: Watcher, sample_id: str, topic: str = "results") -> list[Received]:
    """Messages on results (or results/fhir) about ``sample_id``."""

    def about(doc: dict[str, Any]) -> bool:
        if topic == "results":
            return bool(doc.get("sample_id") == sample_id)
        return sample_id in json.dumps(doc)  # a FHIR bundle names it in its identifiers

    return [m for m in watcher.on(f"{BASE}/{topic}") if about(m.json())]


def wait_result(
    watcher: Watcher, sample_id: str, status: str | None = None, timeout: float = 90.0
) -> dict[str, Any]:
    """The first report of ``sample_id`` (with ``status`` if given) on results."""

    def found(msgs: list[Received]) -> dict[str, Any] | None:
        for m in msgs:
            if m.topic != f"{BASE}/results":
                continue
            doc: dict[str, Any] = m.json()
            if doc.get("sample_id") == sample_id and (status is None or doc["status"] == status):
                return doc
        return None

    result: dict[str, Any] = watcher.wait(found, timeout, f"a result for {sample_id}")
    return result


def outbox_result_ids(state_dir: Path) -> list[str]:
    """result_ids waiting in a daemon's outbox (read-only, while it runs or after it died)."""
    path = state_dir / "outbox.sqlite3"
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        rows = db.execute("SELECT key FROM outbox WHERE kind = 'result' ORDER BY id").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()
    return [str(r[0]) for r in rows]


def sample_status(state_dir: Path, sample_id: str) -> str | None:
    path = state_dir / "samples.sqlite"
    if not path.exists():
        return None
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        row = db.execute("SELECT status FROM samples WHERE sample_id = ?", (sample_id,)).fetchone()
    except sqlite3.OperationalError:
        return None
    finally:
        db.close()
    return None if row is None else str(row[0])


class NotifySocket:
    """A unix datagram socket that records what the daemon tells 'systemd'."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._closed:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.messages.append((time.monotonic(), data.decode("utf-8", "replace")))

    def lines(self) -> list[tuple[float, str]]:
        """Every KEY=value line received, with its arrival time."""
        with self._lock:
            return [(t, line) for t, msg in self.messages for line in msg.splitlines()]

    def times(self, line: str) -> list[float]:
        return [t for t, text in self.lines() if text == line]

    def close(self) -> None:
        self._closed = True
        self._thread.join(2)
        self.sock.close()
