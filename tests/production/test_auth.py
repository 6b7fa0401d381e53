"""Who may do what on the native production stack: Airflow's roles and MLflow's basic-auth app.

Through the REST APIs, as a user would: the ``viewer`` reads but gets 403 triggering
``<pipeline>__promote`` or ``<pipeline>__rollback`` and answering an approval; the ``operator`` does all
three. MLflow's server refuses a request without a login (401) and accepts the ``mlflow_default``
connection's. The tasks log into MLflow with that connection's login only: the workers' environment
holds no MLflow credential, and the registered model the train task created belongs to the
connection's user.

The stack is the session's (``tests/production/stack_fixtures.py``); its pipeline ``gated`` is churn
with ``registry.approval: manual``, so that a promote run waits for an approval.
"""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tools.airflow_api import AirflowApi, ApiError
from tools.prod_stack import MLFLOW_TASK_USER, ProdStack

pytestmark = [pytest.mark.production, pytest.mark.e2e, pytest.mark.slow]

PIPELINE = "gated"
TIMEOUT = 600
THINK_SECONDS = 10  # see tests/e2e/test_approval_e2e.py: an instant answer races the executor's report


@pytest.fixture(scope="module")
def stack(prod_module_env: ProdStack) -> ProdStack:
    """The session's production stack (its pipelines include ``gated``), this module in its environment."""
    return prod_module_env


def api(stack: ProdStack, user: str) -> AirflowApi:
    """The REST API as ``user`` (``viewer``, ``operator`` or ``admin``)."""
    return AirflowApi(stack.api_url, *stack.login(user))


def forbidden(call: Any, *args: Any) -> str:
    """The message of the ``ApiError`` that ``call(*args)`` raised; it must be an HTTP 403."""
    with pytest.raises(ApiError) as info:
        call(*args)
    assert "HTTP 403" in str(info.value), info.value
    return str(info.value)


def mlflow_get(stack: ProdStack, path: str, login: tuple[str, str] | None) -> tuple[int, Any]:
    """GET on the MLflow server's REST API with HTTP basic auth (or none): status and JSON body."""
    headers = {}
    if login:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(login).encode()).decode()
    request = urllib.request.Request(stack.mlflow_url + path, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            payload = response.read()
            try:
                return response.status, json.loads(payload)
            except ValueError:  # /health answers "OK"
                return response.status, payload
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()[:300]


def connection_login(stack: ProdStack) -> tuple[str, str]:
    """The login in the ``mlflow_default`` connection the tasks get."""
    conn = json.loads(stack.production_env()["AIRFLOW_CONN_MLFLOW_DEFAULT"])
    return conn["login"], conn["password"]


def dag(stage: str) -> str:
    return f"{PIPELINE}__{stage}"


def new_run(client: AirflowApi, dag_id: str, known: set[str]) -> str:
    """The run of ``dag_id`` not in ``known`` (started by an Asset event), once it exists."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        fresh = client.run_ids(dag_id) - known
        if fresh:
            return fresh.pop()
        time.sleep(2)
    raise AssertionError(f"no new {dag_id} run within {TIMEOUT}s")


def test_the_viewer_reads_but_cannot_trigger_promote_or_rollback(stack: ProdStack) -> None:
    viewer, operator = api(stack, "viewer"), api(stack, "operator")
    operator.wait_for_dags([dag("promote"), dag("rollback")])
    assert dag("promote") in viewer.dag_ids()  # reading is allowed
    forbidden(viewer.trigger, dag("promote"))
    forbidden(viewer.trigger, dag("rollback"))
    forbidden(viewer.unpause, dag("promote"))
    # The operator may: the rollback DAG stays paused, so its run waits and never rolls anything back.
    run_id = operator.trigger(dag("rollback"))
    assert operator.run(dag("rollback"), run_id)["state"] == "queued"
    # ... and sees that the viewer made no run
    assert operator.run_ids(dag("promote")) == set()


def test_mlflow_refuses_a_request_without_the_connections_login(stack: ProdStack) -> None:
    path = "/api/2.0/mlflow/experiments/search?max_results=5"
    status, _ = mlflow_get(stack, path, None)
    assert status == 401
    user, password = connection_login(stack)
    assert user == MLFLOW_TASK_USER
    status, _ = mlflow_get(stack, path, (user, password + "x"))
    assert status == 401
    status, body = mlflow_get(stack, path, (user, password))
    assert status == 200, body
    assert mlflow_get(stack, "/health", None)[0] == 200  # the health check needs no login


def test_the_operator_answers_an_approval_the_viewer_cannot(
    stack: ProdStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from include.mlops.datagen import write_batch
    from include.mlops.model import registry
    from include.mlops.spec import find_spec

    viewer, operator = api(stack, "viewer"), api(stack, "operator")
    stages = ("ingest", "train", "evaluate", "promote")
    operator.wait_for_dags([dag(s) for s in stages])
    for stage in stages:
        operator.unpause(dag(stage))
    before = {stage: operator.run_ids(dag(stage)) for stage in stages}
    spec = find_spec(PIPELINE)
    write_batch(spec, "batch1", rows=3000, seed=21, dataset="churn")
    ingest = operator.trigger(dag("ingest"))
    assert operator.wait_run(dag("ingest"), ingest, TIMEOUT)["state"] == "success"
    train = new_run(operator, dag("train"), before["train"])
    trained = operator.wait_run(dag("train"), train, TIMEOUT)
    assert trained["state"] == "success", operator.task_log(dag("train"), train, "train")
    evaluate = new_run(operator, dag("evaluate"), before["evaluate"])
    assert operator.wait_run(dag("evaluate"), evaluate, TIMEOUT)["state"] == "success"

    promote = new_run(operator, dag("promote"), before["promote"])
    operator.wait_task_state(dag("promote"), promote, "approve", {"awaiting_input", "deferred"}, TIMEOUT)
    time.sleep(THINK_SECONDS)
    assert "Approve" in viewer.hitl_detail(dag("promote"), promote, "approve")["options"]  # may read it
    forbidden(viewer.respond, dag("promote"), promote, "approve", "Approve")
    answer = operator.respond(dag("promote"), promote, "approve", "Approve")
    assert answer["chosen_options"] == ["Approve"]
    assert answer["responded_by"]["name"] == "operator"
    assert operator.wait_run(dag("promote"), promote, TIMEOUT)["state"] == "success"
    assert registry.aliases(spec)["champion"] == "1"

    # The train task logged into MLflow as the connection's user: it created the registered model,
    # so the basic-auth app made that user its manager. The workers hold no MLflow credential.
    query = f"username={MLFLOW_TASK_USER}&resource_type=registered_model&resource_id={PIPELINE}"
    status, body = mlflow_get(stack, f"/api/3.0/mlflow/users/permissions/get?{query}", stack.mlflow_admin)
    assert status == 200, body
    assert body["permission"] == "MANAGE", body
    for variable in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(variable)  # the driver's login: the fixture started the workers without it
    for index, name in enumerate(stack.worker_names(), 1):  # what each worker was started with
        env = stack.worker_env(index)
        assert not set(env) & {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}, name
        assert json.loads(env["AIRFLOW_CONN_MLFLOW_DEFAULT"])["login"] == MLFLOW_TASK_USER, name


def test_the_hook_gives_a_tasks_mlflow_calls_the_connections_login(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a stack: ``MlflowHook.get_tracking_uri`` exports the connection's login for MLflow's
    client in the task's process, replacing whatever the worker's environment held."""
    from mlops_airflow.hooks.mlflow_tracking import MlflowHook

    monkeypatch.setenv(
        "AIRFLOW_CONN_MLFLOW_DEFAULT",
        json.dumps({"conn_type": "http", "host": "mlflow", "port": 5000, "login": "u", "password": "p"}),
    )
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "stale")
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(name, "worker-value")  # monkeypatch restores all three afterwards
    assert MlflowHook().get_tracking_uri() == "http://mlflow:5000"
    assert (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]) == ("u", "p")
    assert "MLFLOW_TRACKING_TOKEN" not in os.environ
    assert MlflowHook().job_credentials() == {
        "MLFLOW_TRACKING_USERNAME": "u",
        "MLFLOW_TRACKING_PASSWORD": "p",
    }


def test_mlflow_db_migrates_both_stores_and_sets_the_tasks_password(tmp_path: Path) -> None:
    """Without a server: ``tools.mlflow_db.prepare`` (compose's airflow-init, ProdStack.prepare_mlflow)
    is safe to re-run, and a re-run with a new password rotates it."""
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    from tools.mlflow_db import prepare

    tracking, auth = f"sqlite:///{tmp_path / 'tracking.db'}", f"sqlite:///{tmp_path / 'auth.db'}"
    assert prepare(tracking, auth, "airflow", "first-password-1") is True
    assert prepare(tracking, auth, "airflow", "second-password-2") is False
    store = SqlAlchemyStore()
    store.init_db(auth)
    assert store.authenticate_user("airflow", "second-password-2")
    assert not store.authenticate_user("airflow", "first-password-1")
    assert not store.get_user("airflow").is_admin
    store.engine.dispose()
