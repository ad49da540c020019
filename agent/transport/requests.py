"""Turning a raw MQTT request into a validated command, or into a clear refusal.

Pure: the clocks are arguments, so every rule is tested without a broker. The
order of the checks decides what a refusal can echo: the transaction is recovered
whenever the payload is a readable JSON object, even when something else is wrong.

Nothing here recurses into the request before its size and nesting depth are known
to be small: the depth is counted on the raw text, so a payload of 60 000 brackets is
refused before the JSON parser (or pydantic, or ``repr``) could run out of stack.
The transaction must also survive being echoed: text that is not Unicode (a lone
UTF-16 surrogate such as ``"\\ud800"``, which JSON can spell but UTF-8 cannot carry)
or an oversized value is replaced in the response and the request is refused.
"""

from __future__ import annotations

import json
import math
import re
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

MAX_JSON_DEPTH: Final = 32
"""Deepest nesting of arrays and objects in a request; a real one needs 2 or 3 levels."""

MAX_TRANSACTION_BYTES: Final = 1024
"""Largest transaction (as compact JSON) that is echoed; a larger one is answered with null."""

_MAX_SHOWN: Final = 60

_STRUCTURE = re.compile(r'[\[\]{}"\\]')
"""The characters that open or close arrays, objects and strings, and escapes."""

_SURROGATE = re.compile(r"[\ud800-\udfff]")


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


def nesting_depth(text: str, limit: int) -> int:
    """How deeply arrays and objects nest in JSON ``text``, counted up to ``limit + 1``.

    A scan over the structural characters only, without parsing and without
    recursion; brackets inside strings do not count. Malformed text gets some
    number: the parser that runs next says what is wrong with it.
    """
    depth = deepest = 0
    in_string = False
    escaped_at = -1
    for match in _STRUCTURE.finditer(text):
        i = match.start()
        if i == escaped_at:
            continue
        c = text[i]
        if in_string:
            if c == "\\":
                escaped_at = i + 1
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        elif c in "]}":
            depth -= 1
    return deepest


def _lone_surrogate(value: object) -> bool:
    """True if a string (or an object key) anywhere in ``value`` holds a lone surrogate.

    Iterative, so it is safe on any depth the parser accepted.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            for key, child in item.items():
                if _SURROGATE.search(key):
                    return True
                stack.append(child)
        elif isinstance(item, list):
            stack.extend(item)
    return False


def echoable_transaction(value: JsonValue) -> tuple[JsonValue, str | None]:
    """The transaction as the response can carry it, and why it differs (None: unchanged).

    A transaction with a lone surrogate becomes its JSON text with ``\\u`` escapes
    (a string the requester can parse back); one larger than
    ``MAX_TRANSACTION_BYTES`` becomes null. The value's depth is bounded already
    (``MAX_JSON_DEPTH``), so ``json.dumps`` cannot recurse too deeply here.
    """
    if _lone_surrogate(value):
        escaped = json.dumps(value, ensure_ascii=True, separators=(",", ":"))
        if len(escaped) <= MAX_TRANSACTION_BYTES:
            return escaped, (
                "the transaction holds a lone UTF-16 surrogate, which is not Unicode text; "
                "it is echoed as its JSON text with \\u escapes"
            )
        return None, (
            "the transaction holds a lone UTF-16 surrogate, which is not Unicode text, and is "
            f"too large to echo escaped (more than {MAX_TRANSACTION_BYTES} bytes); it is "
            "echoed as null"
        )
    size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    if size > MAX_TRANSACTION_BYTES:
        return None, (
            f"the transaction is {size} bytes of JSON, more than the {MAX_TRANSACTION_BYTES} "
            "that are echoed; it is echoed as null"
        )
    return value, None


def parse_json_object(payload: bytes) -> dict[str, Any]:
    """The payload as a JSON object; strict JSON (no NaN, no duplicate keys, bounded depth)."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RequestRejected(f"request is not UTF-8 text (byte {e.start})") from e
    if nesting_depth(text, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise RequestRejected(
            f"request JSON is nested too deeply (more than {MAX_JSON_DEPTH} levels); "
            "its transaction cannot be read"
        )
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
    transaction, problem = echoable_transaction(obj["transaction"])
    if problem is not None:
        raise RequestRejected(f"request refused: {problem}", transaction)
    if _lone_surrogate(obj):
        raise RequestRejected(
            "request refused: a string in it holds a lone UTF-16 surrogate (an unpaired "
            "\\ud800-\\udfff escape), which is not Unicode text",
            transaction,
        )

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
