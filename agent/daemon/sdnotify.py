"""The systemd notification protocol (sd_notify(3)), without a library.

The daemon tells systemd READY=1 once it has really checked its hardware and models,
STATUS= lines an operator sees in ``systemctl status``, and WATCHDOG=1 only after a
health check passes, so a hung main loop (not just a dead process) gets restarted.
Outside systemd (no ``$NOTIFY_SOCKET``) every call is a cheap no-op.
"""

from __future__ import annotations

import logging
import os
import socket

_log = logging.getLogger(__name__)


class SystemdNotifier:
    """Sends state strings to ``$NOTIFY_SOCKET`` when the service manager provides one."""

    def __init__(self, socket_path: str | None = None) -> None:
        path = socket_path if socket_path is not None else os.environ.get("NOTIFY_SOCKET", "")
        # A leading '@' names a socket in the abstract namespace.
        self._address = "\0" + path[1:] if path.startswith("@") else path
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def notify(self, *states: str) -> bool:
        """Send ``KEY=value`` lines; returns False (and logs) if the manager cannot be reached."""
        if not self._address:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(states).encode("utf-8"), self._address)
        except OSError as e:
            _log.warning("cannot notify systemd at %s: %s", self._address.lstrip("\0"), e)
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.notify("READY=1", f"STATUS={status}")

    def status(self, status: str) -> bool:
        return self.notify(f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str = "stopping") -> bool:
        return self.notify("STOPPING=1", f"STATUS={status}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval_s() -> float | None:
    """Half the watchdog period systemd asked for (``$WATCHDOG_USEC``), or None if unset.

    sd_watchdog_enabled(3) recommends pinging at half the timeout; ``$WATCHDOG_PID``
    must name this process for the request to apply to it.
    """
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        period = int(usec) / 1_000_000
    except ValueError:
        _log.warning("ignoring malformed WATCHDOG_USEC=%r", usec)
        return None
    return period / 2 if period > 0 else None
