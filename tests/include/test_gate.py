"""The gate's decision logic, without models: thresholds and champion comparison."""

from __future__ import annotations

from include.mlops.gate.evaluation import decide
from include.mlops.spec import parse_spec
from tests.include.test_spec import minimal


def spec(**evaluation):
    base = {
        "primary_metric": "roc_auc",
        "thresholds": {"roc_auc": {"min": 0.7}, "f1": {"min": 0.4}},
        "champion": {"min_improvement": 0.01, "max_regression": 0.02},
    }
    return parse_spec(minimal(evaluation={**base, **evaluation}), "x.yaml")


def test_thresholds_alone_without_champion():
    checks = decide(spec(), {"roc_auc": 0.8, "f1": 0.5}, None)
    assert all(c.passed for c in checks)
    assert checks[-1].reason.startswith("no champion yet")


def test_threshold_miss_fails_with_reason():
    checks = decide(spec(), {"roc_auc": 0.65, "f1": 0.5}, None)
    failed = [c for c in checks if not c.passed]
    assert [c.name for c in failed] == ["threshold:roc_auc"]
    assert "0.6500 misses the threshold >= 0.7" in failed[0].reason


def test_candidate_must_beat_champion_by_min_improvement():
    checks = decide(spec(), {"roc_auc": 0.805, "f1": 0.5}, {"roc_auc": 0.80, "f1": 0.5})
    assert not next(c for c in checks if c.name == "vs_champion:roc_auc").passed
    checks = decide(spec(), {"roc_auc": 0.82, "f1": 0.5}, {"roc_auc": 0.80, "f1": 0.5})
    assert all(c.passed for c in checks)


def test_secondary_metric_regression_is_bounded():
    checks = decide(spec(), {"roc_auc": 0.85, "f1": 0.45}, {"roc_auc": 0.80, "f1": 0.50})
    regression = next(c for c in checks if c.name == "regression:f1")
    assert not regression.passed
    assert "tolerated regression 0.02" in regression.reason


def test_lower_is_better_metrics_are_oriented():
    raw = minimal(
        data={"landing": "/x", "target": "y", "task": "regression"},
        evaluation={
            "primary_metric": "rmse",
            "thresholds": {"rmse": {"max": 50}},
            "champion": {"min_improvement": 1.0},
        },
    )
    s = parse_spec(raw, "x.yaml")
    assert all(c.passed for c in decide(s, {"rmse": 30.0}, {"rmse": 32.0}))
    assert not all(c.passed for c in decide(s, {"rmse": 31.5}, {"rmse": 32.0}))


def test_decision_round_trips_through_json_unchanged():
    import json

    from include.mlops.gate.records import GateCheck, GateDecision

    raw = {
        "id": "abc123",
        "pipeline": "p",
        "model": "m",
        "candidate_version": "2",
        "champion_version": "1",
        "passed": False,
        "checks": [
            GateCheck("threshold:f1", 0.4, False, ">= 0.5", "f1 misses").to_dict(),
            {
                "check": "bootstrap:roc_auc",
                "value": -0.01,
                "limit": "95% lower bound >= -0.0100",
                "passed": True,
                "reason": "clears",
                "interval": [-0.01, 0.02],
                "margin": -0.01,
            },
        ],
        "reasons": ["f1 misses"],
        "candidate_metrics": {"f1": 0.4},
        "champion_metrics": {"f1": 0.5},
        "holdout_rows": 10,
        "evaluated_at": 1.0,
        "lineage": {"airflow.dag_id": "d"},
        "run_id": "r",
        "experiment_id": "1",
        "report_artifact": "gate/report-abc123.html",
    }
    decision = GateDecision.from_dict(json.loads(json.dumps(raw)))
    assert decision.to_dict() == raw and list(decision.to_dict()) == list(raw)
    assert decision.verdict == "failed" and decision.checks[1].interval == (-0.01, 0.02)
    assert GateDecision.of(decision) is decision
