"""Typed records of the gate: one check and the whole decision.

The decision travels as JSON (an MLflow artifact, an Airflow XCom, ``GateFailed.decision``), so each
record converts to and from the exact dict the gate has always written; the keys are a contract.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from include.mlops.tags import GATE_FAILED, GATE_PASSED

Verdict = Literal["passed", "failed"]


@dataclass(frozen=True)
class GateCheck:
    """One check of the gate: what was measured, against what, and why it passed or failed."""

    name: str
    value: Any
    passed: bool
    limit: str
    reason: str
    interval: tuple[float, float] | None = None  # bootstrap only: the confidence interval
    margin: float | None = None  # bootstrap only: the lower bound the interval must clear

    def to_dict(self) -> dict[str, Any]:
        """The check as written in the decision JSON (``check`` names it; extras only when set)."""
        out = {
            "check": self.name,
            "value": self.value,
            "limit": self.limit,
            "passed": self.passed,
            "reason": self.reason,
        }
        if self.interval is not None:
            out["interval"] = list(self.interval)
        if self.margin is not None:
            out["margin"] = self.margin
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> GateCheck:
        """Read a check back from the decision JSON (or an XCom)."""
        interval = raw.get("interval")
        return cls(
            name=raw["check"],
            value=raw.get("value"),
            passed=bool(raw["passed"]),
            limit=str(raw.get("limit", "")),
            reason=raw["reason"],
            interval=(interval[0], interval[1]) if interval is not None else None,
            margin=raw.get("margin"),
        )

    @classmethod
    def of(cls, value: GateCheck | Mapping[str, Any]) -> GateCheck:
        """Accept a record or its dict form at a seam."""
        return value if isinstance(value, GateCheck) else cls.from_dict(value)


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict on one candidate, with every check; promotion and the report read it."""

    id: str
    pipeline: str
    model: str
    candidate_version: str
    champion_version: str | None
    passed: bool
    checks: tuple[GateCheck, ...]
    reasons: tuple[str, ...]
    candidate_metrics: dict[str, float]
    champion_metrics: dict[str, float] | None
    holdout_rows: int
    evaluated_at: float
    lineage: dict[str, str] | None = None
    # Where the decision was recorded: set once it is logged to the candidate's MLflow run.
    run_id: str | None = None
    experiment_id: str | None = None
    report_artifact: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # unknown keys of a dict read back

    @property
    def verdict(self) -> Verdict:
        """The value of the ``mlops.gate.decision`` tag."""
        return cast(Verdict, GATE_PASSED if self.passed else GATE_FAILED)

    @property
    def short_id(self) -> str:
        """The id's prefix used in artifact names."""
        return self.id[:8]

    def to_dict(self) -> dict[str, Any]:
        """The decision JSON, keys in the order the gate has always written them."""
        out: dict[str, Any] = {
            "id": self.id,
            "pipeline": self.pipeline,
            "model": self.model,
            "candidate_version": self.candidate_version,
            "champion_version": self.champion_version,
            "passed": self.passed,
            "checks": [c.to_dict() for c in self.checks],
            "reasons": list(self.reasons),
            "candidate_metrics": self.candidate_metrics,
            "champion_metrics": self.champion_metrics,
            "holdout_rows": self.holdout_rows,
            "evaluated_at": self.evaluated_at,
        }
        if self.lineage:
            out["lineage"] = self.lineage
        for key in ("run_id", "experiment_id", "report_artifact"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return {**out, **self.extra}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> GateDecision:
        """Read a decision back from its JSON (an artifact, an XCom, ``GateFailed.decision``)."""
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        return cls(
            id=raw["id"],
            pipeline=raw["pipeline"],
            model=raw["model"],
            candidate_version=str(raw["candidate_version"]),
            champion_version=raw.get("champion_version"),
            passed=bool(raw["passed"]),
            checks=tuple(GateCheck.of(c) for c in raw.get("checks", ())),
            reasons=tuple(raw.get("reasons", ())),
            candidate_metrics=dict(raw.get("candidate_metrics") or {}),
            champion_metrics=raw.get("champion_metrics"),
            holdout_rows=int(raw.get("holdout_rows", 0)),
            evaluated_at=float(raw.get("evaluated_at", 0.0)),
            lineage=raw.get("lineage"),
            run_id=raw.get("run_id"),
            experiment_id=raw.get("experiment_id"),
            report_artifact=raw.get("report_artifact"),
            extra={k: v for k, v in raw.items() if k not in known},
        )

    @classmethod
    def of(cls, value: GateDecision | Mapping[str, Any]) -> GateDecision:
        """Accept a record or its dict form at a seam."""
        return value if isinstance(value, GateDecision) else cls.from_dict(value)
