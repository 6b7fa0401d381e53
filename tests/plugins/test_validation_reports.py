"""The ingest task's report URIs: XCom, the "Validation report" extra link, and the run's summary."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import pytest
from airflow.sdk.exceptions import AirflowFailException

from include.mlops.datagen import write_batch
from include.mlops.spec import find_spec
from mlops_airflow.links.reports import (
    XCOM_KEY,
    ValidationJsonLink,
    ValidationReportLink,
    browser_url,
)
from mlops_airflow.operators.ingest import AnnounceDatasetsOperator, ValidateAndPublishOperator


class FakeTI:
    """Just the XCom calls the operators make, keyed like Airflow: (task_id, map_index, key)."""

    def __init__(self, store: dict, task_id: str = "validate", map_index: int = -1) -> None:
        self.store, self.task_id, self.map_index = store, task_id, map_index

    def xcom_push(self, key: str, value) -> None:
        self.store[(self.task_id, self.map_index, key)] = value

    def xcom_pull(self, task_ids: str, key: str = "return_value", default=None):
        values = [v for (t, _, k), v in sorted(self.store.items()) if t == task_ids and k == key]
        return values or default


def _context(ti) -> dict:
    return {
        "run_id": "manual__1",
        "dag": SimpleNamespace(dag_id="churn__ingest"),
        "task": SimpleNamespace(task_id=ti.task_id),
        "ti": ti,
        "outlet_events": {},
    }


def test_reports_reach_xcom_the_link_and_the_summary(state, pipelines_dir, monkeypatch, capfd):
    from airflow.sdk.execution_time import xcom

    spec = find_spec("churn")
    good = write_batch(spec, "good", rows=300, seed=1)
    bad = write_batch(spec, "bad", rows=300, seed=2, id_offset=10_000, malformed_batch=True)
    for uri in (good, bad):
        past = time.time() - 3600
        os.utime(uri.removeprefix("file://"), (past, past))
    from include.mlops.data.ingest import discover

    assert discover(spec, run_id="manual__1") == [bad, good]
    store: dict = {}
    ok = ValidateAndPublishOperator(task_id="validate", pipeline="churn", uri=good)
    published = ok.execute(_context(FakeTI(store, map_index=1)))
    assert set(published["reports"]) == {"json", "html", "data_docs"}
    with pytest.raises(AirflowFailException, match="quarantined"):
        ValidateAndPublishOperator(task_id="validate", pipeline="churn", uri=bad).execute(
            _context(FakeTI(store, map_index=0))
        )
    quarantined = store[("validate", 0, XCOM_KEY)]
    assert quarantined["status"] == "quarantined" and quarantined["source"] == "bad.parquet"
    for kind in ("json", "html", "data_docs"):
        assert os.path.isfile(quarantined[kind].removeprefix("file://"))
        assert store[("validate", 1, XCOM_KEY)][kind] == published["reports"][kind]

    # The extra link reads the URIs of its own task instance back from XCom.
    def get_value(*, ti_key, key):
        return store.get((ti_key.task_id, ti_key.map_index, key))

    monkeypatch.setattr(xcom.XCom, "get_value", get_value)
    ti_key = SimpleNamespace(dag_id="churn__ingest", task_id="validate", run_id="manual__1", map_index=0)
    assert ValidationReportLink().get_link(ok, ti_key=ti_key) == quarantined["data_docs"]
    assert ValidationJsonLink().get_link(ok, ti_key=ti_key) == quarantined["json"]
    assert ValidationReportLink.name in {
        link.name for link in ValidateAndPublishOperator.operator_extra_links
    }
    missing = SimpleNamespace(dag_id="churn__ingest", task_id="validate", run_id="manual__1", map_index=7)
    assert ValidationReportLink().get_link(ok, ti_key=missing) == ""

    # The run's summary (announce) lists every file with its three reports.
    store[("validate", 1, "return_value")] = published
    announce = AnnounceDatasetsOperator(task_id="announce", pipeline="churn", validate_task_id="validate")
    assert announce.execute(_context(FakeTI(store, task_id="announce"))) == [published]
    logged = "".join(capfd.readouterr())  # Airflow's task log (structlog) goes to the console here
    summary = store[("announce", -1, "validation_summary")]
    assert sorted(e["source"] for e in summary) == ["bad.parquet", "good.parquet"]
    for entry in summary:
        for kind in ("json", "html", "data_docs"):
            assert entry[kind] in logged


def test_object_store_reports_link_to_the_console():
    assert browser_url("file:///data/q/data_docs.html") == "file:///data/q/data_docs.html"
    assert browser_url("s3://bucket/q/x/data_docs.html").startswith(
        "https://s3.console.aws.amazon.com/s3/object/bucket?prefix=q/x/data_docs.html"
    )
    assert browser_url("gs://b/q/data_docs.html").endswith("/storage/browser/_details/b/q/data_docs.html")


def test_drift_and_performance_tasks_link_to_their_reports(monkeypatch):
    from airflow.sdk.execution_time import xcom

    from mlops_airflow.links.reports import DriftJsonLink, DriftReportLink, PerformanceReportLink
    from mlops_airflow.operators.monitoring import DriftCheckOperator, PerformanceCheckOperator

    returned = {
        "check_drift": {
            "report_html": "file:///r/drift/run/report.html",
            "report_json": "file:///r/drift/run/report.json",
            "summary_json": "file:///r/drift/run/summary.json",
        },
        "check_performance": {"report_json": "gs://b/r/performance/run/performance.json"},
    }
    monkeypatch.setattr(
        xcom.XCom,
        "get_value",
        lambda *, ti_key, key: returned.get(ti_key.task_id) if key == "return_value" else None,
    )

    def key(task_id: str) -> SimpleNamespace:
        return SimpleNamespace(dag_id="churn__drift", task_id=task_id, run_id="manual__1", map_index=-1)

    assert DriftReportLink().get_link(None, ti_key=key("check_drift")) == "file:///r/drift/run/report.html"
    assert DriftJsonLink().get_link(None, ti_key=key("check_drift")) == "file:///r/drift/run/summary.json"
    assert (
        PerformanceReportLink()
        .get_link(None, ti_key=key("check_performance"))
        .endswith("/storage/browser/_details/b/r/performance/run/performance.json")
    )
    assert DriftReportLink().get_link(None, ti_key=key("skipped")) == ""
    assert {link.name for link in DriftCheckOperator.operator_extra_links} == {
        "Drift report (Evidently)",
        "Drift summary (JSON)",
    }
    assert [link.name for link in PerformanceCheckOperator.operator_extra_links] == [
        "Labelled performance (JSON)"
    ]


def test_links_store_their_values_apart_from_the_task_data(monkeypatch):
    """What Airflow does when a task ends: each link's value goes to the link's own ``xcom_key``. It
    must not overwrite the XCom the link (or a downstream task) reads."""
    from airflow.sdk.execution_time import xcom

    from mlops_airflow.links.reports import ALL
    from mlops_airflow.operators.ingest import ValidateAndPublishOperator
    from mlops_airflow.operators.monitoring import DriftCheckOperator, PerformanceCheckOperator

    data = {
        "return_value": {
            "report_html": "file:///r.html",
            "report_json": "file:///r.json",
            "summary_json": "file:///s",
        },
        XCOM_KEY: {"json": "file:///v.json", "html": "file:///v.html", "data_docs": "file:///d.html"},
    }
    store = dict(data)
    monkeypatch.setattr(xcom.XCom, "get_value", lambda *, ti_key, key: store.get(key))
    ti = SimpleNamespace(dag_id="d", task_id="t", run_id="r", map_index=-1)
    for operator in (ValidateAndPublishOperator, DriftCheckOperator, PerformanceCheckOperator):
        for link in operator.operator_extra_links:
            store[link.xcom_key] = link.get_link(operator, ti_key=ti)  # task_runner.finalize
    assert {k: store[k] for k in data} == data
    assert len({link.xcom_key for link in ALL}) == len(ALL)
    assert all(store[link.xcom_key].startswith("file:///") for link in ALL)
