"""The virtual GRBL controller, spoken to with plain pyserial as a person with a terminal would.

No project driver code here: these tests pin down the controller's behaviour on its
own, byte for byte, so the driver tests that run against it mean something.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
import serial

from drivers.sim.controller_config import FAST_TIMING, VirtualControllerConfig
from drivers.sim.virtual_grbl import BANNER, UNLOCK_MESSAGE, VirtualGrblController
from drivers.stage.base import Position
from drivers.stage.config import AxisRange, StageLimits
from tests.virtual_grbl_support import Terminal, running_controller

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def controller() -> Iterator[VirtualGrblController]:
    with running_controller() as c:
        yield c


@pytest.fixture
def term(controller: VirtualGrblController) -> Iterator[Terminal]:
    t = Terminal(controller.port_path)
    yield t
    t.close()


def test_a_user_homes_and_moves_with_plain_pyserial(controller: VirtualGrblController) -> None:
    with serial.Serial(controller.port_path, 115200, timeout=5) as port:
        port.write(b"$H\n")
        assert port.readline() == b"ok\r\n"
        port.write(b"G0 X1\n")
        assert port.readline() == b"ok\r\n"
        port.write(b"G4 P0\n")  # answered once the move is over
        assert port.readline() == b"ok\r\n"
        port.write(b"?")
        report = port.readline().decode("ascii").strip()
    assert report.startswith("<Idle|MPos:1.000,0.000,0.000|"), report
    assert controller.true_position() == Position(1000.0, 0.0, 0.0)


def test_banner_on_soft_reset_and_locked_until_homed(term: Terminal) -> None:
    term.port.write(b"\x18")
    assert term.read_lines() == [BANNER, UNLOCK_MESSAGE]
    assert term.status().group("state") == "Alarm"
    assert term.command("G0 X1") == ["error:9"]
    assert term.command("$X") == ["[MSG:Caution: Unlocked]", "ok"]
    assert term.command("G0 X1") == ["ok"]


def test_power_on_position_is_unknown_until_homing(controller: VirtualGrblController) -> None:
    assert controller.machine_position() == Position(0.0, 0.0, 0.0)
    assert controller.true_position() == Position(2000.0, 2000.0, 500.0)
    term = Terminal(controller.port_path)
    try:
        term.send("$H")
        term.wait_state("Home")
        assert term.lines_until_reply()[-1] == "ok"
    finally:
        term.close()
    assert controller.true_position() == Position(0.0, 0.0, 0.0)
    assert controller.machine_position() == Position(0.0, 0.0, 0.0)
    assert controller.state == "Idle"


def test_status_during_motion_and_g4_waits_for_the_end() -> None:
    slow = VirtualControllerConfig(settle_s=0.05)  # the default 10 mm/s XY
    with running_controller(slow) as controller:
        term = Terminal(controller.port_path)
        try:
            assert term.command("$X")[-1] == "ok"
            assert term.command("G0 X5") == ["ok"]  # planner accepts at once
            moving = term.status()
            assert moving.group("state") == "Run"
            assert 0.0 <= float(moving.group("x")) < 5.0
            assert term.command("G4 P0") == ["ok"]
            done = term.status()
            assert done.group("state") == "Idle"
            assert float(done.group("x")) == 5.0
        finally:
            term.close()
        assert controller.true_position().x_um == pytest.approx(7000.0)  # 2 mm power-on offset


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        ("G1 X1", "error:22"),  # no feed rate yet
        ("G4", "error:28"),  # dwell without P
        ("*&^", "error:1"),
        ("G0 X", "error:2"),
        ("G2 X1 Y1 I1", "error:20"),
        ("G0 G1 X1", "error:21"),
        ("G80 X1", "error:31"),
        ("G0 X1 P1", "error:36"),
        ("G0 X" + "1" * 90, "error:11"),  # longer than GRBL's 80-character line
        ("$99=1", "error:3"),
        ("$110=-1", "error:4"),
        ("$Q", "error:3"),
        ("", "ok"),
        ("(a comment) ; and another", "ok"),
    ],
)
def test_errors_for_bad_input(term: Terminal, line: str, reply: str) -> None:
    assert term.command("$H")[-1] == "ok"
    assert term.command(line)[-1] == reply


def test_settings_come_from_timing_and_travel() -> None:
    limits = StageLimits(x=AxisRange(min_um=0, max_um=50_000))
    with running_controller(VirtualControllerConfig(), limits=limits) as controller:
        term = Terminal(controller.port_path)
        try:
            listing = term.command("$$")
        finally:
            term.close()
    assert "$110=600.000" in listing  # 10 mm/s
    assert "$120=50.000" in listing
    assert "$112=60.000" in listing
    assert "$130=50.000" in listing
    assert "$22=1" in listing and "$32=0" in listing
    assert listing[-1] == "ok"


def test_homing_disabled_and_soft_limits_need_homing() -> None:
    with running_controller(settings={22: 0, 20: 0}) as controller:
        term = Terminal(controller.port_path)
        try:
            assert term.status().group("state") == "Idle"  # no power-on lock
            assert term.command("$H") == ["error:5"]
            assert term.command("$20=1") == ["error:10"]
        finally:
            term.close()


def test_soft_limit_alarm_locks_until_reset(
    controller: VirtualGrblController, term: Terminal
) -> None:
    assert term.command("$H")[-1] == "ok"
    term.send("G0 X100")  # beyond the 75 mm travel
    assert term.read_lines() == ["ALARM:2", "[MSG:Reset to continue]"]
    term.send("$G")
    assert term.read_lines() == []  # GRBL ignores everything until reset
    term.port.write(b"\x18")
    assert term.read_lines() == [BANNER, UNLOCK_MESSAGE]
    assert controller.true_position() == Position(0.0, 0.0, 0.0)  # never moved


def test_reset_during_motion_raises_alarm_3() -> None:
    with running_controller(VirtualControllerConfig()) as controller:
        term = Terminal(controller.port_path)
        try:
            assert term.command("$X")[-1] == "ok"
            assert term.command("G0 X20") == ["ok"]
            time.sleep(0.2)
            term.port.write(b"\x18")
            assert term.read_lines() == ["ALARM:3", BANNER, UNLOCK_MESSAGE]
            stopped = controller.true_position().x_um
            assert 2000.0 < stopped < 22000.0
            time.sleep(0.2)
            assert controller.true_position().x_um == stopped
        finally:
            term.close()


def test_feed_hold_and_resume() -> None:
    with running_controller(VirtualControllerConfig(settle_s=0.0)) as controller:
        term = Terminal(controller.port_path)
        try:
            assert term.command("$X")[-1] == "ok"
            assert term.command("G0 X10") == ["ok"]
            time.sleep(0.3)
            term.port.write(b"!")
            term.wait_state("Hold:0")
            held_at = controller.true_position().x_um
            time.sleep(0.2)
            assert controller.true_position().x_um == held_at < 12000.0
            term.port.write(b"~")
            assert term.command("G4 P0") == ["ok"]
            assert term.status().group("state") == "Idle"
        finally:
            term.close()
        assert controller.true_position().x_um == pytest.approx(12000.0)


def test_jog_and_jog_cancel() -> None:
    with running_controller(VirtualControllerConfig(settle_s=0.0)) as controller:
        term = Terminal(controller.port_path)
        try:
            assert term.command("$X")[-1] == "ok"
            assert term.command("$J=G91 X20 F600") == ["ok"]
            assert term.status().group("state") == "Jog"
            assert term.command("G0 X1") == ["error:9"]  # g-code locked while jogging
            time.sleep(0.2)
            term.port.write(b"\x85")
            term.wait_state("Idle")
            x = float(term.status().group("x"))
            assert 0.0 < x < 20.0
            assert term.command("$J=G91 X1") == ["error:22"]  # jog needs F
            assert term.command("$J=G91 X1 M3 F100") == ["error:16"]
            assert term.command("$J=G90 X500 F100") == ["error:15"]  # beyond travel
            assert term.command("$J=G91 X1 F6000") == ["ok"]
            assert float(term.wait_state("Idle").group("x")) == pytest.approx(x + 1.0)
        finally:
            term.close()


def test_led_follows_grbl_laser_mode(controller: VirtualGrblController, term: Terminal) -> None:
    assert term.command("$H")[-1] == "ok"
    assert term.command("M3 S300") == ["ok"]
    assert controller.led_level == 300  # laser mode off: like a spindle, always on
    assert term.command("M5") == ["ok"]
    assert controller.led_level == 0
    assert term.command("$32=1") == ["ok"]
    assert term.command("G0 M3 S500") == ["ok"]
    assert controller.led_level == 0  # laser mode: G0 never lights the laser
    assert term.command("G1") == ["ok"]
    assert controller.led_level == 500
    assert term.command("$30=500") == ["ok"]
    assert controller.led_level == 1000  # S500 is now full scale
    term.port.write(b"\x18")
    term.read_lines()
    assert controller.led_level == 0  # a reset switches the spindle off
    assert controller.settings[32] == 1.0  # settings survive it (EEPROM)


def test_unplug_and_replug_keep_the_path(controller: VirtualGrblController) -> None:
    path = controller.port_path
    before = os.readlink(path)
    term = Terminal(path)
    assert term.command("$H")[-1] == "ok"
    assert term.command("G0 X3") == ["ok"]
    assert term.command("G4 P0") == ["ok"]
    controller.unplug()
    assert not os.path.lexists(path)
    with pytest.raises(serial.SerialException):
        term.port.write(b"?")
        term.port.read(10)
    term.close()
    with pytest.raises(serial.SerialException):
        serial.Serial(path)
    controller.replug()
    assert os.readlink(path).startswith("/dev/pts/")
    assert os.readlink(path) != before or os.path.exists(before)
    term = Terminal(path)
    try:
        term.port.write(b"\x18")
        assert term.read_lines() == [BANNER, UNLOCK_MESSAGE]  # it lost power: locked again
    finally:
        term.close()
    assert controller.true_position() == Position(3000.0, 0.0, 0.0)  # the stage did not move
    assert controller.machine_position() == Position(0.0, 0.0, 0.0)  # but the board forgot


def test_bytes_and_lines_received_are_recorded(
    controller: VirtualGrblController, term: Terminal
) -> None:
    assert controller.bytes_received == 0
    term.command("g0 x1 (lower case, spaces, comment)")
    assert controller.received_lines() == ["G0X1"]
    assert controller.bytes_received == len("g0 x1 (lower case, spaces, comment)\n")


def test_fast_timing_is_faster() -> None:
    assert FAST_TIMING.xy_max_speed_mm_s > VirtualControllerConfig().xy_max_speed_mm_s
