"""Ingestion operators: find landed files, validate each one, announce what was published."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Context

from mlops_airflow.operators.base import PipelineOperator


class DiscoverLandedFilesOperator(PipelineOperator):
    """Claim the complete files waiting in the landing zone for this run and return their URIs.

    The claim (in the ledger) is what makes each file version processed exactly once, whether the
    run was started by a landing event, a schedule or a user. Skips (and so stops the run) when no
    file is left to claim.
    """

    def run(self, context: Context) -> list[str]:
        from include.mlops.errors import NothingToDo
        from include.mlops.ingest import discover
        from mlops_airflow.triggers.landing import landing_lister

        landing = self.spec.uri("landing")
        files = discover(
            self.spec,
            run_id=context["run_id"],
            list_files=landing_lister(landing, self.spec.data.landing_conn_id),
        )
        if not files:
            raise NothingToDo(
                f"pipeline {self.pipeline}: no new complete file in {landing} (files still being "
                "written, already ingested or held by another run are left out; see the log)"
            )
        self.log.info("Claimed %d landed file(s): %s", len(files), files)
        return files


class ValidateAndPublishOperator(PipelineOperator):
    """Validate one file: publish it as a versioned dataset, or quarantine it and fail (no retry)."""

    template_fields = (*PipelineOperator.template_fields, "uri")

    def __init__(self, *, uri: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.uri = uri

    def run(self, context: Context) -> dict[str, Any]:
        from include.mlops.ingest import ingest_claimed

        return ingest_claimed(self.spec, self.uri, run_id=context["run_id"]).to_dict()


class AnnounceDatasetsOperator(PipelineOperator):
    """Emit the ``validated`` Asset event when at least one file of the run was published.

    Runs when every ``validate`` is done, and first releases the run's unfinished claims.
    """

    def __init__(self, *, validate_task_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.validate_task_id = validate_task_id

    def run(self, context: Context) -> list[dict[str, Any]]:
        from include.mlops.errors import NothingToDo
        from include.mlops.ledger import Ledger

        # Files this run claimed but did not finish (a validate task killed or upstream-failed) go
        # back to the pool now rather than after data.claim_timeout.
        released = Ledger().release_run(self.pipeline, context["run_id"])
        if released:
            self.log.warning("Released %d unfinished file(s) for the next run: %s", len(released), released)
        pulled = context["ti"].xcom_pull(task_ids=self.validate_task_id, default=None) or []
        if isinstance(pulled, dict):
            pulled = [pulled]
        published = [r for r in pulled if isinstance(r, dict) and r.get("status") == "published"]
        if not published:
            raise NothingToDo(f"pipeline {self.pipeline}: no file was published in this run")
        for outlet in self.outlets:
            context["outlet_events"][outlet].extra = {
                "datasets": [r["location"] for r in published],
                "rows": sum(r["rows"] for r in published),
            }
        self.log.info("Published %d dataset(s): %s", len(published), [r["location"] for r in published])
        return published
