"""The simulated camera backend.

Two ways to reach the virtual camera, both chosen explicitly in the config
(``camera.type: simulated``), never as a fallback for missing hardware:

* in-process: the daemon (or a test) runs ``drivers.sim.analyzer.SimulatedAnalyzer``
  and the factory asks it for a camera (``camera.device`` empty);
* over a socket: ``algocyte-agent sim`` runs the simulator as its own process and
  prints a frame-server address; ``camera.device`` holds it and this module's
  :class:`SimulatedCameraClient` speaks to it.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from typing import Any, Protocol

import numpy as np

from drivers.camera.base import Camera, CameraSettings, Frame, FrameMetadata
from drivers.errors import (
    DeviceConnectionError,
    DeviceError,
    DeviceTimeoutError,
    ProtocolError,
    UnsupportedFeatureError,
)
from drivers.sim.frame_protocol import (
    ProtocolViolation,
    connect,
    parse_address,
    recv_message,
    send_message,
)

_log = logging.getLogger(__name__)


class SimulatedCameraSource(Protocol):
    """Something that can hand out cameras on the in-process simulator."""

    def open_camera(self) -> Camera:
        """A new camera looking at the simulator's slide through its stage."""


class SimulatedCameraClient:
    """A ``Camera`` whose frames come from a simulator's frame server.

    A lost connection (the simulator restarted) is re-opened once per call, and the
    last settings are sent again, before an error is raised.
    """

    def __init__(self, address: str, *, open_timeout_s: float, capture_timeout_s: float) -> None:
        try:
            self._address = parse_address(address)
        except ValueError as e:
            raise DeviceConnectionError(f"simulated camera address {e}") from e
        self._open_timeout = open_timeout_s
        self._capture_timeout = capture_timeout_s
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._settings: CameraSettings | None = None
        self._closed = False
        with self._lock:
            self._connect()

    def _connect(self) -> socket.socket:
        try:
            sock = connect(self._address, self._open_timeout)
            sock.settimeout(self._open_timeout)
            send_message(sock, {"op": "hello"})
            header, _ = recv_message(sock)
        except (OSError, ConnectionError, ProtocolViolation) as e:
            raise DeviceConnectionError(
                f"cannot reach the simulated camera at {self._address}: {e} "
                "(is 'algocyte-agent sim' running?)"
            ) from e
        if header.get("server") != "algocyte-sim":
            sock.close()
            raise ProtocolError(f"{self._address} is not an algocyte simulator frame server")
        self._sock = sock
        if self._settings is not None:
            self._request(sock, _settings_header(self._settings), self._open_timeout)
        return sock

    def _request(
        self, sock: socket.socket, header: dict[str, Any], timeout_s: float
    ) -> tuple[dict[str, Any], bytearray]:
        sock.settimeout(timeout_s)
        try:
            send_message(sock, header)
            reply, payload = recv_message(sock)
        except TimeoutError as e:
            self._drop()
            raise DeviceTimeoutError(
                f"the simulated camera at {self._address} did not answer within {timeout_s:g} s"
            ) from e
        except ProtocolViolation as e:
            self._drop()
            raise ProtocolError(f"the simulated camera at {self._address} sent garbage: {e}") from e
        if not reply.get("ok"):
            message = str(reply.get("error", "unknown error"))
            kind = reply.get("kind")
            if kind == "timeout":
                raise DeviceTimeoutError(message)
            if kind == "unsupported":
                raise UnsupportedFeatureError(message)
            if kind == "connection":
                raise DeviceConnectionError(message)
            if kind == "request":
                raise ProtocolError(message)
            raise DeviceError(message)
        return reply, payload

    def _drop(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        self._sock = None

    def _call(self, header: dict[str, Any], timeout_s: float) -> tuple[dict[str, Any], bytearray]:
        if self._closed:
            raise DeviceConnectionError("the simulated camera is closed")
        try:
            return self._request(self._sock or self._connect(), header, timeout_s)
        except (OSError, ConnectionError) as e:
            self._drop()
            _log.info("simulated camera connection lost (%s); reconnecting", e)
        try:
            return self._request(self._connect(), header, timeout_s)
        except (OSError, ConnectionError) as e:
            self._drop()
            raise DeviceConnectionError(f"lost the simulated camera at {self._address}: {e}") from e

    def configure(self, settings: CameraSettings) -> None:
        with self._lock:
            self._call(_settings_header(settings), self._capture_timeout)
            self._settings = settings

    def capture(self) -> Frame:
        with self._lock:
            reply, payload = self._call({"op": "capture"}, self._capture_timeout)
        try:
            h, w, c = (int(v) for v in reply["shape"])
            image = np.frombuffer(payload, dtype=np.uint8).reshape(h, w, c)
            metadata = FrameMetadata(
                timestamp=float(reply["timestamp"]),
                exposure_us=int(reply["exposure_us"]),
                analogue_gain=float(reply["analogue_gain"]),
                extra={str(k): float(v) for k, v in dict(reply.get("extra", {})).items()},
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ProtocolError(f"the simulated camera sent a malformed frame: {e}") from e
        return Frame(image=image, metadata=metadata)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._drop()


def _settings_header(settings: CameraSettings) -> dict[str, Any]:
    return {
        "op": "configure",
        "width": settings.width,
        "height": settings.height,
        "exposure_us": settings.exposure_us,
        "analogue_gain": settings.analogue_gain,
        "white_balance_gains": (
            list(settings.white_balance_gains) if settings.white_balance_gains else None
        ),
    }
