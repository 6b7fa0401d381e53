"""The processed-file ledger: each landed file version is ingested exactly once.

A SQLite database in the state folder (``$MLOPS_STATE_DIR/ledger/landing.sqlite3``) with one row
per ``(pipeline, uri, version token)``:

- ``claimed`` by a run (``run_id``, ``claimed_at``): the run is processing it. Claims are taken in
  one ``BEGIN IMMEDIATE`` transaction against a primary key, so two runs (or two processes) can
  never take the same file. A URI has at most one live claim, whatever its token.
- ``done`` with an outcome (``published``, ``duplicate``, ``quarantined``): never returned again,
  to any run, after any restart.

A retry of the same run re-claims its own files. A claim whose run died (no renewal for
``stale_after`` seconds) can be taken over by another run. A run that fails on a file for another
reason than validation releases its claim, so the next run retries it. A file re-landed later with
different content has a new token, so it is a new row.

Standard library only: the triggerer reads it too.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from include.mlops.data.landing import LandedFile
from include.mlops.errors import DataError, ServiceUnavailable
from include.mlops.paths import state_dir

log = logging.getLogger(__name__)

Outcome = Literal["published", "duplicate", "quarantined"]
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)
State = Literal["claimed", "done"]  # "done" entries carry an outcome
_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS landed_files (
    pipeline   TEXT    NOT NULL,
    uri        TEXT    NOT NULL,
    token      TEXT    NOT NULL,
    state      TEXT    NOT NULL CHECK (state IN ('claimed', 'done')),
    run_id     TEXT    NOT NULL,
    claimed_at REAL    NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 1,
    size       INTEGER,
    modified   REAL,
    outcome    TEXT,
    detail     TEXT,
    done_at    REAL,
    PRIMARY KEY (pipeline, uri, token)
)""",
    "CREATE INDEX IF NOT EXISTS landed_files_by_run ON landed_files (pipeline, run_id, state)",
)
_CHUNK = 500  # SQLite's default limit on bound parameters is far above this


@dataclass(frozen=True)
class LedgerEntry:
    """One row of the ledger: a file version, who claimed it and how it ended."""

    pipeline: str
    uri: str
    token: str
    state: State
    run_id: str
    claimed_at: float
    attempts: int
    outcome: Outcome | None
    detail: str | None
    done_at: float | None

    def is_live_claim(self, now: float, stale_after: float) -> bool:
        """Whether a run still holds the file; a stale claim (killed run) may be taken over."""
        return self.state == "claimed" and now - self.claimed_at < stale_after


def default_path() -> Path:
    """The ledger in the state folder, shared by every process on this host."""
    return state_dir() / "ledger" / "landing.sqlite3"


class Ledger:
    """Claims and outcomes of landed files, shared by every process on this host's state folder."""

    def __init__(self, path: str | Path | None = None, *, busy_timeout: float = 60.0) -> None:
        self.path = Path(path) if path else default_path()
        self.busy_timeout = busy_timeout
        self._prepared = False

    def _prepare(self, db: sqlite3.Connection) -> None:
        """WAL mode and the schema, once per instance. Switching the journal mode does not wait for
        the busy timeout, so processes opening a new ledger together retry here."""
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                wal = db.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
                if wal and db.execute("SELECT 1 FROM sqlite_master WHERE name = 'landed_files'").fetchone():
                    self._prepared = True  # the usual case: nothing to write
                    return
                if not wal:
                    db.execute("PRAGMA journal_mode=WAL")  # readers (the triggerer) never block writers
                db.execute("BEGIN IMMEDIATE")
                for statement in _SCHEMA:
                    db.execute(statement)
                db.execute("COMMIT")
                self._prepared = True
                return
            except sqlite3.OperationalError as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    # Connections ------------------------------------------------------------------------------
    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise ServiceUnavailable(
                f"cannot open the ingestion ledger {self.path}: {exc}; check that the state folder "
                "($MLOPS_STATE_DIR) exists and is writable"
            ) from exc
        try:
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA synchronous=FULL")  # a done mark survives a power cut
            if not self._prepared:
                self._prepare(db)
            yield db
        except sqlite3.OperationalError as exc:
            raise ServiceUnavailable(
                f"the ingestion ledger {self.path} is not available ({exc}); retrying may help. If it "
                "lasts, look for a process holding the database locked"
            ) from exc
        except sqlite3.DatabaseError as exc:
            raise DataError(
                f"the ingestion ledger {self.path} is not a usable SQLite database ({exc}); move it "
                "away to start a new one (files it recorded as done would then be ingested again)"
            ) from exc
        finally:
            db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; BEGIN IMMEDIATE takes the write lock before reading, so the
        check-then-insert of a claim cannot interleave with another process."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    @staticmethod
    def _entry(row: sqlite3.Row) -> LedgerEntry:
        return LedgerEntry(**{k: row[k] for k in LedgerEntry.__dataclass_fields__})

    def _rows_for_uris(self, db: sqlite3.Connection, pipeline: str, uris: Sequence[str]) -> list[LedgerEntry]:
        entries: list[LedgerEntry] = []
        for start in range(0, len(uris), _CHUNK):
            chunk = list(uris[start : start + _CHUNK])
            marks = ",".join("?" * len(chunk))
            rows = db.execute(
                f"SELECT * FROM landed_files WHERE pipeline = ? AND uri IN ({marks})", [pipeline, *chunk]
            )
            entries.extend(self._entry(r) for r in rows)
        return entries

    # Reads ------------------------------------------------------------------------------------
    def entries(self, pipeline: str) -> list[LedgerEntry]:
        """Every row of a pipeline, oldest claim first (for inspection and tests)."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT * FROM landed_files WHERE pipeline = ? ORDER BY claimed_at, uri", (pipeline,)
            )
            return [self._entry(r) for r in rows]

    def pending(
        self, pipeline: str, files: Sequence[LandedFile], *, stale_after: float, now: float | None = None
    ) -> list[LandedFile]:
        """The files a claim would take now: not done, and no live claim on their URI."""
        now = time.time() if now is None else now
        with self._connect() as db:
            rows = self._rows_for_uris(db, pipeline, sorted({f.uri for f in files}))
        done = {(r.uri, r.token) for r in rows if r.state == "done"}
        busy = {r.uri for r in rows if r.is_live_claim(now, stale_after)}
        return [f for f in files if f.key not in done and f.uri not in busy]

    # Claims -----------------------------------------------------------------------------------
    def claim(
        self,
        pipeline: str,
        files: Sequence[LandedFile],
        run_id: str,
        *,
        stale_after: float,
        now: float | None = None,
    ) -> list[LandedFile]:
        """Claim what is free of ``files`` for ``run_id``; return what this run now holds.

        Free: never claimed, claimed by this same run (a retry), or claimed by another run that
        has not renewed its claim for ``stale_after`` seconds (it died). Done files are never
        returned.
        """
        now = time.time() if now is None else now
        taken: list[LandedFile] = []
        with self._write() as db:
            rows = self._rows_for_uris(db, pipeline, sorted({f.uri for f in files}))
            by_uri: dict[str, list[LedgerEntry]] = {}
            for row in rows:
                by_uri.setdefault(row.uri, []).append(row)
            for file in files:
                same_uri = by_uri.get(file.uri, [])
                current = next((r for r in same_uri if r.token == file.token), None)
                if current is not None and current.state == "done":
                    continue
                others = [r for r in same_uri if r.run_id != run_id and r.is_live_claim(now, stale_after)]
                if others:
                    log.info("%s is being processed by run %s; not claimed", file.uri, others[0].run_id)
                    continue
                for old in same_uri:  # a dead run's claim, or this run's claim on an older version
                    if old.state == "claimed" and old.token != file.token:
                        db.execute(
                            "DELETE FROM landed_files WHERE pipeline = ? AND uri = ? AND token = ?",
                            (pipeline, old.uri, old.token),
                        )
                if current is None:
                    db.execute(
                        "INSERT INTO landed_files (pipeline, uri, token, state, run_id, claimed_at, size, modified)"
                        " VALUES (?, ?, ?, 'claimed', ?, ?, ?, ?)",
                        (pipeline, file.uri, file.token, run_id, now, file.size, file.modified),
                    )
                else:
                    if current.run_id != run_id:
                        log.warning(
                            "Taking over %s from run %s, whose claim is %.0fs old (stale after %ss)",
                            file.uri,
                            current.run_id,
                            now - current.claimed_at,
                            stale_after,
                        )
                    db.execute(
                        "UPDATE landed_files SET run_id = ?, claimed_at = ?, attempts = attempts + 1"
                        " WHERE pipeline = ? AND uri = ? AND token = ?",
                        (run_id, now, pipeline, file.uri, file.token),
                    )
                taken.append(file)
        return taken

    def renew(self, pipeline: str, uri: str, run_id: str, *, now: float | None = None) -> bool:
        """Refresh this run's claim on ``uri`` (so it does not go stale); False if it holds none."""
        now = time.time() if now is None else now
        with self._write() as db:
            cursor = db.execute(
                "UPDATE landed_files SET claimed_at = ? WHERE pipeline = ? AND uri = ? AND run_id = ?"
                " AND state = 'claimed'",
                (now, pipeline, uri, run_id),
            )
            return cursor.rowcount > 0

    def finish(
        self,
        pipeline: str,
        uri: str,
        run_id: str,
        outcome: Outcome,
        *,
        detail: str | None = None,
        now: float | None = None,
    ) -> bool:
        """Mark this run's claim on ``uri`` done; False (and a warning) if the run no longer held it."""
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
        now = time.time() if now is None else now
        with self._write() as db:
            cursor = db.execute(
                "UPDATE landed_files SET state = 'done', outcome = ?, detail = ?, done_at = ?"
                " WHERE pipeline = ? AND uri = ? AND run_id = ? AND state = 'claimed'",
                (outcome, detail, now, pipeline, uri, run_id),
            )
            if cursor.rowcount == 0:
                log.warning(
                    "Run %s held no claim on %s; its outcome %s is not recorded", run_id, uri, outcome
                )
            return cursor.rowcount > 0

    def release(self, pipeline: str, uri: str, run_id: str) -> bool:
        """Give up this run's claim on ``uri`` without an outcome: the next run takes the file."""
        with self._write() as db:
            cursor = db.execute(
                "DELETE FROM landed_files WHERE pipeline = ? AND uri = ? AND run_id = ? AND state = 'claimed'",
                (pipeline, uri, run_id),
            )
            return cursor.rowcount > 0

    def release_run(self, pipeline: str, run_id: str) -> list[str]:
        """Release every claim a run still holds (files it did not finish); returns their URIs."""
        with self._write() as db:
            uris = [
                r["uri"]
                for r in db.execute(
                    "SELECT uri FROM landed_files WHERE pipeline = ? AND run_id = ? AND state = 'claimed'",
                    (pipeline, run_id),
                )
            ]
            db.execute(
                "DELETE FROM landed_files WHERE pipeline = ? AND run_id = ? AND state = 'claimed'",
                (pipeline, run_id),
            )
            return sorted(uris)
