"""The maintenance jobs a clinic can ask for over MQTT: homing the stage, and the self-test.

Both run on the service's worker thread (never on the command thread) and end in one
event on ``events``: info when they pass, error (and the state ``error``) when not.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from agent.daemon.hardware import Hardware
from agent.daemon.health import HealthChecker
from agent.errors import AnalyzerError
from agent.vision.field_analysis import FieldAnalyzer
from agent.vision.synthetic_field import synthetic_field
from drivers.errors import DeviceError

_log = logging.getLogger(__name__)

SELF_TEST_PIXEL_UM = 0.2
SELF_TEST_SIZE = (640, 480)
"""A small synthetic field (px) the models must find its white cells in."""
SELF_TEST_CELLS = 2
HARDWARE_WAIT_S = 10.0
"""The self-test waits this long for a health check that holds the hardware (s)."""


@dataclass(frozen=True)
class MaintenanceResult:
    ok: bool
    code: str
    """Event code, e.g. 'stage.homed' or 'self_test.failed'."""
    message: str


def home(hardware: Hardware) -> MaintenanceResult:
    """Run the stage's homing cycle."""
    with hardware.lock:
        try:
            hardware.stage.home()
        except DeviceError as e:
            return MaintenanceResult(False, "stage.home_failed", f"homing failed: {e}")
    _log.info("stage homed on request")
    return MaintenanceResult(True, "stage.homed", "the stage was homed on request")


def self_test(
    hardware: Hardware, health: HealthChecker, analyzer: FieldAnalyzer
) -> MaintenanceResult:
    """Every health check on the hardware, plus the models finding cells in a synthetic field."""
    report = health.check(hardware=True, recover=False, wait_s=HARDWARE_WAIT_S)
    problems = [f"{p.code}: {p.message}" for p in report.problems]
    if not report.hardware_checked:
        problems.append("hardware: busy, could not be checked")
    try:
        image, centres = synthetic_field(
            *SELF_TEST_SIZE, pixel_size_um=SELF_TEST_PIXEL_UM, white_cells=SELF_TEST_CELLS
        )
        found = analyzer.analyze(image, SELF_TEST_PIXEL_UM)
        if not found:
            problems.append(
                f"models: no cell found in a synthetic field with {len(centres)} white cells"
            )
    except AnalyzerError as e:
        problems.append(f"models: {e}")
    if problems:
        return MaintenanceResult(
            False, "self_test.failed", "self-test failed: " + "; ".join(problems)
        )
    return MaintenanceResult(
        True,
        "self_test.passed",
        "self-test passed: the stage answers, the camera captures, the models match their "
        "sha256 and find the cells of a synthetic field, the state directory and the outbox "
        "take writes",
    )
