"""The core stages end to end, without Airflow: ingest, train, gate, promote, rollback, score, drift."""

from __future__ import annotations

import pandas as pd
import pytest

from include.mlops import storage
from include.mlops.data import datasets, ingest
from include.mlops.datagen import write_batch
from include.mlops.errors import GateFailed, NothingToDo, PromotionRefused, ValidationFailed
from include.mlops.gate import evaluation
from include.mlops.model import registry, training
from include.mlops.monitoring import drift, retraining
from include.mlops.scoring import inference
from include.mlops.spec import find_spec

pytestmark = pytest.mark.slow


@pytest.fixture
def churn(state, pipelines_dir):
    return find_spec("churn")


def test_good_batch_is_published_and_bad_batch_quarantined_intact(churn):
    write_batch(churn, "good", rows=800, seed=1)
    bad_uri = write_batch(churn, "bad", rows=300, seed=2, id_offset=10_000, malformed_batch=True)
    original = storage.sha256(bad_uri)
    results, failures = [], []
    for uri in ingest.discover(churn):
        try:
            results.append(ingest.ingest_file(churn, uri))
        except ValidationFailed as exc:
            failures.append(exc)
    assert [(r.source, r.status) for r in results] == [("good.parquet", "published")]
    assert len(failures) == 1
    message = str(failures[0])
    assert "pipeline churn: bad.parquet failed validation" in message
    assert "customer_id: expect_column_values_to_not_be_null" in message
    assert storage.sha256(failures[0].quarantined_to) == original
    folder = failures[0].quarantined_to.rsplit("/", 1)[0]
    assert storage.read_json(storage.join(folder, "validation.json"))["success"] is False
    assert "FAILED" in storage.read_bytes(storage.join(folder, "validation.html")).decode()
    assert ingest.discover(churn) == []  # nothing left behind, nothing lost
    assert len(datasets.published_datasets(churn)) == 1


def test_unreadable_and_structurally_wrong_files_are_quarantined(churn):
    landing = churn.uri("landing")
    storage.write_bytes(storage.join(landing, "garbage.parquet"), b"this is not parquet")
    frame = pd.DataFrame({"customer_id": [1, 2], "unrelated": [3, 4]})
    with storage.atomic_path(storage.join(landing, "wrong.parquet")) as tmp:
        frame.to_parquet(storage.local_path(tmp))
    reasons = {}
    for uri in ingest.discover(churn):
        with pytest.raises(ValidationFailed) as err:
            ingest.ingest_file(churn, uri)
        reasons[storage.basename(uri)] = str(err.value)
    assert "garbage.parquet: cannot be read as parquet" in reasons["garbage.parquet"]
    assert "missing required column(s) event_time, churned" in reasons["wrong.parquet"]


def test_same_content_twice_is_published_once(churn):
    write_batch(churn, "a", rows=300, seed=5)
    write_batch(churn, "b", rows=300, seed=5)
    statuses = [ingest.ingest_file(churn, uri).status for uri in ingest.discover(churn)]
    assert statuses == ["published", "duplicate"]  # a duplicate is not announced: no retrain on it
    assert len(datasets.published_datasets(churn)) == 1


def test_train_gate_promote_score_drift_rollback(churn):
    write_batch(churn, "batch1", rows=3000, seed=11)
    for uri in ingest.discover(churn):
        ingest.ingest_file(churn, uri)

    v1 = training.train(churn, lineage={"airflow.dag_id": "test"})
    assert v1.version == "1"
    decision = evaluation.evaluate(churn)
    assert decision["passed"] and decision["champion_version"] is None
    registry.promote(churn, version="1", expected_champion=None)
    assert registry.aliases(churn)["champion"] == "1"

    write_batch(churn, "score1", rows=1500, seed=21, id_offset=100_000, scoring=True)
    scored = inference.score(churn, run_id="run-1")
    assert scored["model_version"] == "1" and scored["rows"] == 1500
    predictions = pd.read_parquet(scored["files"][0]["output"])
    assert set(predictions.columns) >= {"customer_id", "prediction", "probability", "model_version", "run_id"}
    assert (predictions["model_version"] == "1").all()
    with pytest.raises(NothingToDo):
        inference.score(churn, run_id="run-2")  # nothing new to score

    stable = drift.check(churn, run_key="d1")
    assert not stable["drift_detected"]
    assert retraining.decide(churn, stable)[0] is False

    write_batch(churn, "score2", rows=1500, seed=22, drift=0.8, id_offset=200_000, scoring=True)
    inference.score(churn, run_id="run-3")
    drifted = drift.check(churn, run_key="d2")
    assert drifted["drift_detected"] and drifted["drift_share"] >= 0.3
    assert storage.exists(drifted["report_html"]) and storage.exists(drifted["report_json"])
    requested, _ = retraining.decide(churn, drifted)
    assert requested
    retraining.record(churn, drifted, requested=True, reason="test")
    again, why = retraining.decide(churn, drifted)
    assert not again and "cool-down" in why

    v2 = training.train(churn)
    decision = evaluation.evaluate(churn, version=v2.version)
    assert decision["champion_version"] == "1"
    registry.promote(churn, version=v2.version, expected_champion="1")
    assert registry.aliases(churn) == {"champion": "2", "challenger": None, "previous_champion": "1"}

    # Compare-and-set: a decision made against v1 cannot promote once the champion moved.
    v3 = training.train(churn)
    gate3 = evaluation.evaluate(churn, version=v3.version)  # compared with v2
    assert {c["check"].split(":")[0] for c in gate3["checks"]} >= {
        "threshold",
        "vs_champion",
        "bootstrap",
        "slice",
        "model_size",
        "scoring_schema",
    }
    assert gate3["report_artifact"].startswith("gate/report-")
    with pytest.raises(PromotionRefused, match="the champion is now v2"):
        registry.promote(churn, version=v3.version, expected_champion="1")

    registry.rollback(churn)
    assert registry.aliases(churn)["champion"] == "1"
    assert registry.aliases(churn)["previous_champion"] == "2"


def test_failed_gate_leaves_champion_untouched(churn, monkeypatch):
    write_batch(churn, "batch1", rows=1500, seed=11)
    for uri in ingest.discover(churn):
        ingest.ingest_file(churn, uri)
    training.train(churn)
    evaluation.evaluate(churn)
    registry.promote(churn, version="1", expected_champion=None)
    training.train(churn)
    strict = churn.model_copy(
        update={
            "evaluation": churn.evaluation.model_copy(
                update={"champion": churn.evaluation.champion.model_copy(update={"min_improvement": 0.5})}
            )
        }
    )
    with pytest.raises(GateFailed, match="champion v1 is untouched"):
        evaluation.evaluate(strict, version="2")
    assert registry.aliases(churn)["champion"] == "1"
    with pytest.raises(PromotionRefused, match="no passed gate decision"):
        registry.promote(churn, version="2", expected_champion="1")
