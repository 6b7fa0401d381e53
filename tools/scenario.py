"""The lifecycle scenario, driven through the real Airflow scheduler via the REST API.

Batch 1 lands -> validated -> v1 trained -> gate -> promoted -> scoring batch scored -> no drift,
no retraining; a malformed file lands -> quarantined, nothing downstream; a drifted scoring batch
-> scored -> drift detected -> retraining requested -> v2 trained -> gate compares v2 with v1 ->
promoted or rejected; more drifted data within the cool-down -> drift detected, no second retrain.
Each step is checked; the summary says what happened and where the reports are.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from tools.airflow_api import AirflowApi

STAGES = ("ingest", "train", "evaluate", "promote", "rollback", "inference", "drift")


class Abort(Exception):
    """Raised by ``Outcome.require`` to end a scenario whose later steps can no longer run."""


@dataclass
class Outcome:
    """What one pipeline's scenario did: steps seen, expectations that failed, facts for the summary."""

    pipeline: str
    steps: list[tuple[str, str, str]] = field(default_factory=list)  # (step, outcome, detail)
    failures: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def step(self, name: str, outcome: str, detail: str = "") -> None:
        """Record a step and print it at once, so that a long run shows its progress."""
        self.steps.append((name, outcome, detail))
        print(f"  [{self.pipeline}] {name}: {outcome}{' - ' + detail if detail else ''}", flush=True)

    def require(self, condition: bool, what: str) -> None:
        """Like expect, but later steps depend on it: stop the scenario here."""
        if not self.expect(condition, what):
            raise Abort(what)

    def expect(self, condition: bool, what: str) -> bool:
        """Record ``what`` as failed unless ``condition`` holds, and go on; returns ``condition``."""
        if not condition:
            self.failures.append(what)
            print(f"  [{self.pipeline}] EXPECTATION FAILED: {what}", flush=True)
        return condition


def _task_states(api: AirflowApi, dag_id: str, run_id: str) -> dict[str, str]:
    states = {}
    for ti in api.task_instances(dag_id, run_id):
        key = ti["task_id"] if ti.get("map_index", -1) < 0 else f"{ti['task_id']}[{ti['map_index']}]"
        states[key] = ti["state"]
    return states


def run_scenario(api: AirflowApi, pipeline: str, *, rows: int = 6000, timeout: float = 600) -> Outcome:
    """Drive one pipeline through the whole lifecycle on a running stack and say what happened.

    It writes its own batches and expects a fresh state (no champion yet). A failed requirement ends
    the scenario early instead of raising; the outcome's ``failures`` list every unmet expectation.
    """
    out = Outcome(pipeline)
    try:
        _scenario(api, out, rows=rows, timeout=timeout)
    except Abort:
        pass
    return out


def _scenario(api: AirflowApi, out: Outcome, *, rows: int, timeout: float) -> None:
    from include.mlops import storage
    from include.mlops.datagen import write_batch, write_labels
    from include.mlops.model import registry
    from include.mlops.spec import find_spec

    pipeline = out.pipeline
    spec = find_spec(pipeline)
    dag = {stage: f"{pipeline}__{stage}" for stage in STAGES}
    api.wait_for_dags(list(dag.values()))
    for dag_id in dag.values():
        api.unpause(dag_id)

    def known() -> dict[str, set[str]]:
        return {stage: api.run_ids(dag_id) for stage, dag_id in dag.items()}

    def follow(stage: str, before: dict[str, set[str]]) -> dict[str, Any]:
        run = api.wait_new_run(dag[stage], before[stage], timeout=timeout)
        states = _task_states(api, dag[stage], run["dag_run_id"])
        out.step(stage, run["state"], ", ".join(f"{t}={s}" for t, s in states.items()))
        run["tasks"] = states
        return run

    def trigger(stage: str) -> dict[str, Any]:
        before = known()
        run_id = api.trigger(dag[stage])
        run = api.wait_run(dag[stage], run_id, timeout=timeout)
        states = _task_states(api, dag[stage], run_id)
        out.step(stage, run["state"], ", ".join(f"{t}={s}" for t, s in states.items()))
        run["tasks"], run["before"] = states, before
        return run

    # 1. First labelled batch: validated, trained, gated, promoted, then scoring.
    print(f"[{pipeline}] step 1: batch 1 lands", flush=True)
    write_batch(spec, "batch-001", rows=rows, seed=11)
    write_batch(spec, "score-001", rows=rows // 2, seed=21, id_offset=1_000_000, scoring=True)
    ingest = trigger("ingest")
    out.require(ingest["state"] == "success", "batch 1 is validated and published")
    before = ingest["before"]
    train = follow("train", before)
    v1 = (api.xcom(dag["train"], train["dag_run_id"], "train") or {}).get("version")
    out.require(train["state"] == "success" and v1 is not None, "v1 is trained and registered")
    evaluate = follow("evaluate", before)
    out.require(evaluate["state"] == "success", "v1 passes the gate on thresholds (no champion yet)")
    links = api.links(dag["evaluate"], evaluate["dag_run_id"], "evaluate")
    out.expect(
        str(links.get("MLflow model version", "")).endswith(f"/#/models/{spec.model_name}/versions/{v1}"),
        f"the evaluate task links to the model version in MLflow (links: {links})",
    )
    promote = follow("promote", before)
    out.require(promote["state"] == "success", "v1 is promoted")
    inference = follow("inference", before)
    out.expect(inference["state"] == "success", "the champion scores scoring batch 1")
    out.facts["v1"] = v1
    if spec.monitoring.labels is not None:  # the ground truth of scoring batch 1 arrives
        write_labels(spec, "labels-001", rows=rows // 2, seed=21, id_offset=1_000_000, fraction=0.8)
    stable = trigger("drift")
    stable_result = api.xcom(dag["drift"], stable["dag_run_id"], "check_drift") or {}
    out.expect(
        stable["state"] == "success" and not stable_result.get("drift_detected"),
        f"no drift on data like the training data (share {stable_result.get('drift_share')})",
    )
    if spec.monitoring.labels is not None:
        measured = api.xcom(dag["drift"], stable["dag_run_id"], "check_performance") or {}
        value = measured.get("primary_value")
        out.expect(
            bool(measured.get("judged")) and not measured.get("degraded"),
            f"v{v1} on the labelled predictions: {measured.get('primary_metric')} "
            f"{'n/a' if value is None else format(value, '.3f')}, within the gate's thresholds",
        )
    out.expect(stable["tasks"].get("request_retrain") == "skipped", "so no retraining is requested")

    # 2. A malformed file: quarantined with its report; nothing downstream runs.
    print(f"[{pipeline}] step 2: a malformed file lands", flush=True)
    write_batch(
        spec, "batch-002-malformed", rows=rows // 3, seed=13, id_offset=2_000_000, malformed_batch=True
    )
    bad = trigger("ingest")
    out.require(bad["state"] == "failed", "the malformed batch fails the ingest run")
    out.expect(bad["tasks"].get("validate[0]") == "failed", "its validate task failed (no retry)")
    quarantined = [f for d in storage.list_dirs(spec.uri("quarantine")) for f in storage.list_files(d)]
    out.expect(
        any(f.endswith("batch-002-malformed." + spec.data.format) for f in quarantined),
        "the malformed file is in quarantine",
    )
    out.expect(any(f.endswith("validation.html") for f in quarantined), "its validation report is next to it")
    out.facts["quarantine"] = spec.uri("quarantine")
    time.sleep(15)  # give the scheduler the chance to (wrongly) start something
    out.expect(
        api.run_ids(dag["train"]) == bad["before"]["train"], "no training run follows a quarantined batch"
    )

    # 3. Drifted scoring data: scored, drift detected, retraining, gate vs the champion.
    print(f"[{pipeline}] step 3: drifted scoring data arrives", flush=True)
    write_batch(spec, "score-002", rows=rows // 2, seed=22, drift=0.8, id_offset=3_000_000, scoring=True)
    scored = trigger("inference")
    out.expect(scored["state"] == "success", "the drifted batch is scored")
    drift = trigger("drift")
    result = api.xcom(dag["drift"], drift["dag_run_id"], "check_drift") or {}
    out.facts["drift_share"] = result.get("drift_share")
    out.facts["drift_report"] = result.get("report_html")
    out.require(bool(result.get("drift_detected")), "drift is detected")
    links = api.links(dag["drift"], drift["dag_run_id"], "check_drift")
    out.expect(
        links.get("Drift report (Evidently)") == result.get("report_html"),
        f"the drift task links to its Evidently report (links: {links})",
    )
    out.require(drift["tasks"].get("request_retrain") == "success", "retraining is requested")
    before = drift["before"]
    train2 = follow("train", before)
    v2 = (api.xcom(dag["train"], train2["dag_run_id"], "train") or {}).get("version")
    out.require(train2["state"] == "success" and v2 not in (None, v1), "v2 is trained")
    gate2 = follow("evaluate", before)
    decision = api.xcom(dag["evaluate"], gate2["dag_run_id"], "evaluate")
    if gate2["state"] == "success":
        out.expect(decision and decision.get("champion_version") == v1, "the gate compared v2 with v1")
        promoted = follow("promote", before)
        out.expect(promoted["state"] == "success", "v2 is promoted")
        follow("inference", before)
        out.facts["gate_v2"] = "passed"
    else:
        out.facts["gate_v2"] = "rejected"
    aliases = registry.aliases(spec)
    out.facts["aliases"] = aliases
    expected_champion = v2 if out.facts["gate_v2"] == "passed" else v1
    out.expect(aliases.get("champion") == expected_champion, f"champion is v{expected_champion}")
    if out.facts["gate_v2"] == "passed":
        out.expect(aliases.get("previous_champion") == v1, "previous_champion is v1")
    out.facts["v2"] = v2

    # 4. Drift again, within the cool-down: detected, but no second retraining.
    print(f"[{pipeline}] step 4: more drifted data within the cool-down", flush=True)
    write_batch(spec, "score-003", rows=rows // 2, seed=23, drift=0.8, id_offset=4_000_000, scoring=True)
    trigger("inference")
    again = trigger("drift")
    again_result = api.xcom(dag["drift"], again["dag_run_id"], "check_drift") or {}
    out.expect(bool(again_result.get("drift_detected")), "drift is detected again")
    out.expect(
        again["tasks"].get("request_retrain") == "skipped", "no second retraining within the cool-down"
    )
    time.sleep(15)  # give the scheduler the chance to (wrongly) start a training
    out.expect(api.run_ids(dag["train"]) == again["before"]["train"], "no training run follows it")
    from include.mlops.monitoring.retraining import drift_history

    out.facts["drift_history"] = [
        f"v{e.get('model_version')} share {e['drift_share'] or 0:.2f} "
        f"{'retrain requested' if e['requested'] else 'no retrain'}: {e['reason']}"
        for e in drift_history(spec)
    ]
    from include.mlops.model.history import show

    out.facts["history"] = [
        f"{e['action']} {e.get('from') or '-'} -> {e.get('to')}" for e in show(spec.model_name)
    ]
    out.facts["predictions"] = spec.uri("predictions")


def summary(outcomes: list[Outcome]) -> str:
    """The plain-text report printed at the end of the demo, one block per pipeline."""
    lines = ["", "=" * 78, "airflow-mlops demo summary", "=" * 78]
    for o in outcomes:
        f = o.facts
        lines.append(f"\nPipeline {o.pipeline}:")
        for name, outcome, _ in o.steps:
            lines.append(f"  {name:<10} {outcome}")
        lines.append(f"  model versions: v1={f.get('v1')} v2={f.get('v2')} (v2 gate: {f.get('gate_v2')})")
        lines.append(f"  aliases:        {f.get('aliases')}")
        lines.append(f"  history:        {'; '.join(f.get('history') or []) or '-'}")
        share = f.get("drift_share")
        lines.append(
            f"  drift share:    {share:.2f}" if isinstance(share, float) else "  drift share:    n/a"
        )
        lines.append(f"  drift report:   {f.get('drift_report')}")
        for i, entry in enumerate(f.get("drift_history") or []):
            lines.append(f"  {'drift checks:' if i == 0 else '':<16}{entry}")
        lines.append(f"  quarantine:     {f.get('quarantine')}")
        lines.append(f"  predictions:    {f.get('predictions')}")
        lines.append("  result:         " + ("OK" if not o.failures else "FAILED: " + "; ".join(o.failures)))
    return "\n".join(lines)
