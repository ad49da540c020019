"""A worker thread's sign of life, read by the daemon's health check.

The daemon depends on threads that nothing else watches: the MQTT command intake,
the MQTT link thread that does all publishing, the service's job worker and the
scanner's acquisition thread. A thread that dies (an exception it does not catch)
or hangs (a blocking call that never returns) leaves the process up and the
watchdog fed while the analyzer is deaf or mute. Each such thread therefore owns a
``Heartbeat``: it says when it takes up work and beats while it makes progress, and
says when it ends on purpose. ``problem()`` turns that into "died" or "stuck".

Idle is never stuck: a thread waiting for work has nothing to be late with. Only a
thread that holds work and has not beaten for longer than its limit is stuck.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Clock = Callable[[], float]

FaultKind = Literal["died", "stuck"]


@dataclass(frozen=True)
class WorkerFault:
    """One thread that is no longer doing its job."""

    name: str
    kind: FaultKind
    message: str


class Heartbeat:
    """Liveness of one worker thread; written by that thread, read by the health check.

    Plain attribute writes and reads: each is atomic in CPython, and the reader only
    needs a recent view, not a consistent snapshot across fields.
    """

    def __init__(self, name: str, *, clock: Clock = time.monotonic) -> None:
        self.name = name
        """What the thread does, for people: 'command intake', 'MQTT link', ..."""
        self._clock = clock
        self._thread: threading.Thread | None = None
        self._working = False
        self._limit_s: float | None = None
        self._last = clock()
        self._finished = False

    # -- the worker's side ---------------------------------------------------------------

    def attach(self, thread: threading.Thread) -> None:
        """Watch ``thread`` (before ``thread.start()``); it is idle until it takes work."""
        self._working = False
        self._finished = False
        self._last = self._clock()
        self._thread = thread

    def working(self, limit_s: float | None = None) -> None:
        """The thread took up work: stuck if it does not beat within ``limit_s``.

        ``None`` means the watcher's default limit (``service.worker_stall_s``).
        """
        self._limit_s = limit_s
        self._last = self._clock()
        self._working = True

    def beat(self) -> None:
        """Progress within the current work."""
        self._last = self._clock()

    def idle(self) -> None:
        """The work is done; the thread waits for more."""
        self._working = False
        self._last = self._clock()

    def finished(self) -> None:
        """The thread ends on purpose (a clean stop): no longer expected to be alive."""
        self._working = False
        self._finished = True

    # -- the watcher's side --------------------------------------------------------------

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def problem(self, default_limit_s: float) -> WorkerFault | None:
        """Why this thread is not doing its job, or None (also when not watched now)."""
        thread = self._thread
        if thread is None or self._finished:
            return None
        if thread.ident is None:
            return None  # attached, not started yet
        label = f"the {self.name} thread ({thread.name})"
        if not thread.is_alive():
            return WorkerFault(self.name, "died", f"{label} has died")
        if not self._working:
            return None
        limit = self._limit_s if self._limit_s is not None else default_limit_s
        silent = self._clock() - self._last
        if silent <= limit:
            return None
        return WorkerFault(
            self.name,
            "stuck",
            f"{label} is stuck: no progress for {silent:.0f} s (limit {limit:g} s)",
        )
