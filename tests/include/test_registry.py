"""Promotion history, idempotent re-runs and compare-and-set under concurrency."""

from __future__ import annotations

import threading

import pytest

from include.mlops import tracking
from include.mlops.cli import main
from include.mlops.errors import PromotionRefused
from include.mlops.gate import evaluation
from include.mlops.model import history, registry, training

pytestmark = pytest.mark.slow

LINEAGE = {"airflow.dag_id": "churn__train", "airflow.run_id": "manual__1"}


@pytest.fixture
def churn(churn_published):
    return churn_published


def test_rerunning_the_same_airflow_run_creates_no_duplicates(churn):
    first = training.train(churn, lineage=LINEAGE)
    again = training.train(churn, lineage=LINEAGE)
    assert again.version == first.version
    client = tracking.client()
    assert len(client.search_model_versions("name = 'churn'")) == 1

    evaluation.evaluate(churn, version=first.version)
    promote_lineage = {"airflow.dag_id": "churn__promote", "airflow.run_id": "asset_triggered__1"}
    registry.promote(churn, version=first.version, expected_champion=None, lineage=promote_lineage)
    registry.promote(churn, version=first.version, expected_champion=None, lineage=promote_lineage)
    assert [e["action"] for e in history.entries(client, "churn")] == ["promote"]


def test_history_records_promotions_refusals_and_rollbacks(churn, capsys):
    v1 = training.train(churn).version
    evaluation.evaluate(churn, version=v1)
    registry.promote(churn, version=v1, expected_champion=None)
    v2 = training.train(churn).version
    evaluation.evaluate(churn, version=v2)
    registry.promote(
        churn,
        version=v2,
        expected_champion=v1,
        lineage={"airflow.dag_id": "churn__promote", "airflow.run_id": "r2"},
    )
    with pytest.raises(PromotionRefused):
        registry.promote(churn, version=v1, expected_champion=None)  # stale expectation
    registry.rollback(churn)
    records = history.entries(tracking.client(), "churn")
    assert [(r["action"], r["from"], r["to"]) for r in records] == [
        ("promote", None, v1),
        ("promote", v1, v2),
        ("refused", v2, v1),
        ("rollback", v2, v1),
    ]
    assert records[1]["dag_id"] == "churn__promote" and records[1]["decision"]
    assert main(["history", "churn"]) == 0
    table = capsys.readouterr().out
    assert "rollback" in table and "refused" in table


def test_concurrent_promotions_never_leave_the_worse_candidate(churn):
    v1 = training.train(churn).version
    evaluation.evaluate(churn, version=v1)
    registry.promote(churn, version=v1, expected_champion=None)
    candidates = [training.train(churn).version for _ in range(2)]
    for version in candidates:
        evaluation.evaluate(churn, version=version)  # both compared against v1
    outcomes: dict[str, str] = {}

    def attempt(version: str) -> None:
        try:
            registry.promote(churn, version=version, expected_champion=v1)
            outcomes[version] = "promoted"
        except PromotionRefused as exc:
            outcomes[version] = f"refused: {exc}"

    threads = [threading.Thread(target=attempt, args=(v,)) for v in candidates]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    promoted = [v for v, o in outcomes.items() if o == "promoted"]
    assert len(promoted) == 1, outcomes
    loser = next(v for v in candidates if v not in promoted)
    assert "the champion is now" in outcomes[loser]
    assert registry.aliases(churn)["champion"] == promoted[0]
    assert registry.aliases(churn)["previous_champion"] == v1


def test_rejection_is_recorded_and_champion_stays(churn):
    v1 = training.train(churn).version
    evaluation.evaluate(churn, version=v1)
    registry.record_rejection(
        churn,
        version=v1,
        reason="rejected in the UI by alice",
        lineage={"airflow.dag_id": "churn__promote", "airflow.run_id": "r9", "triggered_by": "ui:alice"},
    )
    assert registry.aliases(churn)["champion"] is None
    [entry] = history.entries(tracking.client(), "churn")
    assert entry["action"] == "rejected" and entry["by"] == "ui:alice"
