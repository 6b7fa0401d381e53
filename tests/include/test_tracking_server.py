"""The registry path against a real ``mlflow server`` process on 127.0.0.1, and what happens when it dies."""

from __future__ import annotations

import mlflow
import pytest

from include.mlops import tracking
from include.mlops.errors import ServiceUnavailable
from include.mlops.gate import evaluation
from include.mlops.model import history, registry, training
from tools.mlflow_server import MlflowServer

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path, monkeypatch):
    # Fail fast instead of MLflow's own long retry loop: Airflow's task retries do the waiting.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    srv = MlflowServer(tmp_path / "mlflow-server").start().wait()
    yield srv
    srv.stop()


@pytest.fixture
def churn(churn_published):
    return churn_published


def test_registry_path_through_a_tracking_server(server, churn):
    v1 = training.train(churn, tracking_uri=server.uri).version
    evaluation.evaluate(churn, version=v1, tracking_uri=server.uri)
    registry.promote(churn, version=v1, expected_champion=None, tracking_uri=server.uri)
    v2 = training.train(churn, tracking_uri=server.uri).version
    decision = evaluation.evaluate(churn, version=v2, tracking_uri=server.uri)
    assert decision["champion_version"] == v1
    registry.promote(churn, version=v2, expected_champion=v1, tracking_uri=server.uri)
    registry.rollback(churn, tracking_uri=server.uri)
    assert registry.aliases(churn, tracking_uri=server.uri) == {
        "champion": v1,
        "challenger": None,
        "previous_champion": v2,
    }
    actions = [e["action"] for e in history.show(churn.model_name, tracking_uri=server.uri)]
    assert actions == ["promote", "promote", "rollback"]
    # the gate's report is an artifact of the candidate's run on the server
    report = mlflow.artifacts.load_text(f"runs:/{decision['run_id']}/{decision['report_artifact']}")
    assert "Gate PASSED" in report or "Gate FAILED" in report


def test_dead_server_is_retryable_names_the_uri_and_promotes_nothing(server, churn):
    v1 = training.train(churn, tracking_uri=server.uri).version
    evaluation.evaluate(churn, version=v1, tracking_uri=server.uri)
    server.stop()
    with pytest.raises(
        ServiceUnavailable, match=f"MLflow tracking server at {server.uri} is not reachable"
    ) as err:
        registry.promote(churn, version=v1, expected_champion=None, tracking_uri=server.uri)
    assert not err.value.deterministic  # Airflow retries it with backoff
    server.start().wait()
    assert registry.aliases(churn, tracking_uri=server.uri)["champion"] is None


def test_promotion_cut_short_is_completed_by_the_retry(churn, monkeypatch):
    lineage = {"airflow.dag_id": "churn__promote", "airflow.run_id": "r1"}
    v1 = training.train(churn).version
    evaluation.evaluate(churn, version=v1)
    registry.promote(churn, version=v1, expected_champion=None)
    v2 = training.train(churn).version
    evaluation.evaluate(churn, version=v2)

    real = mlflow.MlflowClient.set_registered_model_alias

    def dies_after_champion(self, name, alias, version):
        if alias == "previous_champion":
            raise ConnectionError("Connection refused")
        return real(self, name, alias, version)

    monkeypatch.setattr(mlflow.MlflowClient, "set_registered_model_alias", dies_after_champion)
    with pytest.raises(ServiceUnavailable):
        registry.promote(churn, version=v2, expected_champion=v1, lineage=lineage)
    monkeypatch.setattr(mlflow.MlflowClient, "set_registered_model_alias", real)
    assert registry.aliases(churn)["champion"] == v2  # the move itself is never half-visible

    registry.promote(churn, version=v2, expected_champion=v1, lineage=lineage)  # the task's retry
    assert registry.aliases(churn)["previous_champion"] == v1
    entries = history.entries(tracking.client(), churn.model_name)
    assert [(e["action"], e["from"], e["to"]) for e in entries] == [
        ("promote", None, v1),
        ("promote", v1, v2),
    ]
    registry.promote(churn, version=v2, expected_champion=v1, lineage=lineage)  # and once more: nothing new
    assert len(history.entries(tracking.client(), churn.model_name)) == 2

    # A rollback cut short the same way is completed by its retry too.
    rollback_lineage = {"airflow.dag_id": "churn__rollback", "airflow.run_id": "r2"}
    monkeypatch.setattr(mlflow.MlflowClient, "set_registered_model_alias", dies_after_champion)
    with pytest.raises(ServiceUnavailable):
        registry.rollback(churn, lineage=rollback_lineage)
    monkeypatch.setattr(mlflow.MlflowClient, "set_registered_model_alias", real)
    registry.rollback(churn, lineage=rollback_lineage)
    assert registry.aliases(churn) == {"champion": v1, "challenger": None, "previous_champion": v2}
    actions = [e["action"] for e in history.entries(tracking.client(), churn.model_name)]
    assert actions == ["promote", "promote", "rollback"]
