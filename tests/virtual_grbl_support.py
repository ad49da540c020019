"""Shared set-up for the GRBL driver and virtual controller tests.

Everything here is real: a virtual controller on a pseudo-terminal and the real
driver on a real pyserial port. Only the timing is faster than the default model.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import serial

from drivers.serial_link import SerialLink
from drivers.sim.controller_config import FAST_TIMING, VirtualControllerConfig
from drivers.sim.virtual_grbl import VirtualGrblController
from drivers.stage.config import StageConfig
from drivers.stage.grbl import GrblStage

STATUS_RE = re.compile(
    r"^<(?P<state>[A-Za-z]+(?::\d)?)\|MPos:(?P<x>-?[\d.]+),(?P<y>-?[\d.]+),(?P<z>-?[\d.]+)\|"
)
"""A status report, parsed independently of the driver's own parser."""

SLOW_XY = FAST_TIMING.model_copy(
    update={"xy_max_speed_mm_s": 10.0, "xy_accel_mm_s2": 500.0, "homing_pulloff_mm": 0.2}
)
"""XY at the default 10 mm/s, so a move lasts long enough to watch; quick homing."""


def stage_config(**overrides: Any) -> StageConfig:
    """Stage settings for tests: the fast controller's speeds and short timeouts."""
    values: dict[str, Any] = {
        "port": "simulator",
        "command_timeout_s": 2.0,
        "motion_timeout_s": 10.0,
        "homing_timeout_s": 10.0,
        "connect_timeout_s": 3.0,
        "xy_feed_mm_min": 12_000.0,
        "z_feed_mm_min": 3_000.0,
        "reconnect_attempts": 3,
        "reconnect_interval_s": 0.05,
    }
    values.update(overrides)
    return StageConfig(**values)


@contextmanager
def running_controller(
    timing: VirtualControllerConfig = FAST_TIMING, **kwargs: Any
) -> Iterator[VirtualGrblController]:
    controller = VirtualGrblController(timing, **kwargs)
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


@contextmanager
def connected_stage(
    controller: VirtualGrblController, config: StageConfig | None = None
) -> Iterator[GrblStage]:
    config = config or stage_config()
    stage = GrblStage(SerialLink(controller.port_path, config.baudrate), config)
    stage.connect()
    try:
        yield stage
    finally:
        stage.close()


class Terminal:
    """What a person with a serial terminal does: type lines, read what comes back."""

    def __init__(self, path: str) -> None:
        self.port = serial.Serial(path, 115200, timeout=0.1)

    def send(self, line: str) -> None:
        self.port.write(line.encode("ascii") + b"\n")

    def lines_until_reply(self, timeout_s: float = 5.0) -> list[str]:
        """Every line up to and including the next 'ok' or 'error:N'."""
        lines: list[str] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.port.readline().decode("ascii", "replace").strip()
            if not text:
                continue
            lines.append(text)
            if text == "ok" or text.startswith("error:"):
                return lines
        raise AssertionError(f"no reply within {timeout_s} s; got {lines}")

    def command(self, line: str, timeout_s: float = 5.0) -> list[str]:
        self.send(line)
        return self.lines_until_reply(timeout_s)

    def read_lines(self, quiet_s: float = 0.3) -> list[str]:
        """Lines received until nothing more arrives for ``quiet_s``."""
        lines: list[str] = []
        last = time.monotonic()
        while time.monotonic() - last < quiet_s:
            text = self.port.readline().decode("ascii", "replace").strip()
            if text:
                lines.append(text)
                last = time.monotonic()
        return lines

    def status(self) -> re.Match[str]:
        self.port.write(b"?")
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            text = self.port.readline().decode("ascii", "replace").strip()
            match = STATUS_RE.match(text)
            if match:
                return match
        raise AssertionError("no status report")

    def wait_state(self, state: str, timeout_s: float = 3.0) -> re.Match[str]:
        """Poll '?' until the controller reports ``state``."""
        deadline = time.monotonic() + timeout_s
        while True:
            report = self.status()
            if report.group("state") == state:
                return report
            if time.monotonic() > deadline:
                raise AssertionError(f"still {report.group('state')}, never {state}")
            time.sleep(0.02)

    def close(self) -> None:
        self.port.close()
