"""The native production stack (``tools.prod_stack``) as a session fixture.

One stack for the session, in a folder under the system temporary folder (the ``postgres`` user
that runs the cluster when the tests run as root cannot reach pytest's own temporary folders), on
free ports, with schedules off. ``prod_env`` gives one test the control plane's environment
(``ProdStack.env``), so that a scenario driver reads and writes the same object store, MLflow server
and coordination store as the tasks; the session's environment is left alone, so later tests never
reach the stack's servers by accident. A missing Redis or Postgres is a failure, not a skip:
``make test`` installs them.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tools.prod_stack import ProdStack
from tools.stack import free_port


@pytest.fixture(scope="session")
def prod_stack() -> Iterator[ProdStack]:
    """A running production stack: Postgres, Redis, moto's S3, MLflow server, Airflow with Celery."""
    if not shutil.which("redis-server"):
        pytest.fail("redis-server is not installed: run `make redis`")
    folder = Path(tempfile.mkdtemp(prefix="mlops-prod-"))
    folder.chmod(0o755)
    stack = ProdStack(state=folder, airflow_port=free_port(), mlflow_port=free_port(), disable_schedules=True)
    try:
        stack.up()
        yield stack
    finally:
        stack.down()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def prod_env(prod_stack: ProdStack, monkeypatch: pytest.MonkeyPatch) -> ProdStack:
    """The running production stack, with this test's process in its control plane's environment."""
    for key, value in prod_stack.env().items():  # the MLflow URIs a test sets: see tests/conftest.py
        monkeypatch.setenv(key, value)
    return prod_stack
