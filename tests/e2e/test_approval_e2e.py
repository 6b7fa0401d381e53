"""Manual approval and "clear and re-run", through the real scheduler and the REST API.

Pipeline ``gated`` (churn with ``registry.approval: manual``, see conftest.py): a batch lands, v1 is
trained and gated, and the promote run waits in its ``approve`` task until a person answers through
the human-in-the-loop API (what the UI's Approve / Reject buttons call). Then the finished train and
promote runs are cleared and run again, as an operator would from the UI: no second model version,
no second history entry. A manual promote run that is rejected leaves the champion alone and records
the rejection.
"""

from __future__ import annotations

import pytest

from include.mlops import tracking
from include.mlops.datagen import write_batch
from include.mlops.model import history
from include.mlops.spec import find_spec
from include.mlops.tracking import alias_version

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

STAGES = ("ingest", "train", "evaluate", "promote")
TIMEOUT = 600
THINK_SECONDS = 10


def _new_run(api, dag_id: str, known: set[str]) -> str:
    """The run of ``dag_id`` not in ``known`` (started by an Asset event), once it exists."""
    import time

    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        fresh = api.run_ids(dag_id) - known
        if fresh:
            return fresh.pop()
        time.sleep(2)
    raise AssertionError(f"no new {dag_id} run within {TIMEOUT}s")


def _settle() -> None:
    """Let the executor's reports of a finished run reach the scheduler before clearing it, as a
    person would: a clear within a heartbeat of the end can race the late "success" report, which
    Airflow then reads as a queued task the executor says finished, and fails it."""
    import time

    time.sleep(15)


def _approve(api, run_id: str, option: str) -> dict:
    """Answer as a person would: after reading the question for a few seconds. An answer within a
    second or two of the task pausing can reach the scheduler before the executor's report of that
    pause, and Airflow 3.3.2 then fails the resumed task (apache/airflow#72716)."""
    import time

    api.wait_task_state("gated__promote", run_id, "approve", {"awaiting_input", "deferred"}, TIMEOUT)
    time.sleep(THINK_SECONDS)
    detail = api.hitl_detail("gated__promote", run_id, "approve")
    assert detail["options"] == ["Approve", "Reject"], detail
    assert "Promote a new gated champion" in detail["subject"]
    return api.respond("gated__promote", run_id, "approve", option)


def test_manual_approval_then_clear_and_rerun(api):
    spec = find_spec("gated")
    dag = {stage: f"gated__{stage}" for stage in STAGES}
    api.wait_for_dags(list(dag.values()))
    for dag_id in dag.values():
        api.unpause(dag_id)
    client = tracking.client()
    before = {stage: api.run_ids(dag_id) for stage, dag_id in dag.items()}

    write_batch(spec, "batch1", rows=3000, seed=21, dataset="churn")
    ingest = api.trigger(dag["ingest"])
    assert api.wait_run(dag["ingest"], ingest, TIMEOUT)["state"] == "success"
    train = _new_run(api, dag["train"], before["train"])
    assert api.wait_run(dag["train"], train, TIMEOUT)["state"] == "success"
    evaluate = _new_run(api, dag["evaluate"], before["evaluate"])
    assert api.wait_run(dag["evaluate"], evaluate, TIMEOUT)["state"] == "success"

    # The promote run waits for a person; nothing is promoted until then.
    promote = _new_run(api, dag["promote"], before["promote"])
    answer = _approve(api, promote, "Approve")
    assert answer["chosen_options"] == ["Approve"]
    assert answer["responded_by"]["name"] == "admin"
    assert api.wait_run(dag["promote"], promote, TIMEOUT)["state"] == "success"
    assert alias_version(client, "gated", "champion") == "1"
    promotions = [e for e in history.entries(client, "gated") if e.get("action") == "promote"]
    assert [(e["to"], e["run_id"]) for e in promotions] == [("1", promote)]

    # Clear and re-run the promote run: asked again, approved again, nothing recorded twice.
    _settle()
    api.clear_run(dag["promote"], promote)
    _approve(api, promote, "Approve")
    assert api.wait_run(dag["promote"], promote, TIMEOUT)["state"] == "success"
    promotions = [e for e in history.entries(client, "gated") if e.get("action") == "promote"]
    assert len(promotions) == 1, promotions

    # Clear and re-run the train run: the same Airflow run id finds its version; no second one.
    evaluations = api.run_ids(dag["evaluate"])
    _settle()
    api.clear_run(dag["train"], train)
    assert api.wait_run(dag["train"], train, TIMEOUT)["state"] == "success"
    versions = client.search_model_versions("name = 'gated'")
    assert [str(v.version) for v in versions] == ["1"]
    # Its candidate event starts an evaluation; with v1 already champion there is nothing to gate.
    again = _new_run(api, dag["evaluate"], evaluations)
    api.wait_run(dag["evaluate"], again, TIMEOUT)
    states = {ti["task_id"]: ti["state"] for ti in api.task_instances(dag["evaluate"], again)}
    assert states["evaluate"] == "skipped", states  # the re-run did not set a challenger again

    # A promotion asked for by hand and rejected: champion unchanged, rejection on record.
    manual = api.trigger(dag["promote"], {"version": "1"})
    _approve(api, manual, "Reject")
    api.wait_run(dag["promote"], manual, TIMEOUT)
    states = {ti["task_id"]: ti["state"] for ti in api.task_instances(dag["promote"], manual)}
    assert states == {"approve": "success", "promote": "skipped"}, (
        states,
        api.task_log(dag["promote"], manual, "approve"),
        [(e["event"], e.get("extra")) for e in api.event_logs(dag["promote"], manual)],
    )
    assert alias_version(client, "gated", "champion") == "1"
    rejected = [e for e in history.entries(client, "gated") if e.get("action") == "rejected"]
    assert len(rejected) == 1 and rejected[0]["run_id"] == manual, rejected
    assert "rejected in the Airflow UI by admin" in rejected[0]["reason"]
