"""A line-oriented byte link to a serial device, kept apart from any protocol.

Protocol drivers (GRBL today, a Sangaboard tomorrow) receive a ``ByteLink`` and never
open ports themselves: the link owns pyserial, timeouts and the detection of a port
that vanished (USB unplugged), and turns them into ``drivers.errors`` exceptions.
"""

from __future__ import annotations

import logging
import termios
import threading
import time
from typing import NoReturn, Protocol

import serial

from drivers.errors import DeviceConnectionError

_log = logging.getLogger(__name__)

# termios.error is not an OSError: pyserial lets it escape from flush()/tcdrain on a
# pseudo-terminal or USB adapter that vanished, so it is caught with the rest.
_PORT_ERRORS = (serial.SerialException, OSError, termios.error)

MAX_LINE_BYTES = 1024
"""A longer run of bytes without a newline is handed over as one (garbage) line, so a
device that streams noise cannot make the reader buffer grow without bound."""

_READ_CHUNK = 4096
_READ_SLICE_S = 0.05
_WRITE_TIMEOUT_S = 2.0
"""A write blocked this long (device not draining its input) is a lost link (s)."""
"""pyserial read timeout: a readline deadline is honoured to within this (s)."""


class ByteLink(Protocol):
    """What a protocol driver needs from a serial link.

    Every method may raise ``DeviceConnectionError`` when the device is gone; after
    that the link is closed and ``open()`` may be tried again.
    """

    @property
    def name(self) -> str:
        """The port path, for messages."""

    @property
    def is_open(self) -> bool:
        """Whether the port is open (False after close() or after the device vanished)."""

    def open(self) -> None:
        """Open the port; raises DeviceConnectionError when it cannot be opened."""

    def write(self, data: bytes) -> None:
        """Send bytes now. Safe to call from another thread than the reader."""

    def readline(self, timeout_s: float) -> bytes | None:
        """One received line without its ``\\r\\n``, or None when none completes in time."""

    def reset_input(self) -> None:
        """Drop everything received and not yet read."""

    def close(self) -> None:
        """Release the port. Safe to call twice."""


class SerialLink:
    """A ``ByteLink`` over pyserial (8N1, no flow control).

    Args:
        port: device path (``/dev/ttyACM0``, ``/dev/serial/by-id/...`` or a pty path).
        baudrate: line speed in baud.
        exclusive: take an advisory lock so a second program cannot open the port.
    """

    def __init__(self, port: str, baudrate: int = 115_200, *, exclusive: bool = True) -> None:
        self._port = port
        self._baudrate = baudrate
        self._exclusive = exclusive
        self._serial: serial.Serial | None = None
        self._buffer = bytearray()
        self._write_lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._port

    @property
    def is_open(self) -> bool:
        return self._serial is not None

    def open(self) -> None:
        if self._serial is not None:
            return
        try:
            self._serial = serial.Serial(
                port=self._port,
                baudrate=self._baudrate,
                bytesize=serial.EIGHTBITS,
                parity=serial.PARITY_NONE,
                stopbits=serial.STOPBITS_ONE,
                timeout=_READ_SLICE_S,
                write_timeout=_WRITE_TIMEOUT_S,
                exclusive=self._exclusive,
            )
        except (*_PORT_ERRORS, ValueError) as e:
            raise DeviceConnectionError(f"cannot open serial port {self._port}: {e}") from e
        self._buffer.clear()
        _log.debug("opened %s at %d baud", self._port, self._baudrate)

    def write(self, data: bytes) -> None:
        port = self._require_open()
        with self._write_lock:
            try:
                port.write(data)
                port.flush()
            except _PORT_ERRORS as e:
                self._lost(e)

    def readline(self, timeout_s: float) -> bytes | None:
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            line = self._take_line()
            if line is not None:
                return line
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            port = self._require_open()
            try:
                # Block for the first byte (or one read slice), then take what else is there.
                chunk = port.read(1)
                if chunk:
                    waiting = port.in_waiting
                    if waiting:
                        chunk += port.read(min(waiting, _READ_CHUNK))
            except _PORT_ERRORS as e:
                self._lost(e)
            self._buffer += chunk

    def reset_input(self) -> None:
        port = self._require_open()
        self._buffer.clear()
        try:
            port.reset_input_buffer()
        except _PORT_ERRORS as e:
            self._lost(e)

    def close(self) -> None:
        port, self._serial = self._serial, None
        self._buffer.clear()
        if port is None:
            return
        try:
            port.close()
        except _PORT_ERRORS as e:
            _log.debug("closing %s: %s", self._port, e)

    def _take_line(self) -> bytes | None:
        newline = self._buffer.find(b"\n")
        if newline < 0:
            if len(self._buffer) < MAX_LINE_BYTES:
                return None
            newline = MAX_LINE_BYTES
            line = bytes(self._buffer[:newline])
            del self._buffer[:newline]
            return line
        line = bytes(self._buffer[:newline]).rstrip(b"\r")
        del self._buffer[: newline + 1]
        return line

    def _require_open(self) -> serial.Serial:
        if self._serial is None:
            raise DeviceConnectionError(f"serial port {self._port} is not open")
        return self._serial

    def _lost(self, error: BaseException) -> NoReturn:
        self.close()
        raise DeviceConnectionError(
            f"lost the serial link on {self._port} (device unplugged or powered off?): {error}"
        ) from error
