"""Drift check: recent scoring inputs against the champion's training reference, with Evidently.

The reference is saved with each model version at training time: per-column statistics of the
whole training set and of the model's predictions on it (``data/reference_profile.json``), plus a
row sample of the features (``data/reference.parquet``) and its predictions. The current window is
the ``monitoring.window_batches`` most recently scored input files and their prediction files.

Why not ``Report([DataDriftPreset()])`` on the full frames: it holds both in memory and computes
each column's test several times, which takes minutes and gigabytes on millions of rows. Here the
window is streamed in bounded memory (``drift_stats``) and each column gets the test, threshold and
verdict Evidently would give it on the full data, from Evidently's own ``StatTest`` run on summaries
(see ``docs/drift.md``). The HTML + JSON report is still Evidently's ``DataDriftPreset``, drawn on
the two row samples and carrying the full-data values and verdicts, so it agrees with the summary
(``drift_report``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import pandas as pd

from include.mlops import storage, tracking
from include.mlops.data.reading import detect_format
from include.mlops.errors import DataError, NothingToDo, listed
from include.mlops.monitoring import drift_stats
from include.mlops.monitoring.drift_report import render_report
from include.mlops.monitoring.drift_stats import ColumnSummary, Decision
from include.mlops.monitoring.reference import Reference, load_reference
from include.mlops.scoring.inference import scored_batches
from include.mlops.spec import PipelineSpec
from include.mlops.stages import staged
from include.mlops.tracking import alias_version

log = logging.getLogger(__name__)

BATCH_ROWS = 1 << 17  # rows per Arrow batch read from the window
PREDICTION_COLUMNS = ("prediction", "probability")


# ---------------------------------------------------------------------------------------------
# Streaming the window
# ---------------------------------------------------------------------------------------------


def _tables(uri: str, fmt: str, columns: list[str], rows: int) -> Iterator[Any]:
    """The file's wanted columns as Arrow tables of at most ``rows`` rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs, path = storage.fs_for(uri)
    try:
        with fs.open(path, "rb") as handle:
            if fmt == "parquet":
                # No pre-buffering: it coalesces reads across row groups and keeps them until the
                # file is closed, so memory would grow with the file instead of the batch.
                source = pq.ParquetFile(handle, pre_buffer=False)
                wanted = [c for c in columns if c in source.schema_arrow.names]
                if not wanted:
                    yield pa.table({"__rows__": pa.nulls(source.metadata.num_rows)})
                    return
                for batch in source.iter_batches(batch_size=rows, columns=wanted):
                    yield pa.Table.from_batches([batch])
            else:
                wanted_set = set(columns)
                for chunk in pd.read_csv(handle, chunksize=rows, usecols=lambda c: c in wanted_set):
                    yield pa.Table.from_pandas(chunk, preserve_index=False)
    except (OSError, ValueError, pa.ArrowException) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{storage.basename(uri)}: cannot be read as {fmt}: {reason}") from None


def sketch_files(
    uris: list[str],
    fmt: str,
    reference: dict[str, ColumnSummary],
    columns: list[str],
    *,
    sample_rows: int,
    seed: int,
) -> drift_stats.WindowSketch:
    """One streaming pass over the files: per-column summaries and a row sample."""
    sketch = drift_stats.WindowSketch(reference, sample_rows=sample_rows, seed=seed, columns=columns)
    for uri in uris:
        for table in _tables(uri, detect_format(uri, fmt), columns, BATCH_ROWS):
            sketch.update(table)
    return sketch


# ---------------------------------------------------------------------------------------------
# The records
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WindowComparison:
    """The verdicts of one window against a reference, and where its report was written."""

    drift_share: float
    threshold: float
    drift_detected: bool
    drifted_columns: list[str]
    columns: dict[str, dict[str, Any]]
    skipped_columns: dict[str, str]
    prediction_drift: dict[str, Any] | None
    current_rows: int
    reference_rows: int
    report_sample_rows: dict[str, int]
    report_left_out: list[str]
    report_html: str
    report_json: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy (the summary file and the drift task's XCom value hold it)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WindowComparison:
        """The record back from a dict holding (at least) its keys."""
        return cls(**{f.name: data[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class DriftResult:
    """A drift check of a pipeline's champion; crosses to the retraining task as ``to_dict()``."""

    pipeline: str
    model_version: str
    comparison: WindowComparison
    inputs: list[str]
    checked_at: float
    summary_json: str

    def to_dict(self) -> dict[str, Any]:
        """The flat dict the drift task returns to XCom and writes as ``summary.json``."""
        return {
            "pipeline": self.pipeline,
            "model_version": self.model_version,
            **self.comparison.to_dict(),
            "inputs": list(self.inputs),
            "checked_at": self.checked_at,
            "summary_json": self.summary_json,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DriftResult:
        """The record back from ``to_dict()`` (an XCom value or a ``summary.json``)."""
        return cls(
            pipeline=data["pipeline"],
            model_version=data["model_version"],
            comparison=WindowComparison.from_dict(data),
            inputs=list(data["inputs"]),
            checked_at=data["checked_at"],
            summary_json=data["summary_json"],
        )


# ---------------------------------------------------------------------------------------------
# The check
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tested:
    """Verdicts and report samples of one window, before the report is drawn."""

    decisions: dict[str, Decision]
    prediction_decisions: dict[str, Decision]
    skipped: dict[str, str]
    current_rows: int
    reference_sample: pd.DataFrame
    current_sample: pd.DataFrame


def _prediction_drift(decisions: dict[str, Decision]) -> dict[str, Any] | None:
    if not decisions:
        return None
    drifted = sorted(c for c, d in decisions.items() if d.drifted)
    return {
        "drift_detected": bool(drifted),
        "drifted_columns": drifted,
        "columns": {c: d.to_dict() for c, d in decisions.items()},
    }


def compare_window(
    reference: Reference,
    *,
    inputs: list[str],
    outputs: list[str],
    fmt: str,
    folder: str,
    drift_share_threshold: float,
    sample_rows: int,
    seed: int = 0,
) -> WindowComparison:
    """Compare the window (input files, and their prediction files) with the reference; write reports."""
    started = time.monotonic()
    tested = _test_features(reference, inputs, fmt, sample_rows=sample_rows, seed=seed)
    if outputs:
        tested = _test_predictions(reference, tested, outputs, sample_rows=sample_rows, seed=seed)
    checked = time.monotonic()
    html_uri, json_uri, left_out = _write_report(tested, folder, drift_share_threshold)
    log.info(
        "Window of %d rows summarised and tested in %.1f s, report in %.1f s",
        tested.current_rows,
        checked - started,
        time.monotonic() - checked,
    )
    decisions = tested.decisions
    share = sum(d.drifted for d in decisions.values()) / len(decisions)
    return WindowComparison(
        drift_share=share,
        threshold=drift_share_threshold,
        drift_detected=share >= drift_share_threshold,
        drifted_columns=sorted(c for c, d in decisions.items() if d.drifted),
        columns={c: d.to_dict() for c, d in decisions.items()},
        skipped_columns=tested.skipped,
        prediction_drift=_prediction_drift(tested.prediction_decisions),
        current_rows=tested.current_rows,
        reference_rows=reference.rows,
        report_sample_rows={"reference": len(tested.reference_sample), "current": len(tested.current_sample)},
        report_left_out=left_out,
        report_html=html_uri,
        report_json=json_uri,
    )


def _test_features(
    reference: Reference, inputs: list[str], fmt: str, *, sample_rows: int, seed: int
) -> _Tested:
    """Stream the input files once and test every feature column the window has values in."""
    columns = list(reference.features)
    window = sketch_files(inputs, fmt, reference.features, columns, sample_rows=sample_rows, seed=seed)
    present = [c for c in columns if window.sketches[c].kinds]
    decisions, skipped = drift_stats.compare(reference.features, window.summaries(), present)
    skipped.update({c: "not in the current data" for c in columns if c not in present})
    if not decisions:
        raise DataError(
            "no column could be compared with the reference: "
            + listed((f"{c}: {why}" for c, why in skipped.items()), 5, sep="; ")
        )
    return _Tested(decisions, {}, skipped, window.rows, reference.sample, window.sample.frame())


def _test_predictions(
    reference: Reference, tested: _Tested, outputs: list[str], *, sample_rows: int, seed: int
) -> _Tested:
    """Test the model's predictions too, and add them to the report samples when rows line up."""
    pred_columns = [c for c in PREDICTION_COLUMNS if c in reference.predictions]
    if not pred_columns:
        return tested
    scored = sketch_files(
        outputs, "parquet", reference.predictions, pred_columns, sample_rows=sample_rows, seed=seed
    )
    live = [c for c in pred_columns if scored.sketches[c].rows]
    prediction_decisions, pred_skipped = drift_stats.compare(reference.predictions, scored.summaries(), live)
    skipped = {**tested.skipped, **{f"prediction:{c}": why for c, why in pred_skipped.items()}}
    current_sample, reference_sample = tested.current_sample, tested.reference_sample
    if scored.rows == tested.current_rows:  # same row positions, hence the same sampled rows
        current_sample = pd.concat([current_sample, scored.sample.frame()[live]], axis=1)
    if reference.prediction_sample is not None and len(reference.prediction_sample) == len(reference_sample):
        reference_sample = pd.concat(
            [reference_sample.reset_index(drop=True), reference.prediction_sample], axis=1
        )
    return replace(
        tested,
        prediction_decisions=prediction_decisions,
        skipped=skipped,
        reference_sample=reference_sample,
        current_sample=current_sample,
    )


def _write_report(tested: _Tested, folder: str, drift_share_threshold: float) -> tuple[str, str, list[str]]:
    """Draw Evidently's report and write ``report.html`` and ``report.json``; returns their URIs and
    the columns left out of it."""
    html, report_json, left_out = render_report(
        tested.reference_sample,
        tested.current_sample,
        tested.decisions,
        tested.prediction_decisions,
        drift_share=drift_share_threshold,
    )
    html_uri, json_uri = storage.join(folder, "report.html"), storage.join(folder, "report.json")
    storage.write_text(html_uri, html)
    storage.write_text(json_uri, report_json)
    return html_uri, json_uri, left_out


def check(spec: PipelineSpec, *, run_key: str, tracking_uri: str | None = None) -> dict[str, Any]:
    """Drift of the latest scored window against the champion's reference; reports under ``run_key``.

    Returns ``DriftResult.to_dict()``: the drift task stores it in XCom for the retraining request.
    """
    return run_check(spec, run_key=run_key, tracking_uri=tracking_uri).to_dict()


@staged("drift")
def run_check(spec: PipelineSpec, *, run_key: str, tracking_uri: str | None = None) -> DriftResult:
    """``check`` as a record, for callers in the core."""
    version, reference = _champion_reference(spec, tracking_uri)
    batches = scored_batches(spec)[: spec.monitoring.window_batches]
    if not batches:
        raise NothingToDo(f"pipeline {spec.name}: no scored input yet to compare with the reference")
    folder = storage.join(spec.uri("reports"), "drift", run_key)
    # A scored partition is one file or a folder of files ("inputs", in the order they were scored).
    inputs = [uri for b in batches for uri in (b.get("inputs") or [b["input"]])]
    outputs = [b["output"] for b in batches if b.get("output")]
    try:
        compared = compare_window(
            reference,
            inputs=inputs,
            outputs=outputs if len(outputs) == len(batches) else [],
            fmt=spec.inference.format,
            folder=folder,
            drift_share_threshold=spec.monitoring.drift_share_threshold,
            sample_rows=spec.training.reference_rows,
            seed=spec.training.seed,
        )
    except DataError as exc:
        raise DataError(f"pipeline {spec.name}: drift check v{version}: {exc}") from None
    result = DriftResult(
        pipeline=spec.name,
        model_version=version,
        comparison=compared,
        inputs=inputs,
        checked_at=time.time(),
        summary_json=storage.join(folder, "summary.json"),
    )
    storage.write_json(result.summary_json, result.to_dict())
    log.info(
        "Drift share %.2f (threshold %.2f) on %d rows; drifted: %s; report: %s",
        compared.drift_share,
        spec.monitoring.drift_share_threshold,
        compared.current_rows,
        listed(compared.drifted_columns) or "none",
        compared.report_html,
    )
    return result


def _champion_reference(spec: PipelineSpec, tracking_uri: str | None) -> tuple[str, Reference]:
    """The champion's version and the training reference saved with it."""
    client = tracking.client(tracking_uri)
    with tracking.service_errors(tracking_uri):
        version = alias_version(client, spec.model_name, "champion")
        if version is None:
            raise NothingToDo(
                f"pipeline {spec.name}: no champion yet, so no training reference to compare with"
            )
        run_id = str(client.get_model_version(spec.model_name, version).run_id)
        return version, load_reference(run_id, client)
