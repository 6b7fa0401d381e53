"""The gate's steps, one public function each, in the order ``evaluation.evaluate`` runs them.

They are public so that ``bench/gate.py`` times the very functions the gate runs (its breakdown
cannot drift from the gate), and so that each step can be tested or reused on its own.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.mlops import metrics
from include.mlops.artifacts import HOLDOUT_ARTIFACT, download_run_frame
from include.mlops.data.columns import feature_columns
from include.mlops.errors import GateFailed, NothingToDo
from include.mlops.gate import checks as gate_checks
from include.mlops.gate import report as gate_report
from include.mlops.gate.decision_tags import NO_CHAMPION
from include.mlops.gate.records import GateCheck, GateDecision
from include.mlops.spec import PipelineSpec
from include.mlops.tags import GATE_CHAMPION_VERSION, GATE_DECISION, GATE_ID, GATE_REASONS, GATE_REPORT
from include.mlops.tracking import alias_version, get_version, model_dir

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

log = logging.getLogger(__name__)

REASONS_TAG_CHARS = 4900  # MLflow caps a tag value at 5,000 characters


@dataclass(frozen=True)
class GateVersions:
    """Which versions the gate compares, resolved once so every step judges the same pair."""

    model: str
    candidate: str
    run_id: str  # the candidate's training run: its holdout, and where the decision is logged
    champion: str | None  # None: no champion yet, or the candidate is the champion itself


@dataclass(frozen=True)
class Holdout:
    """The candidate's holdout: both models are judged on these same rows."""

    frame: pd.DataFrame
    features: pd.DataFrame
    target: pd.Series


@dataclass(frozen=True)
class LoadedModel:
    """A model version loaded from its local folder (the size check measures that folder)."""

    model: Any
    folder: Path
    input_names: list[str] | None  # the signature's input columns, when it has a signature


@dataclass(frozen=True)
class Scores:
    """Both models' predictions on the holdout and the metrics computed from them."""

    candidate: metrics.Scored
    champion: metrics.Scored | None
    candidate_metrics: dict[str, float]
    champion_metrics: dict[str, float] | None


@dataclass(frozen=True)
class BootstrapOutcome:
    """The bootstrap check and its resampled improvements (the report plots them)."""

    check: GateCheck
    distribution: np.ndarray


def resolve_versions(client: Any, spec: PipelineSpec, version: str | None) -> GateVersions:
    """The candidate (default: the ``challenger``) and the champion it must beat."""
    model = spec.model_name
    version = version or alias_version(client, model, "challenger")
    if version is None:
        raise NothingToDo(
            f"pipeline {spec.name}: no candidate to evaluate (no 'challenger' alias on {model})"
        )
    candidate = get_version(client, model, version)
    champion = alias_version(client, model, "champion")
    if champion == version:
        champion = None  # re-evaluating the champion itself: judge it on thresholds alone
    return GateVersions(model=model, candidate=version, run_id=candidate.run_id, champion=champion)


def load_holdout(spec: PipelineSpec, versions: GateVersions) -> Holdout:
    """The holdout logged by the candidate's training run, split into features and target."""
    frame = download_run_frame(versions.run_id, HOLDOUT_ARTIFACT)
    return Holdout(frame=frame, features=frame[feature_columns(frame, spec)], target=frame[spec.data.target])


def load_candidate(client: Any, versions: GateVersions, folder: str) -> LoadedModel:
    """The candidate model with its folder and signature inputs."""
    import mlflow

    local = model_dir(client, versions.model, versions.candidate, folder)
    signature = mlflow.models.Model.load(str(local)).signature
    names = signature.inputs.input_names() if signature else None
    return LoadedModel(model=mlflow.sklearn.load_model(str(local)), folder=local, input_names=names)


def load_champion(client: Any, versions: GateVersions, folder: str) -> Any | None:
    """The champion model, or None when there is none to compare with."""
    import mlflow

    if versions.champion is None:
        return None
    return mlflow.sklearn.load_model(str(model_dir(client, versions.model, versions.champion, folder)))


def score(spec: PipelineSpec, model: Any, holdout: Holdout) -> metrics.Scored:
    """One scoring pass of a model on the holdout; every metric and check reuses it."""
    return metrics.score(spec.data.task, model, holdout.features)


def measure(
    spec: PipelineSpec, holdout: Holdout, candidate: metrics.Scored, champion: metrics.Scored | None
) -> Scores:
    """Metrics of both models from their scoring passes."""
    task = spec.data.task
    return Scores(
        candidate=candidate,
        champion=champion,
        candidate_metrics=metrics.from_scored(task, holdout.target, candidate),
        champion_metrics=metrics.from_scored(task, holdout.target, champion)
        if champion is not None
        else None,
    )


def paired_bootstrap(spec: PipelineSpec, holdout: Holdout, scores: Scores) -> BootstrapOutcome | None:
    """The bootstrap check, when there is a champion, resamples are asked for and both have the metric."""
    primary = spec.evaluation.primary_metric
    champion, champion_metrics = scores.champion, scores.champion_metrics
    if (
        champion is None
        or champion_metrics is None
        or spec.evaluation.bootstrap.resamples <= 0
        or primary not in scores.candidate_metrics
        or primary not in champion_metrics
    ):
        return None
    exact = metrics.improvement(primary, scores.candidate_metrics[primary], champion_metrics[primary])
    check, distribution = gate_checks.bootstrap_check(spec, holdout.target, scores.candidate, champion, exact)
    return BootstrapOutcome(check=check, distribution=distribution)


def latency(spec: PipelineSpec, candidate: LoadedModel, holdout: Holdout) -> list[GateCheck]:
    """The latency check when the spec sets a budget (a p95 only means something on real hardware)."""
    if spec.evaluation.latency is None:
        return []
    return [gate_checks.latency_check(spec, candidate.model, holdout.features)]


def artifact_checks(spec: PipelineSpec, candidate: LoadedModel, holdout: Holdout) -> list[GateCheck]:
    """Model size and scoring schema, each when the spec asks for it."""
    found = []
    if spec.evaluation.max_model_mb is not None:
        found.append(gate_checks.size_check(spec, candidate.folder))
    if spec.evaluation.check_scoring_schema:
        required = (
            candidate.input_names if candidate.input_names is not None else list(holdout.features.columns)
        )
        found.append(gate_checks.schema_check(spec, required))
    return found


def build_decision(
    spec: PipelineSpec,
    versions: GateVersions,
    holdout: Holdout,
    scores: Scores,
    checks: list[GateCheck],
    lineage: Mapping[str, str] | None = None,
) -> GateDecision:
    """The verdict: passed only if every check passed; the reasons are the failures (else all)."""
    passed = all(c.passed for c in checks)
    return GateDecision(
        id=uuid.uuid4().hex,
        pipeline=spec.name,
        model=versions.model,
        candidate_version=versions.candidate,
        champion_version=versions.champion,
        passed=passed,
        checks=tuple(checks),
        reasons=tuple(c.reason for c in checks if not c.passed) or tuple(c.reason for c in checks),
        candidate_metrics=scores.candidate_metrics,
        champion_metrics=scores.champion_metrics,
        holdout_rows=len(holdout.frame),
        evaluated_at=time.time(),
        lineage=dict(lineage) if lineage else None,
        run_id=versions.run_id,
    )


def plots(
    spec: PipelineSpec, holdout: Holdout, scores: Scores, boot: BootstrapOutcome | None
) -> dict[str, str]:
    """The report's charts for both models (and the bootstrap distribution when there is one)."""
    return gate_report.plots(
        spec.data.task,
        holdout.target.to_numpy(),
        scores.candidate,
        scores.champion,
        boot.distribution if boot else None,
        boot.check.interval if boot else None,
        boot.check.margin if boot else None,
    )


def record_decision(client: Any, decision: GateDecision, report_html: str) -> GateDecision:
    """Log the decision and report to the candidate's run and tag its version, before any raise."""
    from dataclasses import replace

    run_id = decision.run_id
    if run_id is None:
        raise ValueError(f"gate decision {decision.id} names no candidate run to log it to")
    recorded = replace(
        decision,
        run_id=run_id,
        experiment_id=client.get_run(run_id).info.experiment_id,
        report_artifact=f"gate/report-{decision.short_id}.html",
    )
    client.log_dict(run_id, recorded.to_dict(), f"gate/decision-{decision.short_id}.json")
    client.log_text(run_id, report_html, recorded.report_artifact)
    for key, value in {
        GATE_DECISION: recorded.verdict,
        GATE_ID: recorded.id,
        GATE_CHAMPION_VERSION: recorded.champion_version or NO_CHAMPION,
        GATE_REASONS: " | ".join(recorded.reasons)[:REASONS_TAG_CHARS],
        GATE_REPORT: recorded.report_artifact,
    }.items():
        client.set_model_version_tag(recorded.model, recorded.candidate_version, key, value)
    return recorded


def announce(decision: GateDecision) -> None:
    """Log every check; raise ``GateFailed`` (carrying the decision as JSON) when the gate failed."""
    version, champion = decision.candidate_version, decision.champion_version
    log.info("Gate for %s v%s: %s", decision.model, version, "PASSED" if decision.passed else "FAILED")
    for item in decision.checks:
        log.info("  [%s] %s", "ok" if item.passed else "FAIL", item.reason)
    if not decision.passed:
        raise GateFailed(
            f"pipeline {decision.pipeline}: candidate {decision.model} v{version} failed the gate; champion "
            f"{'v' + champion if champion else '(none)'} is untouched: " + "; ".join(decision.reasons),
            decision=decision.to_dict(),
        )
