"""Airflow adapters: error translation, MLflow connection handling, Asset wiring."""

from __future__ import annotations

import json

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from include.mlops.errors import DataError, GateFailed, NothingToDo, ServiceUnavailable
from mlops_airflow.assets import pipeline_assets
from mlops_airflow.hooks.mlflow_tracking import MlflowHook
from mlops_airflow.operators.base import PipelineOperator


def raising(exc):
    def fn():
        raise exc

    return fn


@pytest.fixture
def operator():
    return PipelineOperator(task_id="t", pipeline="churn")


def test_deterministic_errors_fail_without_retry(operator):
    with pytest.raises(AirflowFailException, match="failed the gate"):
        operator.call_core(raising(GateFailed("candidate failed the gate")))


def test_transient_errors_are_retried(operator):
    with pytest.raises(AirflowException) as err:
        operator.call_core(raising(ServiceUnavailable("tracking server down")))
    assert not isinstance(err.value, AirflowFailException)


def test_nothing_to_do_skips(operator):
    with pytest.raises(AirflowSkipException):
        operator.call_core(raising(NothingToDo("no new file")))


def test_operator_template_fields_include_conn_id(operator):
    assert "mlflow_conn_id" in operator.template_fields


def test_missing_default_connection_falls_back_to_embedded_store(state, monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_MLFLOW_DEFAULT", raising=False)
    assert MlflowHook().get_tracking_uri().startswith("sqlite:///")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert MlflowHook().get_tracking_uri() == "http://127.0.0.1:5999"


def test_missing_named_connection_is_a_clear_failure(monkeypatch):
    with pytest.raises(AirflowFailException, match="connection 'mlflow_prod' is not defined"):
        MlflowHook(mlflow_conn_id="mlflow_prod").get_tracking_uri()


def test_connection_host_and_extra(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_MLFLOW_A", json.dumps({"conn_type": "http", "host": "mlflow.internal", "port": 5000})
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_MLFLOW_B", json.dumps({"conn_type": "http", "extra": {"tracking_uri": "https://x/y"}})
    )
    assert MlflowHook(mlflow_conn_id="mlflow_a").get_tracking_uri() == "http://mlflow.internal:5000"
    assert MlflowHook(mlflow_conn_id="mlflow_b").get_tracking_uri() == "https://x/y"


def test_assets_are_per_pipeline():
    a, b = pipeline_assets("churn"), pipeline_assets("housing")
    assert a.validated.name == "mlops.churn.validated"
    assert a.retrain_requested != b.retrain_requested


def test_mlflow_links_point_at_the_ui(monkeypatch):
    monkeypatch.delenv("MLOPS_MLFLOW_UI_URL", raising=False)
    from mlops_airflow.links.mlflow_ui import MlflowModelVersionLink, MlflowRunLink, remember

    op = PipelineOperator(task_id="t", pipeline="churn")
    assert MlflowRunLink().get_link(op, ti_key=None) == ""  # nothing recorded: no link
    remember(
        op,
        tracking_uri="http://mlflow.internal:5000",
        model="churn",
        version="3",
        run_id="abc",
        experiment_id="7",
    )
    assert (
        MlflowModelVersionLink().get_link(op, ti_key=None)
        == "http://mlflow.internal:5000/#/models/churn/versions/3"
    )
    assert MlflowRunLink().get_link(op, ti_key=None) == "http://mlflow.internal:5000/#/experiments/7/runs/abc"
    monkeypatch.setenv("MLOPS_MLFLOW_UI_URL", "http://127.0.0.1:5001")
    remember(op, tracking_uri="sqlite:////tmp/x.db", model="churn", version="1")
    assert (
        MlflowModelVersionLink().get_link(op, ti_key=None).startswith("http://127.0.0.1:5001/#/models/churn")
    )


def test_inference_dag_maps_one_scoring_task_per_partition(pipelines_dir):
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    from include.mlops.spec import find_spec
    from mlops_airflow.factory import build_dags

    dag = build_dags(find_spec("churn"))["churn__inference"]
    assert set(dag.task_ids) == {"partitions", "resolve", "score", "collect"}
    score = dag.get_task("score")
    assert isinstance(score, MappedOperator)
    assert set(score.expand_input.value) == {"partition"}  # one task instance per partition
    assert score.partial_kwargs["champion"].operator.task_id == "resolve"  # the version pinned once
    assert dag.get_task("resolve").upstream_task_ids == {"partitions"}
    assert score.upstream_task_ids == {"partitions", "resolve"}
    collect = dag.get_task("collect")
    assert collect.upstream_task_ids == {"resolve", "score"}
    assert [o.name for o in collect.outlets] == ["mlops.churn.predictions"]
    assert dag.get_task("partitions").rescore == "{{ params.rescore }}"


def test_inference_operators_pass_the_run_and_the_pinned_champion(monkeypatch):
    from include.mlops.scoring import inference
    from mlops_airflow.operators.monitoring import (
        CollectPredictionsOperator,
        ListScoringPartitionsOperator,
        ScorePartitionOperator,
    )

    calls = {}

    def list_partitions(spec, **kw):
        calls["list"] = kw
        return ["u"]

    monkeypatch.setattr(inference, "list_partitions", list_partitions)
    lister = ListScoringPartitionsOperator(task_id="partitions", pipeline="churn", rescore="True")
    assert lister.execute({"run_id": "manual__1"}) == ["u"]
    assert calls["list"] == {"rescore": True, "redo_run": "manual__1"}  # a cleared run redoes its own

    champion = {"model": "churn", "version": "3", "model_uri": "models:/churn/3"}

    def score_partition(spec, partition, **kw):
        calls["score"] = (partition, kw)
        raise DataError("bad.parquet does not match the signature of churn v3: missing column(s): age")

    monkeypatch.setattr(inference, "score_partition", score_partition)
    scorer = ScorePartitionOperator(
        task_id="score", pipeline="churn", partition="file:///in/b", champion=champion
    )
    scorer.tracking_uri = "sqlite:///x.db"  # cached_property: no connection lookup
    with pytest.raises(AirflowFailException, match="missing column"):  # deterministic: no retry
        scorer.execute({"run_id": "manual__1"})
    assert calls["score"] == (
        "file:///in/b",
        {"champion": champion, "run_id": "manual__1", "tracking_uri": "sqlite:///x.db"},
    )

    class Events(dict):
        def __missing__(self, key):
            self[key] = type("Event", (), {"extra": None})()
            return self[key]

    outlet = pipeline_assets("churn").champion
    collect = CollectPredictionsOperator(
        task_id="collect",
        pipeline="churn",
        champion=champion,
        results=[{"rows": 5, "output": "o1"}, None, {"rows": 7, "output": "o2"}],
        outlets=[outlet],
    )
    context = {"run_id": "manual__1", "outlet_events": Events()}
    summary = collect.execute(context)
    assert summary["rows"] == 12 and summary["partitions"] == 2 and "files" not in summary
    assert context["outlet_events"][outlet].extra == {
        "model_version": "3",
        "rows": 12,
        "outputs": ["o1", "o2"],
    }


def test_our_exceptions_keep_airflows_retry_semantics(operator):
    from mlops_airflow.exceptions import MlopsTaskError, PipelineFailed, PipelineRetryable

    with pytest.raises(PipelineFailed) as failed:
        operator.call_core(raising(DataError("bad file")))
    with pytest.raises(PipelineRetryable) as retried:
        operator.call_core(raising(ServiceUnavailable("down")))
    assert isinstance(failed.value, AirflowFailException) and isinstance(failed.value, MlopsTaskError)
    assert isinstance(retried.value, MlopsTaskError) and not isinstance(retried.value, AirflowFailException)


def test_lineage_uses_the_tag_names_of_the_core():
    from types import SimpleNamespace

    from include.mlops import tags

    context = {"dag": SimpleNamespace(dag_id="d"), "run_id": "r", "task": SimpleNamespace(task_id="t")}
    assert PipelineOperator.lineage(context) == {
        tags.AIRFLOW_DAG_ID: "d",
        tags.AIRFLOW_RUN_ID: "r",
        tags.AIRFLOW_TASK_ID: "t",
    }


def test_gate_decision_tags_read_back_the_champion_the_gate_saw():
    from include.mlops import tags
    from include.mlops.gate.decision_tags import GateDecisionTags

    passed = GateDecisionTags.from_tags(
        "4",
        {tags.GATE_DECISION: tags.GATE_PASSED, tags.GATE_ID: "g1", tags.GATE_CHAMPION_VERSION: "3"},
    )
    assert passed.passed and passed.champion_version == "3" and passed.decision_id == "g1"
    first = GateDecisionTags.from_tags(
        "1", {tags.GATE_DECISION: tags.GATE_PASSED, tags.GATE_CHAMPION_VERSION: "none"}
    )
    assert first.champion_version is None  # no champion when it was gated
    untagged = GateDecisionTags.from_tags("2", {})
    assert not untagged.passed and untagged.champion_version is None and untagged.decision is None


def test_promote_expects_the_champion_recorded_by_the_gate(monkeypatch, pipelines_dir):
    from types import SimpleNamespace

    from include.mlops.gate import decision_tags
    from include.mlops.model import registry
    from mlops_airflow.operators.model import PromoteModelOperator

    read, promoted = [], []

    def read_decision_tags(model, version, *, tracking_uri):
        read.append((model, version, tracking_uri))
        return decision_tags.GateDecisionTags("5", "passed", "g", "4", None)

    def promote(spec, **kw):
        promoted.append(kw)
        return {"champion": "5", "previous_champion": "4", "changed": False}

    monkeypatch.setattr(decision_tags, "read_decision_tags", read_decision_tags)
    monkeypatch.setattr(registry, "promote", promote)
    operator = PromoteModelOperator(task_id="promote", pipeline="churn", version="5")
    operator.tracking_uri = "sqlite:///x.db"  # cached_property: no connection lookup
    context = {"run_id": "r", "dag": SimpleNamespace(dag_id="d"), "task": SimpleNamespace(task_id="promote")}
    assert operator.execute(context)["champion"] == "5"
    assert read == [(operator.spec.model_name, "5", "sqlite:///x.db")]
    assert promoted[0]["expected_champion"] == "4" and promoted[0]["version"] == "5"
