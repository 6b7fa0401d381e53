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
    assert all(c["passed"] for c in checks)
    assert checks[-1]["reason"].startswith("no champion yet")


def test_threshold_miss_fails_with_reason():
    checks = decide(spec(), {"roc_auc": 0.65, "f1": 0.5}, None)
    failed = [c for c in checks if not c["passed"]]
    assert [c["check"] for c in failed] == ["threshold:roc_auc"]
    assert "0.6500 misses the threshold >= 0.7" in failed[0]["reason"]


def test_candidate_must_beat_champion_by_min_improvement():
    checks = decide(spec(), {"roc_auc": 0.805, "f1": 0.5}, {"roc_auc": 0.80, "f1": 0.5})
    assert not next(c for c in checks if c["check"] == "vs_champion:roc_auc")["passed"]
    checks = decide(spec(), {"roc_auc": 0.82, "f1": 0.5}, {"roc_auc": 0.80, "f1": 0.5})
    assert all(c["passed"] for c in checks)


def test_secondary_metric_regression_is_bounded():
    checks = decide(spec(), {"roc_auc": 0.85, "f1": 0.45}, {"roc_auc": 0.80, "f1": 0.50})
    regression = next(c for c in checks if c["check"] == "regression:f1")
    assert not regression["passed"]
    assert "tolerated regression 0.02" in regression["reason"]


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
    assert all(c["passed"] for c in decide(s, {"rmse": 30.0}, {"rmse": 32.0}))
    assert not all(c["passed"] for c in decide(s, {"rmse": 31.5}, {"rmse": 32.0}))
