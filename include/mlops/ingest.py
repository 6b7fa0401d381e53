"""Ingestion: validate each landed file, then publish it as a versioned dataset or quarantine it.

Nothing is ever deleted. A published batch's source file moves to the archive; a failed one moves,
byte for byte, to quarantine next to its JSON and HTML report. Reports are written before the file
moves, so a crash in between leaves the file in the landing zone to be processed again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field

import pandas as pd

from include.mlops import storage
from include.mlops.errors import DataError, ValidationFailed
from include.mlops.paths import resolve_project_path
from include.mlops.spec import PipelineSpec
from include.mlops.tabular import check_columns, detect_format, read_frame
from include.mlops.validation import failure_report, load_suite, render_html, validate_frame

log = logging.getLogger(__name__)


@dataclass
class IngestResult:
    source: str
    status: str  # "published" | "duplicate" (same content already published)
    sha256: str
    location: str  # dataset folder or quarantined file
    report: str
    rows: int = 0
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def discover(spec: PipelineSpec) -> list[str]:
    """Files waiting in the landing zone (complete files only: temporary names are skipped)."""
    return storage.list_files(spec.uri("landing"))


def ingest_file(spec: PipelineSpec, uri: str, *, run_id: str = "manual") -> IngestResult:
    """Validate one landed file; publish it, or quarantine it and raise ValidationFailed."""
    name = storage.basename(uri)
    digest = storage.sha256(uri)
    suite = load_suite(resolve_project_path(spec.validation.suite))
    frame: pd.DataFrame | None = None
    try:
        frame = read_frame(uri, detect_format(uri, spec.data.format))
        check_columns(frame, spec, name=name)
    except DataError as exc:
        result, reasons = failure_report(str(exc)), [str(exc)]
    else:
        outcome = validate_frame(frame, suite)
        result, reasons = outcome.result, outcome.failures
    result["meta"] = {**result.get("meta", {}), "source": name, "sha256": digest, "run_id": run_id}

    if result["success"] and frame is not None:
        return _publish(spec, uri, frame, digest, result, run_id=run_id)
    return _quarantine(spec, uri, digest, result, reasons)


def _publish(
    spec: PipelineSpec, uri: str, frame: pd.DataFrame, digest: str, result: dict, *, run_id: str
) -> IngestResult:
    name = storage.basename(uri)
    dataset = storage.join(spec.uri("datasets"), digest[:16])
    report = storage.join(dataset, "validation.html")
    status = "published"
    if not storage.is_complete(dataset):
        with storage.atomic_path(storage.join(dataset, "data.parquet")) as tmp:
            frame.to_parquet(storage.local_path(tmp) or tmp, index=False)
        storage.write_json(storage.join(dataset, "validation.json"), result)
        storage.write_text(report, render_html(result, title=f"{spec.name}: {name}"))
        manifest = {
            "pipeline": spec.name,
            "source": name,
            "sha256": digest,
            "rows": len(frame),
            "columns": list(map(str, frame.columns)),
            "published_at": time.time(),
            "run_id": run_id,
        }
        storage.mark_success(dataset, manifest)
        log.info("Published %s (%d rows) as %s", name, len(frame), dataset)
    else:
        status = "duplicate"
        log.info("%s has the same content as the published dataset %s; not published twice", name, dataset)
    archived = storage.move(
        uri, storage.join(spec.uri("archive"), time.strftime("%Y-%m-%d", time.gmtime()), name)
    )
    log.info("Archived the source file to %s", archived)
    return IngestResult(name, status, digest, dataset, report, rows=len(frame))


def _quarantine(spec: PipelineSpec, uri: str, digest: str, result: dict, reasons: list[str]) -> IngestResult:
    name = storage.basename(uri)
    folder = storage.join(
        spec.uri("quarantine"), f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{digest[:8]}"
    )
    report = storage.join(folder, "validation.html")
    storage.write_json(storage.join(folder, "validation.json"), result)
    storage.write_text(report, render_html(result, title=f"{spec.name}: {name} (quarantined)"))
    moved = storage.move(uri, storage.join(folder, name))
    if storage.sha256(moved) != digest:  # never expected; says so loudly if storage misbehaves
        raise DataError(f"{name}: checksum changed while moving to quarantine ({moved})")
    summary = "; ".join(reasons[:5]) + (f"; and {len(reasons) - 5} more" if len(reasons) > 5 else "")
    raise ValidationFailed(
        f"pipeline {spec.name}: {name} failed validation and was quarantined to {moved}: {summary}. "
        f"Report: {report}",
        quarantined_to=moved,
        report_uri=report,
    )


def published_datasets(spec: PipelineSpec) -> list[dict]:
    """Manifests of every complete published dataset, oldest first, with their ``uri``."""
    manifests = []
    for folder in storage.list_dirs(spec.uri("datasets")):
        if storage.is_complete(folder):
            manifest = storage.read_json(storage.join(folder, storage.SUCCESS))
            manifests.append({**manifest, "uri": folder})
    return sorted(manifests, key=lambda m: m.get("published_at", 0))


def load_training_frame(spec: PipelineSpec) -> tuple[pd.DataFrame, list[dict]]:
    """All published datasets, concatenated; later batches win on duplicate ids."""
    manifests = published_datasets(spec)
    if not manifests:
        raise DataError(f"pipeline {spec.name}: no validated dataset has been published yet")
    frames = [pd.read_parquet(storage.join(m["uri"], "data.parquet")) for m in manifests]
    frame = pd.concat(frames, ignore_index=True)
    if spec.data.id_column:
        frame = frame.drop_duplicates(subset=[spec.data.id_column], keep="last", ignore_index=True)
    return frame, manifests
