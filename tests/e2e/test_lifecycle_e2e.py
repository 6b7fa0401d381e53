"""The whole lifecycle through the real Airflow 3 scheduler, dag-processor, triggerer and API server.

Runs the demo's full scenario for the classification pipeline (churn) and the short end-to-end path
(ingest, train, gate, promote, score) for the regression one (housing), on the embedded default, in
a throw-away state folder and on free ports.
"""

from __future__ import annotations

import pytest

from tools.scenario import run_scenario, run_short_path

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_no_import_errors_and_settings_loaded(api):
    assert api.import_errors() == []
    conn = api.connection("mlops_gcs")
    assert '"keyFile"' in conn["extra"]  # extras keep the case of their keys


def test_lifecycle(api):
    outcome = run_scenario(api, "churn", rows=4000)
    assert outcome.failures == [], outcome.steps
    assert outcome.facts["drift_share"] >= outcome.facts.get("threshold", 0)
    assert outcome.facts["aliases"]["champion"] in {outcome.facts["v1"], outcome.facts["v2"]}
    gate = outcome.facts["gate_v2"]
    assert gate["champion_version"] == outcome.facts["v1"] and gate["candidate_metrics"] and gate["reasons"]
    assert [len(step.runs) > 0 and step.seconds is not None for step in outcome.groups] == [True] * 5


def test_short_path_for_a_second_pipeline(api):
    outcome = run_short_path(api, "housing", rows=4000)
    assert outcome.failures == [], outcome.steps
    assert [stage for stage, _, _ in outcome.steps] == ["ingest", "train", "evaluate", "promote", "inference"]
    assert outcome.facts["aliases"]["champion"] == outcome.facts["v1"]
