"""The whole lifecycle through the real Airflow 3 scheduler, dag-processor, triggerer and API server.

Runs the demo scenario for both example pipelines (classification and regression) on the embedded
default, in a throw-away state folder and on free ports.
"""

from __future__ import annotations

import os

import pytest

from tools.airflow_api import AirflowApi
from tools.scenario import run_scenario
from tools.stack import ADMIN, Stack, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    stack = Stack(
        state=tmp_path_factory.mktemp("e2e") / "state",
        airflow_port=free_port(),
        with_mlflow_ui=False,
        disable_schedules=True,
    )
    saved = dict(os.environ)
    os.environ.update(stack.env())
    try:
        stack.up()
        yield AirflowApi(stack.api_url, *ADMIN)
    finally:
        stack.down()
        os.environ.clear()
        os.environ.update(saved)


def test_no_import_errors_and_settings_loaded(api):
    assert api.import_errors() == []
    conn = api._request("GET", "/api/v2/connections/mlops_gcs")
    assert '"keyFile"' in conn["extra"]  # extras keep the case of their keys


@pytest.mark.parametrize("pipeline", ["churn", "housing"])
def test_lifecycle(api, pipeline):
    outcome = run_scenario(api, pipeline, rows=4000)
    assert outcome.failures == [], outcome.steps
    assert outcome.facts["drift_share"] >= outcome.facts.get("threshold", 0)
    assert outcome.facts["aliases"]["champion"] in {outcome.facts["v1"], outcome.facts["v2"]}
