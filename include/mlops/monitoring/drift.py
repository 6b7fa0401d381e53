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
the two row samples and carrying the full-data values and verdicts, so it agrees with the summary.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

import pandas as pd

from include.mlops import storage, tracking
from include.mlops.data.reading import detect_format
from include.mlops.errors import DataError, NothingToDo
from include.mlops.monitoring import drift_stats
from include.mlops.monitoring.drift_stats import ColumnSummary, Decision
from include.mlops.monitoring.reference import Reference, load_reference
from include.mlops.scoring.inference import scored_batches
from include.mlops.spec import PipelineSpec
from include.mlops.tracking import alias_version

log = logging.getLogger(__name__)

BATCH_ROWS = 1 << 17  # rows per Arrow batch read from the window
PREDICTION_COLUMNS = ("prediction", "probability")
FULL_DATA_SUFFIX = " (full data)"

# Verdicts computed on the full data, looked up by the report's stand-in tests (see _full_data_test).
_FULL_DATA_DECISIONS: ContextVar[dict[str, Decision]] = ContextVar("mlops_full_data_decisions")


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
# The report
# ---------------------------------------------------------------------------------------------


def _full_data_test(base: Any) -> Any:
    """An Evidently StatTest that reports the verdict already computed on the full data.

    The report is drawn on row samples; this stand-in, registered once per base test, makes its
    values, verdicts and drift share the full-data ones. Its name keeps Evidently's display name
    (with "p_value" for p-value tests), so the snapshot reads like one of Evidently's own.
    """
    from evidently.legacy.calculations.stattests import StatTest, register_stattest
    from evidently.legacy.calculations.stattests.registry import (
        StatTestNotFoundError,
        get_registered_stattest,
    )

    name = base.display_name + FULL_DATA_SUFFIX
    try:
        return get_registered_stattest(name, base.allowed_feature_types[0])
    except StatTestNotFoundError:
        pass

    def full_data_verdict(reference: pd.Series, current: pd.Series, *_: Any) -> tuple[float, bool]:
        decision = _FULL_DATA_DECISIONS.get()[str(current.name)]
        return decision.value, decision.drifted

    test = StatTest(
        name=name,
        display_name=name,
        allowed_feature_types=list(base.allowed_feature_types),
        default_threshold=base.default_threshold,
    )
    register_stattest(test, default_impl=full_data_verdict)
    return test


def render_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    decisions: dict[str, Decision],
    prediction_decisions: dict[str, Decision],
    *,
    drift_share: float,
) -> tuple[str, str, list[str]]:
    """Evidently's DataDriftPreset (plus prediction drift) on samples, with full-data verdicts.

    Returns the HTML, the JSON and the columns left out of the report because a sample has no
    value in them (their verdicts are still in the summary).
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.legacy.calculations import stattests
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    by_name = {t.name: t for t in vars(stattests).values() if isinstance(t, stattests.StatTest)}
    every = {**decisions, **prediction_decisions}

    def drawable(column: str) -> bool:
        return all(column in f.columns and f[column].notna().any() for f in (reference, current))

    shown = [c for c in every if drawable(c)]
    left_out = [c for c in every if c not in shown]
    methods = {c: _full_data_test(by_name[every[c].stattest]).name for c in shown}
    definition = DataDefinition(
        numerical_columns=[c for c in shown if every[c].column_type == "num"],
        categorical_columns=[c for c in shown if every[c].column_type == "cat"],
    )
    features = [c for c in decisions if c in shown]
    metrics: list[Any] = [
        DataDriftPreset(
            columns=features,
            drift_share=drift_share,
            per_column_method={c: methods[c] for c in features},
            per_column_threshold={c: decisions[c].threshold for c in features},
        )
    ]
    metrics += [
        ValueDrift(column=c, method=methods[c], threshold=d.threshold)
        for c, d in prediction_decisions.items()
        if c in shown
    ]
    if not metrics[0].columns:
        metrics = metrics[1:]
    if not metrics:
        log.warning("No column has values in both report samples; the report is empty")
        return "<html><body>No column has values in both samples.</body></html>", "{}", left_out
    token = _FULL_DATA_DECISIONS.set(every)
    try:
        snapshot = Report(metrics).run(
            current_data=Dataset.from_pandas(
                current[shown].reset_index(drop=True), data_definition=definition
            ),
            reference_data=Dataset.from_pandas(
                reference[shown].reset_index(drop=True), data_definition=definition
            ),
        )
        return snapshot.get_html_str(as_iframe=False), snapshot.json(), left_out
    finally:
        _FULL_DATA_DECISIONS.reset(token)


def column_decisions(snapshot: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per-column verdicts from an Evidently snapshot (p-value tests drift below, distances at/above)."""
    decisions = {}
    for metric in snapshot["metrics"]:
        config = metric.get("config", {})
        if not config.get("type", "").endswith("ValueDrift"):
            continue
        method, threshold, value = config["method"], config["threshold"], float(metric["value"])
        drifted = value < threshold if "p_value" in method else value >= threshold
        decisions[config["column"]] = {
            "method": method,
            "threshold": threshold,
            "value": value,
            "drifted": drifted,
        }
    return decisions


# ---------------------------------------------------------------------------------------------
# The check
# ---------------------------------------------------------------------------------------------


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
) -> dict[str, Any]:
    """Compare the window (input files, and their prediction files) with the reference; write reports."""
    started = time.monotonic()
    columns = list(reference.features)
    window = sketch_files(inputs, fmt, reference.features, columns, sample_rows=sample_rows, seed=seed)
    present = [c for c in columns if window.sketches[c].kinds]
    decisions, skipped = drift_stats.compare(reference.features, window.summaries(), present)
    skipped.update({c: "not in the current data" for c in columns if c not in present})
    if not decisions:
        raise DataError(
            "no column could be compared with the reference: "
            + "; ".join(f"{c}: {why}" for c, why in skipped.items())
        )
    current_sample = window.sample.frame()

    prediction_decisions: dict[str, Decision] = {}
    reference_sample = reference.sample
    pred_columns = [c for c in PREDICTION_COLUMNS if c in reference.predictions]
    if pred_columns and outputs:
        scored = sketch_files(
            outputs, "parquet", reference.predictions, pred_columns, sample_rows=sample_rows, seed=seed
        )
        live = [c for c in pred_columns if scored.sketches[c].rows]
        prediction_decisions, pred_skipped = drift_stats.compare(
            reference.predictions, scored.summaries(), live
        )
        skipped.update({f"prediction:{c}": why for c, why in pred_skipped.items()})
        if scored.rows == window.rows:  # same row positions, hence the same sampled rows
            current_sample = pd.concat([current_sample, scored.sample.frame()[live]], axis=1)
        if reference.prediction_sample is not None and len(reference.prediction_sample) == len(
            reference_sample
        ):
            reference_sample = pd.concat(
                [reference_sample.reset_index(drop=True), reference.prediction_sample], axis=1
            )
    checked = time.monotonic()

    html, report_json, left_out = render_report(
        reference_sample,
        current_sample,
        decisions,
        prediction_decisions,
        drift_share=drift_share_threshold,
    )
    html_uri, json_uri = storage.join(folder, "report.html"), storage.join(folder, "report.json")
    storage.write_text(html_uri, html)
    storage.write_text(json_uri, report_json)
    share = sum(d.drifted for d in decisions.values()) / len(decisions)
    log.info(
        "Window of %d rows summarised and tested in %.1f s, report in %.1f s",
        window.rows,
        checked - started,
        time.monotonic() - checked,
    )
    return {
        "drift_share": share,
        "threshold": drift_share_threshold,
        "drift_detected": share >= drift_share_threshold,
        "drifted_columns": sorted(c for c, d in decisions.items() if d.drifted),
        "columns": {c: d.to_dict() for c, d in decisions.items()},
        "skipped_columns": skipped,
        "prediction_drift": _prediction_drift(prediction_decisions),
        "current_rows": window.rows,
        "reference_rows": reference.rows,
        "report_sample_rows": {"reference": len(reference_sample), "current": len(current_sample)},
        "report_left_out": left_out,
        "report_html": html_uri,
        "report_json": json_uri,
    }


def check(spec: PipelineSpec, *, run_key: str, tracking_uri: str | None = None) -> dict[str, Any]:
    """Drift of the latest scored window against the champion's reference; reports under ``run_key``."""
    client = tracking.client(tracking_uri)
    with tracking.service_errors(tracking_uri):
        version = alias_version(client, spec.model_name, "champion")
        if version is None:
            raise NothingToDo(
                f"pipeline {spec.name}: no champion yet, so no training reference to compare with"
            )
        run_id = client.get_model_version(spec.model_name, version).run_id
        reference = load_reference(run_id, client)
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
    result = {
        "pipeline": spec.name,
        "model_version": version,
        **compared,
        "inputs": inputs,
        "checked_at": time.time(),
    }
    result["summary_json"] = storage.join(folder, "summary.json")
    storage.write_json(result["summary_json"], result)
    log.info(
        "Drift share %.2f (threshold %.2f) on %d rows; drifted: %s; report: %s",
        result["drift_share"],
        spec.monitoring.drift_share_threshold,
        result["current_rows"],
        ", ".join(result["drifted_columns"]) or "none",
        result["report_html"],
    )
    return result
