"""The wire format between the simulator's frame server and the simulated-camera client.

Each message is a 4-byte big-endian length, a UTF-8 JSON header of that length, and
``header["payload"]`` bytes of raw data (0 when absent). A request is a header with
``op`` ('hello', 'configure', 'capture'); a reply has ``ok`` and, for a frame, its
``shape`` and the raw BGR pixels as payload (uncompressed: a 2028 x 1520 frame is 9 MB,
a few milliseconds over a local socket, and no codec can change the pixels). A failed
request gets ``{"ok": false, "error": message, "kind": ...}`` and the connection stays
usable.

Addresses are ``unix:///absolute/path.sock`` or ``tcp://host:port``.
"""

from __future__ import annotations

import json
import socket
import struct
from dataclasses import dataclass
from typing import Any, Literal

PROTOCOL_VERSION = 1
MAX_HEADER_BYTES = 64 * 1024
MAX_PAYLOAD_BYTES = 64 * 1024 * 1024
"""Larger than the largest frame (4056 x 3040 x 3 = 37 MB)."""
_LENGTH = struct.Struct(">I")

ErrorKind = Literal["timeout", "unsupported", "connection", "device", "request"]


class ProtocolViolation(ValueError):
    """The peer sent something that is not a valid message."""


@dataclass(frozen=True)
class Address:
    """A parsed frame-server address."""

    scheme: Literal["unix", "tcp"]
    path: str = ""
    host: str = ""
    port: int = 0

    def __str__(self) -> str:
        if self.scheme == "unix":
            return f"unix://{self.path}"
        return f"tcp://{self.host}:{self.port}"


def parse_address(text: str) -> Address:
    """Parse ``unix:///path`` or ``tcp://host:port`` (raises ValueError with the reason)."""
    if text.startswith("unix://"):
        path = text[len("unix://") :]
        if not path.startswith("/"):
            raise ValueError(
                f"'{text}': a unix address needs an absolute path (unix:///run/x.sock)"
            )
        return Address("unix", path=path)
    if text.startswith("tcp://"):
        rest = text[len("tcp://") :]
        host, sep, port_text = rest.rpartition(":")
        if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            raise ValueError(f"'{text}': expected tcp://host:port")
        return Address("tcp", host=host.strip("[]"), port=int(port_text))
    raise ValueError(f"'{text}': expected unix:///path.sock or tcp://host:port")


def connect(address: Address, timeout_s: float) -> socket.socket:
    """Open a client connection (raises OSError)."""
    if address.scheme == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout_s)
        try:
            sock.connect(address.path)
        except OSError:
            sock.close()
            raise
        return sock
    sock = socket.create_connection((address.host, address.port), timeout=timeout_s)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def send_message(
    sock: socket.socket, header: dict[str, Any], payload: bytes | memoryview = b""
) -> None:
    """Send one message (raises OSError)."""
    body = json.dumps({**header, "payload": len(payload)}).encode("utf-8")
    sock.sendall(_LENGTH.pack(len(body)) + body)
    if len(payload):
        sock.sendall(payload)


def _recv_exact(sock: socket.socket, n: int) -> bytearray:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise ConnectionError("the peer closed the connection")
        got += k
    return buf


def recv_message(sock: socket.socket) -> tuple[dict[str, Any], bytearray]:
    """Receive one message (raises OSError, ConnectionError or ProtocolViolation)."""
    (length,) = _LENGTH.unpack(_recv_exact(sock, _LENGTH.size))
    if not 0 < length <= MAX_HEADER_BYTES:
        raise ProtocolViolation(f"header of {length} bytes (at most {MAX_HEADER_BYTES})")
    try:
        header = json.loads(bytes(_recv_exact(sock, length)).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProtocolViolation(f"header is not JSON: {e}") from e
    if not isinstance(header, dict):
        raise ProtocolViolation("header is not a JSON object")
    size = header.get("payload", 0)
    if not isinstance(size, int) or not 0 <= size <= MAX_PAYLOAD_BYTES:
        raise ProtocolViolation(f"payload size {size!r} out of range")
    payload = _recv_exact(sock, size) if size else bytearray()
    return header, payload
