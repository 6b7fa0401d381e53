"""The whole lifecycle through the real Airflow 3 scheduler, dag-processor, triggerer and API server.

Runs the demo scenario for both example pipelines (classification and regression) on the embedded
default, in a throw-away state folder and on free ports.
"""

from __future__ import annotations

import pytest

from tools.scenario import run_scenario

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_no_import_errors_and_settings_loaded(api):
    assert api.import_errors() == []
    conn = api.connection("mlops_gcs")
    assert '"keyFile"' in conn["extra"]  # extras keep the case of their keys


@pytest.mark.parametrize("pipeline", ["churn", "housing"])
def test_lifecycle(api, pipeline):
    outcome = run_scenario(api, pipeline, rows=4000)
    assert outcome.failures == [], outcome.steps
    assert outcome.facts["drift_share"] >= outcome.facts.get("threshold", 0)
    assert outcome.facts["aliases"]["champion"] in {outcome.facts["v1"], outcome.facts["v2"]}
