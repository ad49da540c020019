"""The demo's progress display on stderr: a redrawn bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import TextIO

from agent.daemon.progress import SampleProgress, ServiceListener
from agent.transport.payloads import StatePayload

PLAIN_EVERY_S = 5.0
"""Without a terminal, a progress line at most this often (s)."""
BAR_WIDTH = 24
PREFIX = "algocyte-agent demo: "


class ProgressBar(ServiceListener):
    """Fields, cells/target and ETA on one redrawn line (a terminal) or plain lines (a pipe)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._lock = threading.RLock()
        self._phase = "starting"
        self._progress: SampleProgress | None = None
        self._last_plain = -PLAIN_EVERY_S
        self._drawn = False

    def on_state(self, state: StatePayload) -> None:
        with self._lock:
            if state.phase is None or state.phase == self._phase:
                return
            self._phase = state.phase
            if self._tty:
                self._draw()
            else:
                self._line(f"{state.phase}")

    def on_progress(self, progress: SampleProgress) -> None:
        with self._lock:
            self._progress = progress
            if self._tty:
                self._draw()
                return
            now = time.monotonic()
            done = progress.wbc_found >= progress.target_wbc
            if done or now - self._last_plain >= PLAIN_EVERY_S:
                self._last_plain = now
                self._line(_describe(progress))

    def before_log(self, record: logging.LogRecord) -> bool:
        """A logging filter for stderr's handler: clear the bar so a log line does not run into it."""
        with self._lock:
            if self._tty and self._drawn:
                with contextlib.suppress(OSError, ValueError):
                    self._stream.write("\r\x1b[2K")
                    self._stream.flush()
                self._drawn = False
        return True

    def close(self) -> None:
        with self._lock:
            if self._tty and self._drawn:
                self._stream.write("\n")
                self._stream.flush()
                self._drawn = False

    def _draw(self) -> None:
        p = self._progress
        if p is None:
            text = f"{self._phase}..."
        else:
            filled = min(BAR_WIDTH, BAR_WIDTH * p.wbc_found // max(1, p.target_wbc))
            bar = "#" * filled + "-" * (BAR_WIDTH - filled)
            text = f"{self._phase:<9} [{bar}] {_describe(p)}"
        with contextlib.suppress(OSError, ValueError):
            self._stream.write("\r\x1b[2K" + text)
            self._stream.flush()
            self._drawn = True

    def _line(self, text: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._stream.write(f"{PREFIX}{text}\n")
            self._stream.flush()


def _describe(p: SampleProgress) -> str:
    eta = "ETA --:--" if p.eta_s is None else f"ETA {int(p.eta_s) // 60}:{int(p.eta_s) % 60:02d}"
    return (
        f"{p.wbc_found}/{p.target_wbc} white cells, {p.fields_scanned} fields, "
        f"{int(p.elapsed_s) // 60}:{int(p.elapsed_s) % 60:02d} elapsed, {eta}"
    )
