"""A pseudo-terminal that looks like a USB serial device at a stable path.

The path is a symlink in a private temporary directory pointing at the current
``/dev/pts/N``, the way ``/dev/serial/by-id/...`` points at ``/dev/ttyACM0``:
``unplug()`` closes the pty and removes the link (clients get an I/O error),
``replug()`` opens a new pty and points the link at it.

One reader thread owns the master side: it reads, and it alone closes and reopens the
pty (requests reach it through a wake-up pipe), so no other thread can ever read from
a file descriptor number that was closed and reused.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import shutil
import tempfile
import threading
import tty
from collections.abc import Callable
from pathlib import Path

_log = logging.getLogger(__name__)

_REQUEST_TIMEOUT_S = 5.0
_IDLE_SELECT_S = 0.5


class PtyPort:
    """The device end of a pseudo-terminal pair, plus a stable path for the client end.

    Args:
        on_data: called from the reader thread with every chunk the client writes.
        link_name: file name of the stable symlink.
    """

    def __init__(self, on_data: Callable[[bytes], None], link_name: str = "ttyGRBL") -> None:
        self._on_data = on_data
        self._link_name = link_name
        self._dir: Path | None = None
        self._master: int | None = None
        self._slave: int | None = None
        self._fd_lock = threading.Lock()
        self._wake_r, self._wake_w = -1, -1
        self._requests: list[tuple[str, threading.Event]] = []
        self._requests_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._running = False

    @property
    def path(self) -> str:
        """The stable path clients open (valid after ``open()``, even while unplugged)."""
        if self._dir is None:
            raise RuntimeError("the pseudo-terminal is not open")
        return str(self._dir / self._link_name)

    @property
    def plugged(self) -> bool:
        return self._master is not None

    @property
    def device(self) -> str | None:
        """The current ``/dev/pts/N``, or None while unplugged."""
        with self._fd_lock:
            return os.ttyname(self._slave) if self._slave is not None else None

    def open(self) -> str:
        if self._thread is not None:
            return self.path
        self._dir = Path(tempfile.mkdtemp(prefix="algocyte-vgrbl-"))
        self._wake_r, self._wake_w = os.pipe()
        self._plug()
        self._running = True
        self._thread = threading.Thread(target=self._run, name="virtual-grbl-pty", daemon=True)
        self._thread.start()
        return self.path

    def write(self, data: bytes) -> None:
        """Send bytes to the client; dropped while unplugged or when nobody reads."""
        with self._fd_lock:
            if self._master is None:
                return
            view = memoryview(data)
            while view:
                try:
                    n = os.write(self._master, view)
                except BlockingIOError:
                    _log.warning("client is not reading: dropped %d bytes", len(view))
                    return
                except OSError as e:
                    _log.debug("pty write failed: %s", e)
                    return
                view = view[n:]

    def unplug(self) -> None:
        self._request("unplug")

    def replug(self) -> None:
        self._request("replug")

    def close(self) -> None:
        if self._thread is None:
            return
        self._request("close")
        self._thread.join(timeout=_REQUEST_TIMEOUT_S)
        self._thread = None
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r = self._wake_w = -1
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    # -- reader thread -----------------------------------------------------------------

    def _request(self, op: str) -> None:
        if self._thread is None or not self._thread.is_alive():
            raise RuntimeError("the pseudo-terminal is not open")
        done = threading.Event()
        with self._requests_lock:
            self._requests.append((op, done))
        os.write(self._wake_w, b"!")
        if not done.wait(_REQUEST_TIMEOUT_S):
            raise RuntimeError(f"the pseudo-terminal reader did not {op} in time")

    def _run(self) -> None:
        while self._running:
            fds = [self._wake_r] + ([self._master] if self._master is not None else [])
            try:
                readable, _, _ = select.select(fds, [], [], _IDLE_SELECT_S)
            except OSError as e:
                _log.warning("select on the pseudo-terminal failed: %s", e)
                continue
            if self._wake_r in readable:
                os.read(self._wake_r, 64)
                self._serve_requests()
            master = self._master
            if master is not None and master in readable:
                try:
                    data = os.read(master, 4096)
                except BlockingIOError:
                    continue
                except OSError as e:
                    if e.errno != errno.EIO:
                        _log.warning("pty read failed: %s", e)
                    continue
                if data:
                    try:
                        self._on_data(data)
                    except Exception:
                        _log.exception("virtual controller failed on received bytes")

    def _serve_requests(self) -> None:
        with self._requests_lock:
            requests, self._requests = self._requests, []
        for op, done in requests:
            if op in ("unplug", "close"):
                self._unplug()
            if op == "replug":
                self._unplug()
                self._plug()
            if op == "close":
                self._running = False
            done.set()

    def _plug(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        # The device keeps its own handle on the slave side, so the master never sees a
        # hang-up while no client has the port open (a board stays powered when the
        # host program exits).
        with self._fd_lock:
            self._master, self._slave = master, slave
        if self._dir is None:
            raise RuntimeError("the pseudo-terminal has no directory")
        link = self._dir / self._link_name
        tmp = self._dir / (self._link_name + ".new")
        tmp.unlink(missing_ok=True)
        os.symlink(os.ttyname(slave), tmp)
        os.replace(tmp, link)
        _log.debug("virtual serial port %s -> %s", link, os.ttyname(slave))

    def _unplug(self) -> None:
        if self._dir is not None:
            (self._dir / self._link_name).unlink(missing_ok=True)
        with self._fd_lock:
            fds = (self._master, self._slave)
            self._master = self._slave = None
        for fd in fds:
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
