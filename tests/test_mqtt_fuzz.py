"""Hundreds of malformed requests: each gets one error response, none reaches the handler.

The cases are generated (seeded, so a failure is reproducible): random bytes,
non-UTF-8, oversized payloads, wrong argument types and ranges, missing and unknown
arguments, unknown commands, nested junk, non-object JSON, missing transactions,
stale or expired requests, retained requests, lone UTF-16 surrogates (in the
transaction, an argument or a key) and transactions too large to echo. Afterwards
the link must still be connected (never reconnected) and answer ``status``.
tests/test_mqtt_fuzz_property.py generates many more from the JSON Schemas.
"""

from __future__ import annotations

import json
import random
import string
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.transport.commands import CommandArgs
from agent.transport.requests import MAX_JSON_DEPTH, MAX_TRANSACTION_BYTES
from tests.broker import Broker, running_broker, started_link, watching

BASE = "algocyte/dev-1"
LIMIT = 4096
SEED = 20250301
NO_TX = object()
"""The transaction cannot be recovered from the payload: the response carries null."""


@dataclass(frozen=True)
class Case:
    kind: str
    command: str
    payload: bytes
    transaction: Any = NO_TX
    retain: bool = False


class CountingHandler:
    def __init__(self) -> None:
        self.calls: list[tuple[str, CommandArgs]] = []

    def handle(self, command: str, args: CommandArgs) -> Any:
        self.calls.append((command, args))
        return {"ok": True}


VALID_ARGS: dict[str, dict[str, Any]] = {
    "start_sample": {"sample_id": "S-1", "target_wbc": 200, "accession": "A-1"},
    "abort": {"sample_id": "S-1"},
    "get_result": {"sample_id": "S-1"},
    "get_cell_image": {"sample_id": "S-1", "cell_id": 4},
    "reclassify": {"sample_id": "S-1", "cell_id": 4, "label": "monocyte", "reviewer": "dr c"},
}
OPTIONAL = {("abort", "sample_id"), ("start_sample", "target_wbc"), ("start_sample", "accession")}
BAD_VALUES: dict[str, list[Any]] = {
    "sample_id": [123, 1.5, True, [], {}, "", "../etc/passwd", "a b", "x" * 65, "\u00e9t\u00e9"],
    "target_wbc": ["200", 200.5, True, 99, 501, [], -5, 10**30],
    "accession": [5, "", "a\u0000b", "x" * 65, ["A"]],
    "cell_id": ["1", -1, 1.5, True, [], {"id": 1}],
    "label": ["dog", 1, "", "Neutrophil", ["monocyte"]],
    "reviewer": ["", 5, "a\nb", "x" * 65, {"name": "x"}],
}


def _j(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def json_depth(value: Any) -> int:
    """Nesting depth of arrays and objects (a scalar is 0)."""
    if isinstance(value, dict):
        return 1 + max((json_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((json_depth(v) for v in value), default=0)
    return 0


ISSUE_16_REQUEST = b'{"transaction": "mal-0439\\ud800", "bogus": 1}'
"""The request that once ended the command thread (issue 16): a lone surrogate, escaped."""


def generate_cases() -> list[Case]:
    rng = random.Random(SEED)
    cases: list[Case] = []
    commands = [*VALID_ARGS, "status", "home", "self_test"]

    for i in range(40):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
        cases.append(Case("random-bytes", commands[i % len(commands)], blob))
    for i in range(10):
        raw = b'{"transaction": "' + bytes([0xFF, 0xC0 + i, 0x80]) + b'", "sample_id": "S"}'
        cases.append(Case("non-utf8", "start_sample", raw))
    cases.append(Case("non-utf8", "status", b"\xef\xbb\xbf" + _j({"transaction": 1})))
    for size in (LIMIT + 1, 10_000, 100_000, 1_000_000, 3_000_000):
        payload = _j({"transaction": "big", "sample_id": "S", "pad": "x" * size})
        cases.append(Case("huge", "start_sample", payload))

    for command, args in VALID_ARGS.items():
        for name in args:
            for value in BAD_VALUES[name]:
                tx = f"{command}.{name}.{len(cases)}"
                cases.append(
                    Case("wrong-type", command, _j({"transaction": tx, **args, name: value}), tx)
                )
            if (command, name) not in OPTIONAL:
                tx = f"{command}.missing.{name}"
                body = {k: v for k, v in args.items() if k != name}
                cases.append(Case("missing-arg", command, _j({"transaction": tx, **body}), tx))
        tx = f"{command}.extra"
        cases.append(
            Case("unknown-arg", command, _j({"transaction": tx, **args, "force": True}), tx)
        )
    for command in ("status", "home", "self_test"):
        for extra in ({"sample_id": "S-1"}, {"x": None}, {"": 1}):
            tx = f"{command}.extra.{len(cases)}"
            cases.append(Case("unknown-arg", command, _j({"transaction": tx, **extra}), tx))
    for i, command in enumerate(("status", "home", "abort", "self_test")):
        tx = f"wrong-command-args.{i}"
        cases.append(
            Case("unknown-arg", command, _j({"transaction": tx, **VALID_ARGS["reclassify"]}), tx)
        )

    alphabet = string.ascii_letters + string.digits + "_-.:\u00e9\u4e2d"
    for i in range(15):
        name = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 24)))
        if name in commands:
            name += "_x"
        cases.append(Case("unknown-command", name, _j({"transaction": i}), i))
    cases.append(
        Case(
            "unknown-command", "START_SAMPLE", _j({"transaction": "caps", "sample_id": "S"}), "caps"
        )
    )

    deep = "[" * 2000 + "]" * 2000
    cases.append(Case("nested", "status", ('{"transaction": 1, "x": ' + deep + "}").encode()))
    for depth in (3, 10, 50, 200):
        junk: Any = "leaf"
        for d in range(depth):
            junk = {"k": [junk, d, None]} if d % 2 else [junk, {"n": d}]
        tx = f"nested.{depth}"
        # Deeper than the limit, the request is refused unread: no transaction to echo.
        echoed = tx if 1 + json_depth(junk) <= MAX_JSON_DEPTH else NO_TX
        body = {"transaction": tx, "sample_id": junk}
        cases.append(Case("nested", "start_sample", _j(body), echoed))
        body = {"transaction": tx, "sample_id": "S", "cell_id": junk}
        cases.append(Case("nested", "get_cell_image", _j(body), echoed))
    too_deep: Any = "leaf"
    for _ in range(400):
        too_deep = [too_deep]
    cases.append(Case("nested", "status", _j({"transaction": too_deep})))

    for value in (0, 1.5, "text", [1, 2], None, True, [], [{"transaction": 1}]):
        cases.append(Case("non-object", "status", _j(value)))
    cases.append(Case("non-object", "status", b""))
    cases.append(Case("non-object", "status", b"   "))

    for command, args in [*VALID_ARGS.items(), ("status", {}), ("home", {})]:
        cases.append(Case("missing-transaction", command, _j(args)))
    cases.append(Case("missing-transaction", "status", _j({"Transaction": 1})))

    for i, value in enumerate(
        ["2020-01-01T00:00:00Z", "2000-02-29T12:00:00+05:00", "1999-12-31T23:59:59Z"]
    ):
        tx = f"expired.{i}"
        cases.append(
            Case(
                "expired",
                "start_sample",
                _j({"transaction": tx, "sample_id": "S", "expires_at": value}),
                tx,
            )
        )
        tx = f"stale.{i}"
        cases.append(
            Case(
                "expired",
                "start_sample",
                _j({"transaction": tx, "sample_id": "S", "sent_at": value}),
                tx,
            )
        )
    for i, value in enumerate(["2999-01-01T00:00:00Z", "2100-06-01T00:00:00+00:00"]):
        tx = f"future.{i}"
        cases.append(
            Case(
                "expired",
                "start_sample",
                _j({"transaction": tx, "sample_id": "S", "sent_at": value}),
                tx,
            )
        )
    for i, value in enumerate(
        ["yesterday", "2025-01-01T00:00:00", 1700000000, [], "2025-13-45T99:00:00Z"]
    ):
        tx = f"bad-time.{i}"
        cases.append(Case("expired", "status", _j({"transaction": tx, "expires_at": value}), tx))

    for i, command in enumerate(("start_sample", "abort", "status", "home", "reclassify")):
        tx = f"retained.{i}"
        body = {"transaction": tx, **VALID_ARGS.get(command, {})}
        cases.append(Case("retained", command, _j(body), tx, retain=True))

    cases.append(Case("json-edge", "status", b'{"transaction": NaN}'))
    cases.append(Case("json-edge", "status", b'{"transaction": Infinity}'))
    cases.append(Case("json-edge", "status", b'{"transaction": 1e999}'))
    cases.append(Case("json-edge", "status", b'{"transaction": 1, "transaction": 2}'))
    cases.append(Case("json-edge", "status", b'{"transaction": 1,}'))
    cases.append(Case("json-edge", "status", b"{'transaction': 1}"))
    cases.append(Case("json-edge", "status", b'{"transaction": ' + b"9" * 5000 + b"}"))
    cases.append(
        Case("json-edge", "start_sample", b'{"transaction": 1, "sample_id": "S"} trailing')
    )

    # A lone surrogate is valid JSON but not Unicode: the transaction is echoed as its
    # JSON text (\u escapes); anywhere else the request is refused with it echoed.
    cases.append(Case("surrogate", "status", ISSUE_16_REQUEST, '"mal-0439\\ud800"'))
    cases.append(
        Case(
            "surrogate",
            "status",
            b'{"transaction": {"id": ["x\\udfff", 1]}}',
            '{"id":["x\\udfff",1]}',
        )
    )
    cases.append(
        Case("surrogate", "status", b'{"transaction": "\\udc00\\ud800"}', '"\\udc00\\ud800"')
    )
    body = b'{"transaction": "r", "sample_id": "S-1", "cell_id": 4, "label": "monocyte", '
    cases.append(Case("surrogate", "reclassify", body + b'"reviewer": "dr \\ud83d"}', "r"))
    cases.append(Case("surrogate", "start_sample", b'{"transaction": 7, "\\ud800": 1}', 7))
    cases.append(
        Case(
            "surrogate",
            "status",
            b'{"transaction": "pair \\ud83d\\ude00", "x": 1}',
            "pair \U0001f600",
        )
    )
    for size in (MAX_TRANSACTION_BYTES, 5000, 50_000):
        tx = "t" * size
        cases.append(Case("big-transaction", "status", _j({"transaction": tx})))
    cases.append(Case("big-transaction", "status", _j({"transaction": list(range(400))})))
    return cases


CASES = generate_cases()


def test_generator_makes_enough_cases_of_every_kind() -> None:
    kinds = {c.kind for c in CASES}
    assert len(CASES) >= 200
    assert {
        "random-bytes", "non-utf8", "huge", "wrong-type", "missing-arg", "unknown-arg",
        "unknown-command", "nested", "non-object", "missing-transaction", "expired",
        "retained", "json-edge", "surrogate", "big-transaction",
    } <= kinds  # fmt: skip


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with running_broker(tmp_path / "broker") as b:
        yield b


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_every_malformed_request_gets_one_error_and_changes_nothing(
    broker: Broker, tmp_path: Path, protocol: str
) -> None:
    handler = CountingHandler()
    cases = [c for c in CASES if protocol == "5" or not c.retain]
    # Over 3.1.1 a live retained request cannot be told apart (the broker clears the
    # flag); only one waiting at connect can (test_mqtt_link covers that).
    with (
        watching(broker.port, f"{BASE}/#", "fuzz/replies") as watcher,
        started_link(
            broker.port, tmp_path / "state", handler, protocol=protocol, max_request_bytes=LIMIT
        ) as link,
    ):
        for index, case in enumerate(cases):
            response_topic = f"{BASE}/response/{case.command}"
            before = len(watcher.on(response_topic))
            v5 = {"response_topic": "fuzz/replies", "correlation_data": str(index).encode()}
            watcher.publish(
                f"{BASE}/request/{case.command}",
                case.payload,
                retain=case.retain,
                **(v5 if protocol == "5" else {}),
            )
            reply = watcher.wait_topic(response_topic, before + 1)[before].json()
            assert reply["status"] == "error", (case, reply)
            assert reply["data"] is None and reply["error"], (case, reply)
            expected_tx = None if case.transaction is NO_TX else case.transaction
            assert reply["transaction"] == expected_tx, (case, reply)
            if protocol == "5":
                tag = str(index).encode()
                watcher.wait(
                    lambda msgs, tag=tag: any(
                        m.topic == "fuzz/replies" and m.correlation_data == tag for m in msgs
                    ),
                    what=f"the reply to case {index} on the response topic",
                )

        if protocol == "5":
            tags = Counter(m.correlation_data for m in watcher.on("fuzz/replies"))
            assert tags == Counter(str(i).encode() for i in range(len(cases)))
        responses = [m for m in watcher.messages if m.topic.startswith(f"{BASE}/response/")]
        assert len(responses) == len(cases)
        assert handler.calls == []
        assert link.connected and len(watcher.on(f"{BASE}/availability")) == 1

        watcher.publish(f"{BASE}/request/status", json.dumps({"transaction": "after"}))
        reply = watcher.wait_topic(
            f"{BASE}/response/status", 1 + sum(c.command == "status" for c in cases)
        )
        assert reply[-1].json() == {
            "transaction": "after",
            "status": "ok",
            "data": {"ok": True},
            "error": None,
        }
    print(f"{len(cases)} malformed requests over MQTT {protocol}: all refused")
