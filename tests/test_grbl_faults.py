"""Every injected fault ends in a clear typed error or a recovery: never a hang or a crash.

The real driver talks to the virtual controller over a real pty; the controller is
told to misbehave through its fault injector.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from drivers.errors import DeviceConnectionError, DeviceTimeoutError, ProtocolError
from drivers.serial_link import SerialLink
from drivers.sim.pty_port import PtyPort
from drivers.sim.virtual_grbl import VirtualGrblController
from drivers.stage.base import Position
from drivers.stage.config import AxisRange, StageLimits
from drivers.stage.errors import ControllerResetError, StageNotHomedError
from drivers.stage.grbl import GrblStage
from drivers.stage.grbl_codes import GrblAlarm, GrblError
from tests.virtual_grbl_support import (
    SLOW_XY,
    connected_stage,
    running_controller,
    stage_config,
)

pytestmark = pytest.mark.timeout(20)

SHORT = stage_config(command_timeout_s=1.0)
"""Replies that never come cost this long; under load 1 s still leaves a wide margin."""


@pytest.fixture
def controller() -> Iterator[VirtualGrblController]:
    with running_controller() as c:
        yield c


@pytest.fixture
def homed(controller: VirtualGrblController) -> Iterator[GrblStage]:
    with connected_stage(controller, SHORT) as stage:
        stage.home()
        yield stage


def test_dropped_reply_times_out_then_recovers(
    controller: VirtualGrblController, homed: GrblStage
) -> None:
    controller.faults.drop_replies(1)
    with pytest.raises(DeviceTimeoutError, match=r"did not answer 'G90 G1 X1 F12000' within 1 s"):
        homed.move_to(x_um=1_000.0)
    # The move did run; the driver re-reads where it is instead of trusting its plan.
    homed.move_by(dx_um=500.0)
    assert homed.position() == Position(1_500.0, 0.0, 0.0)
    assert controller.true_position() == Position(1_500.0, 0.0, 0.0)


def test_slow_reply_within_the_timeout_is_fine(
    controller: VirtualGrblController, homed: GrblStage
) -> None:
    controller.faults.delay_replies(0.3, count=2)
    homed.move_to(y_um=2_000.0)
    assert homed.position() == Position(0.0, 2_000.0, 0.0)


def test_late_reply_is_not_taken_for_the_next_one(caplog: pytest.LogCaptureFixture) -> None:
    with running_controller(SLOW_XY) as controller, connected_stage(controller, SHORT) as stage:
        stage.home()
        controller.faults.delay_replies(1.5)
        with pytest.raises(DeviceTimeoutError):
            stage.set_led(300)
        # The late 'ok' must not answer the next lines: were it taken for the G4 P0
        # that ends move_to, the call would return while the 5 mm move (0.7 s) runs.
        with caplog.at_level("DEBUG", logger="drivers.stage.grbl"):
            stage.move_to(x_um=5_000.0)
        assert controller.state == "Idle"
        assert controller.true_position() == Position(5_000.0, 0.0, 0.0)
        assert "resynchronising" in caplog.text
        stage.set_led(900)
        assert controller.led_level == 900


def test_garbage_before_replies_is_skipped(
    controller: VirtualGrblController, homed: GrblStage
) -> None:
    controller.faults.garbage_before_replies(count=3)
    controller.faults.send_garbage(b"\xde\xad\xbe\xef not grbl at all\r\n")
    homed.move_to(2_000.0, 3_000.0)
    assert homed.position() == Position(2_000.0, 3_000.0, 0.0)


def test_noise_glued_to_a_reply_is_stripped(
    controller: VirtualGrblController, homed: GrblStage
) -> None:
    controller.faults.garbage_before_replies(b"\x00\xff\xfe\x81", count=2)
    homed.move_to(x_um=4_000.0)
    assert homed.position() == Position(4_000.0, 0.0, 0.0)


def test_forced_error_is_typed_and_explained(
    controller: VirtualGrblController, homed: GrblStage
) -> None:
    controller.faults.force_error(22)
    with pytest.raises(GrblError, match=r"refused 'G90 G1 X1 F12000': error:22 feed rate") as info:
        homed.move_to(x_um=1_000.0)
    assert info.value.code == 22
    assert controller.true_position() == Position(0.0, 0.0, 0.0)  # not run
    homed.move_to(x_um=1_000.0)
    assert homed.position() == Position(1_000.0, 0.0, 0.0)


def test_homing_failure_alarm(controller: VirtualGrblController) -> None:
    with connected_stage(controller, SHORT) as stage:
        controller.faults.fail_next_homing(9)
        with pytest.raises(
            GrblAlarm, match="ALARM:9 homing failed: limit switch not found"
        ) as info:
            stage.home()
        assert info.value.code == 9
        assert not stage.homed
        with pytest.raises(StageNotHomedError):
            stage.move_to(x_um=10.0)
        stage.home()
        assert stage.position() == Position(0.0, 0.0, 0.0)


def test_hard_limit_during_a_move_is_reported_and_cleared() -> None:
    with running_controller(SLOW_XY) as controller, connected_stage(controller, SHORT) as stage:
        stage.home()
        timer = threading.Timer(0.3, controller.faults.alarm, args=(1,))
        timer.start()
        with pytest.raises(GrblAlarm, match="ALARM:1 hard limit") as info:
            stage.move_to(x_um=20_000.0)
        timer.join()
        assert info.value.critical
        assert "the controller was reset" in str(info.value)
        assert controller.state == "Alarm"  # reset by the driver, no longer deaf
        assert not stage.homed
        stage.home()
        stage.move_to(x_um=500.0)
        assert stage.position() == Position(500.0, 0.0, 0.0)


def test_controller_soft_limit_when_config_exceeds_the_travel() -> None:
    wide = stage_config(
        command_timeout_s=1.0, limits=StageLimits(x=AxisRange(min_um=0.0, max_um=100_000.0))
    )
    with running_controller() as controller, connected_stage(controller, wide) as stage:
        stage.home()
        with pytest.raises(GrblAlarm, match="ALARM:2 soft limit"):
            stage.move_to(x_um=80_000.0)
        assert controller.true_position() == Position(0.0, 0.0, 0.0)
        stage.home()
        stage.move_to(x_um=75_000.0)
        assert stage.position() == Position(75_000.0, 0.0, 0.0)


def test_unexpected_controller_reset(controller: VirtualGrblController, homed: GrblStage) -> None:
    homed.move_to(x_um=3_000.0)
    controller.faults.power_glitch()
    with pytest.raises(ControllerResetError, match="reset unexpectedly"):
        homed.position()
    assert not homed.homed
    homed.home()
    assert homed.position() == Position(0.0, 0.0, 0.0)


def test_port_closed_mid_move_then_replugged(
    controller: VirtualGrblController, homed: GrblStage
) -> None:
    controller.faults.unplug_during_next_move(after_s=0.02)
    with pytest.raises(DeviceConnectionError, match="lost the stage controller") as info:
        homed.move_to(x_um=50_000.0)
    assert "reconnect" in str(info.value)
    with pytest.raises(DeviceConnectionError):
        homed.position()
    stopped = controller.true_position().x_um
    assert 0.0 < stopped < 50_000.0  # the board lost power mid-move
    controller.replug()
    homed.reconnect()
    assert not homed.homed
    homed.home()
    homed.move_to(x_um=1_000.0)
    assert homed.position() == Position(1_000.0, 0.0, 0.0)


def test_reconnect_gives_up_after_the_configured_attempts(
    controller: VirtualGrblController, homed: GrblStage
) -> None:
    controller.unplug()
    with pytest.raises(DeviceConnectionError):
        homed.position()
    with pytest.raises(DeviceConnectionError, match="after 3 attempts"):
        homed.reconnect()


def test_reconnect_succeeds_when_the_port_comes_back(controller: VirtualGrblController) -> None:
    patient = stage_config(reconnect_attempts=40, reconnect_interval_s=0.05)
    with connected_stage(controller, patient) as stage:
        stage.home()
        controller.unplug()
        with pytest.raises(DeviceConnectionError):
            stage.move_to(x_um=100.0)
        timer = threading.Timer(0.3, controller.replug)
        timer.start()
        stage.reconnect()
        timer.join()
        stage.home()
        assert stage.position() == Position(0.0, 0.0, 0.0)


def _fake_device(answer: bytes) -> PtyPort:
    """A serial device that answers every soft reset with ``answer``."""
    port: PtyPort

    def on_data(data: bytes) -> None:
        if b"\x18" in data:
            port.write(answer)

    port = PtyPort(on_data)
    port.open()
    return port


@pytest.mark.parametrize(
    ("answer", "error", "match"),
    [
        (
            b"Grbl 0.9j ['$' for help]\r\n",
            ProtocolError,
            "runs Grbl 0.9j; this driver needs Grbl 1.1",
        ),
        (b"", DeviceTimeoutError, "did not answer the banner"),
        (b"\xff\xfe garbage\r\n" * 60, ProtocolError, "does not answer like a GRBL controller"),
    ],
)
def test_wrong_devices_are_refused(answer: bytes, error: type[Exception], match: str) -> None:
    device = _fake_device(answer)
    config = stage_config(connect_timeout_s=0.5)
    stage = GrblStage(SerialLink(device.path), config)
    try:
        with pytest.raises(error, match=match):
            stage.connect()
        with pytest.raises(DeviceConnectionError, match="not open"):
            stage.position()  # a failed connect leaves the port closed
    finally:
        stage.close()
        device.close()
