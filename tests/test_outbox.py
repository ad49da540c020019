"""The outbox: durable, ordered, all-or-nothing, and loud when it cannot be trusted."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent.transport.outbox import FILENAME, Outbox, OutboxError


def test_rows_come_back_in_order_and_survive_reopening(tmp_path: Path) -> None:
    with Outbox.in_state_dir(tmp_path) as box:
        box.add("result", "r1", [("results", b'{"a":1}'), ("results/fhir", b'{"b":2}')])
        box.add("event", "e1", [("events", b'{"c":3}')])
    with Outbox(tmp_path / FILENAME) as box:
        rows = box.pending()
        assert [(r.kind, r.key, r.topic, r.payload) for r in rows] == [
            ("result", "r1", "results", b'{"a":1}'),
            ("result", "r1", "results/fhir", b'{"b":2}'),
            ("event", "e1", "events", b'{"c":3}'),
        ]
        assert [r.id for r in rows] == sorted(r.id for r in rows)
        assert box.count() == 3
        assert box.last_id() == rows[-1].id
        assert box.oldest_created_at() is not None


def test_pending_pages_after_an_id_and_remove_acknowledges(tmp_path: Path) -> None:
    with Outbox.in_state_dir(tmp_path) as box:
        ids = [box.add("result", f"r{i}", [("results", b"{}")])[0] for i in range(5)]
        assert [r.id for r in box.pending(after_id=ids[1], limit=2)] == ids[2:4]
        assert box.remove(ids[0]) is True
        assert box.remove(ids[0]) is False
        assert [r.key for r in box.pending()] == ["r1", "r2", "r3", "r4"]


def test_ids_are_never_reused_after_the_newest_row_is_removed(tmp_path: Path) -> None:
    # Order depends on ids only growing; SQLite reuses max(rowid)+1 without AUTOINCREMENT.
    with Outbox.in_state_dir(tmp_path) as box:
        first = box.add("result", "r1", [("results", b"{}")])[0]
        box.remove(first)
        second = box.add("result", "r2", [("results", b"{}")])[0]
        assert second > first


def test_database_is_wal_with_full_sync(tmp_path: Path) -> None:
    with Outbox.in_state_dir(tmp_path) as box:
        box.add("result", "r1", [("results", b"{}")])
        db = sqlite3.connect(tmp_path / FILENAME)
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        db.close()
        assert box._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_a_failed_add_stores_nothing(tmp_path: Path) -> None:
    with Outbox.in_state_dir(tmp_path) as box:
        box.add("result", "ok", [("results", b"{}")])
        box._db.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON outbox WHEN NEW.topic = 'results/fhir' "
            "BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
        )
        with pytest.raises(OutboxError, match="disk says no"):
            box.add("result", "half", [("results", b"{}"), ("results/fhir", b"{}")])
        assert [r.key for r in box.pending()] == ["ok"]


def test_a_row_committed_before_sigkill_is_there_after(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        from pathlib import Path
        from agent.transport.outbox import Outbox
        box = Outbox.in_state_dir(Path({str(tmp_path)!r}))
        box.add("result", "r-kill", [("results", b'{{"result_id": "r-kill"}}')])
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert proc.returncode == -9, proc.stderr
    with Outbox.in_state_dir(tmp_path) as box:
        assert [r.key for r in box.pending()] == ["r-kill"]


def test_corrupt_file_is_a_clear_error_and_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / FILENAME
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(OutboxError, match=r"unreadable.*move it aside"):
        Outbox(path)
    assert path.read_bytes().startswith(b"this is not a database")


def test_file_from_a_newer_agent_is_refused(tmp_path: Path) -> None:
    path = tmp_path / FILENAME
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(OutboxError, match="newer agent"):
        Outbox(path)


def test_unwritable_state_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    with pytest.raises(OutboxError, match="cannot open the result outbox"):
        Outbox.in_state_dir(blocker / "state")
