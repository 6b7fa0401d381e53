"""Ingestion: validate each landed file, then publish it as a versioned dataset or quarantine it.

Nothing is ever deleted. A published batch's source file moves to the archive; a failed one moves,
byte for byte, to quarantine next to its reports. Every validation leaves three reports beside its
dataset or quarantined file: ``validation.json`` (the result), ``validation.html`` (our page) and
``data_docs.html`` (Great Expectations' own Data Docs page). Reports are written before the file
moves, so a crash in between leaves the file in the landing zone to be processed again.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import pandas as pd

from include.mlops import storage
from include.mlops.data import landing
from include.mlops.data.chunked_validation import copy_as_parquet, should_stream
from include.mlops.data.file_validation import validate_streamed, validate_whole
from include.mlops.data.ledger import Ledger, Outcome
from include.mlops.data.reading import detect_format
from include.mlops.data.report_files import QUARANTINE_TIME, link_digest, report_uris, write_reports
from include.mlops.data.validation import failure_report, load_suite
from include.mlops.errors import MESSAGE_CHARS, DataError, NothingToDo, ValidationFailed, listed, one_line
from include.mlops.paths import resolve_project_path
from include.mlops.spec import PipelineSpec
from include.mlops.stages import staged

log = logging.getLogger(__name__)

SUMMARY_CHARS = 300  # the reasons in a quarantine message (the whole list is in the report)
SUMMARY_MIN_CHARS = 80  # ... however long the quarantine folder's path is


PublishStatus = Literal["published", "duplicate"]  # duplicate: same content already published


@dataclass(frozen=True)
class IngestResult:
    """A published batch; the validate task returns ``to_dict()`` to XCom for ``announce``."""

    source: str
    status: PublishStatus
    sha256: str
    location: str  # the dataset folder
    report: str
    rows: int = 0
    reasons: list[str] = field(default_factory=list)
    reports: dict[str, str] = field(default_factory=dict)  # "json", "html", "data_docs" -> URI

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy, with the keys ``announce`` reads (status, location, rows)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IngestResult:
        """The record back from ``to_dict()`` (an XCom value)."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


def discover(
    spec: PipelineSpec,
    *,
    run_id: str | None = None,
    list_files: Callable[[], list[landing.LandedFile]] | None = None,
    ledger: Ledger | None = None,
) -> list[str]:
    """Files waiting in the landing zone (temporary names such as ``.x``, ``x.part`` are skipped).

    Without ``run_id`` (the CLI, scripts): every visible file, as it is now. With it (the ingest
    DAG): only complete files (``data.settle_seconds``, see ``landing.wait_for_ready``), claimed for
    this run in the ledger, so that each file version is ingested exactly once. ``list_files``
    lists the landing zone; the DAG passes the providers' hooks, the default is ``landing.scan``.
    """
    landing_uri = spec.uri("landing")
    if run_id is None:
        return [u for u in storage.list_files(landing_uri) if not landing.is_temporary(storage.basename(u))]
    ledger = ledger or Ledger()
    ready, settling = landing.wait_for_ready(
        list_files or (lambda: landing.scan(landing_uri)), spec.data.settle_seconds
    )
    claimed = ledger.claim(spec.name, ready, run_id, stale_after=spec.data.claim_timeout)
    if settling:
        log.info(
            "Left %d file(s) still being written for a later run: %s",
            len(settling),
            [f.name for f in settling],
        )
    if len(claimed) < len(ready):
        log.info(
            "%d complete file(s) are already ingested or being ingested by another run (ledger %s)",
            len(ready) - len(claimed),
            ledger.path,
        )
    return [f.uri for f in claimed]


def ingest_claimed(
    spec: PipelineSpec, uri: str, *, run_id: str, ledger: Ledger | None = None
) -> IngestResult:
    """``ingest_file`` for a file this run claimed; records the outcome so it is processed once.

    An error other than a failed validation releases the claim, so the next run retries the file.
    """
    ledger = ledger or Ledger()
    if not ledger.renew(spec.name, uri, run_id):
        raise NothingToDo(
            f"pipeline {spec.name}: run {run_id} holds no claim on {uri} in the ledger (it was already "
            "ingested, or another run took it over); nothing to do"
        )
    try:
        result = ingest_file(spec, uri, run_id=run_id)
    except ValidationFailed as exc:
        ledger.finish(spec.name, uri, run_id, "quarantined", detail=exc.quarantined_to)
        raise
    except BaseException:
        try:
            ledger.release(spec.name, uri, run_id)
        except Exception:  # the claim then goes stale after data.claim_timeout
            log.exception("Could not release the claim of run %s on %s", run_id, uri)
        raise
    outcome: Outcome = result.status
    ledger.finish(spec.name, uri, run_id, outcome, detail=result.location)
    return result


@staged("ingest")
def ingest_file(spec: PipelineSpec, uri: str, *, run_id: str = "manual") -> IngestResult:
    """Validate one landed file; publish it, or quarantine it and raise ValidationFailed."""
    name = storage.basename(uri)
    link = _escaping_link(spec, uri)
    if link is not None:  # never read: quarantine the link itself, not what it points to
        digest = link_digest(link)
        reason = (
            f"{name}: is a symbolic link to {os.path.realpath(link)}, outside the landing zone; "
            "it was not read - land the file itself"
        )
        return _quarantine(spec, uri, digest, _failure(reason, name, digest, run_id), [reason], link=True)
    digest = storage.sha256(uri)
    suite = load_suite(resolve_project_path(spec.validation.suite))
    fmt = detect_format(uri, spec.data.format)
    frame: pd.DataFrame | None = None  # stays None for a large file: validated chunk by chunk
    try:
        if should_stream(uri, fmt):
            outcome = validate_streamed(spec, uri, fmt, suite)
        else:
            frame, outcome = validate_whole(spec, uri, fmt, suite)
    except DataError as exc:
        result, reasons = failure_report(str(exc)), [str(exc)]
    else:
        result, reasons = outcome.result, outcome.failures
    result["meta"] = {**result.get("meta", {}), "source": name, "sha256": digest, "run_id": run_id}

    if result["success"]:
        return _publish(spec, uri, fmt, frame, digest, result, run_id=run_id)
    return _quarantine(spec, uri, digest, result, reasons)


def _publish(
    spec: PipelineSpec,
    uri: str,
    fmt: str,
    frame: pd.DataFrame | None,
    digest: str,
    result: dict,
    *,
    run_id: str,
) -> IngestResult:
    name = storage.basename(uri)
    dataset = storage.join(spec.uri("datasets"), digest[:16])
    reports = report_uris(dataset)
    status: PublishStatus = "published"
    rows = len(frame) if frame is not None else int(result["meta"]["chunked"]["rows"])
    if not storage.is_complete(dataset):
        with storage.atomic_path(storage.join(dataset, "data.parquet")) as tmp:
            if frame is None:
                rows, columns = copy_as_parquet(uri, fmt, tmp)
            else:
                fs, path = storage.fs_for(tmp)  # fsspec, not pyarrow's own s3/gcs client
                with fs.open(path, "wb") as handle:
                    frame.to_parquet(handle, index=False)
                columns = list(map(str, frame.columns))
        write_reports(dataset, result, title=f"{spec.name}: {name}")
        manifest = {
            "pipeline": spec.name,
            "source": name,
            "sha256": digest,
            "rows": rows,
            "columns": columns,
            "published_at": time.time(),
            "run_id": run_id,
        }
        storage.mark_success(dataset, manifest)
        log.info("Published %s (%d rows) as %s", name, rows, dataset)
    else:
        status = "duplicate"
        log.info("%s has the same content as the published dataset %s; not published twice", name, dataset)
    archived = storage.move(
        uri, storage.join(spec.uri("archive"), time.strftime("%Y-%m-%d", time.gmtime()), name)
    )
    log.info("Archived the source file to %s", archived)
    return IngestResult(name, status, digest, dataset, reports["html"], rows=rows, reports=reports)


def _failure(reason: str, name: str, digest: str, run_id: str) -> dict:
    result = failure_report(reason)
    result["meta"] = {"source": name, "sha256": digest, "run_id": run_id}
    return result


def _escaping_link(spec: PipelineSpec, uri: str) -> str | None:
    """The local path of ``uri`` if it is a symbolic link resolving outside the landing zone."""
    local = storage.local_path(uri)
    zone = storage.local_path(spec.uri("landing"))
    if local is None or zone is None or not os.path.islink(local):
        return None
    target, root = os.path.realpath(local), os.path.realpath(zone)
    return None if os.path.commonpath([target, root]) == root else local


def _quarantine(
    spec: PipelineSpec, uri: str, digest: str, result: dict, reasons: list[str], *, link: bool = False
) -> IngestResult:
    name = storage.basename(uri)
    folder = storage.join(
        spec.uri("quarantine"), f"{time.strftime(QUARANTINE_TIME, time.gmtime())}-{digest[:8]}"
    )
    reports = write_reports(folder, result, title=f"{spec.name}: {name} (quarantined)")
    report = reports["html"]
    moved = storage.move(uri, storage.join(folder, name))
    moved_link = storage.local_path(moved) if link else None
    check = link_digest(moved_link) if moved_link else storage.sha256(moved)
    if check != digest:  # never expected; says so loudly if storage misbehaves
        raise DataError(f"{name}: checksum changed while moving to quarantine ({moved})")
    # One line whatever a reason holds: the folder is named once (file and reports are in it) and
    # the reasons get what is left of MESSAGE_CHARS, so the whole line stays readable.
    head = f"pipeline {spec.name}: {name} failed validation and was quarantined to {folder}: "
    tail = f". Report: {storage.basename(report)} in that folder"
    room = max(SUMMARY_MIN_CHARS, MESSAGE_CHARS - len(head) - len(tail))
    summary = one_line(listed(reasons, 5, sep="; "), min(room, SUMMARY_CHARS))
    raise ValidationFailed(
        head + summary + tail,
        quarantined_to=moved,
        report_uri=report,
        reports=reports,
    )
