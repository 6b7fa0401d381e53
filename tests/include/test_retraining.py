"""The retraining policy: cool-down, one request in flight, and the drift history it keeps."""

from __future__ import annotations

import time

import pytest

from include.mlops import tracking
from include.mlops.cli import main
from include.mlops.monitoring import retraining
from include.mlops.spec import find_spec

DRIFT = {
    "drift_detected": True,
    "drift_share": 0.55,
    "threshold": 0.3,
    "drifted_columns": ["monthly_charges", "tenure_months"],
    "report_html": "file:///reports/drift/run-1/report.html",
    "model_version": "1",
}


@pytest.fixture
def churn(state, pipelines_dir):
    spec = find_spec("churn")
    monitoring = spec.monitoring.model_copy(update={"retrain_cooldown": 0})
    return spec.model_copy(update={"monitoring": monitoring})


def _gated_version(client, tmp_path, decision: str) -> str:
    try:
        client.create_registered_model("churn")
    except Exception:  # already there
        pass
    source = tmp_path / f"model-{time.time_ns()}"
    source.mkdir()
    version = client.create_model_version("churn", source.as_uri(), tags={"mlops.gate.decision": decision})
    return str(version.version)


def test_one_request_in_flight_until_a_version_is_gated(churn, tmp_path):
    client = tracking.client()
    assert retraining.decide(churn, DRIFT, client=client) == (True, "drift share 0.55 >= threshold 0.30")
    retraining.record(churn, DRIFT, requested=True, reason="drift")
    requested, reason = retraining.decide(churn, DRIFT, client=client)
    assert not requested and "still in flight" in reason
    _gated_version(client, tmp_path, "failed")  # the loop closed (a rejected candidate closes it too)
    assert retraining.decide(churn, DRIFT, client=client)[0] is True


def test_a_lost_request_stops_blocking_after_the_timeout(churn):
    retraining.record(churn, DRIFT, requested=True, reason="drift", now=time.time() - 7 * 3600)
    assert retraining.decide(churn, DRIFT, client=tracking.client())[0] is True  # timeout 6 h


def test_cooldown_applies_first(state, pipelines_dir):
    spec = find_spec("churn")  # cool-down 1 day
    retraining.record(spec, DRIFT, requested=True, reason="drift")
    requested, reason = retraining.decide(spec, DRIFT, client=tracking.client())
    assert not requested and "cool-down is 24.0 h" in reason


def test_drift_history_command(churn, capsys):
    retraining.record(
        churn, {**DRIFT, "drift_detected": False, "drift_share": 0.1}, requested=False, reason="low"
    )
    retraining.record(churn, DRIFT, requested=True, reason="drift")
    retraining.record(churn, {**DRIFT, "model_version": "2"}, requested=False, reason="in flight")
    assert main(["drift-history", "churn"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["when", "(UTC)", "version", "share"]
    assert [line.split()[2:6] for line in table[1:]] == [
        ["1", "0.10", "0.30", "-"],
        ["1", "0.55", "0.30", "requested"],
        ["2", "0.55", "0.30", "held"],
    ]
    assert table[2].endswith("monthly_charges, tenure_months")
    assert main(["drift-history", "churn", "--version", "2", "--json"]) == 0
    assert '"model_version": "2"' in capsys.readouterr().out
