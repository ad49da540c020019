"""Turning a raw MQTT request into a validated command, or into a clear refusal.

Pure: the clocks are arguments, so every rule is tested without a broker. The
order of the checks decides what a refusal can echo: the transaction is recovered
whenever the payload is a readable JSON object, even when something else is wrong.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from pydantic import JsonValue, ValidationError

from agent.errors import InputError
from agent.transport.commands import COMMAND_NAMES, COMMANDS, CommandArgs

ENVELOPE_KEYS: Final = ("transaction", "sent_at", "expires_at")
"""Request fields that are not command arguments."""

FUTURE_TOLERANCE_S: Final = 300.0
"""How far (s) a request's ``sent_at`` may lie in the requester's future: clocks differ."""

_MAX_SHOWN: Final = 60


@dataclass(frozen=True)
class InboundRequest:
    """A request as it arrived, before anything is trusted."""

    command: str
    payload: bytes
    retained: bool = False
    received_monotonic: float = 0.0
    """``time.monotonic()`` at arrival, for the MQTT 5 expiry interval."""
    expiry_interval_s: int | None = None
    """MQTT 5 Message Expiry Interval left when the broker delivered it (s)."""
    response_topic: str | None = None
    correlation_data: bytes | None = None


@dataclass(frozen=True)
class ValidRequest:
    """A request that passed every check; ``args`` is the command's model."""

    command: str
    transaction: JsonValue
    args: CommandArgs


class RequestRejected(InputError):
    """A request that must be answered with an error and must change nothing."""

    def __init__(self, message: str, transaction: JsonValue = None) -> None:
        super().__init__(message)
        self.transaction = transaction


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _DuplicateKey(f"duplicate key {_show(key)}")
        obj[key] = value
    return obj


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {_show(text)} is out of range")
    return value


def parse_json_object(payload: bytes) -> dict[str, Any]:
    """The payload as a JSON object; strict JSON (no NaN, no duplicate keys)."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RequestRejected(f"request is not UTF-8 text (byte {e.start})") from e
    try:
        value = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constants,
            parse_float=_finite_float,
        )
    except _DuplicateKey as e:
        raise RequestRejected(f"request JSON has a {e}") from e
    except RecursionError as e:
        raise RequestRejected("request JSON is nested too deeply") from e
    except ValueError as e:
        raise RequestRejected(f"request is not valid JSON: {e}") from e
    if not isinstance(value, dict):
        raise RequestRejected(f"request must be a JSON object, got {type(value).__name__}")
    return value


def _parse_instant(name: str, value: object, transaction: JsonValue) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise RequestRejected(
            f"{name} must be an ISO-8601 string, got {type(value).__name__}", transaction
        )
    try:
        instant = datetime.fromisoformat(value)
    except ValueError as e:
        raise RequestRejected(f"{name} {_show(value)} is not an ISO-8601 time", transaction) from e
    if instant.tzinfo is None:
        raise RequestRejected(
            f"{name} {_show(value)} has no UTC offset; add 'Z' or '+hh:mm'", transaction
        )
    return instant


def _describe(error: ValidationError) -> str:
    parts = []
    for err in error.errors():
        where = ".".join(str(p) for p in err["loc"]) or "arguments"
        if err["type"] == "extra_forbidden":
            parts.append(f"{where}: unknown argument")
        elif err["type"] == "missing":
            parts.append(f"{where}: required argument is missing")
        else:
            parts.append(f"{where}: {err['msg']} (got {_show(err.get('input'))})")
    return "; ".join(parts)


def validate_request(
    request: InboundRequest,
    *,
    max_bytes: int,
    max_age_s: float,
    now: datetime,
    now_monotonic: float,
) -> ValidRequest:
    """Check ``request`` completely; raise ``RequestRejected`` saying what is wrong.

    ``now`` is the current UTC time (for ``sent_at``/``expires_at``) and
    ``now_monotonic`` the current ``time.monotonic()`` (for the MQTT 5 expiry).
    """
    size = len(request.payload)
    if size > max_bytes:
        raise RequestRejected(f"request is {size} bytes; the limit is {max_bytes}")
    obj = parse_json_object(request.payload)
    if "transaction" not in obj:
        raise RequestRejected("request has no 'transaction'")
    transaction: JsonValue = obj["transaction"]

    if request.retained:
        raise RequestRejected(
            "retained requests are refused (a request must be published with retain=false; "
            "clear this one with an empty retained message)",
            transaction,
        )
    model = COMMANDS.get(request.command)
    if model is None:
        raise RequestRejected(
            f"unknown command {_show(request.command)}; known: {', '.join(COMMAND_NAMES)}",
            transaction,
        )

    sent_at = _parse_instant("sent_at", obj.get("sent_at"), transaction)
    expires_at = _parse_instant("expires_at", obj.get("expires_at"), transaction)
    if request.expiry_interval_s is not None:
        waited = now_monotonic - request.received_monotonic
        if waited > request.expiry_interval_s:
            raise RequestRejected(
                f"request expired: its MQTT message expiry ({request.expiry_interval_s} s) "
                f"passed while it waited {waited:.1f} s to be handled",
                transaction,
            )
    if expires_at is not None and now >= expires_at:
        raise RequestRejected(
            f"request expired at {expires_at.isoformat()} (now {now.isoformat()})", transaction
        )
    if sent_at is not None:
        age = (now - sent_at).total_seconds()
        if age > max_age_s:
            raise RequestRejected(
                f"request is stale: sent {age:.0f} s ago, more than the {max_age_s:g} s allowed",
                transaction,
            )
        if age < -FUTURE_TOLERANCE_S:
            ahead = timedelta(seconds=-age)
            raise RequestRejected(
                f"request sent_at is {ahead} in the future; check the clocks", transaction
            )
    args = {k: v for k, v in obj.items() if k not in ENVELOPE_KEYS}
    try:
        parsed = model.model_validate(args)
    except ValidationError as e:
        raise RequestRejected(
            f"invalid arguments for {request.command}: {_describe(e)}", transaction
        ) from e
    return ValidRequest(command=request.command, transaction=transaction, args=parsed)
