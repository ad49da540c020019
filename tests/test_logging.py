"""Log lines suit both a terminal and journald."""

from __future__ import annotations

import io
import logging

import pytest

from agent import logsetup


@pytest.fixture(autouse=True)
def _fresh_logging() -> object:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    logsetup._handler = None
    yield
    if logsetup._handler is not None:
        root.removeHandler(logsetup._handler)
    logsetup._handler = None
    root.handlers[:], _ = saved[0], root.setLevel(saved[1])


def test_journald_lines_carry_priority_and_no_timestamp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "8:1234")
    out = io.StringIO()
    logsetup.setup_logging("info", stream=out)
    logging.getLogger("agent.test").warning("stage slow")
    logging.getLogger("agent.test").debug("hidden")
    assert out.getvalue() == "<4>agent.test: stage slow\n"


def test_terminal_lines_have_time_and_level(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    out = io.StringIO()
    logsetup.setup_logging("debug", stream=out)
    logging.getLogger("agent.test").debug("detail")
    line = out.getvalue()
    assert " DEBUG agent.test: detail" in line
    assert line[2] == ":"  # HH:MM:SS prefix
