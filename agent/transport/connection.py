"""Building the paho client from the configuration, and explaining failed connections.

paho reports a failed TCP/TLS connect without its reason, and a broker that rejects
a client certificate under TLS 1.3 just closes the connection; an operator needs to
read "certificate verify failed" or "unknown CA", so ``diagnose`` repeats the
handshake once on its own socket and names what went wrong.
"""

from __future__ import annotations

import logging
import socket
import ssl
from typing import Final, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.errors import ConfigError
from agent.transport.config import MqttConfig, TlsConfig

_log = logging.getLogger(__name__)

MqttVersion = Literal["5", "3.1.1"]

PAHO_LOGGER: Final = "agent.transport.paho"

PROBE_READ_S: Final = 2.0
"""After a good TLS handshake, how long the probe waits for the broker to object (s)."""


def new_properties(packet_type: int) -> Properties:
    """An empty MQTT 5 property set (paho's constructor is untyped)."""
    return Properties(packet_type)  # type: ignore[no-untyped-call]


def client_id_for(config: MqttConfig, device_id: str) -> str:
    return config.client_id or f"algocyte-{device_id}"


def tls_context(tls: TlsConfig) -> ssl.SSLContext:
    """A verifying client context: the broker's certificate and host name are checked."""
    try:
        ctx = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca_file) if tls.ca_file else None
        )
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"mqtt.tls.ca_file {tls.ca_file}: cannot load the CA bundle: {e}") from e
    if tls.cert_file is not None:
        try:
            ctx.load_cert_chain(
                str(tls.cert_file), str(tls.key_file) if tls.key_file is not None else None
            )
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(
                f"mqtt.tls: cannot load client certificate {tls.cert_file} with key "
                f"{tls.key_file}: {e}"
            ) from e
    return ctx


def new_client(
    config: MqttConfig,
    client_id: str,
    version: MqttVersion,
    ssl_context: ssl.SSLContext | None,
    will_topic: str,
) -> mqtt.Client:
    """A paho client for one protocol version, with credentials, TLS, will and backoff set."""
    if version == "5":
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    else:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=config.session_expiry_s == 0,
        )
    # An exception in a callback must never end the network thread.
    client.suppress_exceptions = True
    paho_log = logging.getLogger(PAHO_LOGGER)
    if paho_log.isEnabledFor(logging.DEBUG):
        # Only when debugging: paho also logs routine events (a clean stop) as errors.
        client.enable_logger(paho_log)
    client.connect_timeout = config.connect_timeout_s
    # paho sleeps fractional delays correctly; its annotation just says int.
    client.reconnect_delay_set(config.reconnect_min_s, config.reconnect_max_s)  # type: ignore[arg-type]
    if config.username is not None:
        password = config.password.get_secret_value() if config.password is not None else None
        client.username_pw_set(config.username, password)
    elif config.password is not None:
        _log.warning("mqtt.password is set but mqtt.username is not: the password is not sent")
    if ssl_context is not None:
        client.tls_set_context(ssl_context)
    client.will_set(will_topic, "offline", qos=1, retain=True)
    client.on_socket_open = _no_delay
    return client


def _no_delay(client: mqtt.Client, userdata: object, sock: object) -> None:
    """Send each packet at once: a response otherwise waits ~40 ms for a delayed ACK (Nagle)."""
    setsockopt = getattr(sock, "setsockopt", None)
    if setsockopt is not None:
        try:
            setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as e:
            _log.debug("cannot set TCP_NODELAY: %s", e)


def connect_async(client: mqtt.Client, config: MqttConfig, version: MqttVersion) -> None:
    """Queue the connection; paho's thread (``loop_start``) makes and remakes it."""
    if version == "5":
        props = new_properties(PacketTypes.CONNECT)
        if config.session_expiry_s:
            props.SessionExpiryInterval = config.session_expiry_s
        client.connect_async(
            config.host,
            config.port,
            config.keepalive_s,
            clean_start=config.session_expiry_s == 0,
            properties=props,
        )
    else:
        client.connect_async(config.host, config.port, config.keepalive_s)


def diagnose(config: MqttConfig, ssl_context: ssl.SSLContext | None) -> tuple[bool, str]:
    """Why a connection to the broker fails: (is it a TLS/certificate problem, message).

    Makes one TCP connection (and TLS handshake) of its own; a broker that accepts
    it and waits for CONNECT is reported as reachable.
    """
    where = f"{config.host}:{config.port}"
    try:
        raw = socket.create_connection((config.host, config.port), timeout=config.connect_timeout_s)
    except OSError as e:
        return False, f"cannot reach the broker at {where}: {e.strerror or e}"
    with raw:
        if ssl_context is None:
            return False, f"the broker at {where} accepts TCP connections"
        try:
            with ssl_context.wrap_socket(raw, server_hostname=config.host) as tls:
                tls.settimeout(min(PROBE_READ_S, config.connect_timeout_s))
                try:
                    data = tls.recv(1)
                except TimeoutError:
                    return False, f"the broker at {where} completes the TLS handshake"
                except ssl.SSLError as e:
                    return True, f"the broker at {where} rejected the TLS session: {_ssl_reason(e)}"
                if not data:
                    return True, (
                        f"the broker at {where} closed the TLS connection after the handshake "
                        "(does it require a client certificate it does not trust?)"
                    )
                return False, f"the broker at {where} completes the TLS handshake"
        except ssl.SSLCertVerificationError as e:
            return True, f"the broker's certificate at {where} is not trusted: {e.verify_message}"
        except ssl.SSLError as e:
            return True, f"TLS handshake with {where} failed: {_ssl_reason(e)}"
        except OSError as e:
            return False, f"connection to {where} failed during TLS: {e.strerror or e}"


def _ssl_reason(error: ssl.SSLError) -> str:
    reason = getattr(error, "reason", None)
    return str(reason).replace("_", " ").lower() if reason else str(error)
