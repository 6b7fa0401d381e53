"""The coordination store on SQLite and on a real Postgres: schema, locks, errors, local disk."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest

from include.mlops import coordination
from include.mlops.errors import (
    CoordinationStoreError,
    CoordinationStoreUnavailable,
    LockTimeout,
    ServiceUnavailable,
)
from tools.postgres import free_port

pytestmark = pytest.mark.production

FORK = multiprocessing.get_context("fork")


def _tables(url: str) -> set[str]:
    from sqlalchemy import text

    with coordination.engine(url).connect() as conn:
        if coordination.dialect(url) == "postgresql":
            rows = conn.execute(
                text("SELECT table_schema || '.' || table_name FROM information_schema.tables")
            )
        else:
            rows = conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'table'"))
        return {r[0] for r in rows}


def test_schema_is_created_once_versioned_and_in_its_own_postgres_schema(store_url):
    assert coordination.schema_version(store_url) == 0
    assert coordination.ensure_schema(store_url) == coordination.SCHEMA_VERSION
    coordination._ready.clear()  # as a new process would
    assert coordination.ensure_schema(store_url) == coordination.SCHEMA_VERSION
    assert coordination.schema_version(store_url) == coordination.SCHEMA_VERSION
    with coordination.transaction(store_url) as conn:
        from sqlalchemy import text

        rows = conn.execute(text("SELECT version, description FROM mlops_schema_version")).all()
    assert [r.version for r in rows] == [m.version for m in coordination.MIGRATIONS]
    tables = _tables(store_url)
    if coordination.dialect(store_url) == "postgresql":  # beside Airflow's tables, never among them
        assert {"mlops.landed_files", "mlops.coordination_locks", "mlops.retraining_decisions"} <= tables
        assert not any(t.startswith("public.") for t in tables)
    else:
        assert {
            "landed_files",
            "coordination_locks",
            "retraining_decisions",
            "mlops_schema_version",
        } <= tables


def _ensure(url: str, barrier, out) -> None:
    barrier.wait()
    try:
        out.put(coordination.ensure_schema(url))
    except Exception as exc:  # reported to the test
        out.put(repr(exc))


def test_processes_creating_the_schema_at_once_all_succeed(store_url):
    barrier, out = FORK.Barrier(4), FORK.Queue()
    procs = [FORK.Process(target=_ensure, args=(store_url, barrier, out)) for _ in range(4)]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    assert results == [coordination.SCHEMA_VERSION] * 4
    with coordination.transaction(store_url) as conn:
        from sqlalchemy import text

        assert conn.execute(text("SELECT COUNT(*) FROM mlops_schema_version")).scalar() == len(
            coordination.MIGRATIONS
        )


def test_a_newer_schema_is_refused_with_advice(store_url):
    from sqlalchemy import text

    coordination.ensure_schema(store_url)
    with coordination.transaction(store_url, write=True) as conn:
        conn.execute(text("INSERT INTO mlops_schema_version VALUES (99, 'from the future', 0)"))
    coordination._ready.clear()
    with pytest.raises(CoordinationStoreError, match="schema version 99, newer than this code's"):
        coordination.ensure_schema(store_url)


def _hold_in_turns(url: str, inside, overlaps, barrier) -> None:
    barrier.wait()
    for _ in range(4):
        with coordination.lock("promote:churn", timeout=30):
            with inside.get_lock():
                inside.value += 1
                if inside.value > 1:
                    overlaps.value += 1
            time.sleep(0.03)
            with inside.get_lock():
                inside.value -= 1


def test_the_lock_excludes_other_processes(store_url):
    inside, overlaps, barrier = FORK.Value("i", 0), FORK.Value("i", 0), FORK.Barrier(3)
    procs = [
        FORK.Process(target=_hold_in_turns, args=(store_url, inside, overlaps, barrier)) for _ in range(3)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    assert overlaps.value == 0
    assert coordination.holder("promote:churn") is None  # every holder released it


def _hold(url: str, name: str, ready, release, lease: float) -> None:
    with coordination.lock(name, timeout=10, lease=lease, label="churn__promote manual__7"):
        ready.set()
        release.wait(60)


def test_a_timeout_names_the_lock_its_holder_and_the_store_without_password(store_url):
    ready, release = FORK.Event(), FORK.Event()
    holder = FORK.Process(target=_hold, args=(store_url, "promote:churn", ready, release, 30.0))
    holder.start()
    try:
        assert ready.wait(30)
        started = time.monotonic()
        with pytest.raises(LockTimeout) as caught, coordination.lock("promote:churn", timeout=0.5):
            pass
        assert 0.5 <= time.monotonic() - started < 5
    finally:
        release.set()
        holder.join(timeout=30)
    message = str(caught.value)
    assert "'promote:churn'" in message and "within 0.5 s" in message
    assert f"pid {holder.pid} (churn__promote manual__7)" in message
    assert coordination.describe(store_url) in message and "will be retried" in message
    if coordination.dialect(store_url) == "postgresql":
        assert "***@127.0.0.1" in message and store_url.split(":")[2].split("@")[0] not in message
        assert "pg_terminate_backend(" in message
    assert caught.value.holder and caught.value.lock == "promote:churn"
    assert isinstance(caught.value, ServiceUnavailable) and not caught.value.deterministic  # retried
    with coordination.lock("promote:churn", timeout=5):  # free again once released
        pass


def test_a_dead_holder_does_not_block_forever(store_url):
    ready, never = FORK.Event(), FORK.Event()
    holder = FORK.Process(target=_hold, args=(store_url, "promote:churn", ready, never, 1.0))
    holder.start()
    assert ready.wait(30)
    os.kill(holder.pid, signal.SIGKILL)  # no release, no renewal
    holder.join(timeout=30)
    started = time.monotonic()
    with coordination.lock("promote:churn", timeout=20):
        waited = time.monotonic() - started
    # Postgres frees a session's locks when its connection drops; SQLite's lease (1 s here) expires.
    assert waited < 5


def test_locks_of_different_names_do_not_wait_for_each_other(store_url):
    with coordination.lock("promote:churn", timeout=1), coordination.lock("promote:housing", timeout=1):
        pass


def test_an_unreachable_store_is_retryable_and_names_the_url_without_password(tmp_path):
    url = f"postgresql+psycopg2://mlops:s3cret@127.0.0.1:{free_port()}/mlops"
    with pytest.raises(CoordinationStoreUnavailable) as caught, coordination.lock("x", store_url=url):
        pass
    message = str(caught.value)
    assert "is not reachable" in message and "mlops:***@127.0.0.1" in message and "s3cret" not in message
    assert not caught.value.deterministic


def test_a_wrong_password_fails_for_good(postgres):
    url = postgres.url().replace(postgres.password, "wrong")
    with pytest.raises(CoordinationStoreError) as caught:
        coordination.ensure_schema(url)
    assert caught.value.deterministic and "wrong" not in str(caught.value)
    assert "refused the request" in str(caught.value) and "check MLOPS_COORDINATION_URL" in str(caught.value)


def test_an_unsupported_url_is_a_clear_error():
    with pytest.raises(CoordinationStoreError, match="not supported: use a postgresql://"):
        coordination.ensure_schema("mysql://u:p@host/db")


def test_production_mode_writes_no_coordination_state_to_local_disk(pg_url, state, pipelines_dir):
    from include.mlops.data.landing import LandedFile
    from include.mlops.data.ledger import Ledger
    from include.mlops.monitoring import retraining
    from include.mlops.spec import find_spec

    file = LandedFile(uri="s3://landing/churn/a.csv", size=1, modified=0.0, token="t")
    ledger = Ledger()
    assert ledger.claim("churn", [file], "run-1", stale_after=60) == [file]
    assert ledger.finish("churn", file.uri, "run-1", "published")
    with coordination.lock("promote:churn"):
        pass
    retraining.record(find_spec("churn"), None, requested=False, reason="nothing")
    written = [p for p in Path(state).rglob("*") if p.is_file()] if Path(state).exists() else []
    assert written == []


def test_a_sqlite_store_deleted_and_re_created_is_read_afresh(tmp_path):
    """A stack's state folder reset under a long-lived process (a test driver, a triggerer): it must
    read the new file, not keep a pooled connection to the deleted one, and re-check its schema."""
    import sqlite3

    from sqlalchemy import text

    path = tmp_path / "coordination.sqlite3"
    store_url = coordination.normalize(path)
    coordination.ensure_schema(store_url)
    with coordination.engine(store_url).connect() as conn:
        conn.execute(text("SELECT 1")).scalar()
    for leftover in tmp_path.glob("coordination.sqlite3*"):
        leftover.unlink()
    with sqlite3.connect(path) as other:  # another process's new store, under the same name
        other.execute("CREATE TABLE marker (x INTEGER)")
        other.execute("INSERT INTO marker VALUES (7)")
    with coordination.engine(store_url).connect() as conn:
        assert conn.execute(text("SELECT x FROM marker")).scalar() == 7
    assert coordination.ensure_schema(store_url) == coordination.SCHEMA_VERSION  # tables made again
    with coordination.engine(store_url).connect() as conn:
        assert conn.execute(text(f"SELECT COUNT(*) FROM {coordination.VERSION_TABLE}")).scalar() >= 1
