"""The coordination store: one SQL database for the state that tasks on different hosts share.

It holds the processed-file ledger (``data/ledger.py``), the cross-host locks (the per-model
promotion lock of ``model/registry.py``) and the retraining decisions with the drift history
(``monitoring/retraining.py``). Workers on several hosts, the triggerer and the CLI all see the same
rows, so what one host claimed, locked or decided holds for the others.

- **Where.** ``$MLOPS_COORDINATION_URL``, a SQLAlchemy URL (``postgresql+psycopg2://user:pw@host/db``
  in production; ``postgres://`` as Airflow writes it is accepted too). Unset: the embedded default,
  the SQLite file ``$MLOPS_STATE_DIR/coordination.sqlite3``, which holds only on one host. On
  Postgres every table lives in the schema ``mlops`` (the connection's ``search_path``), so the store
  can share the Airflow metadata database or its server. SQLite and Postgres are supported.
- **Schema.** Versioned migrations (``MIGRATIONS``), applied on first use in one transaction and
  recorded in ``mlops_schema_version``; two processes creating or upgrading at once are serialised
  (Postgres: a transaction-scoped advisory lock; SQLite: ``BEGIN IMMEDIATE``), so it is idempotent.
- **Transactions** (``transaction``): on SQLite a writing transaction takes the write lock first
  (``BEGIN IMMEDIATE``), so a read-then-write cannot interleave with another process; on Postgres a
  transaction can ask to be serialised with the others of the same key (``serialize=``), through
  ``pg_advisory_xact_lock``, which is what SQLite's write lock gives for free.
- **Locks** (``lock``): on Postgres a session-level advisory lock on a dedicated connection (taken by
  polling ``pg_try_advisory_lock`` until the timeout; released when its session ends, so a dead
  holder frees it at once); on SQLite a lease row renewed by a thread while held, which a dead
  holder's successor may take once it expired. A timeout raises ``LockTimeout`` naming the holder.
- **Errors.** A store that does not answer or is locked raises ``CoordinationStoreUnavailable``
  (retried, decided by ``tracking.transient_kind`` as for MLflow's store); anything else
  ``CoordinationStoreError`` (not retried); messages name the URL without its password.

Engines are cached per URL and per process (a forked child makes its own). Cheap to import: the
triggerer and DAG parsing import the ledger, so SQLAlchemy is imported inside functions only.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.mlops.errors import (
    CoordinationStoreError,
    CoordinationStoreUnavailable,
    LockTimeout,
    MlopsError,
    one_line,
)
from include.mlops.paths import state_dir

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)

ENV = "MLOPS_COORDINATION_URL"
PG_SCHEMA = "mlops"  # Postgres schema of every table of the store
BUSY_TIMEOUT = 60.0  # seconds a SQLite writer waits for another one, and a Postgres one for its key
DEFAULT_LEASE = 30.0  # seconds a SQLite lock outlives a holder that stopped renewing it (died)
APPLICATION_NAME = "airflow-mlops"  # pg_stat_activity.application_name of the store's sessions

VERSION_TABLE = "mlops_schema_version"
LOCKS_TABLE = "coordination_locks"


@dataclass(frozen=True)
class Migration:
    """One schema version: statements applied in one transaction. ``{float}`` and ``{id}`` are the
    dialect's 8-byte float and auto-increment primary key (Postgres's ``REAL`` is 4 bytes)."""

    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "ledger, locks, retraining decisions",
        (
            """CREATE TABLE IF NOT EXISTS landed_files (
                pipeline   TEXT NOT NULL,
                uri        TEXT NOT NULL,
                token      TEXT NOT NULL,
                state      TEXT NOT NULL CHECK (state IN ('claimed', 'done')),
                run_id     TEXT NOT NULL,
                claimed_at {float} NOT NULL,
                attempts   INTEGER NOT NULL DEFAULT 1,
                size       BIGINT,
                modified   {float},
                outcome    TEXT,
                detail     TEXT,
                done_at    {float},
                PRIMARY KEY (pipeline, uri, token)
            )""",
            "CREATE INDEX IF NOT EXISTS landed_files_by_run ON landed_files (pipeline, run_id, state)",
            f"""CREATE TABLE IF NOT EXISTS {LOCKS_TABLE} (
                name        TEXT PRIMARY KEY,
                owner       TEXT NOT NULL,
                token       TEXT NOT NULL,
                acquired_at {{float}} NOT NULL,
                expires_at  {{float}}
            )""",
            """CREATE TABLE IF NOT EXISTS retraining_decisions (
                id        {id},
                pipeline  TEXT NOT NULL,
                at        {float} NOT NULL,
                requested INTEGER NOT NULL,
                entry     TEXT NOT NULL
            )""",
            "CREATE INDEX IF NOT EXISTS retraining_decisions_by_pipeline ON retraining_decisions (pipeline, id)",
        ),
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1].version
_TYPES = {
    "sqlite": {"float": "REAL", "id": "INTEGER PRIMARY KEY AUTOINCREMENT"},
    "postgresql": {"float": "DOUBLE PRECISION", "id": "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"},
}


# URLs -----------------------------------------------------------------------------------------
def default_url() -> str:
    """The embedded default: a SQLite file in the state folder (one host only)."""
    return f"sqlite:///{state_dir() / 'coordination.sqlite3'}"


def url() -> str:
    """``$MLOPS_COORDINATION_URL``, else the embedded default."""
    return normalize(os.environ.get(ENV) or default_url())


def normalize(url_or_path: str | Path) -> str:
    """A SQLAlchemy URL; a bare path is a SQLite file, ``postgres://`` (Airflow's spelling) is
    ``postgresql://``."""
    text = str(url_or_path)
    if "://" not in text:
        return f"sqlite:///{Path(text).expanduser().resolve()}"
    return re.sub(r"^postgres(?=://|\+)", "postgresql", text)


def redact(store_url: str) -> str:
    """The URL without its password, for messages and logs."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", store_url)


def dialect(store_url: str) -> str:
    """``sqlite`` or ``postgresql`` (the part of the scheme before a ``+driver``)."""
    return store_url.split(":", 1)[0].split("+", 1)[0]


def sqlite_file(store_url: str) -> Path | None:
    """The database file of a SQLite URL (None for any other store, or an in-memory one)."""
    if dialect(store_url) != "sqlite":
        return None
    path = store_url.split(":///", 1)[1] if ":///" in store_url else ""
    path = path.split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def describe(store_url: str) -> str:
    """How a message names the store: a SQLite file's path, else the URL without its password."""
    file = sqlite_file(store_url)
    return str(file) if file is not None else redact(store_url)


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for a lock name (Postgres advisory locks take a ``bigint``)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


# Engines --------------------------------------------------------------------------------------
_engines: dict[str, Engine] = {}
_engines_pid = os.getpid()
_engines_lock = threading.Lock()
_ready: set[str] = set()  # stores (see _identity) whose schema this process has seen at SCHEMA_VERSION


def _forget_engines_after_fork() -> None:
    """A forked child must not use its parent's connections (they share the parent's sockets)."""
    global _engines_lock, _engines_pid
    _engines_lock = threading.Lock()
    for engine_ in _engines.values():
        engine_.dispose(close=False)
    _engines.clear()
    _engines_pid = os.getpid()


os.register_at_fork(after_in_child=_forget_engines_after_fork)


def engine(store_url: str | None = None) -> Engine:
    """The process's engine for a URL (default: ``url()``), created on first use, schema not checked."""
    store_url = normalize(store_url) if store_url else url()
    with _engines_lock:
        if _engines_pid != os.getpid():  # forked without the at-fork hook (e.g. os.fork in C code)
            _forget_engines_after_fork()
        found = _engines.get(store_url)
        if found is None:
            found = _engines[store_url] = _create_engine(store_url)
    return found


def _create_engine(store_url: str) -> Engine:
    kind = dialect(store_url)
    if kind not in _TYPES:
        raise CoordinationStoreError(
            f"the coordination store URL {redact(store_url)} ({ENV}) is not supported: use a "
            "postgresql:// URL (production) or sqlite:/// (one host)"
        )
    from sqlalchemy import create_engine, event
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        if kind == "sqlite":
            file = sqlite_file(store_url)
            if file is not None:
                file.parent.mkdir(parents=True, exist_ok=True)
            # No pool for a file: a pooled connection would keep reading a file that was deleted and
            # re-created (a stack's state folder reset), seeing none of the new rows. Opening a
            # SQLite file costs well under a millisecond.
            from sqlalchemy.pool import NullPool

            created = create_engine(
                store_url,
                connect_args={"timeout": BUSY_TIMEOUT, "check_same_thread": False},
                **({"poolclass": NullPool} if file is not None else {}),
            )
            event.listen(created, "connect", _sqlite_connect)
            event.listen(created, "begin", _sqlite_begin)
        else:
            created = create_engine(
                store_url,
                pool_pre_ping=True,  # a restarted server: the next checkout reconnects
                pool_size=2,
                max_overflow=8,
                connect_args={"connect_timeout": 10, "application_name": APPLICATION_NAME},
            )
            event.listen(created, "connect", _postgres_connect)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise CoordinationStoreError(
            f"cannot use the coordination store URL {redact(store_url)} ({ENV}): {one_line(str(exc), 200)}"
        ) from exc
    except OSError as exc:
        raise CoordinationStoreError(
            f"cannot create the folder of the coordination store {describe(store_url)}: {exc}; check that "
            "the state folder ($MLOPS_STATE_DIR) is writable"
        ) from exc
    return created


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    """Transactions are begun by ``_sqlite_begin`` (pysqlite's own handling defers BEGIN and
    cannot take the write lock first); WAL lets readers (the triggerer) read while a writer writes."""
    dbapi_connection.isolation_level = None
    deadline = time.monotonic() + BUSY_TIMEOUT
    while True:  # switching the journal mode does not wait for the busy timeout: retried here
        try:
            if dbapi_connection.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                dbapi_connection.execute("PRAGMA journal_mode=WAL")
            break
        except Exception as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    dbapi_connection.execute("PRAGMA synchronous=FULL")  # a done mark survives a power cut


def _sqlite_begin(conn: Connection) -> None:
    mode = "IMMEDIATE" if conn.get_execution_options().get("mlops_write") else "DEFERRED"
    conn.exec_driver_sql(f"BEGIN {mode}")


def _postgres_connect(dbapi_connection: Any, _record: Any) -> None:
    """Every table of the store is in the schema ``mlops``: unqualified SQL finds them there."""
    autocommit = dbapi_connection.autocommit
    dbapi_connection.autocommit = True
    cursor = dbapi_connection.cursor()
    cursor.execute(f"SET SESSION search_path TO {PG_SCHEMA}")
    cursor.close()
    dbapi_connection.autocommit = autocommit


# Errors ---------------------------------------------------------------------------------------
@contextmanager
def store_errors(store_url: str, what: str = "the coordination store") -> Iterator[None]:
    """Turn a database error into a core error naming the store: ``CoordinationStoreUnavailable``
    when ``tracking.transient_kind`` says waiting may help, else ``CoordinationStoreError``."""
    from include.mlops.tracking import transient_kind

    try:
        yield
    except MlopsError:
        raise
    except Exception as exc:
        where = f"{what} ({describe(store_url)})"
        kind = transient_kind(exc)
        first = one_line(f"{type(exc).__name__}: {exc}".splitlines()[0], 300)
        if kind == "busy":
            raise CoordinationStoreUnavailable(
                f"{where} is busy (another writer holds its lock for too long): {first}; it will be "
                "retried. If it lasts, look for a process holding the database locked"
            ) from exc
        if kind is not None:
            raise CoordinationStoreUnavailable(
                f"{where} is not reachable: {first}; it will be retried. Check that the database server "
                f"is up and reachable ({ENV})"
            ) from exc
        if not _is_database_error(exc):
            raise
        if sqlite_file(store_url) is not None and _is_corrupt_sqlite(exc):
            raise CoordinationStoreError(
                f"{where} is not a usable SQLite database ({first}); move it away to start a new one "
                "(files the ledger recorded as done would then be ingested again)"
            ) from exc
        advice = (
            f"check {ENV} (host, user, password, database)"
            if _is_connection_error(exc)
            else "check the database user's permissions, and that every host runs the same project version"
        )
        raise CoordinationStoreError(f"{where} refused the request: {first}; {advice}") from exc


def _is_database_error(exc: BaseException) -> bool:
    import sqlite3

    from sqlalchemy.exc import SQLAlchemyError

    return isinstance(exc, (SQLAlchemyError, sqlite3.Error))


def _is_connection_error(exc: BaseException) -> bool:
    from sqlalchemy.exc import InterfaceError, OperationalError

    return isinstance(exc, (OperationalError, InterfaceError))


def _is_corrupt_sqlite(exc: BaseException) -> bool:
    import sqlite3

    orig = getattr(exc, "orig", exc)
    return isinstance(orig, sqlite3.DatabaseError) and not isinstance(orig, sqlite3.OperationalError)


# Schema ---------------------------------------------------------------------------------------
def _statement(sql: str, kind: str) -> str:
    return sql.replace("{float}", _TYPES[kind]["float"]).replace("{id}", _TYPES[kind]["id"])


def _current_version(conn: Connection, kind: str) -> int:
    """The applied schema version, 0 for an empty store."""
    from sqlalchemy import text

    if kind == "postgresql":
        exists = conn.execute(text(f"SELECT to_regclass('{PG_SCHEMA}.{VERSION_TABLE}')")).scalar()
    else:
        exists = conn.execute(
            text("SELECT name FROM sqlite_master WHERE type = 'table' AND name = :t"), {"t": VERSION_TABLE}
        ).scalar()
    if not exists:
        return 0
    return int(conn.execute(text(f"SELECT COALESCE(MAX(version), 0) FROM {VERSION_TABLE}")).scalar() or 0)


def _too_new(store_url: str, found: int) -> CoordinationStoreError:
    return CoordinationStoreError(
        f"the coordination store {describe(store_url)} has schema version {found}, newer than this code's "
        f"{SCHEMA_VERSION}: deploy the same project version on every host"
    )


def ensure_schema(store_url: str | None = None) -> int:
    """Create or upgrade the store's tables to ``SCHEMA_VERSION`` (idempotent; safe from several
    processes at once); returns the version. Checked once per process and URL."""
    store_url = normalize(store_url) if store_url else url()
    identity = _identity(store_url)
    if identity is not None and identity in _ready:
        return SCHEMA_VERSION
    from sqlalchemy import text

    kind = dialect(store_url)
    eng = engine(store_url)
    with store_errors(store_url), eng.connect() as conn:
        with conn.begin():
            current = _current_version(conn, kind)
        if current < SCHEMA_VERSION:
            conn.execution_options(mlops_write=True)
            with conn.begin():
                if kind == "postgresql":  # CREATE ... IF NOT EXISTS is not safe against a twin
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key("mlops.schema")})
                    conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {PG_SCHEMA}"))
                conn.execute(
                    text(
                        _statement(
                            f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (version INTEGER PRIMARY KEY,"
                            " description TEXT NOT NULL, applied_at {float} NOT NULL)",
                            kind,
                        )
                    )
                )
                current = _current_version(conn, kind)  # a twin may have upgraded meanwhile
                for migration in MIGRATIONS:
                    if migration.version <= current:
                        continue
                    for sql in migration.statements:
                        conn.execute(text(_statement(sql, kind)))
                    conn.execute(
                        text(
                            f"INSERT INTO {VERSION_TABLE} (version, description, applied_at) VALUES (:v, :d, :t)"
                        ),
                        {"v": migration.version, "d": migration.description, "t": time.time()},
                    )
                    log.info(
                        "Coordination store %s: schema upgraded to version %d (%s)",
                        describe(store_url),
                        migration.version,
                        migration.description,
                    )
    if current > SCHEMA_VERSION:
        raise _too_new(store_url, current)
    if identity is not None:
        _ready.add(identity)
    return max(current, SCHEMA_VERSION)


def _identity(store_url: str) -> str | None:
    """What ``_ready`` remembers; None for a SQLite file, whose schema is checked on every use (one
    local query): a file deleted and re-created under the same name (even with the same inode
    number) has no tables yet."""
    return None if sqlite_file(store_url) is not None else store_url


def schema_version(store_url: str | None = None) -> int:
    """The store's applied schema version as the database says (0: empty), without upgrading."""
    store_url = normalize(store_url) if store_url else url()
    with store_errors(store_url), engine(store_url).connect() as conn, conn.begin():
        return _current_version(conn, dialect(store_url))


# Transactions ---------------------------------------------------------------------------------
@contextmanager
def transaction(
    store_url: str | None = None,
    *,
    write: bool = False,
    serialize: str | None = None,
    what: str = "the coordination store",
) -> Iterator[Connection]:
    """A connection in one transaction on the (created or upgraded) store, committed on success.

    ``write``: on SQLite, take the database's write lock first (``BEGIN IMMEDIATE``), so what the
    transaction reads cannot change before it writes. ``serialize``: on Postgres, wait (up to
    ``BUSY_TIMEOUT``) for every other transaction serialised under the same key to end first
    (``pg_advisory_xact_lock``); SQLite's write lock already serialises all writers.
    """
    from sqlalchemy import text

    store_url = normalize(store_url) if store_url else url()
    ensure_schema(store_url)
    with store_errors(store_url, what), engine(store_url).connect() as conn:
        if write:
            conn.execution_options(mlops_write=True)
        with conn.begin():
            if serialize and dialect(store_url) == "postgresql":
                conn.execute(text(f"SET LOCAL lock_timeout = '{int(BUSY_TIMEOUT * 1000)}ms'"))
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key(serialize)})
            yield conn


# Locks ----------------------------------------------------------------------------------------
def _owner(label: str | None) -> str:
    who = f"{socket.gethostname()} pid {os.getpid()}"
    return f"{who} ({label})" if label else who


def _utc(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def holder(name: str, store_url: str | None = None) -> str | None:
    """Who holds lock ``name`` as the store records it ("host pid N (label) since ..."), or None."""
    return _holder(name, normalize(store_url) if store_url else url())[0]


def _holder(name: str, store_url: str) -> tuple[str | None, int | None]:
    """(description of the holder, its Postgres backend pid): what a waiter's message says."""
    from sqlalchemy import text

    with transaction(store_url) as conn:
        row = conn.execute(
            text(f"SELECT owner, acquired_at, expires_at FROM {LOCKS_TABLE} WHERE name = :n"), {"n": name}
        ).first()
        pid = _pg_backend(conn, name) if dialect(store_url) == "postgresql" else None
    if row is None and pid is None:
        return None, None
    parts = []
    if row is not None:
        parts.append(f"{row.owner} since {_utc(row.acquired_at)}")
        if row.expires_at is not None:
            parts.append(f"lease until {_utc(row.expires_at)}")
    if pid is not None:
        parts.append(f"Postgres backend pid {pid}")
    return ", ".join(parts), pid


def _pg_backend(conn: Connection, name: str) -> int | None:
    """The Postgres backend holding the advisory lock of ``name``, if any (``pg_locks``)."""
    from sqlalchemy import text

    key = lock_key(name)
    return conn.execute(
        text(
            "SELECT pid FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND granted"
            " AND classid::bigint = :hi AND objid::bigint = :lo AND objsubid = 1 LIMIT 1"
        ),
        {"hi": (key >> 32) & 0xFFFFFFFF, "lo": key & 0xFFFFFFFF},
    ).scalar()


def _timeout_error(name: str, timeout: float, store_url: str) -> LockTimeout:
    try:
        held_by, pid = _holder(name, store_url)
    except MlopsError:
        held_by, pid = None, None
    if dialect(store_url) == "postgresql":
        advice = (
            "it is released when its holder's session ends; if that holder is stuck, end its session "
            f"(SELECT pg_terminate_backend({pid or '<pid>'}))"
        )
    else:
        advice = "a holder that died loses it once its lease expires"
    return LockTimeout(
        f"could not take the lock {name!r} within {timeout:g} s: held by {held_by or 'an unknown holder'}"
        f" (coordination store {describe(store_url)}). It will be retried; {advice}",
        lock=name,
        holder=held_by,
    )


@contextmanager
def lock(
    name: str,
    *,
    timeout: float = 60.0,
    lease: float = DEFAULT_LEASE,
    label: str | None = None,
    store_url: str | None = None,
) -> Iterator[None]:
    """Hold the cross-host lock ``name`` for the block; ``LockTimeout`` after ``timeout`` seconds.

    ``label`` (e.g. the Airflow run) is recorded with the host and pid, for the message a waiter
    gets. ``lease`` applies to SQLite only: how long the lock outlives a holder that died.
    """
    store_url = normalize(store_url) if store_url else url()
    ensure_schema(store_url)
    owner, token = _owner(label), uuid.uuid4().hex
    if dialect(store_url) == "postgresql":
        with _advisory_lock(name, timeout=timeout, owner=owner, token=token, store_url=store_url):
            yield
    else:
        with _lease_lock(name, timeout=timeout, lease=lease, owner=owner, token=token, store_url=store_url):
            yield


def _wait(deadline: float, delay: float) -> float:
    time.sleep(max(0.0, min(delay, deadline - time.monotonic())))
    return min(delay * 2, 0.5)


@contextmanager
def _advisory_lock(name: str, *, timeout: float, owner: str, token: str, store_url: str) -> Iterator[None]:
    """``pg_advisory_lock`` on a connection of its own, taken by polling so the wait is bounded."""
    from sqlalchemy import text

    key = lock_key(name)
    deadline, delay = time.monotonic() + timeout, 0.05
    what = f"the lock {name!r}"
    with store_errors(store_url, what):
        conn = engine(store_url).connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        with store_errors(store_url, what):
            while not conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
                if time.monotonic() >= deadline:
                    raise _timeout_error(name, timeout, store_url)
                delay = _wait(deadline, delay)
    except BaseException:
        conn.close()
        raise
    try:
        with store_errors(store_url, what):
            conn.execute(
                text(
                    f"INSERT INTO {LOCKS_TABLE} (name, owner, token, acquired_at, expires_at)"
                    " VALUES (:n, :o, :t, :a, NULL) ON CONFLICT (name) DO UPDATE SET owner = excluded.owner,"
                    " token = excluded.token, acquired_at = excluded.acquired_at, expires_at = NULL"
                ),
                {"n": name, "o": owner, "t": token, "a": time.time()},
            )
        log.info("Took the lock %r (%s)", name, owner)
        yield
    finally:
        _advisory_unlock(conn, name, key, token)


def _advisory_unlock(conn: Connection, name: str, key: int, token: str) -> None:
    from sqlalchemy import text

    try:
        if not conn.closed and not conn.invalidated:
            conn.execute(
                text(f"DELETE FROM {LOCKS_TABLE} WHERE name = :n AND token = :t"), {"n": name, "t": token}
            )
            if not conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key}).scalar():
                log.error("The lock %r was no longer held when released (its session was lost)", name)
    except Exception as exc:  # the session is gone: so is its lock; never reuse this connection
        log.warning("Could not release the lock %r cleanly (%s); dropping its connection", name, exc)
        conn.invalidate()
    finally:
        conn.close()


@contextmanager
def _lease_lock(
    name: str, *, timeout: float, lease: float, owner: str, token: str, store_url: str
) -> Iterator[None]:
    """A lease row taken under SQLite's write lock and renewed by a thread while held."""
    from sqlalchemy import text

    deadline, delay = time.monotonic() + timeout, 0.05
    while True:
        with transaction(store_url, write=True, what=f"the lock {name!r}") as conn:
            row = conn.execute(
                text(f"SELECT owner, expires_at FROM {LOCKS_TABLE} WHERE name = :n"), {"n": name}
            ).first()
            now = time.time()
            free = row is None or row.expires_at is None or row.expires_at <= now
            if free:
                if row is not None:
                    log.warning("Taking the lock %r from %s, whose lease expired", name, row.owner)
                conn.execute(
                    text(
                        f"INSERT INTO {LOCKS_TABLE} (name, owner, token, acquired_at, expires_at)"
                        " VALUES (:n, :o, :t, :a, :e) ON CONFLICT (name) DO UPDATE SET owner = excluded.owner,"
                        " token = excluded.token, acquired_at = excluded.acquired_at, expires_at = excluded.expires_at"
                    ),
                    {"n": name, "o": owner, "t": token, "a": now, "e": now + lease},
                )
        if free:
            break
        if time.monotonic() >= deadline:
            raise _timeout_error(name, timeout, store_url)
        delay = _wait(deadline, delay)
    keeper = _LeaseKeeper(name, token, lease, store_url)
    keeper.start()
    log.info("Took the lock %r (%s)", name, owner)
    try:
        yield
    finally:
        keeper.stop()
        with transaction(store_url, write=True, what=f"the lock {name!r}") as conn:
            conn.execute(
                text(f"DELETE FROM {LOCKS_TABLE} WHERE name = :n AND token = :t"), {"n": name, "t": token}
            )
        if keeper.lost:
            log.error(
                "The lock %r was lost while held (its lease of %g s expired before a renewal): another "
                "process may have taken it meanwhile",
                name,
                lease,
            )


class _LeaseKeeper(threading.Thread):
    """Renews a SQLite lease every third of its length until stopped, or until it finds it lost."""

    def __init__(self, name: str, token: str, lease: float, store_url: str) -> None:
        super().__init__(name=f"lease-{name}", daemon=True)
        self.lock_name, self.token, self.lease, self.store_url = name, token, lease, store_url
        self.stopped = threading.Event()
        self.lost = False

    def run(self) -> None:
        """Renew until stopped; a renewal that finds another token marks the lease lost."""
        from sqlalchemy import text

        while not self.stopped.wait(self.lease / 3):
            try:
                with transaction(self.store_url, write=True) as conn:
                    renewed = conn.execute(
                        text(f"UPDATE {LOCKS_TABLE} SET expires_at = :e WHERE name = :n AND token = :t"),
                        {"e": time.time() + self.lease, "n": self.lock_name, "t": self.token},
                    ).rowcount
            except MlopsError as exc:
                log.warning("Could not renew the lock %r: %s", self.lock_name, exc)
                continue
            if not renewed:
                self.lost = True
                return

    def stop(self) -> None:
        """Stop renewing (the holder releases the row itself)."""
        self.stopped.set()
        self.join(timeout=self.lease)
