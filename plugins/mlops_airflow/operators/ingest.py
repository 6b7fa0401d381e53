"""Ingestion operators: find landed files, validate each one, announce what was published."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Context

from mlops_airflow.links.reports import LINKS as REPORT_LINKS
from mlops_airflow.links.reports import XCOM_KEY as REPORTS_KEY
from mlops_airflow.operators.base import PipelineOperator


class DiscoverLandedFilesOperator(PipelineOperator):
    """Claim the complete files waiting in the landing zone for this run and return their URIs.

    The claim (in the ledger) is what makes each file version processed exactly once, whether the
    run was started by a landing event, a schedule or a user. Skips (and so stops the run) when no
    file is left to claim.
    """

    def run(self, context: Context) -> list[str]:
        """Claim this run's files in the ledger; skip the run when none is left."""
        from include.mlops.data.ingest import discover
        from include.mlops.errors import NothingToDo
        from mlops_airflow.hooks.landing import landing_lister

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
    """Validate one file: publish it as a versioned dataset, or quarantine it and fail (no retry).

    Either way the batch's report URIs (``validation.json``, ``validation.html``, ``data_docs.html``)
    go to XCom under ``validation_reports`` before the task ends, for the "Validation report" extra
    link and the run's summary (``announce``); a published batch's return value lists them too.
    """

    template_fields = (*PipelineOperator.template_fields, "uri")
    operator_extra_links = REPORT_LINKS

    def __init__(self, *, uri: str, **kwargs: Any) -> None:
        """Only store the value: ``uri`` is one mapped file of ``discover``'s output."""
        super().__init__(**kwargs)
        self.uri = uri

    def run(self, context: Context) -> dict[str, Any]:
        """Validate and publish (or quarantine) the file; its report URIs go to XCom either way."""
        from include.mlops.data.ingest import ingest_claimed
        from include.mlops.errors import ValidationFailed
        from include.mlops.storage import basename

        try:
            result = ingest_claimed(self.spec, self.uri, run_id=context["run_id"])
        except ValidationFailed as exc:
            if exc.reports:
                self._remember(context, basename(self.uri), "quarantined", exc.quarantined_to, exc.reports)
            raise
        self._remember(context, result.source, result.status, result.location, result.reports)
        return result.to_dict()

    def _remember(
        self, context: Context, source: str, status: str, location: str | None, reports: dict[str, str]
    ) -> None:
        """Log the report URIs and push them to XCom for the extra link and the run summary."""
        for kind, uri in reports.items():
            self.log.info("Validation report (%s): %s", kind, uri)
        ti = context.get("ti")
        if ti is None:
            return
        try:
            ti.xcom_push(
                key=REPORTS_KEY, value={"source": source, "status": status, "location": location, **reports}
            )
        except Exception as exc:  # the batch's outcome stands; only the link and summary lack it
            self.log.warning("Could not store the validation report URIs in XCom: %s", exc)


class AnnounceDatasetsOperator(PipelineOperator):
    """Emit the ``validated`` Asset event when at least one file of the run was published.

    Runs when every ``validate`` is done, and first releases the run's unfinished claims.
    """

    def __init__(self, *, validate_task_id: str, **kwargs: Any) -> None:
        """Only store the value: the validate task whose results are announced."""
        super().__init__(**kwargs)
        self.validate_task_id = validate_task_id

    def run(self, context: Context) -> list[dict[str, Any]]:
        """Release unfinished claims, summarise the run and announce what was published."""
        from include.mlops.data.ledger import Ledger
        from include.mlops.errors import NothingToDo

        # Files this run claimed but did not finish (a validate task killed or upstream-failed) go
        # back to the pool now rather than after data.claim_timeout.
        released = Ledger().release_run(self.pipeline, context["run_id"])
        if released:
            self.log.warning("Released %d unfinished file(s) for the next run: %s", len(released), released)
        pulled = context["ti"].xcom_pull(task_ids=self.validate_task_id, default=None) or []
        if isinstance(pulled, dict):
            pulled = [pulled]
        self._log_summary(context)
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

    def _log_summary(self, context: Context) -> None:
        """Log every file of the run with its outcome and the URIs of its three reports."""
        try:
            pulled = context["ti"].xcom_pull(task_ids=self.validate_task_id, key=REPORTS_KEY, default=None)
        except Exception as exc:  # a summary never fails the run
            self.log.warning("Could not read the validation reports of this run: %s", exc)
            return
        entries = [pulled] if isinstance(pulled, dict) else [e for e in pulled or [] if isinstance(e, dict)]
        lines = [f"Validation reports of run {context['run_id']} ({len(entries)} file(s)):"]
        for entry in sorted(entries, key=lambda e: str(e.get("source"))):
            lines.append(f"  {entry.get('source')}: {entry.get('status')} -> {entry.get('location')}")
            lines.extend(
                f"    {kind}: {entry[kind]}" for kind in ("json", "html", "data_docs") if entry.get(kind)
            )
        self.log.info("\n".join(lines))
        try:  # the same list as data: XCom "validation_summary" of this task
            context["ti"].xcom_push(key="validation_summary", value=entries)
        except Exception as exc:
            self.log.warning("Could not store the run's validation summary in XCom: %s", exc)
