"""The evaluation gate: absolute thresholds, then the candidate against the champion on one holdout.

The champion is re-scored on the candidate's holdout rather than trusted from its stored metrics,
so both numbers come from the same rows. The decision (every check with value, limit and verdict)
is logged to the candidate's MLflow run and tagged on its model version before anything is raised.
``evaluate`` is only the sequence of the steps in ``steps.py``, which the benchmark times one by one.
"""

from __future__ import annotations

import tempfile
from typing import Any

from include.mlops import tracking
from include.mlops.gate import checks as gate_checks
from include.mlops.gate import report as gate_report
from include.mlops.gate import steps
from include.mlops.gate.policy import decide
from include.mlops.spec import PipelineSpec
from include.mlops.stages import staged

__all__ = ["decide", "evaluate"]


@staged("evaluate")
def evaluate(
    spec: PipelineSpec,
    *,
    version: str | None = None,
    tracking_uri: str | None = None,
    lineage: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Gate one candidate version (default: the ``challenger``); raise GateFailed when it fails.

    Returns the decision as JSON (the operator passes it on through XCom).
    """
    client = tracking.client(tracking_uri)
    with tracking.service_errors(tracking_uri), tempfile.TemporaryDirectory() as tmp:
        versions = steps.resolve_versions(client, spec, version)
        holdout = steps.load_holdout(spec, versions)
        candidate_model = steps.load_candidate(client, versions, f"{tmp}/candidate")
        champion_model = steps.load_champion(client, versions, f"{tmp}/champion")
        candidate = steps.score(spec, candidate_model.model, holdout)
        champion = steps.score(spec, champion_model, holdout) if champion_model is not None else None
        scores = steps.measure(spec, holdout, candidate, champion)
        checks = decide(spec, scores.candidate_metrics, scores.champion_metrics)
        boot = steps.paired_bootstrap(spec, holdout, scores)
        checks += [boot.check] if boot else []
        checks += gate_checks.slice_checks(spec, holdout.frame, candidate)
        checks += steps.latency(spec, candidate_model, holdout)
        checks += steps.artifact_checks(spec, candidate_model, holdout)
        decision = steps.build_decision(spec, versions, holdout, scores, checks, lineage)
        report_html = gate_report.render(decision, steps.plots(spec, holdout, scores, boot))
        decision = steps.record_decision(client, decision, report_html)
    steps.announce(decision)
    return decision.to_dict()
