"""The stage driver for a GRBL 1.1 controller (send a line, wait for its ``ok``).

No character-counting streaming: the agent moves a few times per second at most, and
one line in flight keeps every reply attributable to its command. Positions are mm on
the wire and micrometres in the API. The driver owns no port: it is handed a
``ByteLink`` (``drivers.serial_link``), so the same code talks to a board, to the
virtual controller's pseudo-terminal, or to anything else that moves bytes.

Thread model: one operation at a time (an internal lock); ``stop()`` may be called
from another thread and interrupts a running wait with ``StageStoppedError``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Mapping
from typing import NoReturn

from drivers.errors import DeviceConnectionError, DeviceTimeoutError, ProtocolError
from drivers.serial_link import ByteLink
from drivers.stage.base import Position
from drivers.stage.config import AxisRange, StageConfig
from drivers.stage.errors import (
    ControllerResetError,
    StageLimitError,
    StageNotHomedError,
    StageRequestError,
    StageStoppedError,
)
from drivers.stage.grbl_codes import CRITICAL_ALARMS, SETTING_NAMES, GrblAlarm, GrblError
from drivers.stage.grbl_messages import (
    AlarmPush,
    Banner,
    ErrorReply,
    Feedback,
    Message,
    Ok,
    SettingLine,
    StatusReport,
    Unknown,
    Vec3,
    clean,
    parse_line,
)

_log = logging.getLogger(__name__)

SOFT_RESET = b"\x18"
FEED_HOLD = b"!"
CYCLE_START = b"~"
STATUS_QUERY = b"?"
JOG_CANCEL = b"\x85"

_AXES = ("X", "Y", "Z")
_MM_PER_INCH = 25.4
_CANCEL_SLICE_S = 0.1
"""A wait checks for stop() at least this often (s)."""
_STATUS_POLL_S = 0.05
"""Pause between two status queries while waiting for a state (s)."""
_DRAIN_QUIET_S = 0.1
"""Resynchronising first drops stale lines until the link is quiet this long (s)."""
_LIMIT_TOLERANCE_UM = 1e-6
_NOISE_WARNINGS = 5
"""Consecutive noise lines logged as warnings; the rest of a burst only at debug level."""
_NOISE_LIMIT_AT_CONNECT = 50
"""Noise lines tolerated while waiting for the banner before deciding it is not GRBL."""
_PLANNER_SLOTS = 15
"""GRBL's planner buffer; past it, a move's 'ok' waits until a queued move finishes."""


class GrblStage:
    """A motorized XYZ stage behind a GRBL 1.1 controller.

    Args:
        link: the byte link to the controller (not opened yet; ``connect()`` opens it).
        config: the ``stage`` config section (timeouts, feeds, soft limits, reconnects).
    """

    def __init__(self, link: ByteLink, config: StageConfig) -> None:
        self._link = link
        self._config = config
        self._io = threading.RLock()
        self._cancel = threading.Event()
        self._banner: Banner | None = None
        self._settings: dict[int, float] = {}
        self._needs_homing = True
        self._homing_reason = "not connected yet"
        self._ever_connected = False
        self._target_mm: Vec3 | None = None
        self._wco_mm: Vec3 | None = None
        self._desynced = False
        self._led_level = 0
        self._moves_in_flight = 0
        self._noise_run = 0

    # -- public API (drivers.stage.base.Stage) ---------------------------------------

    @property
    def port(self) -> str:
        return self._link.name

    @property
    def firmware_version(self) -> str | None:
        """GRBL version from the last banner (e.g. ``1.1h``); None before connect()."""
        return self._banner.version if self._banner else None

    @property
    def settings(self) -> Mapping[int, float]:
        """The controller's ``$N`` settings as read at connect (and changed by the driver)."""
        return dict(self._settings)

    @property
    def homed(self) -> bool:
        """Whether moves are allowed: homed since the last power-up, reset or stop()."""
        return not self._needs_homing

    @property
    def led_level(self) -> int:
        """The LED level last set (0 after a reset, which switches the spindle output off)."""
        return self._led_level

    def connect(self) -> None:
        with self._io:
            self._connect_once()

    def reconnect(self) -> None:
        """Reopen the same port after the link was lost (USB unplugged and back).

        Tries ``stage.reconnect_attempts`` times, ``stage.reconnect_interval_s`` apart.
        The stage must be homed again afterwards: the board may have lost power.
        """
        attempts = self._config.reconnect_attempts
        interval = self._config.reconnect_interval_s
        with self._io:
            last: DeviceConnectionError | DeviceTimeoutError | None = None
            for attempt in range(1, attempts + 1):
                self._link.close()
                try:
                    self._connect_once()
                except (DeviceConnectionError, DeviceTimeoutError) as e:
                    last = e
                    _log.warning("reconnect attempt %d/%d failed: %s", attempt, attempts, e)
                else:
                    _log.info("reconnected to the stage controller on %s", self.port)
                    return
                if attempt < attempts and self._cancel.wait(interval):
                    raise StageStoppedError("reconnecting to the stage was stopped")
            raise DeviceConnectionError(
                f"could not reconnect to the stage controller on {self.port} after "
                f"{attempts} attempts {interval:g} s apart: {last}"
            ) from last

    def home(self) -> None:
        """Run ``$H`` (answered only when homing is over, within stage.homing_timeout_s)."""
        with self._io:
            self._command("$H", self._config.homing_timeout_s)
            report = self._query_status()
            self._target_mm = self._machine_mm(report)
            self._needs_homing = False
            self._homing_reason = ""
            _log.info("stage homed at %s", self._format_um(self._target_mm))

    def unlock(self) -> None:
        """Clear an alarm without homing (``$X``); the position is then only trusted as is."""
        with self._io:
            self._command("$X", self._config.command_timeout_s)
            self._needs_homing = False
            self._homing_reason = ""
            self._target_mm = None

    def move_to(
        self,
        x_um: float | None = None,
        y_um: float | None = None,
        z_um: float | None = None,
        *,
        wait: bool = True,
    ) -> None:
        requested = dict(zip(_AXES, (x_um, y_um, z_um), strict=True))
        self._check_limits(requested)
        with self._io:
            if any(v is not None for v in requested.values()):
                self._require_homed()
                start = self._planned_target()
                x, y, z = (
                    start[i] if v is None else v / 1000.0 for i, v in enumerate(requested.values())
                )
                self._send_move(start, (x, y, z), requested)
            if wait:
                self.wait_idle()

    def move_by(
        self, dx_um: float = 0.0, dy_um: float = 0.0, dz_um: float = 0.0, *, wait: bool = True
    ) -> None:
        deltas = {axis: float(d) for axis, d in zip(_AXES, (dx_um, dy_um, dz_um), strict=True)}
        for axis, d in deltas.items():
            if not math.isfinite(d):
                raise StageRequestError(f"move refused: {axis} step {d} um is not a number")
        with self._io:
            if any(d != 0.0 for d in deltas.values()):
                self._require_homed()
                start = self._planned_target()
                requested: dict[str, float | None] = {
                    a: (start[i] * 1000.0 + deltas[a]) if deltas[a] != 0.0 else None
                    for i, a in enumerate(_AXES)
                }
                self._check_limits(requested)
                x, y, z = (start[i] + deltas[a] / 1000.0 for i, a in enumerate(_AXES))
                self._send_move(start, (x, y, z), requested)
            if wait:
                self.wait_idle()

    def wait_idle(self) -> Position:
        with self._io:
            try:
                # G4 P0 is answered only when the planner is empty and motion has ended.
                self._command("G4 P0", self._config.motion_timeout_s)
            except GrblError as e:
                if e.code != 9:  # 9: g-code locked (alarm or jog); nothing of ours is queued
                    raise
            deadline = time.monotonic() + self._config.motion_timeout_s
            while True:
                report = self._query_status()
                if report.state in ("Idle", "Alarm"):
                    self._moves_in_flight = 0
                    return self._to_position(self._machine_mm(report))
                if report.state in ("Hold", "Door", "Sleep"):
                    raise StageStoppedError(
                        f"stage controller on {self.port} is in {report.state} state "
                        "(feed hold, safety door or sleep): the motion will not finish on its own"
                    )
                if time.monotonic() > deadline:
                    raise DeviceTimeoutError(
                        f"stage still in {report.state} state after "
                        f"{self._config.motion_timeout_s:g} s (stage.motion_timeout_s)"
                    )
                self._pause(_STATUS_POLL_S, "waiting for the stage to stop")

    def position(self) -> Position:
        with self._io:
            return self._to_position(self._machine_mm(self._query_status()))

    def status(self) -> StatusReport:
        """The controller's raw status report (controller units, usually mm)."""
        with self._io:
            return self._query_status()

    def set_led(self, level: int) -> None:
        """LED brightness 0-1000 on the spindle PWM (GRBL laser mode, ``M3 S``/``M5``).

        Laser mode (``$32=1``) is switched on once if it is off, so brightness changes
        never pause motion; in laser mode the output is live only in G1 motion mode,
        which is why the driver moves with G1 and switches the LED on with ``G1 M3``.
        GRBL refuses g-code during an alarm, so the LED can be lit only once homed.
        """
        if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 1000:
            raise StageRequestError(f"LED level must be an integer 0-1000, got {level!r}")
        with self._io:
            if self._settings.get(32) != 1.0:
                _log.warning("enabling GRBL laser mode ($32=1) for the LED on %s", self.port)
                self._command("$32=1", self._config.command_timeout_s)
                self._settings[32] = 1.0
            if level == 0:
                self._command("M5", self._config.command_timeout_s)
            else:
                full_scale = self._settings.get(30, 1000.0) or 1000.0
                self._command(
                    f"G1 M3 S{_num(level * full_scale / 1000.0)}", self._config.command_timeout_s
                )
            self._led_level = level

    def stop(self) -> None:
        self._cancel.set()
        try:
            self._link.write(FEED_HOLD)
        except DeviceConnectionError:
            self._cancel.clear()
            self._lost_link()
            raise
        with self._io:
            self._cancel.clear()
            try:
                self._wait_hold_complete()
                self._soft_reset(self._config.connect_timeout_s)
            finally:
                self._needs_homing = True
                self._homing_reason = "stopped with stop()"
                self._target_mm = None

    def close(self) -> None:
        self._cancel.set()
        got = self._io.acquire(timeout=self._config.command_timeout_s)
        try:
            self._link.close()
        finally:
            self._cancel.clear()
            if got:
                self._io.release()

    def __enter__(self) -> GrblStage:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- connection ------------------------------------------------------------------

    def _connect_once(self) -> None:
        self._link.open()
        try:
            self._link.reset_input()
            self._banner = self._soft_reset(self._config.connect_timeout_s, connecting=True)
            if not self._banner.is_v1_1:
                raise ProtocolError(
                    f"the controller on {self.port} runs Grbl {self._banner.version}; "
                    "this driver needs Grbl 1.1"
                )
            self._settings = self._read_settings()
            report = self._query_status()
        except BaseException:
            self._link.close()
            raise
        self._check_travel()
        if report.state == "Alarm":
            self._needs_homing = True
            self._homing_reason = "the controller is in alarm (power-up or reset)"
        elif not self._ever_connected:
            # A controller found idle kept its position (e.g. the agent restarted); after a
            # lost link the driver stays cautious and asks for homing anyway.
            self._needs_homing = False
            self._homing_reason = ""
        self._ever_connected = True
        self._target_mm = None
        _log.info(
            "connected to Grbl %s on %s (state %s)", self._banner.version, self.port, report.state
        )

    def _read_settings(self) -> dict[int, float]:
        settings = {}
        for message in self._command("$$", self._config.command_timeout_s):
            if isinstance(message, SettingLine):
                settings[message.number] = message.value
        return settings

    def _check_travel(self) -> None:
        """Warn when the soft limits exceed the controller's travel ($130-$132)."""
        ranges: tuple[AxisRange, ...] = (
            self._config.limits.x,
            self._config.limits.y,
            self._config.limits.z,
        )
        for i, (axis, limits) in enumerate(zip(_AXES, ranges, strict=True)):
            travel = self._settings.get(130 + i)
            span_mm = (limits.max_um - limits.min_um) / 1000.0
            if travel is not None and span_mm > travel + 1e-9:
                _log.warning(
                    "stage.limits.%s spans %.3f mm but the controller's %s is %.3f mm: "
                    "moves near the end will raise a soft-limit alarm",
                    axis.lower(),
                    span_mm,
                    SETTING_NAMES[130 + i],
                    travel,
                )

    def _soft_reset(self, timeout_s: float, *, connecting: bool = False) -> Banner:
        """Send Ctrl-X and wait for the banner; the reset clears GRBL's input and planner."""
        self._link.write(SOFT_RESET)
        deadline = time.monotonic() + timeout_s
        others: list[str] = []
        noise_limit = _NOISE_LIMIT_AT_CONNECT if connecting else None
        while True:
            message = self._next_message(
                deadline, timeout_s, "the banner after a soft reset", noise_limit=noise_limit
            )
            if isinstance(message, Banner):
                self._desynced = False
                self._wco_mm = None
                self._led_level = 0
                self._moves_in_flight = 0
                return message
            if isinstance(message, AlarmPush):
                # ALARM:3/6 is expected when the reset interrupts motion or homing.
                _log.warning("reset interrupted motion: %s", GrblAlarm(message.code))
                self._needs_homing = True
                self._homing_reason = f"ALARM:{message.code} at reset"
            elif not isinstance(message, StatusReport):
                others.append(_describe(message))
            if connecting and len(others) > _NOISE_LIMIT_AT_CONNECT:
                raise ProtocolError(
                    f"the device on {self.port} does not answer like a GRBL controller "
                    f"(no banner after a soft reset; it sent e.g. {others[:3]})"
                )

    # -- commands --------------------------------------------------------------------

    def _send_move(self, start: Vec3, target: Vec3, requested: Mapping[str, float | None]) -> None:
        words = " ".join(
            f"{a}{_num(target[i])}" for i, a in enumerate(_AXES) if requested[a] is not None
        )
        feed = self._feed_for(start, target)
        # The 'ok' is immediate while the planner has room; only a long run of moves
        # sent with wait=False can make it wait for a move to finish.
        full = self._moves_in_flight >= _PLANNER_SLOTS - 1
        timeout_s = self._config.motion_timeout_s if full else self._config.command_timeout_s
        self._command(f"G90 G1 {words} F{_num(feed)}", timeout_s)
        self._target_mm = target
        self._moves_in_flight += 1

    def _feed_for(self, start: Vec3, target: Vec3) -> float:
        """Feed (mm/min along the path) that keeps XY and Z within their configured feeds."""
        dx, dy, dz = (t - s for t, s in zip(target, start, strict=True))
        xy = math.hypot(dx, dy)
        length = math.hypot(xy, dz)
        feed = self._config.xy_feed_mm_min
        if length == 0.0:
            return feed
        limits = []
        if xy > 0.0:
            limits.append(self._config.xy_feed_mm_min * length / xy)
        if dz != 0.0:
            limits.append(self._config.z_feed_mm_min * length / abs(dz))
        return min(limits)

    def _command(self, line: str, timeout_s: float) -> list[Message]:
        """Send one line and wait for its ``ok``; return the data lines that came before it."""
        if self._desynced:
            self._resync()
        self._check_cancel(line)
        _log.debug("-> %s", line)
        self._write(line.encode("ascii") + b"\n")
        deadline = time.monotonic() + timeout_s
        data: list[Message] = []
        while True:
            message = self._next_message(deadline, timeout_s, repr(line))
            if isinstance(message, Ok):
                return data
            if isinstance(message, ErrorReply):
                raise GrblError(message.code, line, self.port)
            if isinstance(message, AlarmPush):
                self._on_alarm(message.code, f"while running {line!r}")
            if isinstance(message, Banner):
                self._on_unexpected_reset(line)
            if isinstance(message, Feedback | SettingLine):
                data.append(message)

    def _query_status(self, *, resync: bool = True) -> StatusReport:
        """Ask for a status report ('?' is real-time: answered even mid-command).

        ``resync=False`` skips resynchronising, for when GRBL's line processing is
        blocked (a feed hold stalls a pending G4) and only real-time bytes get through.
        """
        if resync and self._desynced:
            self._resync()
        self._check_cancel("a status report")
        self._write(STATUS_QUERY)
        timeout_s = self._config.command_timeout_s
        deadline = time.monotonic() + timeout_s
        while True:
            message = self._next_message(deadline, timeout_s, "a status report ('?')")
            if isinstance(message, StatusReport):
                if message.wco is not None:
                    self._wco_mm = self._to_mm(message.wco)
                return message
            if isinstance(message, AlarmPush):
                self._on_alarm(message.code, "reported by the controller")
            if isinstance(message, Banner):
                self._on_unexpected_reset("a status query")
            if isinstance(message, Ok | ErrorReply):
                _log.warning("ignoring a stray %s from %s", _describe(message), self.port)

    def _resync(self) -> None:
        """Get back in step after a timeout or an interruption.

        A late reply to an abandoned line would otherwise be taken for the reply to the
        next one. Stale lines are dropped, then ``$G`` is sent: its ``[GC:...]`` line
        marks the first ``ok`` that really belongs to a line sent from now on.
        """
        _log.info("resynchronising with the stage controller on %s", self.port)
        timeout_s = self._config.command_timeout_s
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            raw = self._readline(_DRAIN_QUIET_S, "stale replies")
            if raw is None:
                break
            text = clean(raw)
            message = parse_line(text) if text else None
            if isinstance(message, Banner):
                self._needs_homing = True
                self._homing_reason = "the controller reset"
            elif isinstance(message, AlarmPush):
                self._desynced = False
                self._on_alarm(message.code, "reported while resynchronising")
            elif text:
                _log.debug("dropping stale line %r", text)
        self._write(b"$G\n")
        seen_gc = False
        while True:
            message = self._next_message(
                deadline, timeout_s, "'$G' (resynchronising after an unanswered line)"
            )
            if isinstance(message, Feedback) and message.kind == "GC":
                seen_gc = True
            elif isinstance(message, Ok) and seen_gc:
                self._desynced = False
                return
            elif isinstance(message, AlarmPush):
                self._on_alarm(message.code, "reported while resynchronising")
            elif isinstance(message, Banner):
                self._needs_homing = True
                self._homing_reason = "the controller reset"
                self._desynced = False
                return

    def _next_message(
        self, deadline: float, timeout_s: float, waiting_for: str, *, noise_limit: int | None = None
    ) -> Message:
        """The next meaningful line, skipping noise; raises on timeout, stop() or link loss.

        ``noise_limit``: how many unrecognised lines to skip before deciding the device
        is not a GRBL controller at all (used while connecting).
        """
        skipped = 0
        while True:
            self._check_cancel(waiting_for)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._lost_track()
                raise DeviceTimeoutError(
                    f"stage controller on {self.port} did not answer {waiting_for} within "
                    f"{timeout_s:g} s"
                )
            raw = self._readline(min(remaining, _CANCEL_SLICE_S), waiting_for)
            if raw is None:
                continue
            text = clean(raw)
            message = parse_line(text) if text else None
            if message is None or isinstance(message, Unknown):
                if text or raw.strip():
                    self._noise(raw)
                    skipped += 1
                if noise_limit is not None and skipped > noise_limit:
                    raise ProtocolError(
                        f"the device on {self.port} does not answer like a GRBL controller "
                        f"({skipped} unrecognised lines while waiting for {waiting_for}; "
                        "wrong port or baud rate?)"
                    )
                continue
            self._noise_run = 0
            _log.debug("<- %s", text)
            if isinstance(message, Feedback) and message.kind == "MSG":
                _log.info("controller message: %s", message.text)
            return message

    def _noise(self, raw: bytes) -> None:
        """Skip a line that is not GRBL's; warn about the start of a burst, not every line."""
        self._noise_run += 1
        level = logging.WARNING if self._noise_run <= _NOISE_WARNINGS else logging.DEBUG
        _log.log(level, "skipping a line that is not GRBL's from %s: %r", self.port, raw[:80])

    def _readline(self, timeout_s: float, waiting_for: str) -> bytes | None:
        try:
            return self._link.readline(timeout_s)
        except DeviceConnectionError as e:
            self._lost_link()
            raise DeviceConnectionError(
                f"lost the stage controller on {self.port} while waiting for {waiting_for} "
                f"(USB unplugged or controller powered off?); reconnect when it is back: {e}"
            ) from e

    def _write(self, data: bytes) -> None:
        try:
            self._link.write(data)
        except DeviceConnectionError as e:
            self._lost_link()
            raise DeviceConnectionError(
                f"lost the stage controller on {self.port} (USB unplugged or controller "
                f"powered off?); reconnect when it is back: {e}"
            ) from e

    # -- state -----------------------------------------------------------------------

    def _on_alarm(self, code: int, context: str) -> NoReturn:
        self._needs_homing = True
        self._homing_reason = f"ALARM:{code}"
        self._target_mm = None
        # An 'ok' may still come for the interrupted line: resynchronise before the next.
        self._desynced = True
        if code in CRITICAL_ALARMS:
            # GRBL ignores every line until reset; reset now so the link stays usable.
            try:
                self._soft_reset(self._config.connect_timeout_s)
            except (DeviceTimeoutError, ProtocolError) as e:
                _log.warning("soft reset after ALARM:%d failed: %s", code, e)
            context += "; the controller was reset, home the stage again"
        raise GrblAlarm(code, context)

    def _on_unexpected_reset(self, during: str) -> NoReturn:
        self._needs_homing = True
        self._homing_reason = "the controller reset unexpectedly"
        self._target_mm = None
        self._led_level = 0
        self._wco_mm = None
        self._desynced = False
        raise ControllerResetError(
            f"stage controller on {self.port} reset unexpectedly during {during} (power "
            "glitch or reset button?); the position is lost: home the stage again"
        )

    def _lost_link(self) -> None:
        self._needs_homing = True
        self._homing_reason = "the link to the controller was lost"
        self._target_mm = None
        self._desynced = False
        self._link.close()

    def _wait_hold_complete(self) -> None:
        """After a feed hold, wait until the axes have stopped so the reset keeps position."""
        deadline = time.monotonic() + self._config.command_timeout_s
        while True:
            report = self._query_status(resync=False)
            if report.state != "Run" and not (report.state == "Hold" and report.substate == 1):
                return
            if time.monotonic() > deadline:
                _log.warning("stage still %s after the feed hold; resetting anyway", report.state)
                return
            time.sleep(_STATUS_POLL_S)

    def _lost_track(self) -> None:
        """A line may or may not have run: re-read the position and resync before the next."""
        self._desynced = True
        self._target_mm = None

    def _require_homed(self) -> None:
        if self._needs_homing and self._settings.get(22, 1.0) == 1.0:
            raise StageNotHomedError(
                f"stage position is unknown ({self._homing_reason}): home the stage first"
            )

    def _planned_target(self) -> Vec3:
        """Where the last move ends (GRBL plans relative to it), else where the stage is."""
        if self._target_mm is None:
            self._target_mm = self._machine_mm(self._query_status())
        return self._target_mm

    def _check_limits(self, requested: Mapping[str, float | None]) -> None:
        ranges = {
            "X": self._config.limits.x,
            "Y": self._config.limits.y,
            "Z": self._config.limits.z,
        }
        for axis, value in requested.items():
            if value is None:
                continue
            if not math.isfinite(value):
                raise StageRequestError(f"move refused: {axis} = {value} um is not a number")
            r = ranges[axis]
            if not r.min_um - _LIMIT_TOLERANCE_UM <= value <= r.max_um + _LIMIT_TOLERANCE_UM:
                raise StageLimitError(
                    f"move refused: {axis} = {value:.1f} um is outside the soft limits "
                    f"[{r.min_um:g}, {r.max_um:g}] um (stage.limits.{axis.lower()}); nothing was sent"
                )

    def _check_cancel(self, waiting_for: str) -> None:
        if self._cancel.is_set():
            self._lost_track()
            raise StageStoppedError(f"stopped while waiting for {waiting_for}")

    def _pause(self, seconds: float, doing: str) -> None:
        if self._cancel.wait(seconds):
            raise StageStoppedError(f"stopped while {doing}")

    def _machine_mm(self, report: StatusReport) -> Vec3:
        if report.mpos is not None:
            return self._to_mm(report.mpos)
        if report.wpos is None:  # parse_status guarantees one of them
            raise ProtocolError(f"status report from {self.port} has no position")
        wpos = self._to_mm(report.wpos)
        if self._wco_mm is None:
            _log.debug("no work offset reported yet; taking WPos as machine position")
            return wpos
        return (
            wpos[0] + self._wco_mm[0],
            wpos[1] + self._wco_mm[1],
            wpos[2] + self._wco_mm[2],
        )

    def _to_mm(self, v: Vec3) -> Vec3:
        if self._settings.get(13) == 1.0:  # $13=1: reports in inches
            return (v[0] * _MM_PER_INCH, v[1] * _MM_PER_INCH, v[2] * _MM_PER_INCH)
        return v

    @staticmethod
    def _to_position(mm: Vec3) -> Position:
        return Position(
            x_um=round(mm[0] * 1000.0, 6),
            y_um=round(mm[1] * 1000.0, 6),
            z_um=round(mm[2] * 1000.0, 6),
        )

    @staticmethod
    def _format_um(mm: Vec3) -> str:
        return "(" + ", ".join(f"{v * 1000.0:.1f}" for v in mm) + ") um"


def _num(value: float) -> str:
    """A g-code number: fixed point, 3 decimals (1 um), no exponent, no trailing zeros."""
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _describe(message: Message) -> str:
    if isinstance(message, Ok):
        return "'ok'"
    if isinstance(message, ErrorReply):
        return f"'error:{message.code}'"
    if isinstance(message, Unknown | Banner):
        return repr(message.text)
    return repr(message)
