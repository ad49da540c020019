"""The durable queue of messages that must reach the broker: results and events.

A message is written here, and fsync'ed, before it is published, and deleted only
when the broker has acknowledged it (PUBACK), so a crash, a power cut or a broker
outage at any moment loses nothing: whatever is still here is sent again, oldest
first, at the next connect or start. The price is that a message acknowledged just
before a crash may be sent twice; subscribers de-duplicate on ``result_id`` /
``event_id`` (docs/mqtt.md).

SQLite in WAL mode with ``synchronous=FULL``: a committed row survives power loss.
Row ids come from AUTOINCREMENT so they only grow, which gives the sending order.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Final, Literal

from agent.errors import AnalyzerError

_log = logging.getLogger(__name__)

FILENAME: Final = "outbox.sqlite3"
"""The outbox's file name inside the state directory."""

SCHEMA_VERSION: Final = 1

OutboxKind = Literal["result", "event"]

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    topic      TEXT    NOT NULL,
    payload    BLOB    NOT NULL,
    created_at TEXT    NOT NULL,
    replay     INTEGER NOT NULL DEFAULT 0
)
"""


class OutboxError(AnalyzerError):
    """The outbox cannot be opened or written: results would not be safe."""


@dataclass(frozen=True)
class OutboxRow:
    """One message waiting for the broker's acknowledgement."""

    id: int
    kind: OutboxKind
    key: str
    """``result_id`` or ``event_id``: what subscribers de-duplicate on."""
    topic: str
    """Topic suffix under ``<topic_root>/<device_id>/``, e.g. 'results/fhir'."""
    payload: bytes
    created_at: str
    """When it was stored (UTC, ISO-8601)."""
    replay: bool = False
    """Publish it marked as replayed even the first time (a stored report sent again)."""


class Outbox:
    """A thread-safe, crash-safe FIFO of messages, stored in one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=10.0
            )
        except (OSError, sqlite3.Error) as e:
            raise OutboxError(f"cannot open the result outbox {path}: {e}") from e
        try:
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                _log.warning("outbox %s: WAL is unavailable here, using %s", path, mode)
            self._db.execute("PRAGMA synchronous=FULL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise OutboxError(
                    f"the result outbox {path} was written by a newer agent "
                    f"(format {version}, this agent knows {SCHEMA_VERSION}); "
                    "upgrade the agent rather than delete the file, it holds unsent results"
                )
            self._db.execute(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            check = self._db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(f"integrity check failed: {check}")
        except sqlite3.DatabaseError as e:
            self._db.close()
            raise OutboxError(
                f"the result outbox {path} is unreadable ({e}); move it aside to start with an "
                "empty one (it may hold unsent results)"
            ) from e
        pending = self.count()
        if pending:
            _log.info("outbox %s holds %d unacknowledged message(s)", path, pending)

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> Outbox:
        """The outbox of an agent whose state lives in ``state_dir`` (StorageConfig.state_dir)."""
        return cls(state_dir / FILENAME)

    def add(
        self,
        kind: OutboxKind,
        key: str,
        messages: Sequence[tuple[str, bytes]],
        *,
        replay: bool = False,
    ) -> list[int]:
        """Store ``messages`` (topic suffix, payload) durably, all or none; return their ids.

        Returns only after the rows are committed with a full fsync.
        """
        now = datetime.now(UTC).isoformat()
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                ids = []
                for topic, payload in messages:
                    cur = self._db.execute(
                        "INSERT INTO outbox (kind, key, topic, payload, created_at, replay) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (kind, key, topic, payload, now, int(replay)),
                    )
                    if cur.lastrowid is None:
                        raise sqlite3.DatabaseError("no row id for the inserted message")
                    ids.append(cur.lastrowid)
                self._db.execute("COMMIT")
            except sqlite3.Error as e:
                if self._db.in_transaction:
                    try:
                        self._db.execute("ROLLBACK")
                    except sqlite3.Error:
                        _log.exception("outbox %s: rollback failed", self.path)
                raise OutboxError(
                    f"cannot store {kind} {key} in the outbox {self.path}: {e}"
                ) from e
        return ids

    def pending(self, after_id: int = 0, limit: int = 100) -> list[OutboxRow]:
        """Up to ``limit`` stored messages with ids above ``after_id``, oldest first."""
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT id, kind, key, topic, payload, created_at, replay FROM outbox "
                    "WHERE id > ? ORDER BY id LIMIT ?",
                    (after_id, limit),
                ).fetchall()
            except sqlite3.Error as e:
                raise OutboxError(f"cannot read the outbox {self.path}: {e}") from e
        return [
            OutboxRow(
                id=r[0],
                kind=r[1],
                key=r[2],
                topic=r[3],
                payload=bytes(r[4]),
                created_at=r[5],
                replay=bool(r[6]),
            )
            for r in rows
        ]

    def last_id(self) -> int:
        """The id of the newest stored message, 0 when empty."""
        with self._lock:
            try:
                row = self._db.execute("SELECT MAX(id) FROM outbox").fetchone()
            except sqlite3.Error as e:
                raise OutboxError(f"cannot read the outbox {self.path}: {e}") from e
        return int(row[0] or 0)

    def remove(self, row_id: int) -> bool:
        """Forget an acknowledged message; False when it was not there."""
        with self._lock:
            try:
                cur = self._db.execute("DELETE FROM outbox WHERE id = ?", (row_id,))
            except sqlite3.Error as e:
                raise OutboxError(f"cannot update the outbox {self.path}: {e}") from e
        return cur.rowcount > 0

    def count(self) -> int:
        """Messages not yet acknowledged by the broker."""
        with self._lock:
            try:
                row = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()
            except sqlite3.Error as e:
                raise OutboxError(f"cannot read the outbox {self.path}: {e}") from e
        return int(row[0])

    def oldest_created_at(self) -> datetime | None:
        """When the oldest waiting message was stored (UTC), None when empty."""
        with self._lock:
            try:
                row = self._db.execute(
                    "SELECT created_at FROM outbox ORDER BY id LIMIT 1"
                ).fetchone()
            except sqlite3.Error as e:
                raise OutboxError(f"cannot read the outbox {self.path}: {e}") from e
        return None if row is None else datetime.fromisoformat(row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
