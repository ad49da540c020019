"""Serving a camera's frames to other processes over a Unix or TCP socket.

``algocyte-agent sim`` runs the simulated analyzer as a process of its own; the agent
reaches its stage through the pseudo-terminal and its camera through this server
(client: ``drivers.camera.simulated.SimulatedCameraClient``). One camera is shared by
every connection, as a real camera is; requests are served one at a time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
import threading
from pathlib import Path
from typing import Any

import numpy as np

from drivers.camera.base import Camera, CameraSettings
from drivers.errors import (
    DeviceConnectionError,
    DeviceError,
    DeviceTimeoutError,
    UnsupportedFeatureError,
)
from drivers.sim.frame_protocol import (
    PROTOCOL_VERSION,
    Address,
    ErrorKind,
    ProtocolViolation,
    parse_address,
    recv_message,
    send_message,
)

_log = logging.getLogger(__name__)

ACCEPT_POLL_S = 0.2
"""How often the accept loop checks whether it should stop (s)."""
CLIENT_IDLE_TIMEOUT_S = 3600.0
"""A client that sends nothing for this long is disconnected (s)."""


def _error_kind(error: DeviceError) -> ErrorKind:
    if isinstance(error, DeviceTimeoutError):
        return "timeout"
    if isinstance(error, UnsupportedFeatureError):
        return "unsupported"
    if isinstance(error, DeviceConnectionError):
        return "connection"
    return "device"


class FrameServer:
    """Serves ``camera`` at ``address`` (``unix:///path.sock`` or ``tcp://host:port``)."""

    def __init__(self, camera: Camera, address: str) -> None:
        try:
            self._address = parse_address(address)
        except ValueError as e:
            raise DeviceConnectionError(f"frame server address {e}") from e
        self._camera = camera
        self._camera_lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._clients: set[socket.socket] = set()
        self._clients_lock = threading.Lock()
        self._handlers: list[threading.Thread] = []

    @property
    def address(self) -> str:
        """Where clients connect (with the real port once started on ``tcp://...:0``)."""
        return str(self._address)

    def start(self) -> str:
        """Listen and serve in background threads; return the address."""
        if self._thread is not None:
            return self.address
        self._listener = self._listen()
        self._thread = threading.Thread(target=self._accept_loop, name="frame-server", daemon=True)
        self._thread.start()
        _log.info("frame server listening at %s", self.address)
        return self.address

    def _listen(self) -> socket.socket:
        a = self._address
        try:
            if a.scheme == "unix":
                path = Path(a.path)
                path.parent.mkdir(parents=True, exist_ok=True)
                self._remove_stale_socket(path)
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.bind(a.path)
            else:
                family = socket.AF_INET6 if ":" in a.host else socket.AF_INET
                sock = socket.socket(family, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((a.host, a.port))
                self._address = Address("tcp", host=a.host, port=sock.getsockname()[1])
            sock.listen(8)
            sock.settimeout(ACCEPT_POLL_S)
            return sock
        except OSError as e:
            raise DeviceConnectionError(f"frame server cannot listen at {a}: {e}") from e

    @staticmethod
    def _remove_stale_socket(path: Path) -> None:
        """Remove a socket file left by a server that died; refuse to steal a live one."""
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise DeviceConnectionError(f"frame server: {path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(1.0)
            probe.connect(str(path))
        except OSError:
            path.unlink(missing_ok=True)
            return
        finally:
            probe.close()
        raise DeviceConnectionError(f"frame server: another server is already listening at {path}")

    def _accept_loop(self) -> None:
        listener = self._listener
        while listener is not None and not self._stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if not self._stop.is_set():
                    _log.exception("frame server: accept failed")
                break
            conn.settimeout(CLIENT_IDLE_TIMEOUT_S)
            with self._clients_lock:
                self._clients.add(conn)
            t = threading.Thread(
                target=self._serve_client, args=(conn,), name="frame-client", daemon=True
            )
            self._handlers = [h for h in self._handlers if h.is_alive()] + [t]
            t.start()

    def _serve_client(self, conn: socket.socket) -> None:
        try:
            while not self._stop.is_set():
                try:
                    header, _ = recv_message(conn)
                except (ConnectionError, ProtocolViolation, OSError) as e:
                    if not self._stop.is_set() and not isinstance(e, ConnectionError):
                        _log.warning("frame server: dropping a client: %s", e)
                    return
                self._answer(conn, header)
        finally:
            with self._clients_lock:
                self._clients.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()

    def _answer(self, conn: socket.socket, header: dict[str, Any]) -> None:
        op = header.get("op")
        try:
            if op == "hello":
                send_message(
                    conn, {"ok": True, "server": "algocyte-sim", "version": PROTOCOL_VERSION}
                )
            elif op == "configure":
                settings = _settings_from(header)
                with self._camera_lock:
                    self._camera.configure(settings)
                send_message(conn, {"ok": True})
            elif op == "capture":
                with self._camera_lock:
                    frame = self._camera.capture()
                image = np.ascontiguousarray(frame.image, dtype=np.uint8)
                md = frame.metadata
                send_message(
                    conn,
                    {
                        "ok": True,
                        "shape": list(image.shape),
                        "timestamp": md.timestamp,
                        "exposure_us": md.exposure_us,
                        "analogue_gain": md.analogue_gain,
                        "extra": md.extra,
                    },
                    image.reshape(-1).data,
                )
            else:
                send_message(conn, {"ok": False, "kind": "request", "error": f"unknown op {op!r}"})
        except DeviceError as e:
            send_message(conn, {"ok": False, "kind": _error_kind(e), "error": str(e)})
        except (ValueError, TypeError, KeyError, IndexError) as e:
            send_message(conn, {"ok": False, "kind": "request", "error": f"bad request: {e}"})

    def stop(self) -> None:
        """Stop serving, disconnect clients and remove the socket file. Safe to call twice."""
        self._stop.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.close()
        with self._clients_lock:
            clients = list(self._clients)
        for c in clients:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        for h in self._handlers:
            h.join(timeout=5.0)
        if self._listener is not None and self._address.scheme == "unix":
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._address.path)
        self._listener = None
        self._thread = None

    def __enter__(self) -> FrameServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _settings_from(header: dict[str, Any]) -> CameraSettings:
    """CameraSettings from a 'configure' request (raises ValueError/TypeError)."""
    wb = header.get("white_balance_gains")
    exposure = header.get("exposure_us")
    gain = header.get("analogue_gain")
    return CameraSettings(
        width=int(header["width"]),
        height=int(header["height"]),
        exposure_us=None if exposure is None else int(exposure),
        analogue_gain=None if gain is None else float(gain),
        white_balance_gains=None if wb is None else (float(wb[0]), float(wb[1])),
    )
