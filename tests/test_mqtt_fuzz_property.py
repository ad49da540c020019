"""Requests generated from the JSON Schemas, each spoiled in one way: one error answer each.

Hypothesis builds a request that the schemas accept (docs/mqtt-request.schema.json
for the envelope, docs/mqtt-args-<command>.schema.json for the arguments), then
spoils it with one defect: a lone UTF-16 surrogate (in the transaction, an argument
or a key), nesting deeper than the limit, NaN or Infinity, a number JSON cannot
hold, a transaction too large to echo, an unknown argument holding any JSON (text
from every Unicode plane, huge integers, deep but legal nesting), a missing or
mistyped argument, or bytes that are not UTF-8. Every request goes over a real
broker to a real ``MqttLink``, must get exactly one error response (valid against
docs/mqtt-response.schema.json, with the transaction echoed as the contract says)
and the link must answer ``status`` right after.

The number of examples is bounded for ``make test`` (``ALGOCYTE_FUZZ_EXAMPLES`` per
defect, default 20, so 220 requests) and the generation is derandomized, so CI runs the same requests every
time; set the variable higher to search longer.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from agent.transport.commands import COMMAND_NAMES
from agent.transport.requests import MAX_JSON_DEPTH, MAX_TRANSACTION_BYTES
from tests.broker import Watcher, running_broker, started_link, watching
from tests.test_mqtt_fuzz import CountingHandler

DOCS = Path(__file__).resolve().parent.parent / "docs"
BASE = "algocyte/dev-1"
LIMIT = 65_536
EXAMPLES = int(os.environ.get("ALGOCYTE_FUZZ_EXAMPLES", "20"))
"""Examples per defect (11 defects)."""
RAW = "\u0000raw-literal-{}\u0000"
"""Placeholder for a JSON literal that ``json.dumps`` cannot write (NaN, huge numbers)."""


def _schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DOCS / name).read_text(encoding="utf-8"))
    return loaded


ENVELOPE = _schema("mqtt-request.schema.json")
ARGS = {command: _schema(f"mqtt-args-{command}.schema.json") for command in COMMAND_NAMES}
RESPONSE = _schema("mqtt-response.schema.json")

# ------------------------------------------------------------------ text and JSON values


def _in_plane(plane: int) -> st.SearchStrategy[str]:
    """A character of Unicode plane ``plane`` (0-16), never a surrogate."""
    low = plane * 0x10000
    return st.integers(low, low + 0xFFFF).filter(lambda c: not 0xD800 <= c <= 0xDFFF).map(chr)


ANY_PLANE_CHAR = st.integers(0, 16).flatmap(_in_plane)
TEXT = st.text(st.one_of(st.characters(exclude_categories=["Cs"]), ANY_PLANE_CHAR), max_size=40)
SURROGATE = st.integers(0xD800, 0xDFFF).map(chr)


def json_values(max_leaves: int = 8) -> st.SearchStrategy[Any]:
    """Any JSON value (no NaN), with text from every plane and integers of any size."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.integers(-(10**300), 10**300),
        st.floats(allow_nan=False, allow_infinity=False),
        TEXT,
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)
        ),
        max_leaves=max_leaves,
    )


# ------------------------------------------------------------- schema -> strategy


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values a (simple) JSON Schema accepts: the subset our generated schemas use."""
    if "anyOf" in schema:
        return st.one_of([from_schema(s) for s in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind is None or "$ref" in schema:
        return json_values()
    if kind == "null":
        return st.none()
    if kind == "integer":
        return st.integers(schema.get("minimum"), schema.get("maximum"))
    if kind == "string":
        if schema.get("format") == "date-time":
            return st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat())
        low, high = schema.get("minLength", 0), schema.get("maxLength", 200)
        text = st.from_regex(schema["pattern"], fullmatch=True) if "pattern" in schema else TEXT
        return text.filter(lambda s: low <= len(s) <= high)
    if kind == "object":
        props = schema.get("properties", {})
        required = set(schema.get("required", ()))
        return st.fixed_dictionaries(
            {k: from_schema(v) for k, v in props.items() if k in required},
            optional={k: from_schema(v) for k, v in props.items() if k not in required},
        )
    raise ValueError(f"schema type {kind!r} is not generated here")


def requests_for(command: str) -> st.SearchStrategy[dict[str, Any]]:
    """Schema-valid requests: envelope fields plus the command's arguments."""
    args = ARGS[command]
    schema = {
        "type": "object",
        "properties": {**ENVELOPE["properties"], **args.get("properties", {})},
        "required": [*ENVELOPE["required"], *args.get("required", [])],
    }
    schema["properties"]["transaction"] = {"$ref": "#/$defs/JsonValue"}
    return from_schema(schema)


# -------------------------------------------------------------------- the defects


@dataclass(frozen=True)
class Spoiled:
    command: str
    payload: bytes
    transaction: Any
    """What the response must carry as its transaction."""
    defect: str


def echoed(transaction: Any) -> Any:
    """The transaction as docs/mqtt.md says the response carries it."""
    text = json.dumps(transaction, ensure_ascii=False, separators=(",", ":"))
    if any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        escaped = json.dumps(transaction, ensure_ascii=True, separators=(",", ":"))
        return escaped if len(escaped) <= MAX_TRANSACTION_BYTES else None
    return transaction if len(text.encode("utf-8")) <= MAX_TRANSACTION_BYTES else None


def _encode(obj: Any, raw: dict[str, str] | None = None, ascii_only: bool = True) -> bytes:
    """JSON as a requester would send it; a lone surrogate can only be sent escaped."""
    text = json.dumps(obj, ensure_ascii=ascii_only)
    if not ascii_only and any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        return _encode(obj, raw, ascii_only=True)
    for placeholder, literal in (raw or {}).items():
        text = text.replace(json.dumps(placeholder, ensure_ascii=ascii_only), literal)
    return text.encode("utf-8")


def _with_surrogate(text: str, surrogate: str, at: int) -> str:
    at = at % (len(text) + 1)
    return text[:at] + surrogate + text[at:]


def _nest(value: Any, levels: int, as_object: bool) -> Any:
    for _ in range(levels):
        value = {"k": value} if as_object else [value]
    return value


def _string_args(command: str) -> list[str]:
    props = ARGS[command].get("properties", {})
    return [
        k
        for k, v in props.items()
        if v.get("type") == "string" or any(s.get("type") == "string" for s in v.get("anyOf", []))
    ]


def _unknown_key(command: str, request: dict[str, Any], key: str) -> str:
    """``key``, changed until it is no field of the envelope or the command."""
    known = {*request, *ENVELOPE["properties"], *ARGS[command].get("properties", {})}
    key = key or "x"
    while key in known:
        key += "_"
    return key


DEFECTS = (
    "surrogate-in-transaction",
    "surrogate-in-argument",
    "surrogate-in-key",
    "too-deep",
    "nan",
    "huge-number",
    "big-transaction",
    "unknown-argument",
    "not-utf8",
    "missing-argument",
    "wrong-type",
)


def _commands_for(defect: str) -> list[str]:
    if defect == "surrogate-in-argument":
        return [c for c in COMMAND_NAMES if _string_args(c)]
    if defect in ("missing-argument", "wrong-type"):
        return [c for c in COMMAND_NAMES if ARGS[c].get("required")]
    return list(COMMAND_NAMES)


@st.composite
def spoiled_requests(draw: st.DrawFn, defect: str) -> Spoiled:
    command = draw(st.sampled_from(_commands_for(defect)))
    request = draw(requests_for(command))
    request["transaction"] = draw(json_values(max_leaves=4))
    tx = request["transaction"]
    required = ARGS[command].get("required", [])

    if defect == "surrogate-in-transaction":
        text = _with_surrogate(draw(TEXT), draw(SURROGATE), draw(st.integers(0, 40)))
        request["transaction"] = draw(st.sampled_from([text, [text, 1], {text: tx}, {"id": text}]))
        return Spoiled(command, _encode(request), echoed(request["transaction"]), defect)
    if defect == "surrogate-in-argument":
        name = draw(st.sampled_from(_string_args(command)))
        value = request.get(name) or "S"
        request[name] = _with_surrogate(str(value), draw(SURROGATE), draw(st.integers(0, 64)))
        return Spoiled(command, _encode(request), echoed(tx), defect)
    if defect == "surrogate-in-key":
        key = _with_surrogate(draw(TEXT), draw(SURROGATE), draw(st.integers(0, 40)))
        request[key] = draw(json_values(max_leaves=2))
        return Spoiled(command, _encode(request), echoed(tx), defect)
    if defect == "too-deep":
        levels = draw(st.integers(MAX_JSON_DEPTH, 600))
        where = draw(st.sampled_from(["transaction", "argument"]))
        deep = _nest(draw(json_values(max_leaves=1)), levels, draw(st.booleans()))
        key = "transaction" if where == "transaction" else _unknown_key(command, request, "deep")
        request[key] = deep
        return Spoiled(command, _encode(request), None, defect)
    if defect in ("nan", "huge-number"):
        if defect == "nan":
            literal = draw(st.sampled_from(["NaN", "Infinity", "-Infinity"]))
        else:
            digits = draw(st.integers(4301, 20_000))
            literal = draw(
                st.sampled_from(["1" + "0" * digits, f"1e{digits}", f"-{digits}.5e{digits}"])
            )
        placeholder = RAW.format(0)
        key = draw(st.sampled_from(["transaction", _unknown_key(command, request, "n"), *required]))
        request[key] = placeholder
        return Spoiled(command, _encode(request, {placeholder: literal}), None, defect)
    if defect == "big-transaction":
        request["transaction"] = draw(
            st.one_of(
                st.just(list(range(300))),
                TEXT.map(lambda s: s * 100 + "y" * MAX_TRANSACTION_BYTES),
                st.integers(10**1100, 10**4000),
            )
        )
        return Spoiled(command, _encode(request), None, defect)
    if defect == "unknown-argument":
        key = _unknown_key(command, request, draw(TEXT))
        request[key] = draw(
            st.one_of(json_values(), st.integers(0, 30).map(lambda n: _nest(1, n, n % 2 == 1)))
        )
        ascii_only = draw(st.booleans())
        return Spoiled(command, _encode(request, ascii_only=ascii_only), echoed(tx), defect)
    if defect == "not-utf8":
        text = _with_surrogate(draw(TEXT), draw(SURROGATE), draw(st.integers(0, 40)))
        request["transaction"] = text
        payload = json.dumps(request, ensure_ascii=False).encode("utf-8", "surrogatepass")
        return Spoiled(command, payload, None, defect)
    if defect == "missing-argument":
        del request[draw(st.sampled_from(required))]
        return Spoiled(command, _encode(request), echoed(tx), defect)
    # wrong-type: a required argument of another JSON type than its schema's
    name = draw(st.sampled_from(required))
    wanted = ARGS[command]["properties"][name].get("type")
    others = {
        "string": st.one_of(st.integers(), st.booleans(), st.none(), st.lists(TEXT, max_size=2)),
        "integer": st.one_of(
            TEXT, st.booleans(), st.none(), st.floats(allow_nan=False, allow_infinity=False)
        ),
    }
    request[name] = draw(others.get(wanted, st.none()))
    return Spoiled(command, _encode(request), echoed(tx), defect)


# ------------------------------------------------------------------------ the test


@dataclass
class Rig:
    watcher: Watcher
    handler: CountingHandler
    tags: Iterator[int]


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    tmp = tmp_path_factory.mktemp("fuzz-property")
    handler = CountingHandler()
    with (
        running_broker(tmp / "broker") as broker,
        watching(broker.port, f"{BASE}/response/#") as watcher,
        started_link(broker.port, tmp / "state", handler, max_request_bytes=LIMIT) as link,
    ):
        yield Rig(watcher, handler, itertools.count())
        assert link.connected


def _replies(watcher: Watcher, command: str, tag: bytes) -> list[dict[str, Any]]:
    topic = f"{BASE}/response/{command}"
    return [m.json() for m in watcher.on(topic) if m.correlation_data == tag]


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@pytest.mark.parametrize("defect", DEFECTS)
@given(data=st.data())
def test_every_spoiled_request_gets_one_error_and_status_still_answers(
    rig: Rig, defect: str, data: st.DataObject
) -> None:
    case = data.draw(spoiled_requests(defect), label="request")
    event(case.command)
    watcher, n = rig.watcher, next(rig.tags)
    tag, probe = f"req-{n}".encode(), f"probe-{n}".encode()
    calls = len(rig.handler.calls)
    watcher.publish(f"{BASE}/request/{case.command}", case.payload, correlation_data=tag)
    watcher.publish(
        f"{BASE}/request/status", json.dumps({"transaction": f"probe-{n}"}), correlation_data=probe
    )
    watcher.wait(
        lambda msgs: any(m.correlation_data == probe for m in msgs), 10, f"the probe after {case}"
    )
    # Answers come in request order: the spoiled request's answer is in by now.
    replies = _replies(watcher, case.command, tag)
    assert len(replies) == 1, (case, replies)
    reply = replies[0]
    jsonschema.validate(reply, RESPONSE)
    assert reply["status"] == "error" and reply["data"] is None and reply["error"], (case, reply)
    assert reply["transaction"] == case.transaction, (case, reply)
    [status] = _replies(watcher, "status", probe)
    assert status["status"] == "ok" and status["transaction"] == f"probe-{n}"
    assert len(rig.handler.calls) == calls + 1  # only the probe reached the handler
