"""Fixtures of the production tests: a real Postgres cluster (``tools.postgres``) for the session.

``postgres`` starts a throwaway cluster in a folder under the system temporary folder (the
``postgres`` user that runs it when the tests run as root cannot reach pytest's own temporary
folders) and removes it at the end. ``new_database`` gives a test a database of its own, so tests
never see each other's rows. ``store_url`` is the coordination store of one test, once on SQLite and
once on Postgres, and points ``MLOPS_COORDINATION_URL`` at it. A missing Postgres is a failure, not
a skip: ``make test`` installs it (``make postgres``).
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.production.stack_fixtures import prod_env, prod_module_env, prod_stack  # noqa: F401 - the stack fixtures
from tools.postgres import Cluster, binary


@pytest.fixture(scope="session")
def postgres() -> Iterator[Cluster]:
    """A Postgres cluster on 127.0.0.1 for the session (superuser ``mlops``, database ``mlops``)."""
    try:
        binary("pg_ctl")
    except FileNotFoundError as exc:
        pytest.fail(str(exc))
    folder = Path(tempfile.mkdtemp(prefix="mlops-pg-"))
    folder.chmod(0o755)
    cluster = Cluster(folder)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop(mode="immediate")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def new_database(postgres: Cluster) -> Callable[[], str]:
    """Make a fresh, empty database of the session cluster; returns its SQLAlchemy URL."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    def make() -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        admin = create_engine(
            postgres.url(database="postgres"), poolclass=NullPool, isolation_level="AUTOCOMMIT"
        )
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
        admin.dispose()
        return postgres.url(database=name)

    return make


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(
    request: pytest.FixtureRequest, state: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """The coordination store of one test (a SQLite file, or a fresh Postgres database), set as
    ``MLOPS_COORDINATION_URL`` (after ``state``, which unsets it)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'coordination.sqlite3'}"
    else:
        url = request.getfixturevalue("new_database")()
    monkeypatch.setenv("MLOPS_COORDINATION_URL", url)
    yield url


@pytest.fixture
def pg_url(new_database: Callable[[], str], state: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh Postgres coordination store, set as ``MLOPS_COORDINATION_URL`` (after ``state``, which
    unsets it)."""
    url = new_database()
    monkeypatch.setenv("MLOPS_COORDINATION_URL", url)
    return url
