"""The gate's policy checks: absolute thresholds, then the candidate against the champion.

Pure functions of two metric dicts, so the rules are tested without models or MLflow.
"""

from __future__ import annotations

from include.mlops import metrics
from include.mlops.gate.records import GateCheck
from include.mlops.spec import PipelineSpec, Threshold


def bounds(low: float | None, high: float | None) -> str:
    """``>= low and <= high`` with the missing side left out (the limit a check reports)."""
    parts = (f">= {low}" if low is not None else "", f"<= {high}" if high is not None else "")
    return " and ".join(part for part in parts if part)


def threshold_check(metric: str, value: float | None, limit: Threshold) -> GateCheck:
    """One absolute threshold; a metric that could not be computed fails rather than passes."""
    name = f"threshold:{metric}"
    if value is None:
        return GateCheck(name, None, False, "defined", f"{metric} could not be computed")
    ok = (limit.min is None or value >= limit.min) and (limit.max is None or value <= limit.max)
    bound = bounds(limit.min, limit.max)
    verdict = "meets" if ok else "misses"
    return GateCheck(name, value, ok, bound, f"{metric} = {value:.4f} {verdict} the threshold {bound}")


def champion_checks(
    spec: PipelineSpec, candidate: dict[str, float], champion: dict[str, float]
) -> list[GateCheck]:
    """The primary metric must improve enough; the other thresholded metrics may not regress much."""
    policy = spec.evaluation.champion
    primary = spec.evaluation.primary_metric
    if primary not in candidate or primary not in champion:
        reason = (
            f"{primary} could not be computed for both models (does the estimator have predict_proba? "
            "does the holdout hold every class?)"
        )
        return [GateCheck(f"vs_champion:{primary}", None, False, "defined", reason)]
    gain = metrics.improvement(primary, candidate[primary], champion[primary])
    checks = [
        GateCheck(
            f"vs_champion:{primary}",
            gain,
            gain >= policy.min_improvement,
            f"improvement >= {policy.min_improvement}",
            f"{primary}: candidate {candidate[primary]:.4f} vs champion {champion[primary]:.4f} "
            f"(improvement {gain:+.4f}, required {policy.min_improvement:+.4f})",
        )
    ]
    for metric in spec.evaluation.thresholds:
        if metric == primary or metric not in candidate or metric not in champion:
            continue
        change = metrics.improvement(metric, candidate[metric], champion[metric])
        checks.append(
            GateCheck(
                f"regression:{metric}",
                change,
                change >= -policy.max_regression,
                f"regression <= {policy.max_regression}",
                f"{metric}: candidate {candidate[metric]:.4f} vs champion {champion[metric]:.4f} "
                f"(change {change:+.4f}, tolerated regression {policy.max_regression})",
            )
        )
    return checks


def decide(
    spec: PipelineSpec, candidate: dict[str, float], champion: dict[str, float] | None
) -> list[GateCheck]:
    """Thresholds, then the champion comparison (thresholds alone when there is no champion)."""
    checks = [
        threshold_check(metric, candidate.get(metric), limit)
        for metric, limit in spec.evaluation.thresholds.items()
    ]
    if champion is None:
        checks.append(GateCheck("champion", None, True, "none", "no champion yet: thresholds alone decide"))
        return checks
    return checks + champion_checks(spec, candidate, champion)
