"""A real mosquitto for the MQTT tests, plus the test-side clients that talk to it.

* ``running_broker`` starts /usr/sbin/mosquitto on free ports with a config written
  into the test's tmp_path (optionally a TLS listener with client certificates and a
  password file) and stops it afterwards; the broker can be stopped and started
  again on the same ports to make an outage.
* ``make_certs`` creates a CA, a server and a client certificate (and a rogue CA
  with its own client certificate) with the openssl CLI.
* ``Watcher`` is an ordinary paho MQTT 5 client that records what arrives.
* ``MqttFront`` is a TCP relay in front of the broker that can play a broker which
  only speaks MQTT 3.1.1 (it answers a v5 CONNECT like such a broker: CONNACK with
  return code 1) or lose the broker's PUBACKs; it forwards real MQTT bytes.

Tests are skipped with a clear reason only when mosquitto or openssl is missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

MOSQUITTO = Path("/usr/sbin/mosquitto")
HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent
HELPER = Path(__file__).resolve().parent / "mqtt_link_helper.py"


def require_mosquitto() -> Path:
    exe = MOSQUITTO if MOSQUITTO.exists() else shutil.which("mosquitto")
    if exe is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto; 'make test' does it)")
    return Path(exe)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


# --------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_client_cert: Path
    """Signed by a CA the broker does not trust."""
    rogue_client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        pytest.skip("openssl is not installed")
    subprocess.run([exe, *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(name: str, d: Path) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2",
        "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )  # fmt: skip


def _leaf(name: str, ca: str, ext: str, d: Path) -> None:
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
        cwd=d,
    )  # fmt: skip
    (d / f"{name}.ext").write_text(ext, encoding="utf-8")
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext",
        cwd=d,
    )  # fmt: skip


def make_certs(d: Path) -> Certs:
    d.mkdir(parents=True, exist_ok=True)
    _ca("test-ca", d)
    _ca("rogue-ca", d)
    common = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
    _leaf(
        "server",
        "test-ca",
        common + f"extendedKeyUsage=serverAuth\nsubjectAltName=IP:{HOST},DNS:localhost\n",
        d,
    )
    _leaf("client", "test-ca", common + "extendedKeyUsage=clientAuth\n", d)
    _leaf("rogue", "rogue-ca", common + "extendedKeyUsage=clientAuth\n", d)
    return Certs(
        ca=d / "test-ca.crt",
        server_cert=d / "server.crt",
        server_key=d / "server.key",
        client_cert=d / "client.crt",
        client_key=d / "client.key",
        rogue_client_cert=d / "rogue.crt",
        rogue_client_key=d / "rogue.key",
    )


# -------------------------------------------------------------------------- broker


@dataclass
class Broker:
    """A mosquitto process; ``port`` is plain and anonymous, ``tls_port`` (if any) is not."""

    workdir: Path
    port: int
    tls_port: int | None = None
    username: str | None = None
    password: str | None = None
    certs: Certs | None = None
    persistent: bool = False
    """Keep sessions, queued messages and retained messages across a restart."""
    acl: str | None = None
    """mosquitto ACL lines for the plain listener (None: everything allowed)."""
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def log(self) -> str:
        path = self.workdir / "mosquitto.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def write_config(self) -> Path:
        lines = [
            "per_listener_settings true",
            # Started as root, mosquitto would switch to user 'mosquitto', which cannot
            # write into the test's tmp_path; as any other user this is a no-op.
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
            f"persistence {'true' if self.persistent else 'false'}",
            f"persistence_location {self.workdir}/",
            f"log_dest file {self.workdir / 'mosquitto.log'}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "set_tcp_nodelay true",
            f"listener {self.port} {HOST}",
            "allow_anonymous true",
        ]
        if self.acl is not None:
            acl_file = self.workdir / "acl"
            acl_file.write_text(self.acl, encoding="utf-8")
            lines.append(f"acl_file {acl_file}")
        if self.tls_port is not None and self.certs is not None:
            passwd = self.workdir / "passwd"
            if self.username is not None and self.password is not None:
                passwd.write_text("", encoding="utf-8")
                subprocess.run(
                    ["mosquitto_passwd", "-b", str(passwd), self.username, self.password],
                    check=True,
                    capture_output=True,
                    timeout=30,
                )
            lines += [
                f"listener {self.tls_port} {HOST}",
                f"cafile {self.certs.ca}",
                f"certfile {self.certs.server_cert}",
                f"keyfile {self.certs.server_key}",
                "require_certificate true",
                "allow_anonymous false",
                f"password_file {passwd}",
            ]
        path = self.workdir / "mosquitto.conf"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    def start(self) -> None:
        exe = require_mosquitto()
        conf = self.write_config()
        self.process = subprocess.Popen(
            [str(exe), "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        ports = [self.port] + ([self.tls_port] if self.tls_port is not None else [])
        deadline = time.monotonic() + 10
        for port in ports:
            while True:
                if self.process.poll() is not None:
                    err = self.process.stderr.read().decode() if self.process.stderr else ""
                    pytest.fail(f"mosquitto exited: {err}\n{self.log}")
                with contextlib.suppress(OSError), socket.create_connection((HOST, port), 0.2):
                    break
                if time.monotonic() > deadline:
                    pytest.fail(f"mosquitto did not listen on {port}\n{self.log}")
                time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None


@contextlib.contextmanager
def running_broker(
    workdir: Path,
    *,
    certs: Certs | None = None,
    username: str | None = None,
    password: str | None = None,
    persistent: bool = False,
    acl: str | None = None,
) -> Iterator[Broker]:
    workdir.mkdir(parents=True, exist_ok=True)
    broker = Broker(
        workdir=workdir,
        port=free_port(),
        tls_port=free_port() if certs is not None else None,
        username=username,
        password=password,
        certs=certs,
        persistent=persistent,
        acl=acl,
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


# ------------------------------------------------------------------------- watcher


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    qos: int
    user_properties: dict[str, str]
    correlation_data: bytes | None
    content_type: str | None

    def json(self) -> Any:
        return json.loads(self.payload)


class Watcher:
    """A plain MQTT 5 client that subscribes and records every message, for assertions."""

    def __init__(
        self, port: int, *subscriptions: str, client_id: str = "", persistent: bool = False
    ) -> None:
        """``persistent``: a session the broker keeps (and queues for) while we are away."""
        self.messages: list[Received] = []
        self._cond = threading.Condition()
        self._subacks = 0
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"watcher-{os.getpid()}-{id(self)}",
            protocol=mqtt.MQTTv5,
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_socket_open = lambda c, u, sock: sock.setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
        )
        self.client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
        props = None
        if persistent:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 600
        self.client.connect(HOST, port, keepalive=30, clean_start=not persistent, properties=props)
        self.client.loop_start()
        for topic in subscriptions:
            self.client.subscribe(topic, qos=1)
        with self._cond:
            if not self._cond.wait_for(lambda: self._subacks >= len(subscriptions), 10):
                raise TimeoutError("watcher subscription not acknowledged")

    def _on_subscribe(self, *args: Any) -> None:
        with self._cond:
            self._subacks += 1
            self._cond.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        props = msg.properties
        user = dict(getattr(props, "UserProperty", []) or [])
        received = Received(
            topic=msg.topic,
            payload=bytes(msg.payload),
            retain=bool(msg.retain),
            qos=msg.qos,
            user_properties=user,
            correlation_data=getattr(props, "CorrelationData", None),
            content_type=getattr(props, "ContentType", None),
        )
        with self._cond:
            self.messages.append(received)
            self._cond.notify_all()

    def on(self, topic: str) -> list[Received]:
        with self._cond:
            return [m for m in self.messages if m.topic == topic]

    def wait(
        self, predicate: Callable[[list[Received]], Any], timeout: float = 10.0, what: str = ""
    ) -> Any:
        with self._cond:
            result = self._cond.wait_for(lambda: predicate(list(self.messages)), timeout)
            if not result:
                topics = [m.topic for m in self.messages[-10:]]
                pytest.fail(f"timed out waiting for {what or 'messages'}; last topics: {topics}")
            return result

    def wait_topic(self, topic: str, count: int = 1, timeout: float = 10.0) -> list[Received]:
        def enough(msgs: list[Received]) -> list[Received] | None:
            hits = [m for m in msgs if m.topic == topic]
            return hits if len(hits) >= count else None

        result: list[Received] = self.wait(enough, timeout, f"{count} message(s) on {topic}")
        return result

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        retain: bool = False,
        response_topic: str | None = None,
        correlation_data: bytes | None = None,
        expiry_s: int | None = None,
    ) -> None:
        props = None
        if response_topic or correlation_data is not None or expiry_s is not None:
            props = Properties(PacketTypes.PUBLISH)
            if response_topic:
                props.ResponseTopic = response_topic
            if correlation_data is not None:
                props.CorrelationData = correlation_data
            if expiry_s is not None:
                props.MessageExpiryInterval = expiry_s
        info = self.client.publish(topic, payload, qos=1, retain=retain, properties=props)
        info.wait_for_publish(10)

    def clear(self) -> None:
        with self._cond:
            self.messages.clear()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextlib.contextmanager
def watching(port: int, *subscriptions: str, persistent: bool = False) -> Iterator[Watcher]:
    watcher = Watcher(port, *subscriptions, persistent=persistent)
    try:
        yield watcher
    finally:
        watcher.close()


# --------------------------------------------------------------------------- front

CONNECT, PUBACK = 1, 4


def _read_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def read_packet(sock: socket.socket) -> bytes:
    """One whole MQTT control packet (fixed header included) from ``sock``."""
    first = _read_exact(sock, 1)
    length_bytes = b""
    length, multiplier = 0, 1
    while True:
        b = _read_exact(sock, 1)
        length_bytes += b
        length += (b[0] & 0x7F) * multiplier
        if not b[0] & 0x80:
            break
        multiplier *= 128
    return first + length_bytes + _read_exact(sock, length)


def connect_protocol_level(packet: bytes) -> int:
    """The protocol level byte of a CONNECT packet (4 = 3.1.1, 5 = MQTT 5)."""
    i = 1
    while packet[i] & 0x80:
        i += 1
    i += 1  # past the remaining length
    name_len = int.from_bytes(packet[i : i + 2], "big")
    return packet[i + 2 + name_len]


class MqttFront:
    """A relay between the analyzer and mosquitto that can misbehave like real brokers do."""

    def __init__(self, upstream_port: int, *, reject_levels: set[int] | None = None) -> None:
        self.upstream_port = upstream_port
        self.reject_levels = reject_levels or set()
        self.drop_pubacks = False
        self.dropped_pubacks = 0
        self.seen_levels: list[int] = []
        self._server = socket.create_server((HOST, 0))
        self.port = int(self._server.getsockname()[1])
        self._conns: list[socket.socket] = []
        self._closed = False
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with self._lock:
            self._conns.append(client)
        try:
            connect = read_packet(client)
            level = connect_protocol_level(connect)
            self.seen_levels.append(level)
            if level in self.reject_levels:
                client.sendall(b"\x20\x02\x00\x01")  # CONNACK: unacceptable protocol version
                client.close()
                return
            upstream = socket.create_connection((HOST, self.upstream_port), 5)
            upstream.settimeout(None)
        except OSError:
            client.close()
            return
        with self._lock:
            self._conns.append(upstream)
        upstream.sendall(connect)
        threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
        self._pipe(upstream, client, True)

    def _pipe(self, src: socket.socket, dst: socket.socket, from_broker: bool) -> None:
        try:
            while True:
                packet = read_packet(src)
                if from_broker and self.drop_pubacks and packet[0] >> 4 == PUBACK:
                    self.dropped_pubacks += 1
                    continue
                dst.sendall(packet)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def cut(self) -> None:
        """Break every relayed connection (a network failure); new ones are accepted."""
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self._closed = True
        self._server.close()
        self.cut()


# ---------------------------------------------------------------- helper process


class LinkProcess:
    """tests/mqtt_link_helper.py in a child process: an MqttLink that can be SIGKILLed."""

    def __init__(self, port: int, state_dir: Path, device_id: str = "dev-1") -> None:
        settings = {"port": port, "state_dir": str(state_dir), "device_id": device_id}
        self.proc = subprocess.Popen(
            [sys.executable, str(HELPER), json.dumps(settings)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        self.expect("ready")

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def expect(self, word: str, timeout: float = 20.0) -> str:
        assert self.proc.stdout is not None
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(self.proc.stdout.readline()))  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout)
        line = result[0].strip() if result else ""
        if not line.startswith(word):
            err = (
                self.proc.stderr.read() if self.proc.poll() is not None and self.proc.stderr else ""
            )
            pytest.fail(f"helper said {line!r}, expected {word!r}\n{err}")
        return line

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._close_pipes()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.send("stop")
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._close_pipes()

    def _close_pipes(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


# ------------------------------------------------------------------- link in-process


def link_config(port: int, **overrides: Any) -> Any:
    """An MqttConfig for the test broker with quick reconnects."""
    from agent.transport.config import MqttConfig

    settings: dict[str, Any] = {
        "host": HOST,
        "port": port,
        "reconnect_min_s": 0.1,
        "reconnect_max_s": 0.5,
        "stop_timeout_s": 3.0,
        "connect_timeout_s": 3.0,
    }
    settings.update(overrides)
    return MqttConfig(**settings)


@contextlib.contextmanager
def started_link(
    port: int,
    state_dir: Path,
    handler: Any,
    *,
    device_id: str = "dev-1",
    wait: bool = True,
    **config: Any,
) -> Iterator[Any]:
    """An MqttLink on ``port`` with its outbox in ``state_dir``; stopped afterwards."""
    from agent.transport.link import MqttLink
    from agent.transport.outbox import Outbox

    outbox = Outbox.in_state_dir(state_dir)
    link = MqttLink(link_config(port, **config), device_id, outbox, handler)
    link.start()
    try:
        if wait and not link.wait_connected(10):
            pytest.fail(f"link did not connect: {link.last_error}")
        yield link
    finally:
        link.stop()
        outbox.close()
