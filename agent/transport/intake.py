"""The command intake: every MQTT request in, exactly one response out.

Requests wait in a bounded queue and one thread answers them in arrival order, so
a slow handler delays other commands but never keepalives or PUBACKs (those run on
paho's thread and the link thread). A full queue is answered 'busy' at once.

``reply_to`` is the one place where a request becomes a response, and it cannot
raise: validation refuses what is malformed (``agent.transport.requests``), the
daemon's handler is guarded, and the response is encoded in a guarded step that
falls back to the same error without the part that broke it, and finally to a
fixed error document. The loop around it catches every ``Exception`` too, so no
request, however malformed, and no handler bug can end the thread. Only a
``BaseException`` that is not an ``Exception`` (``SystemExit``) can; the thread's
``Heartbeat`` then says it died, and the daemon's health check makes that a fault
and stops feeding the systemd watchdog, so the service is restarted instead of
staying deaf.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from pydantic import BaseModel, JsonValue, TypeAdapter, ValidationError
from pydantic_core import to_jsonable_python

from agent.errors import AnalyzerError
from agent.heartbeat import Heartbeat
from agent.transport.commands import CommandHandler
from agent.transport.config import MqttConfig
from agent.transport.payloads import ResponseEnvelope
from agent.transport.requests import InboundRequest, RequestRejected, validate_request

_log = logging.getLogger(__name__)

COMMAND_QUEUE_DEPTH: Final = 64
"""Requests waiting for the command thread; beyond this they are answered 'busy'."""

SLOW_HANDLER_S: Final = 1.0
"""A handler call longer than this (s) is logged: it breaks the handler contract."""

BUSY_ERROR: Final = "busy: too many requests waiting; retry later"

UNENCODABLE_ERROR: Final = "internal error: the response could not be encoded; see the analyzer log"

FALLBACK_RESPONSE: Final = (
    b'{"transaction":null,"status":"error","data":null,"error":"'
    + UNENCODABLE_ERROR.encode()
    + b'"}'
)
"""Sent when not even the error response can be encoded (nothing of the request in it)."""

_JSON_VALUE: Final = TypeAdapter[JsonValue](JsonValue)


@dataclass(frozen=True)
class Reply:
    """An encoded response and where it goes: ``response/<command>`` and the Response Topic."""

    command: str
    payload: bytes
    response_topic: str | None
    correlation_data: bytes | None


class CommandIntake:
    """The request queue, the command thread and the request -> response step."""

    def __init__(
        self, config: MqttConfig, handler: CommandHandler, send: Callable[[Reply], None]
    ) -> None:
        """``send`` hands a reply to the link for publishing; it must not block."""
        self._config = config
        self._handler = handler
        self._send = send
        self._requests: queue.Queue[InboundRequest | None] = queue.Queue(COMMAND_QUEUE_DEPTH)
        self._thread: threading.Thread | None = None
        self.heartbeat = Heartbeat("command intake")

    @property
    def waiting(self) -> int:
        """Requests queued and not yet taken up by the command thread."""
        return self._requests.qsize()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._serve, name="mqtt-commands", daemon=True)
        self.heartbeat.attach(self._thread)
        self._thread.start()

    def offer(self, request: InboundRequest) -> None:
        """Queue ``request`` (from paho's thread: never blocks); a full queue is answered busy."""
        try:
            self._requests.put_nowait(request)
        except queue.Full:
            _log.warning(
                "request %s refused: %d requests already waiting",
                request.command,
                COMMAND_QUEUE_DEPTH,
            )
            self._send(_reply(request, ResponseEnvelope(status="error", error=BUSY_ERROR)))

    def stop(self, timeout_s: float) -> None:
        """Drop what still waits (nothing can be answered once disconnected), end the thread."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        dropped = 0
        while True:
            try:
                self._requests.put_nowait(None)
                break
            except queue.Full:
                pass
            try:
                self._requests.get_nowait()
                dropped += 1
            except queue.Empty:
                pass
        if dropped:
            _log.warning("%d request(s) left unanswered at shutdown", dropped)
        thread.join(timeout_s)
        if thread.is_alive():
            _log.warning("a command handler is still running at shutdown")

    def reply_to(self, request: InboundRequest) -> Reply:
        """The one response to ``request``; never raises (see the module docstring)."""
        try:
            response = self._answer(request)
        except Exception:
            _log.exception("unexpected error answering %s", request.command)
            response = ResponseEnvelope(
                status="error", error="internal error; see the analyzer log"
            )
        return _reply(request, response)

    # -- the command thread --------------------------------------------------------------

    def _serve(self) -> None:
        beat = self.heartbeat
        while True:
            request = self._requests.get()
            if request is None:
                beat.finished()
                return
            beat.working()
            try:
                self._send(self.reply_to(request))
            except Exception:
                _log.exception("could not hand the response to %s to the link", request.command)
            beat.idle()

    def _answer(self, request: InboundRequest) -> ResponseEnvelope:
        try:
            valid = validate_request(
                request,
                max_bytes=self._config.max_request_bytes,
                max_age_s=self._config.command_max_age_s,
                now=datetime.now(UTC),
                now_monotonic=time.monotonic(),
            )
        except RequestRejected as e:
            _log.warning("request %s refused: %s", request.command, e)
            return ResponseEnvelope(transaction=e.transaction, status="error", error=str(e))
        started = time.monotonic()
        try:
            data = self._handler.handle(valid.command, valid.args)
            response = ResponseEnvelope(
                transaction=valid.transaction, status="ok", data=_jsonable(data)
            )
        except AnalyzerError as e:
            _log.warning("%s failed: %s", valid.command, e)
            response = ResponseEnvelope(transaction=valid.transaction, status="error", error=str(e))
        except Exception:
            _log.exception("the handler of %s failed", valid.command)
            response = ResponseEnvelope(
                transaction=valid.transaction,
                status="error",
                error=f"internal error while handling {valid.command}; see the analyzer log",
            )
        took = time.monotonic() - started
        if took > SLOW_HANDLER_S:
            _log.warning(
                "the handler of %s took %.1f s; handlers must only enqueue work",
                valid.command,
                took,
            )
        _log.info("request %s -> %s", valid.command, response.status)
        return response


def encode_response(response: ResponseEnvelope) -> bytes:
    """``response`` as JSON; what cannot be encoded degrades to an error, never to nothing.

    First the response itself; then the same transaction with a generic error (the
    handler's data or message was what broke); then ``FALLBACK_RESPONSE``.
    """
    try:
        return response.model_dump_json().encode("utf-8")
    except Exception:
        _log.exception("a %s response could not be encoded", response.status)
    try:
        degraded = ResponseEnvelope(
            transaction=response.transaction, status="error", error=UNENCODABLE_ERROR
        )
        return degraded.model_dump_json().encode("utf-8")
    except Exception:
        _log.exception("the error response could not be encoded either")
    return FALLBACK_RESPONSE


def _reply(request: InboundRequest, response: ResponseEnvelope) -> Reply:
    return Reply(
        command=request.command,
        payload=encode_response(response),
        response_topic=request.response_topic,
        correlation_data=request.correlation_data,
    )


def _jsonable(data: Any) -> JsonValue:
    """The handler's return value as JSON data; refuses what JSON cannot carry."""
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    try:
        plain = to_jsonable_python(data)
        return _JSON_VALUE.validate_python(plain)
    except (ValueError, TypeError, ValidationError) as e:
        # A bug in the handler, not the requester's fault: logged with its traceback.
        raise TypeError(f"the handler returned data that is not JSON: {e}") from e
