"""Gate checks that need no model registry: slices, latency, schema compatibility."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from include.mlops import metrics, storage
from include.mlops.gate import checks as gate_checks
from include.mlops.spec import parse_spec
from tests.include.test_spec import minimal


def spec_with(**evaluation):
    base = {"primary_metric": "roc_auc", "thresholds": {"roc_auc": {"min": 0.5}}}
    return parse_spec(minimal(evaluation={**base, **evaluation}), "x.yaml")


def fitted():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {"x": rng.normal(size=600), "segment": rng.choice(["a", "b", "tiny"], 600, p=[0.5, 0.48, 0.02])}
    )
    frame["y"] = (frame["x"] + np.where(frame["segment"] == "b", rng.normal(0, 3, 600), 0) > 0).astype(int)
    model = LogisticRegression().fit(frame[["x"]], frame["y"])
    return frame, model


def test_slice_floors_judge_each_segment_and_skip_small_ones():
    frame, model = fitted()
    spec = spec_with(slices=[{"column": "segment", "metric": "roc_auc", "min": 0.8, "min_rows": 30}])
    spec = spec.model_copy(update={"data": spec.data.model_copy(update={"target": "y"})})
    records = {
        r.name: r
        for r in gate_checks.slice_checks(spec, frame, metrics.score("classification", model, frame[["x"]]))
    }
    assert records["slice:segment:roc_auc:a"].passed
    assert not records["slice:segment:roc_auc:b"].passed  # the noisy segment misses its floor
    assert (
        records["slice:segment:roc_auc:tiny"].passed
        and "not judged" in records["slice:segment:roc_auc:tiny"].reason
    )


def test_latency_budget():
    frame, model = fitted()
    ok = gate_checks.latency_check(spec_with(latency={"max_p95_ms": 10_000}), model, frame[["x"]])
    tight = gate_checks.latency_check(spec_with(latency={"max_p95_ms": 0.000001}), model, frame[["x"]])
    assert ok.passed and not tight.passed
    assert "p95 prediction time for a batch of 1000 rows" in tight.reason


def test_candidate_needing_a_column_the_scoring_data_lacks_is_refused(state):
    spec = spec_with()
    inference = spec.inference.model_copy(update={"format": "csv", "input": "{MLOPS_DATA_ROOT}/scoring/demo"})
    spec = spec.model_copy(update={"inference": inference})
    storage.write_text(storage.join(spec.uri("scoring"), "batch.csv"), "id,x\n1,0.5\n")
    assert spec.uri("scoring").startswith((state / "data").as_uri())
    assert gate_checks.schema_check(spec, ["x"]).passed
    refused = gate_checks.schema_check(spec, ["x", "new_feature"])
    assert not refused.passed and "lacks column(s) the candidate needs: new_feature" in refused.reason
