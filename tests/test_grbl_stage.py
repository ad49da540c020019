"""The GRBL stage driver against the virtual controller over a real pseudo-terminal."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator

import pytest

from drivers.errors import DeviceConnectionError, DeviceError, UnsupportedFeatureError
from drivers.sim.virtual_grbl import VirtualGrblController
from drivers.stage.base import Position
from drivers.stage.errors import (
    StageLimitError,
    StageNotHomedError,
    StageRequestError,
    StageStoppedError,
)
from drivers.stage.factory import build_stage
from drivers.stage.grbl import GrblStage
from tests.virtual_grbl_support import (
    SLOW_XY,
    connected_stage,
    running_controller,
    stage_config,
)

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def controller() -> Iterator[VirtualGrblController]:
    with running_controller() as c:
        yield c


@pytest.fixture
def stage(controller: VirtualGrblController) -> Iterator[GrblStage]:
    with connected_stage(controller) as s:
        yield s


@pytest.fixture
def homed(stage: GrblStage) -> GrblStage:
    stage.home()
    return stage


def _close(a: Position, b: Position, tol_um: float = 1.0) -> bool:
    return all(
        math.isclose(p, q, abs_tol=tol_um)
        for p, q in ((a.x_um, b.x_um), (a.y_um, b.y_um), (a.z_um, b.z_um))
    )


def test_connect_reads_banner_settings_and_state(
    controller: VirtualGrblController, stage: GrblStage
) -> None:
    assert stage.firmware_version == "1.1h"
    assert stage.settings[22] == 1.0
    assert stage.settings[130] == 75.0
    assert not stage.homed  # the virtual board powers up locked, like a real one
    assert stage.port == controller.port_path


def test_moves_are_refused_until_homed(controller: VirtualGrblController, stage: GrblStage) -> None:
    sent = controller.bytes_received
    with pytest.raises(StageNotHomedError, match="home the stage first"):
        stage.move_to(x_um=1000.0)
    assert controller.bytes_received == sent


def test_homing_ends_at_the_origin(controller: VirtualGrblController, stage: GrblStage) -> None:
    assert controller.true_position() != Position(0.0, 0.0, 0.0)
    stage.home()
    assert stage.homed
    assert stage.position() == Position(0.0, 0.0, 0.0)
    assert controller.true_position() == Position(0.0, 0.0, 0.0)
    assert controller.state == "Idle"


def test_absolute_and_relative_moves(controller: VirtualGrblController, homed: GrblStage) -> None:
    homed.move_to(12_345.0, 6_789.0, 1_234.0)
    target = Position(12_345.0, 6_789.0, 1_234.0)
    assert _close(homed.position(), target)
    assert _close(controller.true_position(), target)
    homed.move_by(dx_um=-345.0, dz_um=16.0)
    assert _close(homed.position(), Position(12_000.0, 6_789.0, 1_250.0))
    homed.move_to(z_um=10.0)  # other axes stay
    assert _close(homed.position(), Position(12_000.0, 6_789.0, 10.0))
    assert _close(controller.true_position(), Position(12_000.0, 6_789.0, 10.0))


def test_moves_use_g1_with_feeds_that_respect_each_axis(
    controller: VirtualGrblController, homed: GrblStage
) -> None:
    homed.move_to(3_000.0, 4_000.0, 3_000.0)
    # XY 5 mm and Z 3 mm: Z at 3000 mm/min for its 3/5.831 share of the path binds first.
    assert "G90G1X3Y4Z3F5830.952" in controller.received_lines()
    homed.move_by(dz_um=-500.0)
    assert controller.received_lines()[-2:] == ["G90G1Z2.5F3000", "G4P0"]


@pytest.mark.parametrize(
    "move",
    [
        {"x_um": 75_001.0},
        {"y_um": -1.0},
        {"z_um": 5_000.5},
        {"x_um": float("nan")},
    ],
)
def test_moves_outside_the_limits_are_refused_before_sending(
    controller: VirtualGrblController, homed: GrblStage, move: dict[str, float]
) -> None:
    sent = controller.bytes_received
    with pytest.raises(StageRequestError, match=r"nothing was sent|not a number"):
        homed.move_to(**move)
    assert controller.bytes_received == sent


def test_relative_move_past_a_limit_is_refused(
    controller: VirtualGrblController, homed: GrblStage
) -> None:
    homed.move_to(x_um=74_000.0)
    sent = controller.bytes_received
    with pytest.raises(StageLimitError, match=r"stage\.limits\.x"):
        homed.move_by(dx_um=2_000.0)
    assert controller.bytes_received == sent
    assert _close(homed.position(), Position(74_000.0, 0.0, 0.0))


def test_limit_edges_are_allowed(homed: GrblStage) -> None:
    homed.move_to(75_000.0, 25_000.0, 5_000.0)
    assert _close(homed.position(), Position(75_000.0, 25_000.0, 5_000.0))


def test_move_without_waiting_then_wait_idle() -> None:
    with (
        running_controller(SLOW_XY) as controller,
        connected_stage(controller, stage_config(xy_feed_mm_min=600.0)) as stage,
    ):
        stage.home()
        stage.move_to(x_um=8_000.0, wait=False)
        assert stage.status().state == "Run"
        assert controller.true_position().x_um < 8_000.0
        assert _close(stage.wait_idle(), Position(8_000.0, 0.0, 0.0))
        assert controller.state == "Idle"


def test_led(controller: VirtualGrblController, homed: GrblStage) -> None:
    homed.set_led(700)
    assert controller.led_level == 700
    assert controller.settings[32] == 1.0  # laser mode switched on by the driver
    homed.move_to(x_um=20_000.0, wait=False)
    assert controller.led_level == 700  # G1 moves keep it lit
    homed.wait_idle()
    homed.set_led(350)
    assert controller.led_level == 350
    homed.set_led(0)
    assert controller.led_level == 0
    assert controller.received_lines().count("$32=1") == 1


@pytest.mark.parametrize("level", [-1, 1001, 1.5, True])
def test_bad_led_levels_are_refused(homed: GrblStage, level: object) -> None:
    with pytest.raises(StageRequestError, match="0-1000"):
        homed.set_led(level)  # type: ignore[arg-type]


def test_stop_from_another_thread_interrupts_a_move() -> None:
    with (
        running_controller(SLOW_XY) as controller,
        connected_stage(controller, stage_config(xy_feed_mm_min=600.0)) as stage,
    ):
        stage.home()
        stage.set_led(500)
        outcome: list[BaseException] = []

        def move() -> None:
            try:
                stage.move_to(x_um=30_000.0)
            except BaseException as e:
                outcome.append(e)

        mover = threading.Thread(target=move)
        mover.start()
        time.sleep(0.3)
        stage.stop()
        mover.join(timeout=10)
        assert not mover.is_alive()
        assert len(outcome) == 1 and isinstance(outcome[0], StageStoppedError)
        stopped = controller.true_position().x_um
        assert 0.0 < stopped < 30_000.0
        time.sleep(0.1)
        assert controller.true_position().x_um == stopped  # it really stopped
        assert controller.state == "Idle"  # held before the reset: no ALARM:3
        assert controller.led_level == 0
        assert not stage.homed
        with pytest.raises(StageNotHomedError, match="stop"):
            stage.move_by(dx_um=10.0)
        stage.home()
        stage.move_to(x_um=1_000.0)
        assert _close(stage.position(), Position(1_000.0, 0.0, 0.0))


def test_stop_when_idle(controller: VirtualGrblController, homed: GrblStage) -> None:
    homed.stop()
    assert not homed.homed
    assert controller.state == "Idle"


def test_work_position_reports() -> None:
    with (
        running_controller(settings={10: 0}) as wpos_controller,
        connected_stage(wpos_controller) as stage,
    ):
        stage.home()
        stage.move_to(1_000.0, 2_000.0, 300.0)
        assert stage.status().mpos is None
        assert _close(stage.position(), Position(1_000.0, 2_000.0, 300.0))


def test_close_twice_and_use_after_close(stage: GrblStage) -> None:
    stage.close()
    stage.close()
    with pytest.raises(DeviceConnectionError, match="not open"):
        stage.position()


def test_factory_builds_the_configured_driver(controller: VirtualGrblController) -> None:
    stage = build_stage(stage_config(), simulator_port=controller.port_path)
    try:
        stage.connect()
        stage.home()
        assert stage.position() == Position(0.0, 0.0, 0.0)
    finally:
        stage.close()
    with pytest.raises(DeviceConnectionError, match="no simulated controller"):
        build_stage(stage_config())
    real = build_stage(stage_config(port="/dev/ttyNOPE0"))
    with pytest.raises(DeviceConnectionError, match="/dev/ttyNOPE0"):
        real.connect()


def test_factory_rejects_unknown_protocols() -> None:
    config = stage_config().model_copy(update={"protocol": "sangaboard"})
    with pytest.raises(UnsupportedFeatureError, match="sangaboard"):
        build_stage(config, simulator_port="/dev/null")


def test_every_error_is_a_device_error() -> None:
    for cls in (StageLimitError, StageNotHomedError, StageRequestError, StageStoppedError):
        assert issubclass(cls, DeviceError)
