"""The whole lifecycle scenario on the native production stack, through the real scheduler.

The same scenario as ``make demo`` and tests/e2e (``tools.scenario.run_scenario``), but on Postgres,
Redis, moto's S3 and an MLflow server, with the CeleryExecutor and two workers that share no local
folder: it also checks that both workers ran tasks (the host name each records on its task
instances) and that the data and MLflow's artifacts landed in the object store.
"""

from __future__ import annotations

import pytest

from tools.airflow_api import AirflowApi
from tools.prod_stack import BUCKETS, ProdStack
from tools.scenario import STAGES, run_scenario, summary

pytestmark = [pytest.mark.production, pytest.mark.e2e, pytest.mark.slow]


def _hosts(api: AirflowApi, pipeline: str) -> dict[str, int]:
    """How many task instances of the pipeline's runs each host ran."""
    hosts: dict[str, int] = {}
    for stage in STAGES:
        dag_id = f"{pipeline}__{stage}"
        for run_id in api.run_ids(dag_id):
            for ti in api.task_instances(dag_id, run_id):
                if ti.get("hostname"):
                    hosts[ti["hostname"]] = hosts.get(ti["hostname"], 0) + 1
    return hosts


def test_lifecycle_on_the_production_stack(prod_env: ProdStack) -> None:
    stack = prod_env
    api = AirflowApi(stack.api_url, *stack.admin)
    assert api.import_errors() == []
    outcome = run_scenario(api, "churn", rows=4000)
    assert outcome.failures == [], (outcome.failures, outcome.steps)
    print(summary([outcome]))

    hosts = _hosts(api, "churn")
    print(f"task instances per worker: {hosts}")
    assert set(stack.worker_names()) <= set(hosts), f"task instances per host: {hosts}"
    assert set(hosts) <= set(stack.worker_names()), f"only the Celery workers run tasks: {hosts}"

    data = stack.s3_keys(BUCKETS["data"])
    assert outcome.facts["predictions"].startswith(f"s3://{BUCKETS['data']}/")
    assert any(k.startswith("datasets/churn/") for k in data), data[:20]
    assert any(k.startswith("predictions/churn/") for k in data), data[:20]
    artifacts = stack.s3_keys(BUCKETS["artifacts"])
    # the models and the gate's decisions went through MLflow's proxy to the bucket
    assert any(k.endswith("MLmodel") for k in artifacts), artifacts[:20]
    assert any("/gate/decision-" in k for k in artifacts), artifacts[:20]
    assert stack.s3_keys(BUCKETS["logs"]), "the task logs went to the object store"
    # ... where the API server reads them: it shares no folder with the worker that wrote them
    run_id = min(api.run_ids("churn__train"))
    payload = api._request("GET", f"/api/v2/dags/churn__train/dagRuns/{run_id}/taskInstances/train/logs/1")
    content = payload.get("content") or []
    assert f"s3://{BUCKETS['logs']}/" in str(content[:3]), content[:3]
    assert len(content) > 3, content
