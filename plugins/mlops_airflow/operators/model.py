"""Model operators: train, evaluate (the gate), promote, roll back."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Context

from mlops_airflow.links.mlflow_ui import LINKS, remember
from mlops_airflow.operators.base import PipelineOperator


def approved_version(context: Context) -> str | None:
    """The model version carried by the Asset event that triggered this run, if any."""
    events = context.get("triggering_asset_events") or {}
    for _, asset_events in events.items():
        for event in reversed(list(asset_events)):
            if event.extra and event.extra.get("version"):
                return str(event.extra["version"])
    return None


def _emit(operator: PipelineOperator, context: Context, extra: dict[str, Any]) -> None:
    """Put ``extra`` on every outlet's Asset event (the next stage reads the version from it)."""
    for outlet in operator.outlets:
        context["outlet_events"][outlet].extra = extra


class TrainModelOperator(PipelineOperator):
    """Train on every published dataset, register a version and set the ``challenger`` alias."""

    operator_extra_links = LINKS

    def run(self, context: Context) -> dict[str, Any]:
        """Train, register, link the MLflow run and announce the candidate version."""
        from include.mlops.model.training import train

        result = train(self.spec, lineage=self.lineage(context), tracking_uri=self.tracking_uri).to_dict()
        return announce_trained(self, context, result)


def announce_trained(operator: PipelineOperator, context: Context, result: dict[str, Any]) -> dict[str, Any]:
    """Link the training run and version, and put the candidate on the outlets' Asset events
    (shared by the local and the remote train operators)."""
    remember(
        operator,
        tracking_uri=operator.tracking_uri,
        model=operator.spec.model_name,
        version=result["version"],
        run_id=result["run_id"],
        experiment_id=result["experiment_id"],
    )
    _emit(operator, context, {"version": result["version"], "run_id": result["run_id"]})
    return result


class EvaluateModelOperator(PipelineOperator):
    """Gate a candidate (``version``, else the ``challenger``); a failed gate fails without retry."""

    template_fields = (*PipelineOperator.template_fields, "version")
    operator_extra_links = LINKS

    def __init__(self, *, version: str | None = None, **kwargs: Any) -> None:
        """Only store the value; an empty string (an unset UI param) means "not given"."""
        super().__init__(**kwargs)
        self.version = version

    def run(self, context: Context) -> dict[str, Any]:
        """Run the gate; link its decision record whether it passed or failed."""
        from include.mlops.errors import GateFailed
        from include.mlops.gate.evaluation import evaluate

        try:
            decision = evaluate(
                self.spec,
                version=self.version or None,
                tracking_uri=self.tracking_uri,
                lineage=self.lineage(context),
            )
        except GateFailed as failed:
            self._link(failed.decision)  # the decision record matters most when the gate fails
            raise
        self._link(decision)
        _emit(
            self,
            context,
            {
                "version": decision["candidate_version"],
                "decision": decision["id"],
                "champion_version": decision["champion_version"],
            },
        )
        return decision

    def _link(self, decision: dict[str, Any]) -> None:
        """Point the MLflow extra links at the judged version and the gate's run."""
        if decision:
            remember(
                self,
                tracking_uri=self.tracking_uri,
                model=self.spec.model_name,
                version=decision.get("candidate_version"),
                run_id=decision.get("run_id"),
                experiment_id=decision.get("experiment_id"),
            )


class PromoteModelOperator(PipelineOperator):
    """Compare-and-set promotion of the version the gate approved.

    The version comes from ``version`` (UI param) or the triggering ``approved`` Asset event; the
    expected champion is the one recorded by that version's gate decision.
    """

    template_fields = (*PipelineOperator.template_fields, "version")

    def __init__(self, *, version: str | None = None, **kwargs: Any) -> None:
        """Only store the value; an empty string (an unset UI param) means "not given"."""
        super().__init__(**kwargs)
        self.version = version

    def run(self, context: Context) -> dict[str, Any]:
        """Promote if the champion is still the one the gate compared against (compare-and-set)."""
        from include.mlops.errors import NothingToDo
        from include.mlops.gate.decision_tags import read_decision_tags
        from include.mlops.model.registry import promote

        version = self.version or approved_version(context)
        if not version:
            raise NothingToDo(f"pipeline {self.pipeline}: no version given and no approved candidate event")
        gate = read_decision_tags(self.spec.model_name, version, tracking_uri=self.tracking_uri)
        result = promote(
            self.spec,
            version=version,
            expected_champion=gate.champion_version,
            tracking_uri=self.tracking_uri,
            lineage=self.lineage(context),
        )
        _emit(self, context, {"version": result["champion"], "previous": result["previous_champion"]})
        if result.get("changed", True):
            remember(self, tracking_uri=self.tracking_uri, model=self.spec.model_name, version=version)
            self.notify(
                context,
                "promoted",
                f"{self.spec.model_name} v{result['champion']} is the champion "
                f"(previous: {result['previous_champion'] or 'none'})",
                links=getattr(self, "mlflow_links", {}),
            )
        return result


class RollbackModelOperator(PipelineOperator):
    """Restore ``previous_champion`` (or ``to_version``) as champion."""

    template_fields = (*PipelineOperator.template_fields, "to_version")

    def __init__(self, *, to_version: str | None = None, **kwargs: Any) -> None:
        """Only store the value; an empty string (an unset UI param) means "previous champion"."""
        super().__init__(**kwargs)
        self.to_version = to_version

    def run(self, context: Context) -> dict[str, Any]:
        """Move the champion back and announce it (inference picks the restored version up)."""
        from include.mlops.model.registry import rollback

        result = rollback(
            self.spec,
            to_version=self.to_version or None,
            tracking_uri=self.tracking_uri,
            lineage=self.lineage(context),
        )
        _emit(self, context, {"version": result["champion"], "previous": result["previous_champion"]})
        return result
