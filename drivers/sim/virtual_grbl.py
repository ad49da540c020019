"""A virtual GRBL 1.1 controller on a pseudo-terminal, for hardware-in-the-loop runs.

The real stage driver (or a person with a terminal) talks to it through pyserial
exactly as to a board: same bytes, same replies, same errors and alarms, with moves
that take the time a trapezoidal motion profile takes. It is at least as strict as
hardware: moves are locked after power-up until homed or unlocked, targets beyond the
travel raise ALARM:2, malformed g-code gets GRBL's ``error:N``.

Machine space is positive, from the home origin (0, 0, 0) to the travel ($130-$132),
like GRBL built with HOMING_FORCE_SET_ORIGIN; the power-on machine position is 0 while
the physical position is wherever the stage was left, until homing. Supported: G0 G1
G4 G17-G19 G20 G21 G40 G49 G53 G54-G59 G61 G80 G90 G91 G94, M0-M2 M3-M5 M7-M9 M30, F S
P T N words, ``$ $$ $# $G $I $N $X $H $J= $N=value``, and the real-time bytes
``? ! ~ Ctrl-X 0x85``; other GRBL commands (arcs, probing, offsets, check mode) are
answered error:20 or error:3.

Threads: a reader (the pty's, handling real-time bytes as GRBL's serial interrupt
does) and an executor (GRBL's main loop, which blocks in G4, $H and a full planner).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from drivers.sim.controller_config import VirtualControllerConfig
from drivers.sim.faults import FaultInjector
from drivers.sim.gcode_block import GcodeError, parse_block
from drivers.sim.motion import AxisKinematics, MotionQueue, Move, Vec3, line_profile
from drivers.sim.pty_port import PtyPort
from drivers.stage.base import Position
from drivers.stage.config import StageLimits

_log = logging.getLogger(__name__)

GRBL_VERSION = "1.1h"
BANNER = f"Grbl {GRBL_VERSION} ['$' for help]"
UNLOCK_MESSAGE = "[MSG:'$H'|'$X' to unlock]"
LINE_BUFFER_SIZE = 80
"""GRBL's line buffer: longer lines are refused with error:11."""
RX_BUFFER_SIZE = 128
"""GRBL's serial receive buffer: bytes beyond it are lost (never with send-and-wait)."""
PLANNER_BLOCKS = 15
"""GRBL's planner buffer: a motion line beyond it is answered only when one finishes."""

_CRITICAL_ALARMS = frozenset({1, 2})
_WCO_REPORT_EVERY = 10
_MAX_WAIT_S = 0.05
_LINES_KEPT = 10_000
_MM_PER_INCH = 25.4
_INT_SETTINGS = frozenset({0, 1, 2, 3, 4, 5, 6, 10, 13, 20, 21, 22, 23, 26, 32})
_DEFAULT_POWER_ON_MM: Vec3 = (2.0, 2.0, 0.5)


class _Aborted(Exception):
    """A reset or a power loss ended the running line: it gets no reply."""


@dataclass(frozen=True)
class _Modal:
    """The g-code parser state GRBL resets on power-up and soft reset."""

    motion: int = 0
    distance: int = 90
    units: int = 21
    plane: int = 17
    coord: int = 54
    feed_mm_min: float = 0.0
    spindle: int = 5
    speed: float = 0.0
    coolant: int = 9


def default_settings(timing: VirtualControllerConfig, limits: StageLimits) -> dict[int, float]:
    """GRBL settings of the virtual board: GRBL's defaults, timing and travel from config."""
    return {
        0: 10,
        1: 25,
        2: 0,
        3: 0,
        4: 0,
        5: 0,
        6: 0,
        10: 1,
        11: 0.010,
        12: 0.002,
        13: 0,
        20: 1,
        21: 1,
        22: 1,
        23: 0,
        24: timing.homing_feed_mm_s * 60.0,
        25: timing.homing_seek_mm_s * 60.0,
        26: 250,
        27: timing.homing_pulloff_mm,
        30: 1000,
        31: 0,
        32: 0,
        100: 1000,
        101: 1000,
        102: 1000,
        110: timing.xy_max_speed_mm_s * 60.0,
        111: timing.xy_max_speed_mm_s * 60.0,
        112: timing.z_max_speed_mm_s * 60.0,
        120: timing.xy_accel_mm_s2,
        121: timing.xy_accel_mm_s2,
        122: timing.z_accel_mm_s2,
        130: limits.x.max_um / 1000.0,
        131: limits.y.max_um / 1000.0,
        132: limits.z.max_um / 1000.0,
    }


class VirtualGrblController:
    """A GRBL 1.1 board on a pseudo-terminal, with a simulated XYZ stage and LED.

    Args:
        timing: speeds, accelerations, settling and homing (``simulator.controller``).
        limits: the machine travel is 0 to ``max_um`` of each axis (sets $130-$132).
        power_on_position: physical stage position at power-up (default 2, 2, 0.5 mm).
        settings: GRBL ``$N`` values replacing the defaults (e.g. ``{22: 0}``: no homing).
    """

    def __init__(
        self,
        timing: VirtualControllerConfig | None = None,
        limits: StageLimits | None = None,
        *,
        power_on_position: Position | None = None,
        settings: Mapping[int, float] | None = None,
    ) -> None:
        self._timing = timing or VirtualControllerConfig()
        self._limits = limits or StageLimits()
        self._settings = default_settings(self._timing, self._limits)
        self._settings.update(settings or {})
        if power_on_position is None:
            travel = self._travel()
            start = tuple(min(p, t) for p, t in zip(_DEFAULT_POWER_ON_MM, travel, strict=True))
        else:
            start = tuple(
                v / 1000.0
                for v in (power_on_position.x_um, power_on_position.y_um, power_on_position.z_um)
            )
        self._cond = threading.Condition(threading.RLock())
        self._motion = MotionQueue((start[0], start[1], start[2]))
        self._offset: Vec3 = (0.0, 0.0, 0.0)
        self._planned: Vec3 = (0.0, 0.0, 0.0)
        self._modal = _Modal()
        self._mode = "idle"  # idle | alarm | critical | homing
        self._gen = 0
        self._powered = False
        self._running = False
        self._rx = bytearray()
        self._line = bytearray()
        self._overflow = False
        self._comment = ""  # "", "(" or ";"
        self._reports = 0
        self._bytes_received = 0
        self._lines_received: deque[str] = deque(maxlen=_LINES_KEPT)
        self._timers: list[threading.Timer] = []
        self._port = PtyPort(self._on_bytes)
        self._faults = FaultInjector(
            alarm_now=self._alarm_now, write_raw=self._port.write, power_cycle=self._power_glitch
        )
        self._executor: threading.Thread | None = None

    # -- public API ----------------------------------------------------------------------

    def start(self) -> str:
        """Power the board on; returns the stable path to open (see ``port_path``)."""
        if self._executor is not None:
            return self.port_path
        path = self._port.open()
        self._running = True
        self._executor = threading.Thread(
            target=self._run, name="virtual-grbl-executor", daemon=True
        )
        self._executor.start()
        self._power_on()
        _log.info("virtual GRBL controller on %s", path)
        return path

    def stop(self) -> None:
        """Power off and remove the port. Safe to call twice."""
        with self._cond:
            self._running = False
            self._powered = False
            self._gen += 1
            timers, self._timers = self._timers, []
            self._cond.notify_all()
        for timer in timers:
            timer.cancel()
        self._port.close()
        if self._executor is not None:
            self._executor.join(timeout=5.0)
            self._executor = None

    def __enter__(self) -> VirtualGrblController:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port_path(self) -> str:
        """Stable path of the serial port (a symlink to the current /dev/pts/N)."""
        return self._port.path

    @property
    def faults(self) -> FaultInjector:
        """Fault injection: dropped, slow or noisy replies, forced errors, alarms, unplug."""
        return self._faults

    def true_position(self) -> Position:
        """Where the stage physically is now (um), interpolated during motion.

        This is what a camera sees; it differs from the reported machine position
        until the stage is homed.
        """
        with self._cond:
            x, y, z = self._motion.position(time.monotonic())
        return Position(x_um=x * 1000.0, y_um=y * 1000.0, z_um=z * 1000.0)

    def machine_position(self) -> Position:
        """What the controller reports as MPos (um)."""
        with self._cond:
            x, y, z = self._mpos(time.monotonic())
        return Position(x_um=x * 1000.0, y_um=y * 1000.0, z_um=z * 1000.0)

    @property
    def led_level(self) -> int:
        """LED (spindle PWM) output now, 0-1000 of full scale; 0 when off."""
        with self._cond:
            return self._led_level(time.monotonic())

    @property
    def state(self) -> str:
        """The state a status report would show now (Idle, Run, Hold:0, Alarm, Home...)."""
        with self._cond:
            return self._state_name(time.monotonic())

    @property
    def settings(self) -> dict[int, float]:
        with self._cond:
            return dict(self._settings)

    @property
    def bytes_received(self) -> int:
        """Every byte the client has sent since start (real-time bytes included)."""
        with self._cond:
            return self._bytes_received

    def received_lines(self) -> list[str]:
        """Lines received so far, as GRBL's line reader saw them (upper case, no spaces)."""
        with self._cond:
            return list(self._lines_received)

    def unplug(self) -> None:
        """Pull the USB cable: the board loses power, the port and its symlink vanish."""
        with self._cond:
            self._motion.halt(time.monotonic())
            self._powered = False
            self._gen += 1
            self._rx.clear()
            self._cond.notify_all()
        self._port.unplug()
        _log.info("virtual GRBL controller unplugged")

    def replug(self) -> None:
        """Plug it back: a new pty behind the same path, and a board that just powered up."""
        self._port.replug()
        self._power_on()
        _log.info("virtual GRBL controller plugged back in")

    # -- reader thread: GRBL's serial interrupt --------------------------------------------

    def _on_bytes(self, data: bytes) -> None:
        with self._cond:
            if not self._powered:
                return
            self._bytes_received += len(data)
            for byte in data:
                if byte == 0x3F:  # '?'
                    self._emit(self._status_report())
                elif byte == 0x21:  # '!'
                    self._feed_hold()
                elif byte == 0x7E:  # '~'
                    self._motion.resume(time.monotonic())
                elif byte == 0x18:
                    self._soft_reset()
                elif byte == 0x85:
                    self._jog_cancel()
                elif byte >= 0x80:
                    pass  # other extended real-time commands (overrides): not simulated
                elif len(self._rx) < RX_BUFFER_SIZE - 1:
                    self._rx.append(byte)
                else:
                    _log.warning("receive buffer full: byte dropped (sender overran GRBL)")
            self._cond.notify_all()

    def _feed_hold(self) -> None:
        now = time.monotonic()
        if self._mode != "idle":
            return
        if self._jogging(now):
            self._jog_cancel()
        else:
            self._motion.feed_hold(now)

    def _jog_cancel(self) -> None:
        now = time.monotonic()
        if self._jogging(now):
            rest = self._motion.cancel(now)
            self._planned = self._sub(rest, self._offset)  # GRBL re-syncs its parser here

    def _soft_reset(self) -> None:
        now = time.monotonic()
        alarm = None
        if self._mode == "homing":
            alarm = 6
        elif self._motion.moving(now) or (
            self._motion.held and not self._motion.hold_complete(now)
        ):
            alarm = 3
        self._restart(now, alarm=alarm)

    def _restart(self, now: float, *, alarm: int | None) -> None:
        """GRBL's re-initialisation after an abort: stop, forget, banner."""
        here = self._motion.halt(now)
        self._planned = self._sub(here, self._offset)
        self._gen += 1
        self._rx.clear()
        self._line.clear()
        self._overflow = False
        self._comment = ""
        self._modal = _Modal()
        self._reports = 0
        if alarm is not None:
            self._emit(f"ALARM:{alarm}")
            self._mode = "alarm"
        elif self._mode in ("alarm", "critical", "homing"):
            self._mode = "alarm"
        else:
            self._mode = "idle"
        self._emit(BANNER)
        if self._mode == "alarm":
            self._emit(UNLOCK_MESSAGE)
        self._cond.notify_all()

    def _alarm_now(self, code: int) -> None:
        with self._cond:
            if not self._powered:
                return
            now = time.monotonic()
            if code in _CRITICAL_ALARMS:
                here = self._motion.halt(now)
                self._planned = self._sub(here, self._offset)
                self._mode = "critical"
                self._gen += 1
                self._emit(f"ALARM:{code}")
                self._emit("[MSG:Reset to continue]")
                self._cond.notify_all()
            else:
                self._restart(now, alarm=code)

    # -- executor thread: GRBL's main loop --------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                taken = self._take_line()
                if taken is None:
                    if not self._running:
                        return
                    continue
                line, overflow, gen = taken
            try:
                self._execute(line, overflow, gen)
            except _Aborted:
                pass
            except Exception:
                _log.exception("virtual controller failed on %r", line)

    def _take_line(self) -> tuple[str, bool, int] | None:
        """The next complete line (GRBL's line reader), or None after a wait."""
        if not self._running:
            return None
        if not self._powered or self._mode == "critical" or not self._rx:
            self._cond.wait(0.5)
            return None
        end = next((i for i, b in enumerate(self._rx) if b in (0x0A, 0x0D)), -1)
        chunk = bytes(self._rx[: end + 1]) if end >= 0 else bytes(self._rx)
        del self._rx[: len(chunk)]
        for byte in chunk:
            if byte in (0x0A, 0x0D):
                line, overflow = self._line.decode("ascii", "replace"), self._overflow
                self._line.clear()
                self._overflow = False
                self._comment = ""
                self._lines_received.append(line)
                return line, overflow, self._gen
            self._assemble(byte)
        return None

    def _assemble(self, byte: int) -> None:
        if self._comment == "(":
            if byte == 0x29:  # ')'
                self._comment = ""
            return
        if self._comment == ";" or byte <= 0x20 or byte == 0x2F:  # '/': block delete, ignored
            return
        if byte == 0x28:  # '('
            self._comment = "("
        elif byte == 0x3B:  # ';'
            self._comment = ";"
        elif len(self._line) >= LINE_BUFFER_SIZE - 1:
            self._overflow = True
        else:
            self._line.append(byte - 32 if 0x61 <= byte <= 0x7A else byte)

    def _execute(self, line: str, overflow: bool, gen: int) -> None:
        forced = self._faults.take_forced_error()
        if forced is not None:
            self._reply(forced, gen)
            return
        if overflow:
            status = 11
        elif line == "":
            status = 0
        elif line.startswith("$"):
            status = self._system_command(line, gen)
        else:
            with self._cond:
                locked = self._mode != "idle" or self._jogging(time.monotonic())
            status = 9 if locked else self._gcode(line, gen)
        self._reply(status, gen)

    def _reply(self, status: int, gen: int) -> None:
        fault = self._faults.take_reply_fault()
        if fault is not None and fault.delay_s > 0:
            self._wait(lambda now: False, gen, timeout_s=fault.delay_s)
        with self._cond:
            self._check_gen(gen)
            if fault is not None and fault.garbage:
                self._port.write(fault.garbage)
            if fault is not None and fault.drop:
                _log.debug("fault: dropped the reply to the last line")
                return
            self._emit("ok" if status == 0 else f"error:{status}")

    # -- '$' commands ------------------------------------------------------------------------

    def _system_command(self, line: str, gen: int) -> int:
        with self._cond:
            self._check_gen(gen)
            now = time.monotonic()
            state = self._state_name(now)
            if line == "$":
                self._emit(
                    "[HLP:$$ $# $G $I $N $x=val $Nx=line $J=line $SLP $C $X $H ~ ! ? ctrl-x]"
                )
                return 0
            if line.startswith("$J"):
                if state not in ("Idle", "Jog"):
                    return 8
                if not line.startswith("$J="):
                    return 3
                return self._jog(line[3:], now)
            if line == "$$":
                if state.startswith(("Run", "Hold")):
                    return 8
                for number, value in sorted(self._settings.items()):
                    self._emit(f"${number}={self._format_setting(number, value)}")
                return 0
            if line == "$G":
                m = self._modal
                self._emit(
                    f"[GC:G{m.motion} G{m.coord} G{m.plane} G{m.units} G{m.distance} G94 "
                    f"M{m.spindle} M{m.coolant} T0 F{m.feed_mm_min:g} S{m.speed:g}]"
                )
                return 0
            if line == "$X":
                if self._mode == "alarm":
                    self._emit("[MSG:Caution: Unlocked]")
                    self._mode = "idle"
                return 0
            if line in ("$C", "$SLP") or line.startswith("$RST"):
                return 3
            # The rest needs IDLE or ALARM.
            if state not in ("Idle", "Alarm"):
                return 8
            if line == "$#":
                for name in ("G54", "G55", "G56", "G57", "G58", "G59", "G28", "G30", "G92"):
                    self._emit(f"[{name}:0.000,0.000,0.000]")
                self._emit("[TLO:0.000]")
                self._emit("[PRB:0.000,0.000,0.000:0]")
                return 0
            if line == "$I":
                self._emit(f"[VER:{GRBL_VERSION}.20190830:virtual]")
                self._emit("[OPT:V,15,128]")
                return 0
            if line == "$N":
                self._emit("$N0=")
                self._emit("$N1=")
                return 0
            if line != "$H":
                return self._store_setting(line)
        return self._home(gen)

    def _store_setting(self, line: str) -> int:
        number, eq, value = line[1:].partition("=")
        if not number.isdigit():
            return 3 if not number or not eq else 2
        if not eq:
            return 3
        try:
            v = float(value)
        except ValueError:
            return 2
        n = int(number)
        if n not in self._settings:
            return 3
        if v < 0:
            return 4
        if n == 0 and v < 3:
            return 6
        if n == 20 and v and not self._settings[22]:
            return 10
        self._settings[n] = float(int(v)) if n in _INT_SETTINGS else v
        if n == 22 and not v:
            self._settings[20] = 0.0  # GRBL drops soft limits along with homing
        return 0

    @staticmethod
    def _format_setting(number: int, value: float) -> str:
        return str(int(value)) if number in _INT_SETTINGS else f"{value:.3f}"

    # -- homing ------------------------------------------------------------------------------

    def _home(self, gen: int) -> int:
        with self._cond:
            if not self._settings[22]:
                return 5
            now = time.monotonic()
            failure = self._faults.take_homing_alarm()
            self._mode = "homing"
            kin = self._kinematics()
            seek = self._settings[25] / 60.0
            locate = self._settings[24] / 60.0
            s = self._settings[27]
            x, y, z = self._motion.position(now)
            cycles: list[tuple[Vec3, Vec3]] = [((x, y, -s), (x, y, 0.0))]  # Z first,
            cycles.append(((-s, -s, 0.0), (0.0, 0.0, 0.0)))  # then X and Y together
            here: Vec3 = (x, y, z)
            for switch, origin in cycles:
                for target, speed in ((switch, seek), (origin, seek), (switch, locate)):
                    here = self._plan_home_move(here, target, speed, kin, now)
                    if failure is not None:
                        break
                if failure is not None:
                    break
                here = self._plan_home_move(here, origin, seek, kin, now)
        self._wait(lambda t: self._motion.pending(t) == 0, gen)
        with self._cond:
            self._check_gen(gen)
            now = time.monotonic()
            if failure is not None:
                self._restart(now, alarm=failure)
                raise _Aborted
            self._motion.set_position((0.0, 0.0, 0.0))
            self._offset = (0.0, 0.0, 0.0)
            self._planned = (0.0, 0.0, 0.0)
            self._mode = "idle"
        # Settle once at the end, like after any move.
        self._wait(lambda t: False, gen, timeout_s=self._timing.settle_s)
        return 0

    def _plan_home_move(
        self, start: Vec3, end: Vec3, speed: float, kin: AxisKinematics, now: float
    ) -> Vec3:
        profile = line_profile(start, end, kin, speed)
        if profile is not None:
            self._motion.enqueue(Move(start, end, profile, "home", 0.0, speed * 60.0), now)
        return end

    # -- g-code ------------------------------------------------------------------------------

    def _gcode(self, line: str, gen: int) -> int:
        try:
            block = parse_block(line)
        except GcodeError as e:
            return e.code
        with self._cond:
            self._check_gen(gen)
            modal = self._modal
            words = dict(block.words)
            units = block.g.get("units", modal.units)
            scale = _MM_PER_INCH if units == 20 else 1.0
            motion = block.g.get("motion", modal.motion)
            non_modal = block.g.get("non_modal")
            axes = {k: v * scale for k, v in block.axes.items()}
            dwell = non_modal == 4
            if dwell and "P" not in words:
                return 28
            if axes and motion == 80:
                return 31
            if non_modal == 53 and motion not in (0, 1):
                return 30
            if "P" in words and not dwell:
                return 36
            if any(k in words for k in "IJKLR"):
                return 36
            feed = words["F"] * scale if "F" in words else modal.feed_mm_min
            if axes and motion == 1 and feed <= 0:
                return 22
            spindle = block.m.get("spindle", modal.spindle)
            speed = words.get("S", modal.speed)
            new_modal = replace(
                modal,
                motion=motion,
                units=units,
                distance=block.g.get("distance", modal.distance),
                plane=block.g.get("plane", modal.plane),
                coord=block.g.get("coord", modal.coord),
                feed_mm_min=feed,
                coolant=block.m.get("coolant", modal.coolant),
            )
            spindle_change = (spindle, speed) != (modal.spindle, modal.speed)
            self._modal = new_modal
        if spindle_change:
            # GRBL stops to change the spindle (laser mode too, when no motion is in the block).
            self._wait(lambda t: self._motion.pending(t) == 0, gen)
            with self._cond:
                self._check_gen(gen)
                self._modal = replace(self._modal, spindle=spindle, speed=speed)
        if dwell:
            self._wait(lambda t: self._motion.pending(t) == 0, gen)
            self._wait(lambda t: False, gen, timeout_s=words["P"])
        if axes:
            status = self._plan_line(axes, motion, feed, non_modal == 53, gen)
            if status:
                return status
        stop = block.m.get("stopping")
        if stop is not None:
            self._wait(lambda t: self._motion.pending(t) == 0, gen)
            with self._cond:
                self._check_gen(gen)
                if stop in (0, 1):
                    self._motion.feed_hold(time.monotonic())
                else:
                    self._modal = replace(self._modal, motion=1, distance=90, spindle=5, coolant=9)
                    self._emit("[MSG:Pgm End]")
        return 0

    def _plan_line(
        self, axes: dict[str, float], motion: int, feed: float, machine: bool, gen: int
    ) -> int:
        self._wait(lambda t: self._motion.pending(t) < PLANNER_BLOCKS, gen)
        with self._cond:
            self._check_gen(gen)
            relative = self._modal.distance == 91 and not machine
            target = list(self._planned)
            for i, axis in enumerate("XYZ"):
                if axis in axes:
                    value = axes[axis] + (target[i] if relative else 0.0)
                    steps = self._settings[100 + i]
                    target[i] = round(value * steps) / steps if steps > 0 else value
            end: Vec3 = (target[0], target[1], target[2])
            if self._settings[20] and not self._within_travel(end):
                critical = True
            else:
                critical = False
                start_true = self._add(self._planned, self._offset)
                end_true = self._add(end, self._offset)
                speed = None if motion == 0 else feed / 60.0
                profile = line_profile(start_true, end_true, self._kinematics(), speed)
                self._planned = end
                if profile is not None:
                    kind = "rapid" if motion == 0 else "line"
                    rate = profile.max_speed * 60.0
                    move = Move(start_true, end_true, profile, kind, self._timing.settle_s, rate)
                    self._motion.enqueue(move, time.monotonic())
                    self._arm_unplug_fault()
                return 0
        if critical:
            self._soft_limit_alarm(gen)
        return 0

    def _soft_limit_alarm(self, gen: int) -> None:
        """ALARM:2 as GRBL raises it: finish with a controlled stop, then lock until reset."""
        with self._cond:
            self._motion.feed_hold(time.monotonic())
        self._wait(lambda t: self._motion.active(t) is None, gen)
        self._alarm_now(2)
        raise _Aborted

    def _jog(self, text: str, now: float) -> int:
        try:
            block = parse_block(text)
        except GcodeError as e:
            return e.code
        allowed_g = {"units", "distance", "non_modal"}
        if block.m or set(block.g) - allowed_g or block.g.get("non_modal", 53) != 53:
            return 16
        if set(block.words) - set("XYZFN"):
            return 16
        if "F" not in block.words:
            return 22
        if not block.axes:
            return 26
        scale = _MM_PER_INCH if block.g.get("units", self._modal.units) == 20 else 1.0
        relative = block.g.get("distance", self._modal.distance) == 91
        target = list(self._planned)
        for i, axis in enumerate("XYZ"):
            if axis in block.axes:
                target[i] = block.axes[axis] * scale + (target[i] if relative else 0.0)
        end: Vec3 = (target[0], target[1], target[2])
        if self._settings[20] and not self._within_travel(end):
            return 15
        start_true = self._add(self._planned, self._offset)
        end_true = self._add(end, self._offset)
        feed = block.words["F"] * scale
        profile = line_profile(start_true, end_true, self._kinematics(), feed / 60.0)
        self._planned = end
        if profile is not None:
            self._motion.enqueue(Move(start_true, end_true, profile, "jog", 0.0, feed), now)
        return 0

    def _arm_unplug_fault(self) -> None:
        delay = self._faults.take_unplug_delay()
        if delay is None:
            return
        timer = threading.Timer(delay, self._fault_unplug)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def _fault_unplug(self) -> None:
        if self._running and self._port.plugged:
            _log.info("fault: port closed mid-move")
            self.unplug()

    # -- state -------------------------------------------------------------------------------

    def _power_on(self) -> None:
        with self._cond:
            here = self._motion.halt(time.monotonic())
            self._offset = here  # machine position 0 wherever the stage stands
            self._planned = (0.0, 0.0, 0.0)
            self._mode = "alarm" if self._settings[22] else "idle"
            self._powered = True
            self._restart(time.monotonic(), alarm=None)

    def _power_glitch(self) -> None:
        with self._cond:
            if self._powered:
                self._gen += 1
                self._power_on()

    def _status_report(self) -> str:
        now = time.monotonic()
        state = self._state_name(now)
        mpos = self._mpos(now)
        mask = int(self._settings[10])
        if mask & 1:
            fields = [state, "MPos:" + self._format_vec(mpos)]
        else:
            fields = [state, "WPos:" + self._format_vec(mpos)]
        if mask & 2:
            free_blocks = PLANNER_BLOCKS - self._motion.pending(now)
            fields.append(f"Bf:{free_blocks},{RX_BUFFER_SIZE - 1 - len(self._rx)}")
        move = self._motion.active(now)
        rate = move.profile.speed_at(now - move.t0) * 60.0 if move is not None else 0.0
        speed = self._modal.speed if self._modal.spindle != 5 else 0.0
        fields.append(f"FS:{rate:.0f},{speed:.0f}")
        if self._reports == 0:
            fields.append("WCO:0.000,0.000,0.000")
        elif self._reports == 1:
            fields.append("Ov:100,100,100")
        self._reports = (self._reports + 1) % _WCO_REPORT_EVERY
        return "<" + "|".join(fields) + ">"

    def _state_name(self, now: float) -> str:
        if self._mode == "homing":
            return "Home"
        if self._mode in ("alarm", "critical"):
            return "Alarm"
        if self._motion.held:
            return "Hold:0" if self._motion.hold_complete(now) else "Hold:1"
        if self._motion.busy(now):
            return "Jog" if self._jogging(now) else "Run"
        return "Idle"

    def _jogging(self, now: float) -> bool:
        move = self._motion.active(now)
        return move is not None and move.kind == "jog"

    def _led_level(self, now: float) -> int:
        m = self._modal
        if not self._powered or m.spindle == 5 or m.speed <= 0:
            return 0
        if self._settings[32]:  # laser mode: lit only in G1-type motion modes
            move = self._motion.active(now)
            moving = move is not None and now < move.motion_end
            if m.spindle == 4 and not moving:
                return 0  # M4 dynamic power: off at rest
            if moving and move is not None and move.kind != "line":
                return 0  # rapids, jogs and homing run dark
            if not moving and m.motion not in (1, 2, 3):
                return 0
            if self._motion.held:
                return 0
        full = self._settings[30] or 1000.0
        return round(1000.0 * min(m.speed, full) / full)

    def _mpos(self, now: float) -> Vec3:
        return self._sub(self._motion.position(now), self._offset)

    def _kinematics(self) -> AxisKinematics:
        s = self._settings
        return AxisKinematics(
            max_speed=(s[110] / 60.0, s[111] / 60.0, s[112] / 60.0),
            accel=(s[120], s[121], s[122]),
        )

    def _travel(self) -> Vec3:
        s = self._settings
        return (s[130], s[131], s[132])

    def _within_travel(self, mpos: Vec3) -> bool:
        return all(-1e-9 <= p <= t + 1e-9 for p, t in zip(mpos, self._travel(), strict=True))

    def _wait(
        self, done: Callable[[float], bool], gen: int, *, timeout_s: float | None = None
    ) -> None:
        """Block the executor until ``done(now)``, the timeout, or an abort (raises)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while True:
                self._check_gen(gen)
                now = time.monotonic()
                if done(now) or (deadline is not None and now >= deadline):
                    return
                wake = self._motion.next_event(now)
                limits = [_MAX_WAIT_S]
                if wake is not None:
                    limits.append(wake - now)
                if deadline is not None:
                    limits.append(deadline - now)
                self._cond.wait(max(0.0005, min(limits)))

    def _check_gen(self, gen: int) -> None:
        if gen != self._gen or not self._powered or not self._running:
            raise _Aborted

    def _emit(self, text: str) -> None:
        self._port.write(text.encode("ascii") + b"\r\n")

    @staticmethod
    def _format_vec(v: Vec3) -> str:
        return ",".join(f"{c:.3f}" for c in v)

    @staticmethod
    def _add(a: Vec3, b: Vec3) -> Vec3:
        return (a[0] + b[0], a[1] + b[1], a[2] + b[2])

    @staticmethod
    def _sub(a: Vec3, b: Vec3) -> Vec3:
        return (a[0] - b[0], a[1] - b[1], a[2] - b[2])
