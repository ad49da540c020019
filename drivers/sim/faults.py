"""Faults the virtual GRBL controller can be told to commit, for robustness tests.

Each fault is armed from the test (any thread) and consumed by the controller at the
matching moment: the next reply, the next command, the next homing or the next move.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_GARBAGE = b"\x00\xff\xfe\x1b[2J#%&*noise\x7f\x80\r\n"
"""Line noise as seen on a badly grounded USB-serial cable: binary bytes and a newline."""


@dataclass(frozen=True)
class ReplyFault:
    """What to do to one reply (``ok`` or ``error:N``)."""

    drop: bool = False
    delay_s: float = 0.0
    garbage: bytes = b""
    """Bytes written just before the reply."""


class FaultInjector:
    """Arms faults; thread-safe. Reached as ``VirtualGrblController.faults``."""

    def __init__(
        self,
        *,
        alarm_now: Callable[[int], None],
        write_raw: Callable[[bytes], None],
        power_cycle: Callable[[], None],
    ) -> None:
        self._lock = threading.Lock()
        self._alarm_now = alarm_now
        self._write_raw = write_raw
        self._power_cycle = power_cycle
        self._replies: list[ReplyFault] = []
        self._forced_errors: list[int] = []
        self._homing_alarm: int | None = None
        self._unplug_after_s: float | None = None

    def drop_replies(self, count: int = 1) -> None:
        """The next ``count`` replies are never sent (the lines still run)."""
        self._add_replies(count, ReplyFault(drop=True))

    def delay_replies(self, delay_s: float, count: int = 1) -> None:
        """The next ``count`` replies come ``delay_s`` seconds late (a slow controller)."""
        if delay_s < 0:
            raise ValueError("delay_s must be >= 0")
        self._add_replies(count, ReplyFault(delay_s=delay_s))

    def garbage_before_replies(self, data: bytes = DEFAULT_GARBAGE, count: int = 1) -> None:
        """Line noise is written just before each of the next ``count`` replies."""
        self._add_replies(count, ReplyFault(garbage=data))

    def send_garbage(self, data: bytes = DEFAULT_GARBAGE) -> None:
        """Write line noise to the client now, unprompted."""
        self._write_raw(data)

    def force_error(self, code: int) -> None:
        """The next line is answered ``error:code`` without being run."""
        with self._lock:
            self._forced_errors.append(code)

    def fail_next_homing(self, alarm: int = 9) -> None:
        """The next ``$H`` fails with ``ALARM:alarm`` after the first search (9: switch not found)."""
        with self._lock:
            self._homing_alarm = alarm

    def alarm(self, code: int) -> None:
        """Raise ``ALARM:code`` now, as a tripped limit switch would (motion stops dead)."""
        self._alarm_now(code)

    def power_glitch(self) -> None:
        """The board browns out and restarts now: banner, alarm, position lost, port kept."""
        self._power_cycle()

    def unplug_during_next_move(self, after_s: float = 0.05) -> None:
        """The port disappears ``after_s`` seconds into the next move (cable pulled mid-move)."""
        with self._lock:
            self._unplug_after_s = after_s

    def clear(self) -> None:
        """Disarm every pending fault."""
        with self._lock:
            self._replies.clear()
            self._forced_errors.clear()
            self._homing_alarm = None
            self._unplug_after_s = None

    # -- consumed by the controller ------------------------------------------------------

    def take_reply_fault(self) -> ReplyFault | None:
        with self._lock:
            return self._replies.pop(0) if self._replies else None

    def take_forced_error(self) -> int | None:
        with self._lock:
            return self._forced_errors.pop(0) if self._forced_errors else None

    def take_homing_alarm(self) -> int | None:
        with self._lock:
            code, self._homing_alarm = self._homing_alarm, None
            return code

    def take_unplug_delay(self) -> float | None:
        with self._lock:
            delay, self._unplug_after_s = self._unplug_after_s, None
            return delay

    def _add_replies(self, count: int, fault: ReplyFault) -> None:
        if count < 1:
            raise ValueError("count must be >= 1")
        with self._lock:
            self._replies.extend([fault] * count)
