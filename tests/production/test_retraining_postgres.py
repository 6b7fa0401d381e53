"""Retraining decisions and the drift history in the Postgres coordination store."""

from __future__ import annotations

import json

import pytest

from include.mlops import coordination, storage
from include.mlops.cli import main
from include.mlops.monitoring import retraining
from include.mlops.spec import find_spec

pytestmark = pytest.mark.production

DRIFT = {
    "drift_detected": True,
    "drift_share": 0.55,
    "threshold": 0.3,
    "drifted_columns": ["monthly_charges", "tenure_months"],
    "report_html": "file:///reports/drift/run-1/report.html",
    "model_version": "1",
}


@pytest.fixture
def churn(pg_url, state, pipelines_dir):
    return find_spec("churn")


def test_the_history_is_kept_in_postgres_in_order_and_unchanged(churn, capsys):
    recorded = [
        retraining.record(
            churn, {**DRIFT, "drift_share": 0.1, "drift_detected": False}, requested=False, reason="low"
        ),
        retraining.record(churn, DRIFT, requested=True, reason="drift", now=1_700_000_000.25),
        retraining.record(churn, {**DRIFT, "model_version": "2"}, requested=False, reason="in flight"),
    ]
    assert retraining.history(churn) == recorded
    retraining._imported.clear()  # as another worker would read it
    assert retraining.history(churn) == recorded
    assert retraining.decide(churn, DRIFT, now=1_700_000_000.25 + 3600)[0] is False  # cool-down of 1 day
    assert main(["drift-history", "churn"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[2:6] for line in lines[1:]] == [
        ["1", "0.10", "0.30", "-"],
        ["1", "0.55", "0.30", "requested"],
        ["2", "0.55", "0.30", "held"],
    ]
    housing = churn.model_copy(update={"name": "housing"})
    assert retraining.history(housing) == []  # per pipeline


def test_only_the_last_entries_are_kept(churn, monkeypatch):
    monkeypatch.setattr(retraining, "KEEP", 3)
    for i in range(5):
        retraining.record(churn, DRIFT, requested=False, reason=f"check {i}")
    assert [e["reason"] for e in retraining.history(churn)] == ["check 2", "check 3", "check 4"]


def test_a_history_left_in_the_old_json_file_is_imported_once(churn):
    old = [
        {"at": 1.0, "requested": True, "reason": "drift", "drift_share": 0.5, "threshold": 0.3},
        {"at": 2.0, "requested": False, "reason": "cool-down", "drift_share": 0.6, "threshold": 0.3},
    ]
    storage.write_json(retraining._legacy_uri(churn), old)
    assert retraining.history(churn) == old
    retraining._imported.clear()
    entry = retraining.record(churn, DRIFT, requested=False, reason="now")
    assert retraining.history(churn) == [*old, entry]  # not imported twice
    with coordination.transaction() as db:
        from sqlalchemy import text

        stored = db.execute(text("SELECT entry FROM retraining_decisions ORDER BY id")).scalars().all()
    assert [json.loads(e)["reason"] for e in stored] == ["drift", "cool-down", "now"]
