"""Operator extra link from an ingest ``validate`` task to the validation report of its batch."""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import BaseOperatorLink

log = logging.getLogger(__name__)

XCOM_KEY = "validation_reports"  # {"json": uri, "html": uri, "data_docs": uri}, pushed by the task


def browser_url(uri: str) -> str:
    """A URI a browser can open: ``file://`` paths as they are, ``s3://`` / ``gs://`` as their consoles."""
    if uri.startswith("s3://"):
        bucket, _, key = uri[5:].partition("/")
        return f"https://s3.console.aws.amazon.com/s3/object/{bucket}?prefix={key}"
    if uri.startswith("gs://"):
        return f"https://console.cloud.google.com/storage/browser/_details/{uri[5:]}"
    return uri


class ValidationReportLink(BaseOperatorLink):
    """The Great Expectations Data Docs page of the batch the task validated (published or quarantined).

    The task pushes the report URIs to XCom (``validation_reports``) before it succeeds or fails;
    the link reads them back for the task instance, the Airflow 3 way.
    """

    name = "Validation report (Data Docs)"
    kind = "data_docs"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        try:
            reports = XCom.get_value(ti_key=ti_key, key=XCOM_KEY)
        except Exception as exc:  # no link rather than a broken task page
            log.warning("Could not read the validation report URIs from XCom: %s", exc)
            return ""
        if not isinstance(reports, dict):
            return ""
        return browser_url(str(reports.get(self.kind) or reports.get("html") or ""))


class ValidationJsonLink(ValidationReportLink):
    name = "Validation result (JSON)"
    kind = "json"


LINKS = (ValidationReportLink(), ValidationJsonLink())
