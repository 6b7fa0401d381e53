"""Human approval of a promotion (``registry.approval: manual``), with rejections audited."""

from __future__ import annotations

import time
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import Context

from mlops_airflow.operators.base import PipelineMixin
from mlops_airflow.operators.model import approved_version

REJECTION_ATTEMPTS = 3


class PromotionApprovalOperator(PipelineMixin, ApprovalOperator):
    """Waits for Approve / Reject in the Airflow UI; a rejection is written to the model's history.

    On Reject the promote task is skipped (ApprovalOperator's behaviour) and the champion stays.
    """

    template_fields = (*ApprovalOperator.template_fields, "pipeline", "mlflow_conn_id", "version")

    def __init__(
        self,
        *,
        pipeline: str,
        version: str | None = None,
        mlflow_conn_id: str = "mlflow_default",
        **kwargs: Any,
    ) -> None:
        """Only store the values: the spec and the connection are read when a rejection is recorded."""
        super().__init__(**kwargs)
        self.pipeline = pipeline
        self.version = version
        self.mlflow_conn_id = mlflow_conn_id

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Record a rejection in the model's history first, then let ApprovalOperator skip or go on."""
        chosen = (event.get("chosen_options") or [None])[0]
        if "error" not in event and chosen == self.REJECT:
            self._record_rejection(context, event)
        return super().execute_complete(context=context, event=event)

    def _record_rejection(self, context: Context, event: dict[str, Any]) -> None:
        from include.mlops.errors import ServiceUnavailable
        from include.mlops.model.registry import record_rejection

        version = self.version or approved_version(context)
        if not version:
            self.log.warning("Rejected, but no version is known to record the rejection against")
            return
        user = event.get("responded_by_user") or {}
        who = user.get("name") or user.get("id") or "unknown user"
        lineage = {**self.lineage(context), "triggered_by": f"ui:{who}"}
        # The answer cannot be asked for again, so a busy store gets a few tries before the task fails
        # (a retry of this task would put the question to a person once more).
        for attempt in range(1, REJECTION_ATTEMPTS + 1):
            try:
                record_rejection(
                    self.spec,
                    version=version,
                    reason=f"promotion rejected in the Airflow UI by {who}",
                    tracking_uri=self.tracking_uri,
                    lineage=lineage,
                )
                break
            except ServiceUnavailable as exc:
                if attempt == REJECTION_ATTEMPTS:
                    raise
                self.log.warning("Recording the rejection failed (attempt %d): %s; retrying", attempt, exc)
                time.sleep(2 * attempt)
        self.log.info("Recorded the rejection of v%s by %s", version, who)
