"""Pipeline event notifications through Airflow's notifier mechanism, against a real SMTP server.

An aiosmtpd server on 127.0.0.1 receives what the SMTP provider sends; the messages must name the
pipeline, the event and the link to the report, and a notification that cannot be sent must never
change the task's outcome.
"""

from __future__ import annotations

import email
import email.policy
import json
import logging

import pytest
import yaml
from aiosmtpd.controller import Controller
from airflow.sdk import DAG
from airflow.sdk.exceptions import AirflowFailException

from include.mlops.errors import GateFailed, ValidationFailed
from mlops_airflow.operators.base import PipelineOperator
from tools.stack import free_port


class Inbox:
    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 OK"


@pytest.fixture
def smtp(monkeypatch):
    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    conn = {
        "conn_type": "smtp",
        "host": "127.0.0.1",
        "port": port,
        "extra": {"disable_tls": True, "disable_ssl": True},
    }
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_TEST", json.dumps(conn))
    try:
        yield inbox, port
    finally:
        controller.stop()


def _configure(pipelines_dir, **notifications) -> None:
    path = pipelines_dir / "churn.yaml"
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    raw["notifications"] = notifications
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")


SMTP = {
    "events": ["gate_failed", "drift_detected", "promoted", "quarantined"],
    "notifier": "smtp",
    "to": ["ml-oncall@example.com"],
    "from_email": "mlops@example.com",
    "smtp_conn_id": "smtp_test",
}


class Failing(PipelineOperator):
    def __init__(self, *, error: Exception, links: dict[str, str] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.error = error
        if links:
            self.mlflow_links = links

    def run(self, context):
        raise self.error


def _run(operator: PipelineOperator, dag_id: str) -> None:
    dag = DAG(dag_id, schedule=None)
    context = {"dag": dag, "run_id": "manual__2026-11-26", "task": operator, "ti": None}
    operator.execute(context)


def _body(message) -> str:
    return message.get_body(preferencelist=("html", "plain")).get_content()


def test_quarantine_mail_names_pipeline_event_and_report(smtp, pipelines_dir, state):
    inbox, _ = smtp
    _configure(pipelines_dir, **SMTP)
    report = "file:///data/quarantine/churn/20261126T101010Z-abcd1234/validation.html"
    error = ValidationFailed(
        "pipeline churn: bad.csv failed validation and was quarantined", report_uri=report
    )
    with pytest.raises(AirflowFailException, match="quarantined"):
        _run(Failing(task_id="validate", pipeline="churn", error=error), "churn__ingest")
    (message,) = inbox.messages
    assert message["Subject"] == "[airflow-mlops] churn: landed file quarantined"
    assert message["To"] == "ml-oncall@example.com"
    body = _body(message)
    assert "churn" in body and "quarantined" in body and "bad.csv failed validation" in body
    assert f"href='{report}'" in body
    assert "churn__ingest / manual__2026-11-26 / validate" in body


def test_gate_failed_mail_links_the_mlflow_run_and_report(smtp, pipelines_dir, state):
    inbox, _ = smtp
    _configure(pipelines_dir, **SMTP)
    run_url = "http://127.0.0.1:5000/#/experiments/1/runs/abc"
    error = GateFailed(
        "pipeline churn: candidate churn v3 failed the gate",
        decision={"report_artifact": "gate/report-1.html"},
    )
    operator = Failing(task_id="evaluate", pipeline="churn", error=error, links={"run": run_url})
    with pytest.raises(AirflowFailException):
        _run(operator, "churn__evaluate")
    (message,) = inbox.messages
    assert "failed the evaluation gate" in message["Subject"]
    body = _body(message)
    assert "gate_failed" in body and "candidate churn v3 failed the gate" in body
    assert run_url in body and "gate/report-1.html" in body


def test_unwanted_event_sends_nothing(smtp, pipelines_dir, state):
    inbox, _ = smtp
    _configure(pipelines_dir, **{**SMTP, "events": ["promoted"]})
    with pytest.raises(AirflowFailException):
        _run(Failing(task_id="validate", pipeline="churn", error=ValidationFailed("bad")), "churn__ingest")
    assert inbox.messages == []


def test_smtp_down_is_a_warning_and_the_outcome_stands(smtp, pipelines_dir, state, capsys, monkeypatch):
    inbox, _ = smtp
    _configure(pipelines_dir, **SMTP)
    dead = {
        "conn_type": "smtp",
        "host": "127.0.0.1",
        "port": free_port(),
        "extra": {"disable_tls": True, "disable_ssl": True, "retry_limit": 0, "timeout": 2},
    }
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_TEST", json.dumps(dead))
    with pytest.raises(AirflowFailException, match="failed validation"):
        _run(
            Failing(task_id="validate", pipeline="churn", error=ValidationFailed("x.csv failed validation")),
            "churn__ingest",
        )
    assert "Could not send the quarantined notification (smtp)" in capsys.readouterr().out  # task log
    assert inbox.messages == []


def test_log_notifier_writes_the_message_to_the_task_log(pipelines_dir, state, caplog):
    _configure(pipelines_dir, events=["quarantined"], notifier="log")
    with caplog.at_level(logging.INFO), pytest.raises(AirflowFailException):
        _run(
            Failing(task_id="validate", pipeline="churn", error=ValidationFailed("y.csv broke")),
            "churn__ingest",
        )
    assert "NOTIFICATION [airflow-mlops] churn: landed file quarantined" in caplog.text
    assert "y.csv broke" in caplog.text


def test_smtp_without_recipients_is_a_spec_error(pipelines_dir):
    from include.mlops.errors import SpecError
    from include.mlops.spec import find_spec

    _configure(pipelines_dir, events=["promoted"], notifier="smtp")
    with pytest.raises(SpecError, match="needs at least one address"):
        find_spec("churn")
