"""Request validation without a broker: each rule, with explicit clocks."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agent.transport.commands import COMMANDS, GetCellImageArgs, ReclassifyArgs, StartSampleArgs
from agent.transport.requests import (
    InboundRequest,
    RequestRejected,
    ValidRequest,
    validate_request,
)

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def check(
    command: str,
    payload: bytes | dict[str, Any],
    *,
    retained: bool = False,
    expiry: int | None = None,
    waited_s: float = 0.0,
    max_bytes: int = 4096,
) -> ValidRequest:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    request = InboundRequest(
        command=command,
        payload=raw,
        retained=retained,
        received_monotonic=100.0,
        expiry_interval_s=expiry,
    )
    return validate_request(
        request, max_bytes=max_bytes, max_age_s=60.0, now=NOW, now_monotonic=100.0 + waited_s
    )


def rejected(*args: Any, **kwargs: Any) -> RequestRejected:
    with pytest.raises(RequestRejected) as info:
        check(*args, **kwargs)
    return info.value


def test_start_sample_happy_path_keeps_typed_args() -> None:
    valid = check("start_sample", {"transaction": "t1", "sample_id": "S-1", "target_wbc": 300})
    assert valid.transaction == "t1"
    assert valid.args == StartSampleArgs(sample_id="S-1", target_wbc=300)


def test_every_command_has_strict_args() -> None:
    for name, model in COMMANDS.items():
        assert model.model_config.get("extra") == "forbid", name
        assert model.model_config.get("strict") is True, name


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ({"sample_id": "S-1", "target_wbc": "200"}, "target_wbc: Input should be a valid integer"),
        ({"sample_id": "S-1", "target_wbc": True}, "target_wbc"),
        ({"sample_id": "S-1", "target_wbc": 200.0}, "target_wbc"),
        ({"sample_id": "S-1", "target_wbc": 99}, "greater than or equal to 100"),
        ({"sample_id": "S-1", "target_wbc": 501}, "less than or equal to 500"),
        ({"sample_id": "../etc"}, "sample_id: String should match pattern"),
        ({"sample_id": 42}, "sample_id: Input should be a valid string"),
        ({}, "sample_id: required argument is missing"),
        ({"sample_id": "S-1", "colour": "red"}, "colour: unknown argument"),
        ({"sample_id": "S-1", "accession": "A\n1"}, "accession"),
    ],
)
def test_bad_start_sample_args_are_named(args: dict[str, Any], fragment: str) -> None:
    error = rejected("start_sample", {"transaction": 5, **args})
    assert fragment in str(error)
    assert error.transaction == 5


def test_reclassify_label_must_be_a_review_label() -> None:
    ok = check(
        "reclassify",
        {"transaction": 1, "sample_id": "S", "cell_id": 3, "label": "artefact", "reviewer": "dr a"},
    )
    assert isinstance(ok.args, ReclassifyArgs)
    error = rejected(
        "reclassify",
        {"transaction": 1, "sample_id": "S", "cell_id": 3, "label": "dog", "reviewer": "dr a"},
    )
    assert "label" in str(error) and "neutrophil" in str(error)


def test_cell_id_is_a_non_negative_integer() -> None:
    assert check(
        "get_cell_image", {"transaction": 1, "sample_id": "S", "cell_id": 0}
    ).args == GetCellImageArgs(sample_id="S", cell_id=0)
    assert "cell_id" in str(
        rejected("get_cell_image", {"transaction": 1, "sample_id": "S", "cell_id": -1})
    )
    assert "cell_id" in str(
        rejected("get_cell_image", {"transaction": 1, "sample_id": "S", "cell_id": "7"})
    )


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b"\xff\xfe{}", "not UTF-8"),
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object, got list"),
        (b"null", "got NoneType"),
        (b'{"transaction": NaN}', "NaN is not valid JSON"),
        (b'{"transaction": 1e999}', "out of range"),
        (b'{"transaction": 1, "transaction": 2}', "duplicate key"),
        (b"[" * 50_000 + b"]" * 50_000, "nested too deeply"),
        (b'{"sample_id": "S"}', "no 'transaction'"),
        (b"", "not valid JSON"),
    ],
)
def test_unreadable_payloads(payload: bytes, fragment: str) -> None:
    error = rejected("status", payload, max_bytes=1_000_000)
    assert fragment in str(error)
    assert error.transaction is None


def test_oversized_payload_is_refused_before_parsing() -> None:
    error = rejected("status", {"transaction": 1, "pad": "x" * 5000})
    assert "bytes; the limit is 4096" in str(error)


def test_unknown_command_lists_known_ones_and_keeps_transaction() -> None:
    error = rejected("make_coffee", {"transaction": {"id": [1, 2]}})
    assert "unknown command 'make_coffee'" in str(error) and "start_sample" in str(error)
    assert error.transaction == {"id": [1, 2]}


def test_retained_request_is_refused() -> None:
    error = rejected("status", {"transaction": 9}, retained=True)
    assert "retained" in str(error)
    assert error.transaction == 9


def test_expires_at_in_the_past_is_stale() -> None:
    past = (NOW - timedelta(seconds=1)).isoformat()
    future = (NOW + timedelta(seconds=30)).isoformat()
    assert "expired" in str(rejected("status", {"transaction": 1, "expires_at": past}))
    assert check("status", {"transaction": 1, "expires_at": future}).transaction == 1


def test_sent_at_older_than_max_age_is_stale() -> None:
    old = (NOW - timedelta(seconds=61)).isoformat().replace("+00:00", "Z")
    fresh = (NOW - timedelta(seconds=59)).isoformat()
    error = rejected("start_sample", {"transaction": 1, "sample_id": "S", "sent_at": old})
    assert "stale" in str(error) and "60 s allowed" in str(error)
    assert check("status", {"transaction": 1, "sent_at": fresh}).transaction == 1


def test_sent_at_far_in_the_future_points_at_the_clocks() -> None:
    future = (NOW + timedelta(hours=2)).isoformat()
    assert "check the clocks" in str(rejected("status", {"transaction": 1, "sent_at": future}))


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("2025-03-01T12:00:00", "no UTC offset"),
        ("yesterday", "not an ISO-8601 time"),
        (1740830400, "must be an ISO-8601 string"),
    ],
)
def test_bad_timestamps(value: Any, fragment: str) -> None:
    assert fragment in str(rejected("status", {"transaction": 1, "expires_at": value}))


def test_mqtt5_message_expiry_counts_time_spent_waiting() -> None:
    assert check("status", {"transaction": 1}, expiry=5, waited_s=4.0).transaction == 1
    error = rejected("status", {"transaction": 1}, expiry=5, waited_s=6.0)
    assert "MQTT message expiry (5 s)" in str(error)
