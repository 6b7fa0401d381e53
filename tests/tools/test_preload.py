"""Tasks forked from a worker that preloaded the heavy libraries run, and the project's code is fresh.

The embedded stack starts with its real settings (``tools/stack.py``: ``PreloadingLocalExecutor``
imports ``mlops_airflow.preload.preload_modules()`` in the scheduler, then forks its workers). A DAG of a few
tasks runs twice through the real scheduler: pipeline tasks (``PingOperator``), one that fits a
scikit-learn model and logs it to MLflow (libraries that start threads or hold locks at import would
hang a forked child here), and one that reports what the task process inherited. Its DAG file notes
``sys.modules`` on its first line: in the task process that is what the worker handed down (plus the
task runner's own imports), before any import of ours.
"""

from __future__ import annotations

import os
import shutil

import pytest

from mlops_airflow.preload import is_project_module, preload_modules
from tools.airflow_api import AirflowApi
from tools.stack import ADMIN, ROOT, Stack, free_port

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

DAG_ID = "preload_check"
DAG_FILE = """import sys

_INHERITED = frozenset(sys.modules)  # first line: what the worker handed down to this task process

from airflow.sdk import DAG, chain, task

from mlops_airflow.operators.ping import PingOperator

HEAVY = ("numpy", "pandas", "sklearn", "sklearn.ensemble", "mlflow", "great_expectations", "evidently")
PROJECT = ("include", "mlops_airflow", "dags")
# Handed down without any preload too: the executor's own modules (the scheduler runs it) and the
# extra links plugins/mlops_plugin.py registers (Airflow loads plugins in the scheduler and workers;
# checked with the stock LocalExecutor). No task code: never include.*, the operators or the hooks.
EXECUTOR = {"mlops_airflow", "mlops_airflow.preload", "mlops_airflow.executors", "mlops_airflow.executors.local"}
EXECUTOR |= {"mlops_airflow.links", "mlops_airflow.links.mlflow_ui", "mlops_airflow.links.reports"}


@task
def inherited() -> dict:
    return {
        "heavy": sorted(m for m in HEAVY if m in _INHERITED),
        "project": sorted(m for m in _INHERITED if m.split(".", 1)[0] in PROJECT and m not in EXECUTOR),
    }


@task
def fit_and_log(state: str) -> float:
    import mlflow
    import numpy as np
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 4))
    y = (x[:, 0] + rng.normal(scale=0.5, size=400) > 0).astype(int)
    model = HistGradientBoostingClassifier(max_iter=20).fit(x, y)
    mlflow.set_tracking_uri(f"sqlite:///{state}/preload-mlflow.db")
    with mlflow.start_run():
        score = float(model.score(x, y))
        mlflow.log_metric("train_accuracy", score)
    return score


with DAG("preload_check", schedule=None, max_active_runs=1):
    chain(
        PingOperator(task_id="ping", pipeline="churn"),
        inherited(),
        fit_and_log(state="{state}"),
        PingOperator(task_id="ping_again", pipeline="churn"),
    )
"""


def test_the_preloaded_set_holds_no_project_module():
    assert not [m for m in preload_modules() if is_project_module(m)]
    assert {"sklearn", "mlflow", "pandas", "great_expectations", "evidently"} <= set(preload_modules())
    with pytest.raises(ValueError, match="never preloaded"):
        preload_modules(("pandas", "include.mlops.spec"))
    env = Stack(state=ROOT / "state" / "unused", airflow_port=free_port()).env()
    assert env["AIRFLOW__CORE__EXECUTOR"] == "mlops_airflow.executors.local.PreloadingLocalExecutor"
    assert env["AIRFLOW__SCHEDULER__MP_START_METHOD"] == "fork"


@pytest.fixture
def stack_api(tmp_path, monkeypatch):
    """The embedded stack on free ports, reading only the DAG file above (and churn's spec)."""
    pipelines, dags, state = tmp_path / "pipelines", tmp_path / "dags", tmp_path / "state"
    pipelines.mkdir()
    dags.mkdir()
    state.mkdir()
    shutil.copy(ROOT / "include" / "pipelines" / "churn.yaml", pipelines / "churn.yaml")
    (dags / "preload_check.py").write_text(DAG_FILE.replace("{state}", str(state)), encoding="utf-8")
    monkeypatch.setenv("MLOPS_PIPELINES_DIR", str(pipelines))
    stack = Stack(
        state=state, airflow_port=free_port(), with_mlflow_ui=False, disable_schedules=True, dags_folder=dags
    )
    for key, value in stack.env().items():
        monkeypatch.setenv(key, value)
    try:
        stack.up()
        yield AirflowApi(stack.api_url, *ADMIN)
    finally:
        stack.down()


def test_tasks_forked_after_preloading_finish_and_import_our_code_themselves(stack_api):
    api = stack_api
    api.wait_for_dags([DAG_ID])
    for attempt in range(2):  # the second run's tasks come from workers that already ran some
        run = api.wait_run(DAG_ID, api.trigger(DAG_ID), timeout=300)
        states = {t["task_id"]: t["state"] for t in api.task_instances(DAG_ID, run["dag_run_id"])}
        logs = {t: api.task_log(DAG_ID, run["dag_run_id"], t) for t, s in states.items() if s != "success"}
        assert run["state"] == "success", (attempt, states, logs)
        seen = api.xcom(DAG_ID, run["dag_run_id"], "inherited")
        assert set(seen["heavy"]) >= {"numpy", "pandas", "sklearn", "mlflow", "great_expectations"}, seen
        assert seen["project"] == [], f"project modules came from the worker, not from disk: {seen}"
        assert api.xcom(DAG_ID, run["dag_run_id"], "fit_and_log") > 0.5
    assert os.environ["AIRFLOW__SCHEDULER__MP_START_METHOD"] == "fork"
