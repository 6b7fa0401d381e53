"""The lifecycle scenario, driven through the real Airflow scheduler via the REST API.

The full scenario (``run_scenario``), in four steps:

1. batch 1 lands -> validated -> v1 trained -> gate -> promoted -> scoring batch 1 scored; its labels
   arrive later -> the drift check finds no drift and v1 within the gate's thresholds: no retraining;
2. a malformed file lands -> quarantined with its report; nothing downstream;
3. a drifted scoring batch -> scored by v1; its late labels land as a training batch -> validated
   and published; the drift check detects the drift -> retraining requested -> v2 trained on batch 1
   plus the labelled drifted batch -> the gate compares v2 with v1 on the same holdout (which now
   holds drifted rows) -> promoted or rejected, with its reasons;
4. more drifted data within the cool-down -> drift detected, no second retraining.

The short path (``run_short_path``), for a second pipeline: ingest, train, gate, promote, score.
Every step is checked; the summary groups what happened by step, with each step's wall time, shows
both models' gate metrics side by side and says why v2 was promoted or not.
"""

from __future__ import annotations

import textwrap
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tools.airflow_api import AirflowApi

if TYPE_CHECKING:
    from include.mlops.spec import PipelineSpec

STAGES = ("ingest", "train", "evaluate", "promote", "rollback", "inference", "drift")


class Abort(Exception):
    """Raised by ``Outcome.require`` to end a scenario whose later steps can no longer run."""


@dataclass
class Step:
    """One scenario step: the stage runs it saw, its checks, and how long it took."""

    title: str
    started: float
    seconds: float | None = None
    runs: list[tuple[str, str]] = field(default_factory=list)  # (stage, run state)
    checks: int = 0
    failures: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    """What one pipeline's scenario did: steps seen, expectations that failed, facts for the summary."""

    pipeline: str
    path: str = "full scenario"
    steps: list[tuple[str, str, str]] = field(default_factory=list)  # (stage, outcome, detail)
    groups: list[Step] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def begin(self, title: str) -> None:
        """Start a scenario step (ending the previous one), so the summary can time and group it."""
        self.end()
        self.groups.append(Step(title, time.monotonic()))
        print(f"[{self.pipeline}] step {len(self.groups)}: {title}", flush=True)

    def end(self) -> None:
        """Stop the clock of the current step (idempotent)."""
        if self.groups and self.groups[-1].seconds is None:
            self.groups[-1].seconds = time.monotonic() - self.groups[-1].started

    def step(self, name: str, outcome: str, detail: str = "") -> None:
        """Record a stage run and print it at once, so that a long run shows its progress."""
        self.steps.append((name, outcome, detail))
        if self.groups:
            self.groups[-1].runs.append((name, outcome))
        print(f"  [{self.pipeline}] {name}: {outcome}{' - ' + detail if detail else ''}", flush=True)

    def require(self, condition: bool, what: str) -> None:
        """Like expect, but later steps depend on it: stop the scenario here."""
        if not self.expect(condition, what):
            raise Abort(what)

    def expect(self, condition: bool, what: str) -> bool:
        """Record ``what`` as failed unless ``condition`` holds, and go on; returns ``condition``."""
        if self.groups:
            self.groups[-1].checks += 1
        if not condition:
            self.failures.append(what)
            if self.groups:
                self.groups[-1].failures.append(what)
            print(f"  [{self.pipeline}] EXPECTATION FAILED: {what}", flush=True)
        return condition


def _task_states(api: AirflowApi, dag_id: str, run_id: str) -> dict[str, str]:
    states = {}
    for ti in api.task_instances(dag_id, run_id):
        key = ti["task_id"] if ti.get("map_index", -1) < 0 else f"{ti['task_id']}[{ti['map_index']}]"
        states[key] = ti["state"]
    return states


class Driver:
    """One pipeline's DAGs on a running stack: trigger a stage, or follow the run an Asset started."""

    def __init__(self, api: AirflowApi, out: Outcome, timeout: float) -> None:
        """Find the spec, wait for its DAGs to be parsed and unpause them."""
        from include.mlops.spec import find_spec

        self.api, self.out, self.timeout = api, out, timeout
        self.spec: PipelineSpec = find_spec(out.pipeline)
        self.dag = {stage: f"{out.pipeline}__{stage}" for stage in STAGES}
        api.wait_for_dags(list(self.dag.values()))
        for dag_id in self.dag.values():
            api.unpause(dag_id)

    def known(self) -> dict[str, set[str]]:
        """Every stage's run ids now, to tell the runs that start later apart."""
        return {stage: self.api.run_ids(dag_id) for stage, dag_id in self.dag.items()}

    def _record(self, stage: str, run: dict[str, Any]) -> dict[str, Any]:
        states = _task_states(self.api, self.dag[stage], run["dag_run_id"])
        self.out.step(stage, run["state"], ", ".join(f"{t}={s}" for t, s in states.items()))
        run["tasks"] = states
        return run

    def follow(self, stage: str, before: dict[str, set[str]]) -> dict[str, Any]:
        """Wait for the next run of ``stage`` that is not in ``before`` (an Asset started it)."""
        return self._record(
            stage, self.api.wait_new_run(self.dag[stage], before[stage], timeout=self.timeout)
        )

    def trigger(self, stage: str) -> dict[str, Any]:
        """Trigger ``stage`` as a user would from the UI and wait for its run to finish."""
        before = self.known()
        run_id = self.api.trigger(self.dag[stage])
        run = self._record(stage, self.api.wait_run(self.dag[stage], run_id, timeout=self.timeout))
        run["before"] = before
        return run

    def xcom(self, stage: str, run: dict[str, Any], task_id: str) -> Any:
        """A task's return value in ``run`` (None if it returned nothing)."""
        return self.api.xcom(self.dag[stage], run["dag_run_id"], task_id)

    def asset_events(self, stage: str) -> int:
        """How many events the pipeline's ``stage`` Asset has (``validated``, ``retrain-requested``)."""
        name = f"mlops.{self.out.pipeline}.{stage}"
        found = [a for a in self.api.assets(name) if a["name"] == name]
        return len(self.api.asset_events(found[0]["id"])) if found else 0


def gate_decision(spec: PipelineSpec, version: str) -> dict[str, Any] | None:
    """The latest gate decision logged to ``version``'s MLflow run (``gate/decision-*.json``).

    Read from MLflow rather than XCom because a failed gate returns nothing to XCom, and the summary
    must say why a candidate was rejected as well as why it was promoted.
    """
    import json
    import tempfile
    from pathlib import Path

    from include.mlops import tracking

    client = tracking.client()
    run_id = tracking.get_version(client, spec.model_name, version).run_id
    names = [a.path for a in client.list_artifacts(run_id, "gate") if "/decision-" in a.path]
    decisions = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            decisions.append(json.loads(Path(client.download_artifacts(run_id, name, tmp)).read_text()))
    return max(decisions, key=lambda d: d.get("evaluated_at") or 0) if decisions else None


def run_scenario(api: AirflowApi, pipeline: str, *, rows: int = 6000, timeout: float = 600) -> Outcome:
    """Drive one pipeline through the whole lifecycle on a running stack and say what happened.

    It writes its own batches and expects a fresh state (no champion yet). A failed requirement ends
    the scenario early instead of raising; the outcome's ``failures`` list every unmet expectation.
    """
    out = Outcome(pipeline)
    started = time.monotonic()
    try:
        d = Driver(api, out, timeout)
        _first_model(d, rows=rows, title="batch 1 lands: v1 trained, gated, promoted; scoring batch 1 scored")
        _no_drift_yet(d, rows=rows)
        _malformed_batch(d, rows=rows)
        _drift_and_retrain(d, rows=rows)
        _cooldown(d, rows=rows)
        _final_facts(d)
    except Abort:
        pass
    out.end()
    out.facts["seconds"] = time.monotonic() - started
    return out


def run_short_path(
    api: AirflowApi, pipeline: str, *, rows: int = 6000, timeout: float = 600, dataset: str | None = None
) -> Outcome:
    """Ingest, train, gate, promote and score one pipeline: the end-to-end path without the story.

    ``dataset`` names the generated data when the pipeline's name is not one the generator knows.

    For a second pipeline (another task type, another dataset) whose stages the full scenario has
    already exercised on the first: it proves the same DAGs work for it at a fraction of the time.
    """
    out = Outcome(pipeline, path="short path")
    started = time.monotonic()
    try:
        d = Driver(api, out, timeout)
        _first_model(
            d, rows=rows, title="batch 1 lands: ingest, train, gate, promote, score", dataset=dataset
        )
        out.facts["aliases"] = _aliases(d.spec)
        out.expect(out.facts["aliases"].get("champion") == out.facts["v1"], f"champion is v{out.facts['v1']}")
        out.facts["predictions"] = d.spec.uri("predictions")
    except Abort:
        pass
    out.end()
    out.facts["seconds"] = time.monotonic() - started
    return out


def _aliases(spec: PipelineSpec) -> dict[str, str | None]:
    from include.mlops.model import registry

    return registry.aliases(spec)


def _first_model(d: Driver, *, rows: int, title: str, dataset: str | None = None) -> None:
    """Batch 1 -> validated -> v1 -> gate on thresholds -> promoted -> scoring batch 1 scored."""
    from include.mlops.datagen import write_batch

    out, spec = d.out, d.spec
    out.begin(title)
    write_batch(spec, "batch-001", rows=rows, seed=11, dataset=dataset)
    write_batch(
        spec, "score-001", rows=rows // 2, seed=21, id_offset=1_000_000, scoring=True, dataset=dataset
    )
    ingest = d.trigger("ingest")
    out.require(ingest["state"] == "success", "batch 1 is validated and published")
    before = ingest["before"]
    train = d.follow("train", before)
    trained = d.xcom("train", train, "train") or {}
    v1 = trained.get("version")
    out.require(train["state"] == "success" and v1 is not None, "v1 is trained and registered")
    out.facts.update(v1=v1, v1_training_rows=trained.get("training_rows"))
    evaluate = d.follow("evaluate", before)
    out.require(evaluate["state"] == "success", "v1 passes the gate on thresholds (no champion yet)")
    out.facts["gate_v1"] = d.xcom("evaluate", evaluate, "evaluate") or {}
    links = d.api.links(d.dag["evaluate"], evaluate["dag_run_id"], "evaluate")
    out.expect(
        str(links.get("MLflow model version", "")).endswith(f"/#/models/{spec.model_name}/versions/{v1}"),
        f"the evaluate task links to the model version in MLflow (links: {links})",
    )
    promote = d.follow("promote", before)
    out.require(promote["state"] == "success", "v1 is promoted")
    inference = d.follow("inference", before)
    out.expect(inference["state"] == "success", "the champion scores scoring batch 1")


def _no_drift_yet(d: Driver, *, rows: int) -> None:
    """Scoring batch 1 looks like the training data; its labels show v1 within its thresholds."""
    from include.mlops.datagen import write_labels

    out, spec, v1 = d.out, d.spec, d.out.facts["v1"]
    out.begin("labels of scoring batch 1 arrive; drift check: no drift, so no retraining")
    if spec.monitoring.labels is not None:  # the ground truth of scoring batch 1 arrives
        write_labels(spec, "labels-001", rows=rows // 2, seed=21, id_offset=1_000_000, fraction=0.8)
    stable = d.trigger("drift")
    stable_result = d.xcom("drift", stable, "check_drift") or {}
    out.expect(
        stable["state"] == "success" and not stable_result.get("drift_detected"),
        f"no drift on data like the training data (share {stable_result.get('drift_share')})",
    )
    if spec.monitoring.labels is not None:
        measured = d.xcom("drift", stable, "check_performance") or {}
        value = measured.get("primary_value")
        out.expect(
            bool(measured.get("judged")) and not measured.get("degraded"),
            f"v{v1} on the labelled predictions: {measured.get('primary_metric')} "
            f"{'n/a' if value is None else format(value, '.3f')}, within the gate's thresholds",
        )
    out.expect(stable["tasks"].get("request_retrain") == "skipped", "so no retraining is requested")


def _malformed_batch(d: Driver, *, rows: int) -> None:
    """A malformed file: quarantined with its report; no dataset announced, so no training."""
    from include.mlops import storage
    from include.mlops.datagen import write_batch

    out, spec = d.out, d.spec
    out.begin("a malformed file lands: quarantined with its report, nothing downstream")
    validated_before = d.asset_events("validated")
    write_batch(
        spec, "batch-002-malformed", rows=rows // 3, seed=13, id_offset=2_000_000, malformed_batch=True
    )
    bad = d.trigger("ingest")
    out.require(bad["state"] == "failed", "the malformed batch fails the ingest run")
    out.expect(bad["tasks"].get("validate[0]") == "failed", "its validate task failed (no retry)")
    quarantined = [f for q in storage.list_dirs(spec.uri("quarantine")) for f in storage.list_files(q)]
    out.expect(
        any(f.endswith("batch-002-malformed." + spec.data.format) for f in quarantined),
        "the malformed file is in quarantine",
    )
    out.expect(any(f.endswith("validation.html") for f in quarantined), "its validation report is next to it")
    out.facts["quarantine"] = spec.uri("quarantine")
    # Training starts only on a `validated` Asset event: none may have been emitted.
    out.expect(d.asset_events("validated") == validated_before, "the failed run announces no dataset")
    out.expect(
        d.api.run_ids(d.dag["train"]) == bad["before"]["train"], "no training run follows a quarantined batch"
    )


def _drift_and_retrain(d: Driver, *, rows: int) -> None:
    """Drifted scoring data, its late labels as training data, drift detected, v2 gated against v1."""
    out = d.out
    out.begin("drifted data scored; its late labels land as training data; drift -> v2 vs v1")
    _drifted_batch_and_labels(d, rows=rows)
    drift = d.trigger("drift")
    result = d.xcom("drift", drift, "check_drift") or {}
    out.facts["drift_share"] = result.get("drift_share")
    out.facts["drift_report"] = result.get("report_html")
    out.require(bool(result.get("drift_detected")), "drift is detected")
    links = d.api.links(d.dag["drift"], drift["dag_run_id"], "check_drift")
    from mlops_airflow.links.reports import browser_url  # an s3:// report opens in the S3 console

    out.expect(
        links.get("Drift report (Evidently)") == browser_url(str(result.get("report_html"))),
        f"the drift task links to its Evidently report (links: {links})",
    )
    out.require(drift["tasks"].get("request_retrain") == "success", "retraining is requested")
    _retrain_and_gate(d, drift["before"])


def _drifted_batch_and_labels(d: Driver, *, rows: int) -> None:
    """Score the drifted batch, then ingest its labelled twin while training is held.

    The train DAG is paused while the labelled batch is ingested: its ``validated`` event would
    otherwise start a training of its own, and the story is that the drift check decides to retrain.
    A paused DAG is not queued by an Asset event, so unpausing it afterwards starts nothing.
    """
    from include.mlops.datagen import write_batch

    out, spec = d.out, d.spec
    drifted: dict[str, Any] = {"rows": rows // 2, "seed": 22, "drift": 0.8, "id_offset": 3_000_000}
    write_batch(spec, "score-002", scoring=True, **drifted)
    scored = d.trigger("inference")
    out.expect(scored["state"] == "success", "the drifted batch is scored by v1")
    # Its labels arrive later: joined with the inputs, they land as a training batch.
    d.api.pause(d.dag["train"])
    try:
        write_batch(spec, "batch-003-drifted-labelled", **drifted)
        labelled = d.trigger("ingest")
        out.require(labelled["state"] == "success", "the labelled drifted batch is validated and published")
    finally:
        d.api.unpause(d.dag["train"])
    out.expect(
        d.api.run_ids(d.dag["train"]) == labelled["before"]["train"], "no training started while it was held"
    )


def _retrain_and_gate(d: Driver, before: dict[str, set[str]]) -> None:
    """v2 trained on the new data; the gate compares it with v1; promoted (and scoring) or rejected."""
    out, spec, v1 = d.out, d.spec, d.out.facts["v1"]
    train2 = d.follow("train", before)
    trained = d.xcom("train", train2, "train") or {}
    v2 = trained.get("version")
    out.require(train2["state"] == "success" and v2 not in (None, v1), "v2 is trained")
    out.facts.update(v2=v2, v2_training_rows=trained.get("training_rows"))
    out.expect(
        (trained.get("training_rows") or 0) > (out.facts.get("v1_training_rows") or 0),
        "v2 learnt from more rows than v1 (the labelled drifted batch)",
    )
    gate2 = d.follow("evaluate", before)
    decision = gate_decision(spec, str(v2)) or {}
    out.facts["gate_v2"] = decision
    out.expect(decision.get("champion_version") == v1, "the gate compared v2 with v1")
    out.expect(
        (decision.get("holdout_rows") or 0) > (out.facts["gate_v1"].get("holdout_rows") or 0),
        "on a holdout that now holds rows of the drifted batch",
    )
    passed = gate2["state"] == "success"
    out.expect(passed == bool(decision.get("passed")), "the run's state matches the recorded decision")
    if passed:
        promoted = d.follow("promote", before)
        out.expect(promoted["state"] == "success", "v2 is promoted")
        d.follow("inference", before)
    aliases = _aliases(spec)
    out.facts["aliases"] = aliases
    expected_champion = v2 if passed else v1
    out.expect(aliases.get("champion") == expected_champion, f"champion is v{expected_champion}")
    if passed:
        out.expect(aliases.get("previous_champion") == v1, "previous_champion is v1")
    out.expect(
        len(d.api.run_ids(d.dag["train"]) - before["train"]) == 1, "exactly one training followed the drift"
    )


def _cooldown(d: Driver, *, rows: int) -> None:
    """Drift again within the cool-down: detected, but no second retraining request."""
    from include.mlops.datagen import write_batch

    out, spec = d.out, d.spec
    out.begin("more drifted data within the cool-down: drift detected, no second retraining")
    write_batch(spec, "score-003", rows=rows // 2, seed=23, drift=0.8, id_offset=4_000_000, scoring=True)
    requests_before = d.asset_events("retrain-requested")
    d.trigger("inference")
    again = d.trigger("drift")
    again_result = d.xcom("drift", again, "check_drift") or {}
    out.expect(bool(again_result.get("drift_detected")), "drift is detected again")
    out.expect(
        again["tasks"].get("request_retrain") == "skipped", "no second retraining within the cool-down"
    )
    # Training starts only on a `retrain-requested` (or `validated`) Asset event: none was emitted.
    out.expect(d.asset_events("retrain-requested") == requests_before, "no retraining request is emitted")
    out.expect(d.api.run_ids(d.dag["train"]) == again["before"]["train"], "no training run follows it")


def _final_facts(d: Driver) -> None:
    """The drift history, the promotion history and where predictions are, for the summary."""
    from include.mlops.model.history import show
    from include.mlops.monitoring.retraining import drift_history

    out, spec = d.out, d.spec
    out.facts["drift_history"] = [
        f"v{e.get('model_version')} share {e['drift_share'] or 0:.2f} "
        f"{'retrain requested' if e['requested'] else 'no retrain'}: {e['reason']}"
        for e in drift_history(spec)
    ]
    out.facts["history"] = [
        f"{e['action']} {e.get('from') or '-'} -> {e.get('to')}" for e in show(spec.model_name)
    ]
    out.facts["predictions"] = spec.uri("predictions")


# The summary -------------------------------------------------------------------------------------
def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"


def gate_table(decision: dict[str, Any], primary: str | None = None) -> list[str]:
    """Candidate and champion metrics side by side, then the verdict and the gate's reasons."""
    new, old = decision.get("candidate_metrics") or {}, decision.get("champion_metrics") or {}
    cv, ch = decision.get("candidate_version"), decision.get("champion_version")
    lines = [
        f"    {'metric':<14}{'v' + str(ch) + ' (champion)':>16}{'v' + str(cv) + ' (candidate)':>18}{'change':>10}"
    ]
    for metric in sorted(set(new) | set(old), key=lambda m: (m != primary, m)):
        a, b = old.get(metric), new.get(metric)
        change = f"{b - a:+.4f}" if isinstance(a, (int, float)) and isinstance(b, (int, float)) else "-"
        mark = "  (primary)" if metric == primary else ""
        lines.append(f"    {metric:<14}{_fmt(a):>16}{_fmt(b):>18}{change:>10}{mark}")
    if decision.get("passed"):
        verdict = f"passed, v{cv} promoted: every check held"
    else:
        verdict = f"failed, v{ch} stays champion: the checks below did not hold"
    lines.append(f"    decision: {verdict}")
    lines += [f"      - {reason}" for reason in decision.get("reasons") or []]
    return lines


def _steps_block(o: Outcome) -> list[str]:
    lines = []
    for i, step in enumerate(o.groups, 1):
        status = "OK" if not step.failures else f"FAILED ({len(step.failures)})"
        seconds = f"{step.seconds:.0f} s" if step.seconds is not None else "-"
        runs = " -> ".join(f"{stage} {state}" for stage, state in step.runs)
        lines.append(f"  {i}. {step.title}")
        lines.append(f"     {seconds}, {step.checks} checks {status}")
        lines += textwrap.wrap(
            f"runs: {runs or '-'}", 78, initial_indent="     ", subsequent_indent="           "
        )
        lines += [f"     failed: {what}" for what in step.failures]
    return lines


def _story_block(o: Outcome, primary: str | None) -> list[str]:
    f, lines = o.facts, []
    gate = f.get("gate_v2")
    if gate:
        holdout_v1 = (f.get("gate_v1") or {}).get("holdout_rows")
        lines.append(
            f"\n  Gate, v{f.get('v2')} against v{f.get('v1')} on the same holdout "
            f"({gate.get('holdout_rows')} rows; {holdout_v1} when v{f.get('v1')} was gated):"
        )
        lines += gate_table(gate, primary)
        lines.append(
            f"    training rows: v{f.get('v1')} {f.get('v1_training_rows')}, "
            f"v{f.get('v2')} {f.get('v2_training_rows')} (with the labelled drifted batch)"
        )
    lines.append("")
    if "aliases" in f:
        lines.append(f"  aliases:        {f.get('aliases')}")
    if "history" in f:
        lines.append(f"  history:        {'; '.join(f.get('history') or []) or '-'}")
    share = f.get("drift_share")
    if share is not None:
        lines.append(
            f"  drift share:    {share:.2f}" if isinstance(share, float) else "  drift share:    n/a"
        )
        lines.append(f"  drift report:   {f.get('drift_report')}")
    for i, entry in enumerate(f.get("drift_history") or []):
        lines.append(f"  {'drift checks:' if i == 0 else '':<16}{entry}")
    if "quarantine" in f:
        lines.append(f"  quarantine:     {f.get('quarantine')}")
    if "predictions" in f:
        lines.append(f"  predictions:    {f.get('predictions')}")
    return lines


def summary(outcomes: list[Outcome]) -> str:
    """The plain-text report printed at the end of the demo, one block per pipeline, by step."""
    from include.mlops.spec import find_spec

    lines = ["", "=" * 78, "airflow-mlops demo summary", "=" * 78]
    for o in outcomes:
        try:
            primary: str | None = find_spec(o.pipeline).evaluation.primary_metric
        except Exception:  # the summary must print whatever went wrong
            primary = None
        result = "OK" if not o.failures else f"FAILED ({len(o.failures)} expectations)"
        lines.append(f"\nPipeline {o.pipeline}: {o.path}, {o.facts.get('seconds', 0):.0f} s, {result}")
        lines += _steps_block(o)
        lines += _story_block(o, primary)
        if o.failures:
            lines.append("  failed:         " + "; ".join(o.failures))
    return "\n".join(lines)
