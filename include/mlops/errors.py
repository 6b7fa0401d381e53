"""One exception hierarchy for the whole core.

``deterministic`` errors (bad data, failed gate, bad spec) will fail the same way on every retry, so
the Airflow adapters turn them into ``AirflowFailException``; the others (a service down, a timeout)
are worth retrying.
"""

from __future__ import annotations


class MlopsError(Exception):
    """Base class of every error the core raises on purpose."""

    deterministic = True


class SpecError(MlopsError):
    """A pipeline spec is malformed; the message names the file and the field."""


class DataError(MlopsError):
    """An input file cannot be read or does not have the shape the spec declares."""


class ValidationFailed(MlopsError):
    """A batch broke its data contract; it was quarantined next to its report."""

    def __init__(
        self,
        message: str,
        *,
        quarantined_to: str | None = None,
        report_uri: str | None = None,
        reports: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.quarantined_to = quarantined_to
        self.report_uri = report_uri
        self.reports = reports or {}  # "json", "html", "data_docs" -> URI


class GateFailed(MlopsError):
    """A candidate model did not pass the evaluation gate; the champion is untouched."""

    def __init__(self, message: str, *, decision: dict | None = None):
        super().__init__(message)
        self.decision = decision or {}


class PromotionRefused(MlopsError):
    """Promotion or rollback would not be safe (e.g. the champion moved since evaluation)."""


class NothingToDo(MlopsError):
    """There is no input for this stage (no new files, no champion yet); the task is skipped."""


class ServiceUnavailable(MlopsError):
    """A service (MLflow tracking server, object store) did not answer; retrying may help."""

    deterministic = False
