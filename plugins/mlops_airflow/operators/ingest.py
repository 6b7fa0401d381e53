"""Ingestion operators: find landed files, validate each one, announce what was published."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Context

from mlops_airflow.operators.base import PipelineOperator


class DiscoverLandedFilesOperator(PipelineOperator):
    """Return the URIs waiting in the landing zone; skip (and so stop the run) when there are none."""

    def run(self, context: Context) -> list[str]:
        from include.mlops.errors import NothingToDo
        from include.mlops.ingest import discover

        files = discover(self.spec)
        if not files:
            raise NothingToDo(f"pipeline {self.pipeline}: no new file in {self.spec.uri('landing')}")
        self.log.info("Found %d landed file(s): %s", len(files), files)
        return files


class ValidateAndPublishOperator(PipelineOperator):
    """Validate one file: publish it as a versioned dataset, or quarantine it and fail (no retry)."""

    template_fields = (*PipelineOperator.template_fields, "uri")

    def __init__(self, *, uri: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.uri = uri

    def run(self, context: Context) -> dict[str, Any]:
        from include.mlops.ingest import ingest_file

        return ingest_file(self.spec, self.uri, run_id=context["run_id"]).to_dict()


class AnnounceDatasetsOperator(PipelineOperator):
    """Emit the ``validated`` Asset event when at least one file of the run was published."""

    def __init__(self, *, validate_task_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.validate_task_id = validate_task_id

    def run(self, context: Context) -> list[dict[str, Any]]:
        from include.mlops.errors import NothingToDo

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
