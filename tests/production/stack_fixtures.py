"""The native production stack (``tools.prod_stack``) as one session fixture for every module.

One stack for the session, in a folder under the system temporary folder (the ``postgres`` user
that runs the cluster when the tests run as root cannot reach pytest's own temporary folders), on
free ports, with schedules off. It is a ``FaultStack`` (the production stack with the fault hooks of
``tests/production/faults.py``) with the scheduler's task heartbeat timeout at 30 s instead of 300 s,
so that a dead worker's task is retried within a test. Starting it once instead of once per module
saves a minute and a half of ``make test``; each module has its pipelines, all copies of ``churn``:

- ``churn``: the lifecycle scenario (``test_prod_scenario.py``);
- ``gated``: churn with ``registry.approval: manual``, so that a promote run waits for an approval
  (``test_auth.py``);
- ``faulty``: the fault tests' pipeline (``test_faults.py``).

``prod_env`` gives one test the control plane's environment (``ProdStack.env``), so that a driver
reads and writes the same object store, MLflow server and coordination store as the tasks; the
session's environment is left alone, so later tests never reach the stack's servers by accident. A
missing Redis or Postgres is a failure, not a skip: ``make test`` installs them.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.production.faults import FaultStack
from tools.stack import ROOT, free_port

HEARTBEAT = {  # what the stack should use for tests (default 300 s); see the report of issue 13
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
}


def churn_copy(folder: Path, name: str, description: str, *, slices: bool = True, **changes: Any) -> None:
    """``churn.yaml`` under another name, with its own model, folders and ``changes`` at top level."""
    spec = yaml.safe_load((ROOT / "include" / "pipelines" / "churn.yaml").read_text(encoding="utf-8"))
    spec["name"] = name
    spec["description"] = description
    spec["data"]["landing"] = f"{{MLOPS_DATA_ROOT}}/landing/{name}"
    spec["inference"]["input"] = f"{{MLOPS_DATA_ROOT}}/scoring/{name}"
    spec["inference"]["output"] = f"{{MLOPS_DATA_ROOT}}/predictions/{name}"
    spec["registry"] = {**spec.get("registry", {}), "model_name": name}
    if not slices:
        spec["evaluation"].pop("slices", None)
    spec.update(changes)
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")


def write_pipelines(folder: Path) -> Path:
    """The session stack's pipelines folder: churn, gated and faulty."""
    folder.mkdir(parents=True)
    shutil.copy(ROOT / "include" / "pipelines" / "churn.yaml", folder / "churn.yaml")
    churn_copy(
        folder,
        "gated",
        "churn, with promotion waiting for a human approval",
        slices=False,
        registry={"model_name": "gated", "approval": "manual"},
    )
    churn_copy(folder, "faulty", "churn, for the fault tests")
    return folder


@pytest.fixture(scope="session")
def prod_stack() -> Iterator[FaultStack]:
    """A running production stack: Postgres, Redis, moto's S3, MLflow server, Airflow with Celery."""
    if not shutil.which("redis-server"):
        pytest.fail("redis-server is not installed: run `make redis`")
    folder = Path(tempfile.mkdtemp(prefix="mlops-prod-"))
    folder.chmod(0o755)
    pipelines = write_pipelines(folder / "pipelines")
    stack = FaultStack(
        state=folder,
        airflow_port=free_port(),
        mlflow_port=free_port(),
        disable_schedules=True,
        extra_env={"MLOPS_PIPELINES_DIR": str(pipelines), **HEARTBEAT},
    )
    try:
        with pytest.MonkeyPatch.context() as mp:
            for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
                mp.delenv(name, raising=False)  # the components inherit no MLflow login from here
            stack.up()
        yield stack
    finally:
        stack.down()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def prod_env(prod_stack: FaultStack, monkeypatch: pytest.MonkeyPatch) -> FaultStack:
    """The running production stack, with this test's process in its control plane's environment."""
    for key, value in prod_stack.env().items():  # the MLflow URIs a test sets: see tests/conftest.py
        monkeypatch.setenv(key, value)
    return prod_stack


@pytest.fixture(scope="module")
def prod_module_env(prod_stack: FaultStack) -> Iterator[FaultStack]:
    """``prod_env`` for a whole module (its module-scoped fixtures drive the stack too)."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in prod_stack.env().items():
            mp.setenv(key, value)
        yield prod_stack
