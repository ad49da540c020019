"""The analyzer's MQTT link: status out, results out without loss, commands in.

Threads, and why:

* paho's network thread (``loop_start``) reads and writes the socket, reconnects
  and runs the callbacks; the callbacks only record facts and post events, never
  wait. Before each reconnect wait they set paho's next delay from
  ``ReconnectBackoff`` (quick attempts first, then jittered exponential backoff up
  to ``reconnect_max_s``).
* the *link thread* is the only one that publishes. It owns the session view, the
  outbox window (which outbox row each in-flight message id carries) and the
  replay, so publications are ordered and no lock is held across paho calls that
  paho's own thread might need.
* the *command thread* (``CommandIntake``) validates requests and calls the daemon's
  handler, one at a time, so a slow handler delays other commands but never
  keepalives or PUBACKs. Every request gets exactly one response from it.

The link thread and the command thread each own a ``Heartbeat`` (``heartbeats``),
so the daemon's health check notices when one dies or hangs.

Delivery contract (docs/mqtt.md): results and events are stored in the ``Outbox``
before anything is sent and removed on the broker's PUBACK; at every connect the
rows still there are sent again, oldest first, marked as replayed. paho would also
re-send its own unacknowledged messages after a reconnect; those are dropped in
``on_connect`` (``drop_out_messages``) so that the outbox is the only source of
re-sends and a row is never sent twice by one process for one connection.
"""

from __future__ import annotations

import json
import logging
import queue
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions
from pydantic import BaseModel

from agent.errors import InputError
from agent.heartbeat import Heartbeat
from agent.transport import connection, topics
from agent.transport.backoff import ReconnectBackoff
from agent.transport.commands import CommandHandler
from agent.transport.config import MqttConfig
from agent.transport.connection import MqttVersion
from agent.transport.intake import CommandIntake, Reply
from agent.transport.outbox import Outbox, OutboxRow
from agent.transport.payloads import (
    EventPayload,
    InfoPayload,
    ProgressPayload,
    StatePayload,
)
from agent.transport.replay import mark_replayed
from agent.transport.requests import InboundRequest

_log = logging.getLogger(__name__)

THREAD_JOIN_S: Final = 5.0
"""How long stop() waits for the link's own threads to end (s)."""

UNSUPPORTED_PROTOCOL_VERSION: Final = 0x84
"""CONNACK reason for a protocol level the broker does not speak (v3 brokers send 1)."""

MAX_RESULT_ID_LENGTH: Final = 128

CONTENT_TYPES: Final[dict[str, str]] = {
    topics.RESULTS: "application/json",
    topics.RESULTS_FHIR: "application/fhir+json",
    topics.EVENTS: "application/json",
}


# Events posted to the link thread. ``gen`` numbers connections: it grows at every
# successful CONNACK, so an acknowledgement from an older connection is recognised.
@dataclass(frozen=True)
class _Connected:
    gen: int
    version: MqttVersion


@dataclass(frozen=True)
class _Disconnected:
    gen: int
    reason: str


@dataclass(frozen=True)
class _ConnectFailed:
    pass


@dataclass(frozen=True)
class _Refused:
    version: MqttVersion
    code: int
    reason: str


@dataclass(frozen=True)
class _ClosedBeforeConnack:
    version: MqttVersion


@dataclass(frozen=True)
class _SubscribeFailed:
    reason: str


@dataclass(frozen=True)
class _Acked:
    gen: int
    mid: int
    failure: str | None


@dataclass(frozen=True)
class _Kick:
    pass


@dataclass(frozen=True)
class _Latest:
    suffix: str


@dataclass(frozen=True)
class _Progress:
    payload: bytes


@dataclass(frozen=True)
class _Response:
    reply: Reply


@dataclass(frozen=True)
class _Stop:
    done: threading.Event


_Event = (
    _Connected
    | _Disconnected
    | _ConnectFailed
    | _Refused
    | _ClosedBeforeConnack
    | _SubscribeFailed
    | _Acked
    | _Kick
    | _Latest
    | _Progress
    | _Response
    | _Stop
)


@dataclass
class _Session:
    """The link thread's view of one successful connection."""

    gen: int
    version: MqttVersion
    backlog_max: int
    """Outbox rows up to this id were waiting at connect: they are sent marked replayed."""
    backlog_left: int
    started: float
    cursor: int = 0
    """Id of the last outbox row published in this session."""
    inflight: dict[int, OutboxRow] = field(default_factory=dict)
    """Message id -> the outbox row it carries, until PUBACK."""


class MqttLink:
    """The daemon's one handle on MQTT: typed publishes, durable results, commands."""

    def __init__(
        self,
        config: MqttConfig,
        device_id: str,
        outbox: Outbox,
        handler: CommandHandler,
    ) -> None:
        self._config = config
        self._device_id = device_id
        self._outbox = outbox
        self._handler = handler
        self._topics = topics.Topics.for_device(config.topic_root, device_id)
        self._client_id = connection.client_id_for(config, device_id)
        self._ssl: ssl.SSLContext | None = None

        self._events: queue.SimpleQueue[_Event] = queue.SimpleQueue()
        self._intake = CommandIntake(config, handler, self._send_reply)
        self._latest: dict[str, bytes] = {}
        self._latest_lock = threading.Lock()
        self._kick_pending = False

        # Shared between paho's thread (writes) and the link thread (reads, publishes).
        # _gen_lock makes "is this connection still the live one, then publish" atomic
        # against on_connect, which drops paho's queued copies and starts a new one.
        self._gen_lock = threading.Lock()
        self._gen = 0
        self._live_gen: int | None = None
        self._connected_event = threading.Event()
        self._awaiting_connack = False
        # Used by paho's thread only (its callbacks).
        self._backoff = ReconnectBackoff(config.reconnect_min_s, config.reconnect_max_s)

        # Owned by the link thread.
        self._client: mqtt.Client | None = None
        self._version: MqttVersion = "3.1.1" if config.protocol == "3.1.1" else "5"
        self._version_settled = config.protocol != "auto"
        self._session: _Session | None = None
        self._failing = False
        self._refused_reported = False
        self._offline_since: float | None = None
        self._stopping = False
        self._stop_mid: int | None = None
        self._stop_deadline: float | None = None
        self._stop_done: threading.Event | None = None
        self._last_error: str | None = None
        self._restart_at: float | None = None
        self._switch_delay = config.reconnect_min_s
        self._switch_reported = False

        self._link_thread: threading.Thread | None = None
        self._link_beat = Heartbeat("MQTT link")

    # ----------------------------------------------------------------- daemon API

    def start(self) -> None:
        """Begin connecting in the background and return at once.

        Raises ``ConfigError`` when the TLS files cannot be loaded. With
        ``mqtt.enabled: false`` nothing connects, but results still wait in the outbox.
        """
        if self._link_thread is not None:
            return
        if not self._config.enabled:
            _log.info("MQTT is disabled (mqtt.enabled: false); results wait in the outbox")
            return
        if self._config.tls is not None:
            self._ssl = connection.tls_context(self._config.tls)
        self._client = self._new_client()
        self._link_thread = threading.Thread(target=self._run, name="mqtt-link", daemon=True)
        self._link_beat.attach(self._link_thread)
        self._intake.start()
        self._link_thread.start()
        _log.info(
            "connecting to MQTT broker %s:%d as %s (protocol %s)",
            self._config.host,
            self._config.port,
            self._client_id,
            self._config.protocol,
        )

    def stop(self) -> None:
        """Publish availability 'stopped', wait for its PUBACK (``stop_timeout_s``), disconnect.

        Unacknowledged results stay in the outbox for the next start.
        """
        link = self._link_thread
        if link is None:
            return
        done = threading.Event()
        self._events.put(_Stop(done))
        if not done.wait(self._config.stop_timeout_s + self._config.connect_timeout_s + 2.0):
            _log.warning("the MQTT link did not stop in time")
        # Disconnected now: no request arrives any more, and none waiting can be answered.
        self._intake.stop(THREAD_JOIN_S)
        link.join(THREAD_JOIN_S)
        self._link_thread = None

    @property
    def heartbeats(self) -> tuple[Heartbeat, ...]:
        """The link's own threads (link, command intake), for the daemon's health check."""
        return (self._link_beat, self._intake.heartbeat)

    @property
    def connected(self) -> bool:
        """True only between an accepted CONNACK and the loss of that connection."""
        return self._live_gen is not None

    def wait_connected(self, timeout_s: float) -> bool:
        """Block up to ``timeout_s`` until connected and subscribed to requests."""
        return self._connected_event.wait(timeout_s)

    @property
    def protocol(self) -> MqttVersion | None:
        """MQTT version of the current connection, None while disconnected."""
        return self._version if self.connected else None

    @property
    def last_error(self) -> str | None:
        """Why the last connection attempt failed; None once connected."""
        return self._last_error

    @property
    def outbox(self) -> Outbox:
        return self._outbox

    def publish_info(self, info: InfoPayload) -> None:
        """Set the retained ``info`` document (re-published at every connect)."""
        self._set_latest(topics.INFO, info)

    def publish_state(self, state: StatePayload) -> None:
        """Set the retained ``state`` document (re-published at every connect)."""
        self._set_latest(topics.STATE, state)

    def publish_progress(self, progress: ProgressPayload) -> None:
        """Send ``progress`` at QoS 0; dropped while disconnected (the next one supersedes it)."""
        if self.connected:
            self._events.put(_Progress(progress.model_dump_json().encode("utf-8")))

    def publish_event(self, event: EventPayload) -> None:
        """Send a warning or fault on ``events`` through the outbox (never lost).

        Raises ``OutboxError`` when it cannot be stored.
        """
        payload = event.model_dump_json().encode("utf-8")
        self._outbox.add("event", event.event_id, [(topics.EVENTS, payload)])
        self._kick()

    def submit_result(
        self, result_id: str, documents: Sequence[tuple[str, bytes]], *, replay: bool = False
    ) -> None:
        """Store a result's documents durably, then publish them at QoS 1 when connected.

        ``documents`` are (topic suffix, JSON payload) pairs, suffix 'results' or
        'results/fhir', published in the given order. Returns once they are on disk
        (not once delivered): from then on they are delivered even across broker
        outages, restarts and crashes. ``replay=True`` marks them as replayed even on
        their first send: for a stored report published again (``get_result``).
        Raises ``InputError`` for a malformed submission and ``OutboxError`` when the
        outbox cannot store it.
        """
        _check_result(result_id, documents)
        self._outbox.add("result", result_id, list(documents), replay=replay)
        _log.info("result %s stored in the outbox (%d document(s))", result_id, len(documents))
        self._kick()

    # -------------------------------------------------------------- paho callbacks
    # They run on paho's network thread: record, post, return.

    def _on_pre_connect(self, client: mqtt.Client, userdata: Any) -> None:
        if client is self._client:
            self._awaiting_connack = True

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if client is not self._client:
            return  # a client being replaced (protocol fallback)
        self._awaiting_connack = False
        version = self._version
        if reason.is_failure:
            self._events.put(_Refused(version, reason.value, str(reason)))
            return
        self._backoff.reset()
        with self._gen_lock:
            # paho would re-send its unacknowledged messages after this callback;
            # the outbox replay does that, in order and marked, so drop paho's copies.
            client.drop_out_messages()
            self._gen += 1
            self._live_gen = self._gen
            gen = self._gen
        if version == "5":
            options = SubscribeOptions(qos=1, noLocal=True, retainAsPublished=True)
            client.subscribe(self._topics.request_filter, options=options)
        else:
            client.subscribe(self._topics.request_filter, qos=1)
        self._events.put(_Connected(gen, version))

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        if client is not self._client:
            return
        self._awaiting_connack = False
        self._schedule_retry(client)
        self._events.put(_ConnectFailed())

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if client is not self._client:
            return
        self._schedule_retry(client)
        if self._awaiting_connack:
            self._awaiting_connack = False
            self._events.put(_ClosedBeforeConnack(self._version))
        # No lock here: paho may call this while holding its message lock, which the
        # link thread waits for inside publish() while holding _gen_lock. A publish
        # racing with the loss stays in paho's queue and is dropped at the next connect.
        gen, self._live_gen = self._live_gen, None
        self._connected_event.clear()
        if gen is not None:
            self._events.put(_Disconnected(gen, str(reason)))

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        failure = str(reason) if reason.is_failure else None
        self._events.put(_Acked(self._gen, mid, failure))

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        if client is not self._client:
            return
        failed = [str(r) for r in reasons if r.is_failure]
        if failed:
            self._events.put(_SubscribeFailed(failed[0]))
        if self._live_gen is not None:
            self._connected_event.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:
            _log.warning("ignored a message whose topic is not UTF-8")
            return
        command = self._topics.command_of(topic)
        if command is None:
            return
        props = message.properties
        expiry = getattr(props, "MessageExpiryInterval", None)
        response_topic = getattr(props, "ResponseTopic", None)
        correlation = getattr(props, "CorrelationData", None)
        request = InboundRequest(
            command=command,
            payload=bytes(message.payload),
            retained=bool(message.retain),
            received_monotonic=time.monotonic(),
            expiry_interval_s=int(expiry) if expiry is not None else None,
            response_topic=str(response_topic) if response_topic else None,
            correlation_data=bytes(correlation) if correlation is not None else None,
        )
        self._intake.offer(request)

    def _schedule_retry(self, client: mqtt.Client) -> None:
        """Set paho's wait before its next attempt (it waits right after this callback)."""
        delay = self._backoff.next_delay()
        # paho sleeps fractional delays correctly; its annotation just says int.
        client.reconnect_delay_set(delay, delay)  # type: ignore[arg-type]

    # ------------------------------------------------------------ the link thread

    def _run(self) -> None:
        beat = self._link_beat
        self._start_client()
        while True:
            try:
                event = self._events.get(timeout=self._wait_s())
            except queue.Empty:
                event = None
            beat.working()
            try:
                if event is not None:
                    self._handle(event)
                now = time.monotonic()
                if self._stop_deadline is not None and now >= self._stop_deadline:
                    _log.warning("the broker did not acknowledge 'stopped' in time")
                    self._finish()
                elif self._restart_at is not None and now >= self._restart_at:
                    self._start_client()
            except Exception:
                _log.exception("MQTT link: unexpected error handling %s", type(event).__name__)
            beat.idle()
            if self._stop_done is not None and self._stop_done.is_set():
                beat.finished()
                return

    def _wait_s(self) -> float | None:
        due = [t for t in (self._stop_deadline, self._restart_at) if t is not None]
        return max(0.0, min(due) - time.monotonic()) if due else None

    def _start_client(self) -> None:
        """Connect in the background; paho's thread retries with backoff from then on."""
        self._restart_at = None
        client = self._client if self._client is not None else self._new_client()
        self._client = client
        connection.connect_async(client, self._config, self._version)
        client.loop_start()

    def _handle(self, event: _Event) -> None:
        match event:
            case _Connected():
                self._connected(event)
            case _Disconnected():
                self._disconnected(event)
            case _Acked():
                self._acked(event)
            case _Kick():
                self._kick_pending = False
                self._pump()
            case _Latest():
                self._publish_latest(event.suffix)
            case _Progress():
                self._publish(self._topics.progress, event.payload, qos=0)
            case _Response():
                self._publish_response(event.reply)
            case _Refused():
                self._refused(event)
            case _ConnectFailed():
                self._connect_failed()
            case _ClosedBeforeConnack():
                self._closed_before_connack(event)
            case _SubscribeFailed():
                self._last_error = f"the broker refused the command subscription: {event.reason}"
                _log.error(
                    "%s; commands cannot be received (check the broker's ACL)", self._last_error
                )
            case _Stop():
                self._begin_stop(event)

    def _connected(self, event: _Connected) -> None:
        if self._live_gen != event.gen:
            return  # already lost again; a _Disconnected follows
        pending = self._outbox.count()
        self._session = _Session(
            gen=event.gen,
            version=event.version,
            backlog_max=self._outbox.last_id(),
            backlog_left=pending,
            started=time.monotonic(),
        )
        self._version_settled = True
        self._switch_delay = self._config.reconnect_min_s
        self._switch_reported = False
        self._failing = False
        self._refused_reported = False
        self._last_error = None
        outage = ""
        if self._offline_since is not None:
            outage = f" after {time.monotonic() - self._offline_since:.1f} s offline"
            self._offline_since = None
        _log.info(
            "connected to %s:%d with MQTT %s%s; %d outbox message(s) to send",
            self._config.host,
            self._config.port,
            event.version,
            outage,
            pending,
        )
        self._publish(self._topics.availability, b"online", qos=1, retain=True)
        self._publish_latest()
        self._pump()

    def _disconnected(self, event: _Disconnected) -> None:
        session = self._session
        if session is None or session.gen != event.gen:
            return
        self._session = None
        self._offline_since = time.monotonic()
        if self._stopping:
            self._finish()
            return
        _log.warning(
            "lost the MQTT connection (%s); %d unacknowledged message(s) will be re-sent",
            event.reason,
            len(session.inflight),
        )

    def _acked(self, event: _Acked) -> None:
        session = self._session
        if session is None or session.gen != event.gen:
            return
        if self._stop_mid is not None and event.mid == self._stop_mid:
            self._finish()
            return
        row = session.inflight.pop(event.mid, None)
        if row is None:
            return
        if event.failure is None:
            self._outbox.remove(row.id)
            _log.debug("%s %s (%s) acknowledged", row.kind, row.key, row.topic)
        else:
            _log.error(
                "the broker refused %s %s on %s (%s); it stays in the outbox and is sent "
                "again after the next reconnect",
                row.kind,
                row.key,
                row.topic,
                event.failure,
            )
        if row.id <= session.backlog_max:
            session.backlog_left -= 1
            if session.backlog_left == 0:
                _log.info(
                    "outbox replay done in %.2f s after connecting",
                    time.monotonic() - session.started,
                )
        self._pump()

    def _pump(self) -> None:
        """Publish outbox rows in id order while the in-flight window has room."""
        session = self._session
        if session is None or self._stopping:
            return
        room = self._config.outbox_inflight - len(session.inflight)
        while room > 0:
            rows = self._outbox.pending(after_id=session.cursor, limit=room)
            if not rows:
                return
            for row in rows:
                replayed = row.replay or row.id <= session.backlog_max
                payload = mark_replayed(row.payload) if replayed else row.payload
                mid = self._publish(
                    self._topics.topic(row.topic),
                    payload,
                    qos=1,
                    properties=self._row_properties(session, row, replayed),
                )
                if mid is None:
                    return  # the connection went away; a _Disconnected is queued
                session.inflight[mid] = row
                session.cursor = row.id
                room -= 1

    def _row_properties(
        self, session: _Session, row: OutboxRow, replayed: bool
    ) -> Properties | None:
        if session.version != "5":
            return None
        props = connection.new_properties(PacketTypes.PUBLISH)
        props.ContentType = CONTENT_TYPES.get(row.topic, "application/json")
        key_name = "result_id" if row.kind == "result" else "event_id"
        props.UserProperty = [(key_name, row.key), ("replayed", "true" if replayed else "false")]
        return props

    def _publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> int | None:
        """Publish on the live connection; the message id, or None when not connected."""
        session, client = self._session, self._client
        if session is None or client is None:
            return None
        with self._gen_lock:
            if self._live_gen != session.gen:
                return None
            info = client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            _log.error("could not publish on %s: %s", topic, mqtt.error_string(info.rc))
            return None
        return info.mid

    def _publish_latest(self, only: str | None = None) -> None:
        with self._latest_lock:
            latest = dict(self._latest)
        for suffix, payload in latest.items():
            if only is None or suffix == only:
                self._publish(self._topics.topic(suffix), payload, qos=1, retain=True)

    def _publish_response(self, event: Reply) -> None:
        props: Properties | None = None
        if self._session is not None and self._session.version == "5":
            props = connection.new_properties(PacketTypes.PUBLISH)
            props.ContentType = "application/json"
            if event.correlation_data is not None:
                props.CorrelationData = event.correlation_data
        sent = self._publish(
            self._topics.response(event.command), event.payload, qos=1, properties=props
        )
        if sent is None:
            _log.info("response to %s not sent: not connected", event.command)
        if event.response_topic is not None:
            try:
                self._publish(event.response_topic, event.payload, qos=1, properties=props)
            except ValueError as e:
                _log.warning("cannot answer on response topic %r: %s", event.response_topic, e)

    def _refused(self, event: _Refused) -> None:
        if (
            event.code == UNSUPPORTED_PROTOCOL_VERSION
            and event.version == "5"
            and not self._version_settled
        ):
            _log.warning("the broker refused MQTT 5 (%s); falling back to MQTT 3.1.1", event.reason)
            self._switch_version("3.1.1", delay_s=0.0)
            return
        message = f"the broker refused the connection: {event.reason}"
        self._report_refusal(message)

    def _connect_failed(self) -> None:
        if self._failing:
            return
        self._failing = True
        if self._offline_since is None:
            self._offline_since = time.monotonic()
        is_tls, message = connection.diagnose(self._config, self._ssl)
        if is_tls:
            self._report_refusal(message)
        else:
            self._last_error = message
            _log.warning(
                "cannot connect to the MQTT broker (%s); retrying, at most %g s apart",
                message,
                self._config.reconnect_max_s,
            )

    def _closed_before_connack(self, event: _ClosedBeforeConnack) -> None:
        if not self._version_settled:
            # Some brokers without MQTT 5 hang up instead of refusing: try the other
            # version, with backoff, since the cause may as well be TLS or an ACL.
            other: MqttVersion = "3.1.1" if event.version == "5" else "5"
            _log.log(
                logging.DEBUG if self._switch_reported else logging.WARNING,
                "the broker closed the connection before answering MQTT %s; trying MQTT %s",
                event.version,
                other,
            )
            self._switch_reported = True
            self._switch_version(other, delay_s=self._switch_delay)
            self._switch_delay = min(self._switch_delay * 2, self._config.reconnect_max_s)
        if self._failing:
            return
        self._failing = True
        is_tls, message = connection.diagnose(self._config, self._ssl)
        if is_tls:
            self._report_refusal(message)
        else:
            self._last_error = f"the broker closed the connection before accepting it ({message})"
            _log.warning("%s", self._last_error)

    def _report_refusal(self, message: str) -> None:
        """A refused connection: an error in the log and, once per outage, an event."""
        self._last_error = message
        if self._refused_reported:
            _log.debug("%s", message)
            return
        self._refused_reported = True
        _log.error(
            "%s; retrying, at most %g s apart",
            message,
            self._config.reconnect_max_s,
        )
        self.publish_event(EventPayload(code="mqtt.refused", severity="error", message=message))

    def _switch_version(self, version: MqttVersion, delay_s: float) -> None:
        """Replace the client (paho fixes the version per client) after ``delay_s``."""
        old, self._client = self._client, None  # the old client's callbacks are now ignored
        if old is not None:
            old.disconnect()
            old.loop_stop()
        self._version = version
        self._restart_at = time.monotonic() + delay_s

    def _begin_stop(self, event: _Stop) -> None:
        self._stop_done = event.done
        self._stopping = True
        mid = self._publish(self._topics.availability, b"stopped", qos=1, retain=True)
        if mid is None:
            self._finish()  # not connected: the broker already shows the will, 'offline'
            return
        self._stop_mid = mid
        self._stop_deadline = time.monotonic() + self._config.stop_timeout_s

    def _finish(self) -> None:
        client = self._client
        if client is not None:
            client.disconnect()
            client.loop_stop()
        self._stop_deadline = None
        self._connected_event.clear()
        _log.info("MQTT link stopped; %d message(s) wait in the outbox", self._outbox.count())
        if self._stop_done is not None:
            self._stop_done.set()

    # ------------------------------------------------------------------- helpers

    def _new_client(self) -> mqtt.Client:
        client = connection.new_client(
            self._config, self._client_id, self._version, self._ssl, self._topics.availability
        )
        client.on_pre_connect = self._on_pre_connect
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def _send_reply(self, reply: Reply) -> None:
        self._events.put(_Response(reply))

    def _set_latest(self, suffix: str, document: BaseModel) -> None:
        with self._latest_lock:
            self._latest[suffix] = document.model_dump_json().encode("utf-8")
        self._events.put(_Latest(suffix))

    def _kick(self) -> None:
        if not self._kick_pending:
            self._kick_pending = True
            self._events.put(_Kick())


def _check_result(result_id: str, documents: Sequence[tuple[str, bytes]]) -> None:
    if not isinstance(result_id, str) or not 0 < len(result_id) <= MAX_RESULT_ID_LENGTH:
        raise InputError(f"result_id must be 1-{MAX_RESULT_ID_LENGTH} characters")
    if not documents:
        raise InputError(f"result {result_id} has no documents to publish")
    for suffix, payload in documents:
        if suffix not in topics.RESULT_SUFFIXES:
            raise InputError(
                f"result {result_id}: topic {suffix!r} is not one of {', '.join(topics.RESULT_SUFFIXES)}"
            )
        if not isinstance(payload, bytes):
            raise InputError(f"result {result_id}: the {suffix} payload must be bytes")
        try:
            doc = json.loads(payload)
        except ValueError as e:
            raise InputError(f"result {result_id}: the {suffix} payload is not JSON: {e}") from e
        if not isinstance(doc, dict):
            raise InputError(f"result {result_id}: the {suffix} payload is not a JSON object")
        if suffix == topics.RESULTS and doc.get("result_id", result_id) != result_id:
            raise InputError(
                f"result {result_id}: the document's result_id is {doc.get('result_id')!r}"
            )
