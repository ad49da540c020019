"""Which of the daemon's worker threads died or hung, for the health check.

The threads (MQTT command intake, MQTT link, job worker, acquisition) each own an
``agent.heartbeat.Heartbeat``; this keeps the list and asks each one. A fault here
is never healed by waiting for a device: the service reports it and stops feeding
the systemd watchdog, so systemd restarts the daemon.
"""

from __future__ import annotations

from agent.heartbeat import Heartbeat, WorkerFault


class WorkerWatch:
    """The heartbeats of every thread the daemon depends on."""

    def __init__(self, stall_s: float) -> None:
        """``stall_s``: the limit for work begun without its own (``service.worker_stall_s``)."""
        self._stall_s = stall_s
        self._beats: list[Heartbeat] = []

    def add(self, *beats: Heartbeat) -> None:
        self._beats.extend(beats)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self._beats)

    def faults(self) -> list[WorkerFault]:
        """Every watched thread that died or is stuck now."""
        found = (b.problem(self._stall_s) for b in self._beats)
        return [f for f in found if f is not None]
