"""Operator extra links to the reports a task wrote: validation, drift and labelled performance.

Each task stores its report URIs in XCom (the validate task under ``validation_reports``, the drift
and performance checks in their return value); a link reads them back for the task instance, the
Airflow 3 way, and shows nothing rather than a broken page when they are missing.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import BaseOperatorLink

log = logging.getLogger(__name__)

XCOM_KEY = "validation_reports"  # {"json": uri, "html": uri, "data_docs": uri}, pushed by validate


def browser_url(uri: str) -> str:
    """A URI a browser can open: ``file://`` paths as they are, ``s3://`` / ``gs://`` as their consoles."""
    if uri.startswith("s3://"):
        bucket, _, key = uri[5:].partition("/")
        return f"https://s3.console.aws.amazon.com/s3/object/{bucket}?prefix={key}"
    if uri.startswith("gs://"):
        return f"https://console.cloud.google.com/storage/browser/_details/{uri[5:]}"
    return uri


class ReportLink(BaseOperatorLink):
    """The first of ``kinds`` found in the task's XCom ``source_key`` (a dict of report URIs).

    Not ``xcom_key``: that is where Airflow stores each link's own value when the task ends
    (``_link_<class name>``); pointing it at the task's data would overwrite the data with the link.
    """

    name = "Report"
    source_key = "return_value"
    kinds: tuple[str, ...] = ()

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        """Read the task instance's report URIs from XCom; a browser URL, or nothing if missing."""
        from airflow.sdk.execution_time.xcom import XCom

        try:
            reports = XCom.get_value(ti_key=ti_key, key=self.source_key)
        except Exception as exc:  # no link rather than a broken task page
            log.warning("Could not read the report URIs of %s from XCom: %s", ti_key, exc)
            return ""
        if not isinstance(reports, dict):
            return ""
        found = next((reports[k] for k in self.kinds if reports.get(k)), "")
        return browser_url(str(found))


class ValidationReportLink(ReportLink):
    """The Great Expectations Data Docs page of the batch the task validated (published or quarantined)."""

    name = "Validation report (Data Docs)"
    source_key = XCOM_KEY
    kinds = ("data_docs", "html")


class ValidationJsonLink(ReportLink):
    """The Great Expectations result of the batch, as JSON (for tools rather than people)."""

    name = "Validation result (JSON)"
    source_key = XCOM_KEY
    kinds = ("json",)


class DriftReportLink(ReportLink):
    """The Evidently report of the drift check's run."""

    name = "Drift report (Evidently)"
    kinds = ("report_html",)


class DriftJsonLink(ReportLink):
    """The drift check's summary as JSON (share, threshold, drifted columns)."""

    name = "Drift summary (JSON)"
    kinds = ("summary_json", "report_json")


class PerformanceReportLink(ReportLink):
    """The labelled-performance result of the run (metrics per model version, verdict)."""

    name = "Labelled performance (JSON)"
    kinds = ("report_json",)


LINKS = (ValidationReportLink(), ValidationJsonLink())
DRIFT_LINKS = (DriftReportLink(), DriftJsonLink())
PERFORMANCE_LINKS = (PerformanceReportLink(),)
ALL = (*LINKS, *DRIFT_LINKS, *PERFORMANCE_LINKS)
