"""The per-sample store: cells, crops, pictures and every report version, on disk.

Layout under ``state_dir``::

    samples.sqlite                 samples, fields, cells, reports, audit trail (WAL)
    samples/<sample_id>/cells/<cell_id>.png   one crop per counted cell
    samples/<sample_id>/*.png      the reviewer's pictures (galleries, scan map)

Reports are kept as JSON in SQLite, every version, and are never pruned: they are
small and must stay retrievable (``get_result``) and re-publishable. The disk budget
prunes only sample folders and cell rows, oldest finished samples first, never a
running one. The MQTT outbox is another SQLite file, owned by the transport; this
store never touches it.

The sequence number of every report is allocated in the same transaction that
stores it, so sequences are unique, increase, and survive restarts.

All methods are thread-safe (one connection behind a lock): the daemon's scan thread
and its command handler may both use the store.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from agent.errors import AnalyzerError, InputError
from agent.report.dedup import Box, FieldGeometry, UniqueCell
from agent.report.model import AuditEntry, Report
from agent.report.sample_ids import sample_folder, validate_sample_id

_log = logging.getLogger(__name__)

DB_NAME = "samples.sqlite"
SAMPLES_DIR = "samples"
CELLS_DIR = "cells"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 10.0

SampleStatus = Literal["running", "finished", "aborted"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS samples (
    sample_id TEXT PRIMARY KEY,
    accession TEXT,
    status TEXT NOT NULL CHECK (status IN ('running', 'finished', 'aborted')),
    target_wbc INTEGER NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    reason TEXT,
    next_cell_id INTEGER NOT NULL DEFAULT 1,
    bytes INTEGER NOT NULL DEFAULT 0,
    pruned_at TEXT,
    latest_result_id TEXT
);
CREATE TABLE IF NOT EXISTS fields (
    sample_id TEXT NOT NULL,
    field_index INTEGER NOT NULL,
    x_um REAL NOT NULL,
    y_um REAL NOT NULL,
    width_px INTEGER NOT NULL,
    height_px INTEGER NOT NULL,
    pixel_size_um REAL NOT NULL,
    focus_ok INTEGER NOT NULL,
    PRIMARY KEY (sample_id, field_index)
);
CREATE TABLE IF NOT EXISTS cells (
    sample_id TEXT NOT NULL,
    cell_id INTEGER NOT NULL,
    x_um REAL NOT NULL,
    y_um REAL NOT NULL,
    field_index INTEGER NOT NULL,
    x0 REAL NOT NULL, y0 REAL NOT NULL, x1 REAL NOT NULL, y1 REAL NOT NULL,
    label TEXT NOT NULL,
    top_label TEXT NOT NULL,
    confidence REAL NOT NULL,
    probabilities TEXT NOT NULL,
    reviewer_label TEXT,
    has_crop INTEGER NOT NULL,
    PRIMARY KEY (sample_id, cell_id)
);
CREATE TABLE IF NOT EXISTS reports (
    result_id TEXT PRIMARY KEY,
    sample_id TEXT NOT NULL,
    sequence INTEGER NOT NULL UNIQUE,
    status TEXT NOT NULL,
    issued_at TEXT NOT NULL,
    supersedes TEXT,
    json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS reports_by_sample ON reports (sample_id, sequence);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sample_id TEXT NOT NULL,
    at TEXT NOT NULL,
    reviewer TEXT NOT NULL,
    action TEXT NOT NULL,
    cell_id INTEGER,
    old_label TEXT,
    new_label TEXT,
    result_id TEXT NOT NULL
);
"""


class StoreError(AnalyzerError):
    """The sample store cannot be opened or written."""


@dataclass(frozen=True)
class SampleRecord:
    """A sample as the store knows it."""

    sample_id: str
    accession: str | None
    status: SampleStatus
    target_wbc: int
    started_at: datetime
    finished_at: datetime | None
    reason: str | None
    bytes: int
    pruned: bool
    latest_result_id: str | None


@dataclass(frozen=True)
class StoredCell:
    """A counted cell as kept for review."""

    cell_id: int
    x_um: float
    y_um: float
    field_index: int
    box_px: Box
    label: str
    top_label: str
    confidence: float
    probabilities: dict[str, float]
    reviewer_label: str | None
    has_crop: bool

    @property
    def effective_label(self) -> str:
        """The reviewer's label when there is one, else the analyzer's."""
        return self.reviewer_label or self.label


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat()


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def utc_now() -> datetime:
    return datetime.now(UTC)


class SampleStore:
    """Samples, cells and reports under one state directory."""

    def __init__(self, state_dir: Path, device_id: str) -> None:
        self._root = state_dir
        self._samples_root = state_dir / SAMPLES_DIR
        self._sequence_key = f"sequence:{device_id}"
        self._lock = threading.RLock()
        try:
            self._samples_root.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                state_dir / DB_NAME,
                timeout=BUSY_TIMEOUT_S,
                isolation_level=None,
                check_same_thread=False,
            )
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed report survives a power cut (the board has no UPS).
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)  # idempotent: CREATE ... IF NOT EXISTS
            with self._transaction():
                version = self._db.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise StoreError(
                        f"{state_dir / DB_NAME}: written by a newer agent (schema {version}); "
                        "refusing to open it"
                    )
                self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"cannot open the sample store in {state_dir}: {e}") from e

    # -- plumbing ---------------------------------------------------------------------

    @property
    def state_dir(self) -> Path:
        return self._root

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> SampleStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _row(self, sample_id: str) -> sqlite3.Row:
        row = self._db.execute("SELECT * FROM samples WHERE sample_id = ?", (sample_id,)).fetchone()
        if row is None:
            raise InputError(f"unknown sample {sample_id!r}")
        return row  # type: ignore[no-any-return]

    @staticmethod
    def _record(row: sqlite3.Row) -> SampleRecord:
        started = _time(row["started_at"])
        if started is None:  # the column is NOT NULL; this keeps mypy and readers honest
            raise StoreError(f"sample {row['sample_id']!r} has no start time")
        return SampleRecord(
            sample_id=row["sample_id"],
            accession=row["accession"],
            status=row["status"],
            target_wbc=row["target_wbc"],
            started_at=started,
            finished_at=_time(row["finished_at"]),
            reason=row["reason"],
            bytes=row["bytes"],
            pruned=row["pruned_at"] is not None,
            latest_result_id=row["latest_result_id"],
        )

    def sample_dir(self, sample_id: str) -> Path:
        """The sample's folder (validated id, inside the samples root)."""
        return sample_folder(self._samples_root, sample_id)

    # -- sample lifecycle --------------------------------------------------------------

    def begin_sample(
        self,
        sample_id: str,
        accession: str | None,
        target_wbc: int,
        started_at: datetime,
    ) -> SampleRecord:
        """Record a sample as running, before its scan starts.

        A sample id already used by a finished or running sample is refused; one whose
        previous run was aborted may be run again (its old cells are dropped, its old
        reports kept).
        """
        validate_sample_id(sample_id)
        if accession is not None and (len(accession) > 128 or not accession.isprintable()):
            raise InputError("accession must be at most 128 printable characters")
        folder = self.sample_dir(sample_id)
        with self._transaction() as db:
            row = db.execute("SELECT * FROM samples WHERE sample_id = ?", (sample_id,)).fetchone()
            if row is not None and row["status"] != "aborted":
                raise InputError(
                    f"sample {sample_id!r} is already {row['status']}; "
                    "use a new sample id to analyse the slide again"
                )
            if row is not None:
                db.execute("DELETE FROM cells WHERE sample_id = ?", (sample_id,))
                db.execute("DELETE FROM fields WHERE sample_id = ?", (sample_id,))
                shutil.rmtree(folder, ignore_errors=True)
            db.execute(
                "INSERT OR REPLACE INTO samples (sample_id, accession, status, target_wbc, "
                "started_at, latest_result_id) VALUES (?, ?, 'running', ?, ?, ?)",
                (
                    sample_id,
                    accession,
                    target_wbc,
                    _iso(started_at),
                    row["latest_result_id"] if row is not None else None,
                ),
            )
            try:
                (folder / CELLS_DIR).mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(f"cannot create the folder of sample {sample_id!r}: {e}") from e
            return self._record(self._row(sample_id))

    def sample(self, sample_id: str) -> SampleRecord:
        with self._lock:
            return self._record(self._row(validate_sample_id(sample_id)))

    def samples(self) -> list[SampleRecord]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM samples ORDER BY started_at").fetchall()
            return [self._record(r) for r in rows]

    def incomplete_samples(self) -> list[SampleRecord]:
        """Samples left ``running`` (a killed daemon): to be reported as aborted."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM samples WHERE status = 'running' ORDER BY started_at"
            ).fetchall()
            return [self._record(r) for r in rows]

    def _require_running(self, db: sqlite3.Connection, sample_id: str) -> sqlite3.Row:
        row = self._row(sample_id)
        if row["status"] != "running":
            raise InputError(f"sample {sample_id!r} is {row['status']}, not running")
        return row

    def add_fields(self, sample_id: str, fields: Sequence[FieldGeometry]) -> None:
        with self._transaction() as db:
            self._require_running(db, sample_id)
            db.executemany(
                "INSERT OR REPLACE INTO fields VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        sample_id,
                        f.index,
                        f.x_um,
                        f.y_um,
                        f.width_px,
                        f.height_px,
                        f.pixel_size_um,
                        int(f.focus_ok),
                    )
                    for f in fields
                ],
            )

    def add_cells(
        self, sample_id: str, cells: Sequence[UniqueCell], crops_png: Sequence[bytes | None]
    ) -> list[int]:
        """Keep counted cells and their crops; returns their new cell ids."""
        if len(cells) != len(crops_png):
            raise ValueError("one crop (or None) per cell is needed")
        folder = self.sample_dir(sample_id) / CELLS_DIR
        with self._transaction() as db:
            row = self._require_running(db, sample_id)
            first = int(row["next_cell_id"])
            ids = list(range(first, first + len(cells)))
            written = 0
            try:
                folder.mkdir(parents=True, exist_ok=True)
                for cell_id, png in zip(ids, crops_png, strict=True):
                    if png is not None:
                        (folder / f"{cell_id}.png").write_bytes(png)
                        written += len(png)
            except OSError as e:
                raise StoreError(f"cannot write cell crops of sample {sample_id!r}: {e}") from e
            db.executemany(
                "INSERT INTO cells VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)",
                [
                    (
                        sample_id,
                        cell_id,
                        c.x_um,
                        c.y_um,
                        c.field_index,
                        *c.finding.box_px,
                        c.finding.label,
                        c.finding.top_label,
                        c.finding.confidence,
                        json.dumps(dict(c.finding.probabilities), sort_keys=True),
                        int(png is not None),
                    )
                    for cell_id, c, png in zip(ids, cells, crops_png, strict=True)
                ],
            )
            db.execute(
                "UPDATE samples SET next_cell_id = ?, bytes = bytes + ? WHERE sample_id = ?",
                (first + len(cells), written, sample_id),
            )
            return ids

    def cells(self, sample_id: str) -> list[StoredCell]:
        with self._lock:
            self._row(validate_sample_id(sample_id))
            rows = self._db.execute(
                "SELECT * FROM cells WHERE sample_id = ? ORDER BY cell_id", (sample_id,)
            ).fetchall()
        return [
            StoredCell(
                cell_id=r["cell_id"],
                x_um=r["x_um"],
                y_um=r["y_um"],
                field_index=r["field_index"],
                box_px=(r["x0"], r["y0"], r["x1"], r["y1"]),
                label=r["label"],
                top_label=r["top_label"],
                confidence=r["confidence"],
                probabilities=json.loads(r["probabilities"]),
                reviewer_label=r["reviewer_label"],
                has_crop=bool(r["has_crop"]),
            )
            for r in rows
        ]

    def fields(self, sample_id: str) -> list[FieldGeometry]:
        with self._lock:
            self._row(validate_sample_id(sample_id))
            rows = self._db.execute(
                "SELECT * FROM fields WHERE sample_id = ? ORDER BY field_index", (sample_id,)
            ).fetchall()
        return [
            FieldGeometry(
                index=r["field_index"],
                x_um=r["x_um"],
                y_um=r["y_um"],
                width_px=r["width_px"],
                height_px=r["height_px"],
                pixel_size_um=r["pixel_size_um"],
                focus_ok=bool(r["focus_ok"]),
            )
            for r in rows
        ]

    # -- reports -----------------------------------------------------------------------

    def _next_sequence(self, db: sqlite3.Connection) -> int:
        db.execute(
            "INSERT OR IGNORE INTO counters (name, value) VALUES (?, 0)", (self._sequence_key,)
        )
        db.execute("UPDATE counters SET value = value + 1 WHERE name = ?", (self._sequence_key,))
        row = db.execute(
            "SELECT value FROM counters WHERE name = ?", (self._sequence_key,)
        ).fetchone()
        return int(row[0])

    def _insert_report(self, db: sqlite3.Connection, report: Report) -> None:
        db.execute(
            "INSERT INTO reports (result_id, sample_id, sequence, status, issued_at, supersedes, "
            "json) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                report.result_id,
                report.sample_id,
                report.sequence,
                report.status,
                _iso(report.provenance.issued_at),
                report.supersedes,
                report.to_json(),
            ),
        )
        db.execute(
            "UPDATE samples SET latest_result_id = ? WHERE sample_id = ?",
            (report.result_id, report.sample_id),
        )

    def _build(
        self, db: sqlite3.Connection, sample_id: str, build: Callable[[int], Report]
    ) -> Report:
        report = build(self._next_sequence(db))
        if report.sample_id != sample_id:
            raise ValueError(f"report for {report.sample_id!r} stored under {sample_id!r}")
        self._insert_report(db, report)
        return report

    def finish_sample(
        self, sample_id: str, finished_at: datetime, build: Callable[[int], Report]
    ) -> Report:
        """Mark a running sample finished and store its first report.

        ``build`` receives the report's sequence number; it runs inside the
        transaction, so the number is used exactly once.
        """
        with self._transaction() as db:
            self._require_running(db, sample_id)
            report = self._build(db, sample_id, build)
            db.execute(
                "UPDATE samples SET status = 'finished', finished_at = ? WHERE sample_id = ?",
                (_iso(finished_at), sample_id),
            )
            return report

    def abort_sample(
        self, sample_id: str, reason: str, aborted_at: datetime, build: Callable[[int], Report]
    ) -> Report:
        """Mark a running sample aborted and store its aborted report."""
        with self._transaction() as db:
            self._require_running(db, sample_id)
            report = self._build(db, sample_id, build)
            db.execute(
                "UPDATE samples SET status = 'aborted', finished_at = ?, reason = ? "
                "WHERE sample_id = ?",
                (_iso(aborted_at), reason, sample_id),
            )
            return report

    def review(
        self,
        sample_id: str,
        reviewer: str,
        at: datetime,
        action: Literal["reclassify", "finalize"],
        build: Callable[[Report, int, str, list[AuditEntry]], Report],
        relabel: tuple[int, str] | None = None,
    ) -> Report:
        """Apply one reviewer action atomically: relabel (optional), audit, new report.

        ``build`` gets the latest report, the new sequence number, the new result id
        and the full audit trail including this action, and returns the report the
        action produces (it may read ``cells()``: it runs inside the transaction, so
        it sees the new label). Anything it raises undoes the whole action.
        """
        with self._transaction() as db:
            row = self._row(validate_sample_id(sample_id))
            if row["status"] != "finished":
                raise InputError(
                    f"sample {sample_id!r} is {row['status']}; only a finished sample can be "
                    "reviewed"
                )
            cell_id: int | None = None
            old: str | None = None
            new: str | None = None
            if relabel is not None:
                cell_id, new = relabel
                cell = db.execute(
                    "SELECT label, reviewer_label FROM cells WHERE sample_id = ? AND cell_id = ?",
                    (sample_id, cell_id),
                ).fetchone()
                if cell is None:
                    if row["pruned_at"] is not None:
                        raise InputError(
                            f"the cells of sample {sample_id!r} were pruned; it cannot be "
                            "reclassified any more"
                        )
                    raise InputError(f"sample {sample_id!r} has no cell {cell_id}")
                old = cell["reviewer_label"] or cell["label"]
                if old == new:
                    raise InputError(f"cell {cell_id} of {sample_id!r} is already {new}")
                db.execute(
                    "UPDATE cells SET reviewer_label = ? WHERE sample_id = ? AND cell_id = ?",
                    (new, sample_id, cell_id),
                )
            latest = db.execute(
                "SELECT json FROM reports WHERE sample_id = ? ORDER BY sequence DESC LIMIT 1",
                (sample_id,),
            ).fetchone()
            if latest is None:
                raise InputError(f"sample {sample_id!r} has no result to review")
            previous = Report.model_validate_json(latest[0])
            result_id = str(uuid.uuid4())
            entry = AuditEntry(
                at=at,
                reviewer=reviewer,
                action=action,
                cell_id=cell_id,
                old_label=old,
                new_label=new,
                result_id=result_id,
            )
            db.execute(
                "INSERT INTO audit (sample_id, at, reviewer, action, cell_id, old_label, "
                "new_label, result_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    sample_id,
                    _iso(entry.at),
                    entry.reviewer,
                    entry.action,
                    entry.cell_id,
                    entry.old_label,
                    entry.new_label,
                    entry.result_id,
                ),
            )
            trail = self._audit(db, sample_id)
            report = build(previous, self._next_sequence(db), result_id, trail)
            if report.sample_id != sample_id or report.result_id != result_id:
                raise ValueError("review produced a report for another sample or result id")
            self._insert_report(db, report)
            return report

    @staticmethod
    def _audit(db: sqlite3.Connection, sample_id: str) -> list[AuditEntry]:
        rows = db.execute(
            "SELECT * FROM audit WHERE sample_id = ? ORDER BY id", (sample_id,)
        ).fetchall()
        return [
            AuditEntry(
                at=datetime.fromisoformat(r["at"]),
                reviewer=r["reviewer"],
                action=r["action"],
                cell_id=r["cell_id"],
                old_label=r["old_label"],
                new_label=r["new_label"],
                result_id=r["result_id"],
            )
            for r in rows
        ]

    def audit(self, sample_id: str) -> list[AuditEntry]:
        with self._lock:
            self._row(validate_sample_id(sample_id))
            return self._audit(self._db, sample_id)

    def get_report(self, result_id: str) -> Report:
        with self._lock:
            row = self._db.execute(
                "SELECT json FROM reports WHERE result_id = ?", (result_id,)
            ).fetchone()
        if row is None:
            raise InputError(f"no result with id {result_id!r}")
        return Report.model_validate_json(row[0])

    def latest_report(self, sample_id: str) -> Report:
        with self._lock:
            validate_sample_id(sample_id)
            row = self._db.execute(
                "SELECT json FROM reports WHERE sample_id = ? ORDER BY sequence DESC LIMIT 1",
                (sample_id,),
            ).fetchone()
        if row is None:
            raise InputError(f"sample {sample_id!r} has no result yet")
        return Report.model_validate_json(row[0])

    def reports(self, sample_id: str) -> list[Report]:
        """Every version of the sample's result, oldest first."""
        with self._lock:
            validate_sample_id(sample_id)
            rows = self._db.execute(
                "SELECT json FROM reports WHERE sample_id = ? ORDER BY sequence", (sample_id,)
            ).fetchall()
        return [Report.model_validate_json(r[0]) for r in rows]

    def last_sequence(self) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT value FROM counters WHERE name = ?", (self._sequence_key,)
            ).fetchone()
        return int(row[0]) if row else 0

    # -- files -------------------------------------------------------------------------

    def cell_image(self, sample_id: str, cell_id: int) -> bytes:
        """The PNG crop of one cell."""
        with self._lock:
            row = self._row(validate_sample_id(sample_id))
            cell = self._db.execute(
                "SELECT has_crop FROM cells WHERE sample_id = ? AND cell_id = ?",
                (sample_id, int(cell_id)),
            ).fetchone()
        if row["pruned_at"] is not None:
            raise InputError(
                f"the cell images of sample {sample_id!r} were removed to keep within the disk budget"
            )
        if cell is None:
            raise InputError(f"sample {sample_id!r} has no cell {cell_id}")
        if not cell["has_crop"]:
            raise InputError(f"cell {cell_id} of sample {sample_id!r} has no image")
        path = self.sample_dir(sample_id) / CELLS_DIR / f"{int(cell_id)}.png"
        try:
            return path.read_bytes()
        except OSError as e:
            raise InputError(f"the image of cell {cell_id} of {sample_id!r} is missing: {e}") from e

    def write_file(self, sample_id: str, name: str, data: bytes) -> Path:
        """Write (or replace) a file in the sample folder, counting it against the budget."""
        if "/" in name or name.startswith(".") or not name:
            raise ValueError(f"bad file name {name!r}")
        with self._lock:
            row = self._row(validate_sample_id(sample_id))
            if row["pruned_at"] is not None:
                raise InputError(f"sample {sample_id!r} was pruned; its pictures cannot be rebuilt")
            path = self.sample_dir(sample_id) / name
            try:
                old = path.stat().st_size if path.exists() else 0
                tmp = path.with_name(f".{name}.tmp")
                tmp.write_bytes(data)
                os.replace(tmp, path)
            except OSError as e:
                raise StoreError(f"cannot write {path}: {e}") from e
            self._db.execute(
                "UPDATE samples SET bytes = MAX(0, bytes + ?) WHERE sample_id = ?",
                (len(data) - old, sample_id),
            )
            return path

    def delete_file(self, sample_id: str, name: str) -> None:
        """Remove a file written with ``write_file`` (e.g. a gallery whose class emptied)."""
        if "/" in name or name.startswith(".") or not name:
            raise ValueError(f"bad file name {name!r}")
        with self._lock:
            self._row(validate_sample_id(sample_id))
            path = self.sample_dir(sample_id) / name
            try:
                size = path.stat().st_size
                path.unlink()
            except FileNotFoundError:
                return
            except OSError as e:
                raise StoreError(f"cannot remove {path}: {e}") from e
            self._db.execute(
                "UPDATE samples SET bytes = MAX(0, bytes - ?) WHERE sample_id = ?",
                (size, sample_id),
            )

    def files(self, sample_id: str) -> list[str]:
        """Names of the files directly in the sample folder (the pictures)."""
        folder = self.sample_dir(sample_id)
        if not folder.is_dir():
            return []
        return sorted(
            p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
        )

    def usage_bytes(self) -> int:
        """Bytes of sample files kept (crops and pictures; not the database)."""
        with self._lock:
            row = self._db.execute(
                "SELECT COALESCE(SUM(bytes), 0) FROM samples WHERE pruned_at IS NULL"
            ).fetchone()
        return int(row[0])

    def prune(self, budget_bytes: int, keep_latest: int = 1) -> list[str]:
        """Delete the files and cell rows of the oldest samples until within budget.

        Only finished or aborted samples are pruned, oldest first, and never the
        ``keep_latest`` most recently finished ones (the reviewer's current work).
        Reports and audit rows stay. Returns the pruned sample ids.
        """
        pruned: list[str] = []
        with self._lock:
            usage = self.usage_bytes()
            if usage <= budget_bytes:
                return pruned
            rows = self._db.execute(
                "SELECT sample_id, bytes FROM samples WHERE status IN ('finished', 'aborted') "
                "AND pruned_at IS NULL ORDER BY COALESCE(finished_at, started_at) ASC"
            ).fetchall()
            candidates = rows[: max(0, len(rows) - keep_latest)]
            for row in candidates:
                if usage <= budget_bytes:
                    break
                sample_id = row["sample_id"]
                shutil.rmtree(self.sample_dir(sample_id), ignore_errors=True)
                with self._transaction() as db:
                    db.execute("DELETE FROM cells WHERE sample_id = ?", (sample_id,))
                    db.execute(
                        "UPDATE samples SET pruned_at = ?, bytes = 0 WHERE sample_id = ?",
                        (_iso(utc_now()), sample_id),
                    )
                usage -= int(row["bytes"])
                pruned.append(sample_id)
                _log.info(
                    "pruned sample %s (%d bytes) to keep within the disk budget",
                    sample_id,
                    row["bytes"],
                )
        if usage > budget_bytes:
            _log.warning(
                "sample files use %d bytes, over the %d-byte budget, and nothing more may be "
                "pruned (running or most recent samples)",
                usage,
                budget_bytes,
            )
        return pruned
