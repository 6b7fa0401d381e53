"""One exception hierarchy for the whole core.

``deterministic`` errors (bad data, failed gate, bad spec) will fail the same way on every retry, so
the Airflow adapters turn them into ``AirflowFailException``; the others (a service down, a timeout)
are worth retrying.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

LIST_LIMIT = 10  # values a message lists before it says how many more there are
MESSAGE_CHARS = 500  # the longest one-line message the core raises (issue 10: every one is readable)


def listed(values: Iterable[Any], limit: int = LIST_LIMIT, *, sep: str = ", ") -> str:
    """``a, b, c, ... and 9,990 more``: a list of values for a message, capped so that a file with
    10,000 odd columns still gives a one-line error that a person can read."""
    items = [str(v) for v in values]
    if len(items) <= limit:
        return sep.join(items)
    return f"{sep.join(items[:limit])}{sep}... and {len(items) - limit:,} more"


def one_line(text: str, limit: int = MESSAGE_CHARS) -> str:
    """``text`` on one line, whitespace collapsed and cut at ``limit`` characters (a library's message
    can hold a whole table or traceback; the task log and notifications need one readable line)."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 14].rstrip() + " ... (cut off)"


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


class CoordinationStoreError(MlopsError):
    """The coordination store (the SQL database of the ledger, the locks and the retraining history,
    ``include.mlops.coordination``) refused a request for a reason that waiting does not fix: a wrong
    password, a missing database, a corrupt SQLite file, an unsupported URL. The message says what."""


class CoordinationStoreUnavailable(CoordinationStoreError, ServiceUnavailable):
    """The coordination store did not answer or is busy (server down, connection lost, database
    locked); retrying may help."""

    deterministic = False


class LockTimeout(CoordinationStoreUnavailable):
    """A cross-host lock stayed held by someone else for longer than the caller would wait; the
    message names the lock, its holder when known and the store. Retrying later may help."""

    def __init__(self, message: str, *, lock: str, holder: str | None = None):
        super().__init__(message)
        self.lock = lock
        self.holder = holder


class StageFailed(MlopsError):
    """A library (scikit-learn, Evidently, pandas, ...) refused this stage's data or settings; the
    same inputs fail the same way again, so it is not retried (see ``include.mlops.stages``)."""

    def __init__(self, message: str, *, stage: str, library: str):
        super().__init__(message)
        self.stage = stage
        self.library = library
