"""A cancel token shared between whoever starts a long operation and the operation itself.

Long operations (autofocus, calibration, the scan) call ``check()`` between stage moves
and captures, so a cancel takes effect within one move; nothing is killed mid-command.
"""

from __future__ import annotations

import threading

from agent.acquisition.errors import Cancelled


class CancelToken:
    """Set once by ``cancel()``; read by the operation through ``check()``."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._reason = "cancelled"

    def cancel(self, reason: str = "cancelled") -> None:
        """Ask the operation to stop at its next check (idempotent; the first reason wins)."""
        if not self._event.is_set():
            self._reason = reason
            self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    @property
    def reason(self) -> str:
        return self._reason

    def check(self) -> None:
        """Raise ``Cancelled`` if a cancel was asked for."""
        if self._event.is_set():
            raise Cancelled(self._reason)

    def wait(self, timeout_s: float) -> bool:
        """Sleep up to ``timeout_s`` seconds, waking early on cancel; True if cancelled."""
        return self._event.wait(timeout_s)
