"""Batch inference, drift check and the retraining request."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Context

from mlops_airflow.operators.base import PipelineOperator


class BatchInferenceOperator(PipelineOperator):
    """Score every new scoring input with the champion (all inputs when ``rescore``)."""

    template_fields = (*PipelineOperator.template_fields, "rescore")

    def __init__(self, *, rescore: bool | str = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rescore = rescore

    def run(self, context: Context) -> dict[str, Any]:
        from include.mlops.inference import score

        rescore = self.rescore if isinstance(self.rescore, bool) else str(self.rescore).lower() == "true"
        return score(self.spec, run_id=context["run_id"], rescore=rescore, tracking_uri=self.tracking_uri)


class DriftCheckOperator(PipelineOperator):
    """Compare the latest scored inputs with the champion's training reference (Evidently)."""

    def run(self, context: Context) -> dict[str, Any]:
        from include.mlops.drift import check

        key = context["run_id"].replace(":", "").replace("+", "")
        result = check(self.spec, run_key=key, tracking_uri=self.tracking_uri)
        result.pop("columns", None)  # per-column detail stays in the report files, not in XCom
        if result.get("drift_detected"):
            columns = result.get("drifted_columns") or []
            self.notify(
                context,
                "drift_detected",
                f"drift share {result['drift_share']:.2f} reached the threshold {result['threshold']:.2f}; "
                f"drifted columns: {', '.join(columns) or 'none listed'}",
                report=result.get("report_html"),
            )
        return result


class RequestRetrainOperator(PipelineOperator):
    """Emit ``retrain-requested`` when drift passed the threshold and the cool-down allows it."""

    def __init__(self, *, drift_task_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.drift_task_id = drift_task_id

    def run(self, context: Context) -> dict[str, Any]:
        from include.mlops import retraining, tracking
        from include.mlops.errors import NothingToDo

        drift = context["ti"].xcom_pull(task_ids=self.drift_task_id)
        if not drift:
            raise NothingToDo(f"pipeline {self.pipeline}: no drift result to act on")
        client = tracking.client(self.tracking_uri)
        with tracking.service_errors(self.tracking_uri):
            requested, reason = retraining.decide(self.spec, drift, client=client)
        retraining.record(self.spec, drift, requested=requested, reason=reason)
        if not requested:
            self.log.info("Retraining held back: %s", reason)
            raise NothingToDo(f"pipeline {self.pipeline}: no retraining requested: {reason}")
        self.log.info("Requesting retraining: %s", reason)
        for outlet in self.outlets:
            context["outlet_events"][outlet].extra = {
                "drift_share": drift["drift_share"],
                "report": drift["report_html"],
                "reason": reason,
            }
        return {"requested": True, "reason": reason}
