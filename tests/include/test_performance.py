"""Model performance once labels arrive later: joined by id with the stored predictions, judged
with the gate's thresholds, tracked in MLflow and the drift history, and a reason to retrain."""

from __future__ import annotations

import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from include.mlops import storage, tracking
from include.mlops.datagen import write_batch, write_labels
from include.mlops.errors import DataError, SpecError
from include.mlops.gate import evaluation
from include.mlops.model import registry, training
from include.mlops.monitoring import performance, retraining
from include.mlops.scoring import inference
from include.mlops.spec import find_spec, load_specs

SCORED = {"rows": 2000, "seed": 31, "id_offset": 500_000}


@pytest.fixture
def served(churn_published):
    """churn with v1 champion and one scored batch (labels not yet arrived)."""
    spec = churn_published
    version = training.train(spec).version
    assert evaluation.evaluate(spec, version=version)["passed"]
    registry.promote(spec, version=version, expected_champion=None)
    write_batch(spec, "score1", scoring=True, **SCORED)
    inference.score(spec, run_id="score-run")
    return spec


def test_no_labels_yet_is_reported_not_judged(served):
    result = performance.check(served, run_key="p0")
    mine = result["versions"]["1"]
    assert mine == {"scored_rows": 2000, "labelled_rows": 0, "coverage": 0.0}
    assert not result["judged"] and not result["degraded"] and result["primary_value"] is None
    assert retraining.decide(served, None, performance=result)[0] is False


def test_labelled_metrics_equal_sklearn_on_the_joined_rows_and_are_tracked(served):
    uri = write_labels(served, "labels1", fraction=0.6, **SCORED)
    result = performance.check(served, run_key="p1")
    mine = result["versions"]["1"]
    predictions = pd.read_parquet(inference.scored_batches(served)[0]["output"])
    joined = predictions.merge(pd.read_parquet(uri), on="customer_id")
    assert mine["labelled_rows"] == len(joined) and 1000 < len(joined) < 1400
    assert mine["coverage"] == pytest.approx(len(joined) / 2000, abs=1e-4)
    assert mine["metrics"]["roc_auc"] == pytest.approx(
        roc_auc_score(joined["churned"], joined["probability"])
    )
    assert mine["metrics"]["f1"] == pytest.approx(f1_score(joined["churned"], joined["prediction"]))
    assert mine["metrics"]["accuracy"] == pytest.approx(
        accuracy_score(joined["churned"], joined["prediction"])
    )
    assert result["judged"] and not result["degraded"], result["reasons"]
    assert result["primary_value"] == mine["metrics"]["roc_auc"] > 0.70

    client = tracking.client()
    run_id = client.get_model_version("churn", "1").run_id
    logged = client.get_metric_history(run_id, "live_roc_auc")
    assert [m.value for m in logged] == [pytest.approx(mine["metrics"]["roc_auc"])]
    assert client.get_metric_history(run_id, "live_labelled_rows")[0].value == len(joined)
    assert retraining.decide(served, None, performance=result) == (
        False,
        "labelled performance of v1 meets the gate's thresholds",
    )


def test_worse_on_later_labels_requests_retraining_and_is_in_the_drift_history(served, capsys):
    write_labels(served, "labels1", fraction=0.6, **SCORED)
    # The world changed: corrected labels for the same customers arrive later and win.
    write_labels(served, "labels2", fraction=0.6, flip=0.45, **SCORED)
    result = performance.check(served, run_key="p2")
    assert result["judged"] and result["degraded"]
    assert any(r.startswith("roc_auc ") and "< 0.7" in r for r in result["reasons"]), result["reasons"]

    requested, reason = retraining.decide(served, None, performance=result)
    assert requested and reason.startswith(
        "labelled performance of v1 is below the gate's thresholds: roc_auc"
    )
    retraining.record(served, None, requested=True, reason=reason, performance=result)
    again, why = retraining.decide(served, None, performance=result)
    assert not again and "cool-down" in why

    [entry] = retraining.drift_history(served)
    assert entry["performance"]["degraded"] and entry["performance"]["labelled_rows"] > 1000
    table = retraining.format_drift_history([entry])
    assert "roc_auc=0." in table and " LOW" in table and "requested" in table


def test_a_few_labels_are_reported_not_judged(served):
    write_labels(served, "few", fraction=0.05, flip=0.5, **SCORED)
    result = performance.check(served, run_key="p3")
    assert 0 < result["versions"]["1"]["labelled_rows"] < 200
    assert not result["judged"] and not result["degraded"]
    assert "judged from 200" in result["reasons"][0]


def test_labels_in_csv_files_are_matched(served):
    uri = write_labels(served, "labels1", fraction=0.6, **SCORED)
    frame = pd.read_parquet(uri)
    local = storage.local_path(uri)
    frame.to_csv(local.replace(".parquet", "-copy.csv"), index=False)
    frame.head(0).to_parquet(local, index=False)  # the Parquet copy now holds no label
    result = performance.check(served, run_key="p4")
    assert result["versions"]["1"]["labelled_rows"] == len(frame) and result["judged"]


def test_a_labels_file_without_the_target_names_the_file(served):
    uri = write_labels(served, "labels1", **SCORED)
    pd.read_parquet(uri).rename(columns={"churned": "label"}).to_parquet(uri, index=False)
    with pytest.raises(DataError, match=r"labels file labels1\.parquet lacks column\(s\) churned"):
        performance.check(served, run_key="p5")


def test_labels_need_an_id_column(pipelines_dir):
    text = (pipelines_dir / "churn.yaml").read_text()
    (pipelines_dir / "churn.yaml").write_text(text.replace("  id_column: customer_id\n", ""))
    _, errors = load_specs()
    assert "monitoring.labels needs data.id_column" in " ".join(errors.values())
    with pytest.raises(SpecError):
        find_spec("churn")


def test_generate_labels_from_the_command_line(served):
    from include.mlops.cli import main

    args = ["generate", "churn", "--name", "late", "--rows", "2000", "--seed", "31"]
    assert main([*args, "--id-offset", "500000", "--labels", "0"]) == 0
    result = performance.check(served, run_key="p6")
    assert result["versions"]["1"]["labelled_rows"] == 2000 and not result["degraded"]


def test_ids_written_as_text_match_and_the_newer_file_still_wins(served):
    uri = write_labels(served, "labels1", fraction=0.6, **SCORED)
    frame = pd.read_parquet(uri)
    local = storage.local_path(uri)
    as_text = frame.assign(customer_id=frame["customer_id"].map(lambda i: f"{i:09d}"))  # "000500123"
    as_text.to_csv(local.replace(".parquet", "-text.csv"), index=False)
    frame.head(0).to_parquet(local, index=False)
    result = performance.check(served, run_key="p7")
    assert result["versions"]["1"]["labelled_rows"] == len(frame) and result["judged"]


def test_labels_in_another_form_than_the_target_name_the_values(served):
    uri = write_labels(served, "labels1", fraction=0.6, **SCORED)
    frame = pd.read_parquet(uri)
    frame.assign(churned=frame["churned"].map({1: "yes", 0: "no"})).to_parquet(uri, index=False)
    with pytest.raises(
        DataError, match=r"v1 on labelled predictions: labels hold churned value\(s\) 'no', 'yes'"
    ):
        performance.check(served, run_key="p8")


def test_ids_that_cannot_match_name_the_file(served):
    uri = write_labels(served, "labels1", **SCORED)
    pd.read_parquet(uri).assign(customer_id="cust-x").to_parquet(uri, index=False)
    with pytest.raises(DataError, match=r"labels file labels1\.parquet: its ids cannot be matched"):
        performance.check(served, run_key="p9")
