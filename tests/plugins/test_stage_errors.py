"""Issue 10: a library's refusal inside a stage fails the task once, without retry, in our words."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from airflow.sdk.exceptions import AirflowFailException

from include.mlops.data import ingest
from include.mlops.datagen import write_batch
from include.mlops.model import registry, training
from include.mlops.scoring import inference
from include.mlops.spec import find_spec
from mlops_airflow.exceptions import PipelineFailed
from mlops_airflow.operators.monitoring import DriftCheckOperator

pytestmark = pytest.mark.slow


@pytest.fixture
def churn_with_scored_window(state, pipelines_dir, monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_MLFLOW_DEFAULT", raising=False)
    spec = find_spec("churn")
    write_batch(spec, "batch1", rows=800, seed=11)
    for uri in ingest.discover(spec):
        ingest.ingest_file(spec, uri)
    version = training.train(spec).version
    registry.promote(spec, version=version, expected_champion=None, require_gate=False, reason="test")
    write_batch(spec, "score1", rows=300, seed=22, id_offset=100_000, scoring=True)
    inference.score(spec, run_id="r1")
    return spec


def test_drift_check_fails_without_retry_when_a_stat_test_refuses_a_column(
    churn_with_scored_window, monkeypatch
):
    from evidently.legacy.calculations.stattests import registry as evidently_registry
    from evidently.legacy.core import ColumnType

    def refuse(self, *args, **kwargs):
        raise evidently_registry.StatTestInvalidFeatureTypeError(self.name, ColumnType.Numerical)

    monkeypatch.setattr(evidently_registry.StatTest, "__call__", refuse)
    operator = DriftCheckOperator(task_id="check_drift", pipeline="churn")
    context = {
        "run_id": "scheduled__2026-01-01T00:00:00+00:00",
        "dag": SimpleNamespace(dag_id="churn__drift"),
    }
    context["task"] = operator
    with pytest.raises(PipelineFailed) as err:
        operator.execute(context)  # type: ignore[arg-type]
    assert isinstance(err.value, AirflowFailException)  # Airflow does not retry it
    message = str(err.value)
    assert message.startswith(
        "pipeline churn: drift stage failed in evidently: StatTestInvalidFeatureTypeError"
    )
    assert "isn't applicable to feature of type num" in message
    assert len(message) < 500 and "\n" not in message
