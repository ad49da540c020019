"""The Stage contract: one suite every stage implementation must pass.

Today: the GRBL driver on the virtual controller, and the GRBL driver on a real board
(``hardware``: set ALGOCYTE_TEST_STAGE_PORT=/dev/serial/by-id/..., and
ALGOCYTE_TEST_STAGE_CONFIG=/etc/algocyte/agent.yaml to use that file's stage section;
the stage moves at most 2 mm from its home in X and Y and 0.2 mm in Z). A new stage
driver adds one entry to ``RIGS``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from drivers.errors import DeviceError
from drivers.serial_link import SerialLink
from drivers.stage.base import Position, Stage
from drivers.stage.config import StageConfig
from drivers.stage.errors import StageLimitError, StageNotHomedError, StageRequestError
from drivers.stage.grbl import GrblStage
from tests.virtual_grbl_support import running_controller, stage_config

pytestmark = pytest.mark.timeout(120)

STAGE_PORT_ENV = "ALGOCYTE_TEST_STAGE_PORT"
STAGE_CONFIG_ENV = "ALGOCYTE_TEST_STAGE_CONFIG"


@dataclass
class Rig:
    """A stage under test and what the test may know about it."""

    stage: Stage
    config: StageConfig
    resolution_um: float
    """How close a reported position must be to the commanded one."""
    true_position: Callable[[], Position] | None = None
    """Where the stage really is, when the rig can tell (a simulator can)."""
    home: Position = field(default_factory=lambda: Position(0.0, 0.0, 0.0))
    """Where homing left the stage (set by the fixture)."""


@contextmanager
def _grbl_virtual() -> Iterator[Rig]:
    config = stage_config()
    with running_controller() as controller:
        stage = GrblStage(SerialLink(controller.port_path), config)
        try:
            yield Rig(stage, config, 1.0, controller.true_position)
        finally:
            stage.close()


@contextmanager
def _grbl_hardware() -> Iterator[Rig]:
    port = os.environ.get(STAGE_PORT_ENV)
    if not port:
        pytest.skip(f"set {STAGE_PORT_ENV} to the controller's port to test a real board")
    config = StageConfig(port=port)
    config_file = os.environ.get(STAGE_CONFIG_ENV)
    if config_file:
        from agent.config import load_config

        config = load_config(Path(config_file)).stage.model_copy(update={"port": port})
    stage = GrblStage(SerialLink(port, config.baudrate), config)
    try:
        yield Rig(stage, config, 5.0)
    finally:
        stage.close()


RIGS: dict[str, Callable[[], AbstractContextManager[Rig]]] = {
    "grbl-virtual": _grbl_virtual,
    "grbl-hardware": _grbl_hardware,
}


@pytest.fixture(
    params=[
        pytest.param("grbl-virtual"),
        pytest.param("grbl-hardware", marks=pytest.mark.hardware),
    ]
)
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    with RIGS[request.param]() as r:
        r.stage.connect()
        r.stage.home()
        r.home = r.stage.position()
        yield r


def _inside(rig: Rig, fx: float, fy: float, fz: float) -> Position:
    """A point away from home by a fraction of each axis' span, capped for hardware."""
    limits = rig.config.limits

    def axis(home: float, lo: float, hi: float, f: float, cap: float) -> float:
        step = min((hi - lo) * f, cap)
        return home + step if home + step <= hi else home - step

    return Position(
        axis(rig.home.x_um, limits.x.min_um, limits.x.max_um, fx, 2_000.0),
        axis(rig.home.y_um, limits.y.min_um, limits.y.max_um, fy, 2_000.0),
        axis(rig.home.z_um, limits.z.min_um, limits.z.max_um, fz, 200.0),
    )


def _toward_middle(rig: Rig, axis: str, step_um: float) -> float:
    r = getattr(rig.config.limits, axis)
    return step_um if getattr(rig.home, f"{axis}_um") < (r.min_um + r.max_um) / 2 else -step_um


def _assert_at(rig: Rig, actual: Position, expected: Position) -> None:
    for a, e in (
        (actual.x_um, expected.x_um),
        (actual.y_um, expected.y_um),
        (actual.z_um, expected.z_um),
    ):
        assert math.isclose(a, e, abs_tol=rig.resolution_um), (actual, expected)


def test_move_to_reaches_the_target(rig: Rig) -> None:
    target = _inside(rig, 0.2, 0.3, 0.1)
    rig.stage.move_to(target.x_um, target.y_um, target.z_um)
    _assert_at(rig, rig.stage.position(), target)
    if rig.true_position is not None:
        _assert_at(rig, rig.true_position(), target)


def test_move_by_is_relative(rig: Rig) -> None:
    start = _inside(rig, 0.01, 0.01, 0.01)
    rig.stage.move_to(start.x_um, start.y_um, start.z_um)
    step = Position(_toward_middle(rig, "x", 250.0), _toward_middle(rig, "y", 125.0), 0.0)
    rig.stage.move_by(dx_um=step.x_um, dy_um=step.y_um)
    expected = Position(start.x_um + step.x_um, start.y_um + step.y_um, start.z_um)
    _assert_at(rig, rig.stage.position(), expected)


def test_move_without_waiting_then_wait_idle(rig: Rig) -> None:
    target = _inside(rig, 0.25, 0.2, 0.0)
    rig.stage.move_to(target.x_um, target.y_um, wait=False)
    _assert_at(rig, rig.stage.wait_idle(), target)


def test_moves_outside_the_limits_are_refused(rig: Rig) -> None:
    before = rig.stage.position()
    limits = rig.config.limits
    for move in (
        {"x_um": limits.x.max_um + 1.0},
        {"y_um": limits.y.min_um - 1.0},
        {"z_um": limits.z.max_um + 1.0},
    ):
        with pytest.raises(StageLimitError):
            rig.stage.move_to(**move)
    _assert_at(rig, rig.stage.wait_idle(), before)


def test_led_levels(rig: Rig) -> None:
    for level in (0, 1, 500, 1000, 0):
        rig.stage.set_led(level)
    with pytest.raises(StageRequestError):
        rig.stage.set_led(1001)


def test_stop_requires_homing_again(rig: Rig) -> None:
    rig.stage.stop()
    with pytest.raises(StageNotHomedError):
        rig.stage.move_by(dx_um=10.0)
    rig.stage.home()
    target = _inside(rig, 0.05, 0.05, 0.0)
    rig.stage.move_to(target.x_um, target.y_um)
    _assert_at(rig, rig.stage.position(), Position(target.x_um, target.y_um, rig.home.z_um))


def test_close_is_idempotent_and_errors_are_device_errors(rig: Rig) -> None:
    rig.stage.close()
    rig.stage.close()
    with pytest.raises(DeviceError):
        rig.stage.position()
