"""The evaluation gate: absolute thresholds, then the candidate against the champion on one holdout.

The champion is re-scored on the candidate's holdout rather than trusted from its stored metrics,
so both numbers come from the same rows. The decision (every check with value, limit and verdict)
is logged to the candidate's MLflow run and tagged on its model version before anything is raised.
"""

from __future__ import annotations

import logging
import tempfile
import time
import uuid
from typing import Any

from include.mlops import metrics, tracking
from include.mlops.artifacts import HOLDOUT_ARTIFACT, download_run_frame
from include.mlops.data.columns import feature_columns
from include.mlops.errors import GateFailed, NothingToDo
from include.mlops.gate.checks import check
from include.mlops.spec import PipelineSpec
from include.mlops.tracking import alias_version, get_version, model_dir

log = logging.getLogger(__name__)


def decide(
    spec: PipelineSpec, candidate: dict[str, float], champion: dict[str, float] | None
) -> list[dict[str, Any]]:
    """Pure decision logic: one entry per check."""
    checks = []
    for metric, limit in spec.evaluation.thresholds.items():
        value = candidate.get(metric)
        if value is None:
            checks.append(
                check(f"threshold:{metric}", None, False, "defined", f"{metric} could not be computed")
            )
            continue
        low_ok = limit.min is None or value >= limit.min
        high_ok = limit.max is None or value <= limit.max
        bound = " and ".join(
            part
            for part in (
                f">= {limit.min}" if limit.min is not None else "",
                f"<= {limit.max}" if limit.max is not None else "",
            )
            if part
        )
        verdict = "meets" if low_ok and high_ok else "misses"
        checks.append(
            check(
                f"threshold:{metric}",
                value,
                low_ok and high_ok,
                bound,
                f"{metric} = {value:.4f} {verdict} the threshold {bound}",
            )
        )
    if champion is None:
        checks.append(check("champion", None, True, "none", "no champion yet: thresholds alone decide"))
        return checks
    policy = spec.evaluation.champion
    primary = spec.evaluation.primary_metric
    if primary not in candidate or primary not in champion:
        checks.append(
            check(
                f"vs_champion:{primary}",
                None,
                False,
                "defined",
                f"{primary} could not be computed for both models (does the estimator have predict_proba? "
                "does the holdout hold every class?)",
            )
        )
        return checks
    gain = metrics.improvement(primary, candidate[primary], champion[primary])
    checks.append(
        check(
            f"vs_champion:{primary}",
            gain,
            gain >= policy.min_improvement,
            f"improvement >= {policy.min_improvement}",
            f"{primary}: candidate {candidate[primary]:.4f} vs champion {champion[primary]:.4f} "
            f"(improvement {gain:+.4f}, required {policy.min_improvement:+.4f})",
        )
    )
    for metric in spec.evaluation.thresholds:
        if metric == primary or metric not in candidate or metric not in champion:
            continue
        change = metrics.improvement(metric, candidate[metric], champion[metric])
        checks.append(
            check(
                f"regression:{metric}",
                change,
                change >= -policy.max_regression,
                f"regression <= {policy.max_regression}",
                f"{metric}: candidate {candidate[metric]:.4f} vs champion {champion[metric]:.4f} "
                f"(change {change:+.4f}, tolerated regression {policy.max_regression})",
            )
        )
    return checks


def evaluate(
    spec: PipelineSpec,
    *,
    version: str | None = None,
    tracking_uri: str | None = None,
    lineage: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Gate one candidate version (default: the ``challenger``); raise GateFailed when it fails."""
    import mlflow

    from include.mlops.gate import checks as gate_checks
    from include.mlops.gate import report as gate_report

    client = tracking.client(tracking_uri)
    model = spec.model_name
    task = spec.data.task
    with tracking.service_errors(tracking_uri), tempfile.TemporaryDirectory() as tmp:
        version = version or alias_version(client, model, "challenger")
        if version is None:
            raise NothingToDo(
                f"pipeline {spec.name}: no candidate to evaluate (no 'challenger' alias on {model})"
            )
        candidate_mv = get_version(client, model, version)
        champion_version = alias_version(client, model, "champion")
        if champion_version == version:
            champion_version = None  # re-evaluating the champion itself: judge it on thresholds alone
        holdout = download_run_frame(candidate_mv.run_id, HOLDOUT_ARTIFACT)
        features, target = holdout[feature_columns(holdout, spec)], holdout[spec.data.target]
        local = model_dir(client, model, version, f"{tmp}/candidate")
        candidate_model = mlflow.sklearn.load_model(str(local))
        signature = mlflow.models.Model.load(str(local)).signature
        candidate = metrics.score(task, candidate_model, features)
        champion = None
        if champion_version is not None:
            champion_dir = model_dir(client, model, champion_version, f"{tmp}/champion")
            champion = metrics.score(task, mlflow.sklearn.load_model(str(champion_dir)), features)

        candidate_scores = metrics.from_scored(task, target, candidate)
        champion_scores = metrics.from_scored(task, target, champion) if champion is not None else None
        checks = decide(spec, candidate_scores, champion_scores)
        distribution, interval, margin = None, None, None
        primary = spec.evaluation.primary_metric
        if (
            champion is not None
            and spec.evaluation.bootstrap.resamples > 0
            and primary in candidate_scores
            and primary in champion_scores
        ):
            exact = metrics.improvement(primary, candidate_scores[primary], champion_scores[primary])
            record, distribution = gate_checks.bootstrap_check(spec, target, candidate, champion, exact)
            checks.append(record)
            interval, margin = record["interval"], record["margin"]
        checks += gate_checks.slice_checks(spec, holdout, candidate)
        if spec.evaluation.latency is not None:
            checks.append(gate_checks.latency_check(spec, candidate_model, features))
        if spec.evaluation.max_model_mb is not None:
            checks.append(gate_checks.size_check(spec, local))
        if spec.evaluation.check_scoring_schema:
            required = signature.inputs.input_names() if signature else list(features.columns)
            checks.append(gate_checks.schema_check(spec, required))

        passed = all(c["passed"] for c in checks)
        decision = {
            "id": uuid.uuid4().hex,
            "pipeline": spec.name,
            "model": model,
            "candidate_version": version,
            "champion_version": champion_version,
            "passed": passed,
            "checks": checks,
            "reasons": [c["reason"] for c in checks if not c["passed"]] or [c["reason"] for c in checks],
            "candidate_metrics": candidate_scores,
            "champion_metrics": champion_scores,
            "holdout_rows": len(holdout),
            "evaluated_at": time.time(),
            **({"lineage": lineage} if lineage else {}),
        }
        images = gate_report.plots(
            task, target.to_numpy(), candidate, champion, distribution, interval, margin
        )
        report_html = gate_report.render(decision, images)
        decision["run_id"] = candidate_mv.run_id
        decision["experiment_id"] = client.get_run(candidate_mv.run_id).info.experiment_id
        short = decision["id"][:8]
        decision["report_artifact"] = f"gate/report-{short}.html"
        client.log_dict(candidate_mv.run_id, decision, f"gate/decision-{short}.json")
        client.log_text(candidate_mv.run_id, report_html, decision["report_artifact"])
        for key, value in {
            "mlops.gate.decision": "passed" if passed else "failed",
            "mlops.gate.id": decision["id"],
            "mlops.gate.champion_version": champion_version or "none",
            "mlops.gate.reasons": " | ".join(decision["reasons"])[:4900],
            "mlops.gate.report": decision["report_artifact"],
        }.items():
            client.set_model_version_tag(model, version, key, value)
    log.info("Gate for %s v%s: %s", model, version, "PASSED" if passed else "FAILED")
    for item in checks:
        log.info("  [%s] %s", "ok" if item["passed"] else "FAIL", item["reason"])
    if not passed:
        raise GateFailed(
            f"pipeline {spec.name}: candidate {model} v{version} failed the gate; champion "
            f"{'v' + champion_version if champion_version else '(none)'} is untouched: "
            + "; ".join(decision["reasons"]),
            decision=decision,
        )
    return decision
