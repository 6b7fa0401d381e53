"""The processed-file ledger: each landed file version is ingested exactly once.

A table of the coordination store (``include.mlops.coordination``: ``$MLOPS_COORDINATION_URL``,
Postgres in production; by default the SQLite file ``$MLOPS_STATE_DIR/coordination.sqlite3``),
``landed_files``, with one row per ``(pipeline, uri, version token)``:

- ``claimed`` by a run (``run_id``, ``claimed_at``): the run is processing it. A URI has at most one
  live claim, whatever its token.
- ``done`` with an outcome (``published``, ``duplicate``, ``quarantined``): never returned again,
  to any run, after any restart.

Claims are exactly-once across processes and hosts because the read-then-write of a claim runs in
one transaction serialised with every other claim of the pipeline: on SQLite by ``BEGIN IMMEDIATE``
(the database's write lock, taken before reading), on Postgres by a transaction-scoped advisory lock
keyed by the pipeline (``pg_advisory_xact_lock``). A row lock (``SELECT ... FOR UPDATE``) could not
do it: it cannot lock rows that do not exist yet, and "one live claim per URI" spans versions. The
primary key still refuses a duplicate row, and a takeover only updates a row still as it was read,
so a claim never overwrites a ``finish`` or ``release`` that committed meanwhile.

A retry of the same run re-claims its own files. A claim whose run died (no renewal for
``stale_after`` seconds) can be taken over by another run. A run that fails on a file for another
reason than validation releases its claim, so the next run retries it. A file re-landed later with
different content has a new token, so it is a new row.

Cheap to import (the triggerer reads it too, and DAG parsing imports it): SQLAlchemy is imported
inside the methods.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from include.mlops import coordination
from include.mlops.data.landing import LandedFile

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

log = logging.getLogger(__name__)

Outcome = Literal["published", "duplicate", "quarantined"]
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)
State = Literal["claimed", "done"]  # "done" entries carry an outcome
_CHUNK = 500  # URIs per query: far below SQLite's and Postgres's limits on bound parameters
_COLUMNS = "pipeline, uri, token, state, run_id, claimed_at, attempts, outcome, detail, done_at"


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


class Ledger:
    """Claims and outcomes of landed files, shared by every process that uses the same store.

    ``store``: a SQLAlchemy URL or a SQLite file's path; default: the coordination store
    (``coordination.url()``), resolved when the ledger is made.
    """

    def __init__(self, store: str | Path | None = None) -> None:
        self.url = coordination.normalize(store) if store else coordination.url()

    @property
    def path(self) -> str:
        """Where the ledger is, for messages: a SQLite file's path, else the URL without password."""
        return coordination.describe(self.url)

    def __repr__(self) -> str:
        return f"Ledger({self.path!r})"

    # Connections ------------------------------------------------------------------------------
    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with coordination.transaction(self.url, what="the ingestion ledger") as db:
            yield db

    @contextmanager
    def _write(self, pipeline: str | None = None) -> Iterator[Connection]:
        """One write transaction; with ``pipeline``, serialised with every other such transaction of
        the pipeline (see the module docstring), so a check-then-insert cannot interleave."""
        serialize = f"ledger:{pipeline}" if pipeline else None
        with coordination.transaction(
            self.url, write=True, serialize=serialize, what="the ingestion ledger"
        ) as db:
            yield db

    @staticmethod
    def _entry(row: Any) -> LedgerEntry:
        return LedgerEntry(**{k: getattr(row, k) for k in LedgerEntry.__dataclass_fields__})

    def _rows_for_uris(self, db: Connection, pipeline: str, uris: Sequence[str]) -> list[LedgerEntry]:
        from sqlalchemy import bindparam, text

        query = text(
            f"SELECT {_COLUMNS} FROM landed_files WHERE pipeline = :pipeline AND uri IN :uris"
        ).bindparams(bindparam("uris", expanding=True))
        entries: list[LedgerEntry] = []
        for start in range(0, len(uris), _CHUNK):
            chunk = list(uris[start : start + _CHUNK])
            entries.extend(self._entry(r) for r in db.execute(query, {"pipeline": pipeline, "uris": chunk}))
        return entries

    # Reads ------------------------------------------------------------------------------------
    def entries(self, pipeline: str) -> list[LedgerEntry]:
        """Every row of a pipeline, oldest claim first (for inspection and tests)."""
        from sqlalchemy import text

        with self._read() as db:
            rows = db.execute(
                text(f"SELECT {_COLUMNS} FROM landed_files WHERE pipeline = :p ORDER BY claimed_at, uri"),
                {"p": pipeline},
            )
            return [self._entry(r) for r in rows]

    def pending(
        self, pipeline: str, files: Sequence[LandedFile], *, stale_after: float, now: float | None = None
    ) -> list[LandedFile]:
        """The files a claim would take now: not done, and no live claim on their URI."""
        now = time.time() if now is None else now
        if not files:
            return []
        with self._read() as db:
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
        if not files:
            return []
        taken: list[LandedFile] = []
        with self._write(pipeline) as db:
            rows = self._rows_for_uris(db, pipeline, sorted({f.uri for f in files}))
            by_uri: dict[str, list[LedgerEntry]] = {}
            for row in rows:
                by_uri.setdefault(row.uri, []).append(row)
            for file in files:
                if self._claim_one(db, pipeline, file, by_uri.get(file.uri, []), run_id, stale_after, now):
                    taken.append(file)
        return taken

    def _claim_one(
        self,
        db: Connection,
        pipeline: str,
        file: LandedFile,
        same_uri: list[LedgerEntry],
        run_id: str,
        stale_after: float,
        now: float,
    ) -> bool:
        """Claim one file inside the claim's transaction; True if this run now holds it."""
        from sqlalchemy import text

        current = next((r for r in same_uri if r.token == file.token), None)
        if current is not None and current.state == "done":
            return False
        others = [r for r in same_uri if r.run_id != run_id and r.is_live_claim(now, stale_after)]
        if others:
            log.info("%s is being processed by run %s; not claimed", file.uri, others[0].run_id)
            return False
        for old in same_uri:  # a dead run's claim, or this run's claim on an older version
            if old.state == "claimed" and old.token != file.token:
                db.execute(
                    text(
                        "DELETE FROM landed_files WHERE pipeline = :p AND uri = :u AND token = :t"
                        " AND state = 'claimed' AND run_id = :r AND claimed_at = :c"
                    ),
                    {"p": pipeline, "u": old.uri, "t": old.token, "r": old.run_id, "c": old.claimed_at},
                )
        if current is None:
            db.execute(
                text(
                    "INSERT INTO landed_files (pipeline, uri, token, state, run_id, claimed_at, size, modified)"
                    " VALUES (:p, :u, :t, 'claimed', :r, :c, :s, :m)"
                ),
                {
                    "p": pipeline,
                    "u": file.uri,
                    "t": file.token,
                    "r": run_id,
                    "c": now,
                    "s": file.size,
                    "m": file.modified,
                },
            )
            return True
        if current.run_id != run_id:
            log.warning(
                "Taking over %s from run %s, whose claim is %.0fs old (stale after %ss)",
                file.uri,
                current.run_id,
                now - current.claimed_at,
                stale_after,
            )
        # Only the row as it was read: a finish or release committed meanwhile wins.
        updated = db.execute(
            text(
                "UPDATE landed_files SET run_id = :r, claimed_at = :c, attempts = attempts + 1"
                " WHERE pipeline = :p AND uri = :u AND token = :t AND state = 'claimed'"
                " AND run_id = :old_run AND claimed_at = :old_at"
            ),
            {
                "r": run_id,
                "c": now,
                "p": pipeline,
                "u": file.uri,
                "t": file.token,
                "old_run": current.run_id,
                "old_at": current.claimed_at,
            },
        )
        return bool(updated.rowcount)

    def renew(self, pipeline: str, uri: str, run_id: str, *, now: float | None = None) -> bool:
        """Refresh this run's claim on ``uri`` (so it does not go stale); False if it holds none."""
        from sqlalchemy import text

        now = time.time() if now is None else now
        with self._write() as db:
            cursor = db.execute(
                text(
                    "UPDATE landed_files SET claimed_at = :now WHERE pipeline = :p AND uri = :u AND run_id = :r"
                    " AND state = 'claimed'"
                ),
                {"now": now, "p": pipeline, "u": uri, "r": run_id},
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
        from sqlalchemy import text

        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
        now = time.time() if now is None else now
        with self._write() as db:
            cursor = db.execute(
                text(
                    "UPDATE landed_files SET state = 'done', outcome = :o, detail = :d, done_at = :now"
                    " WHERE pipeline = :p AND uri = :u AND run_id = :r AND state = 'claimed'"
                ),
                {"o": outcome, "d": detail, "now": now, "p": pipeline, "u": uri, "r": run_id},
            )
            if cursor.rowcount == 0:
                log.warning(
                    "Run %s held no claim on %s; its outcome %s is not recorded", run_id, uri, outcome
                )
            return cursor.rowcount > 0

    def release(self, pipeline: str, uri: str, run_id: str) -> bool:
        """Give up this run's claim on ``uri`` without an outcome: the next run takes the file."""
        from sqlalchemy import text

        with self._write() as db:
            cursor = db.execute(
                text(
                    "DELETE FROM landed_files WHERE pipeline = :p AND uri = :u AND run_id = :r"
                    " AND state = 'claimed'"
                ),
                {"p": pipeline, "u": uri, "r": run_id},
            )
            return cursor.rowcount > 0

    def release_run(self, pipeline: str, run_id: str) -> list[str]:
        """Release every claim a run still holds (files it did not finish); returns their URIs."""
        from sqlalchemy import text

        with self._write() as db:
            rows = db.execute(
                text(
                    "DELETE FROM landed_files WHERE pipeline = :p AND run_id = :r AND state = 'claimed'"
                    " RETURNING uri"
                ),
                {"p": pipeline, "r": run_id},
            )
            return sorted(r.uri for r in rows)
