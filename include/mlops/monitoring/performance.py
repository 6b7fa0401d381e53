"""Model performance once the ground truth arrives: predictions joined with labels that land later.

Labels land as CSV or Parquet files under ``monitoring.labels.uri``, each holding the spec's id column
and its target column (other columns are ignored; a later file wins for an id labelled twice). A check
joins them with the predictions scored within ``monitoring.labels.window`` and computes the task's
metrics per model version, from the stored predictions (and, for a binary classifier, the stored
probability): nothing is scored again. The champion's metrics are judged against the gate's absolute
thresholds (``evaluation.thresholds``) once at least ``monitoring.labels.min_rows`` of its predictions
are labelled; below that they are reported, not judged. Each check is written as ``performance.json``
next to the drift report, logged as MLflow metrics ``live_<metric>`` on the version's training run
(one point per check, so the MLflow UI draws the metric over time) and kept in the drift history.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pandas as pd

from include.mlops import storage
from include.mlops.data.reading import detect_format, read_columns, read_header
from include.mlops.errors import DataError, NothingToDo, listed
from include.mlops.metrics import Scored, from_scored
from include.mlops.spec import PipelineSpec
from include.mlops.stages import staged

log = logging.getLogger(__name__)

PREDICTION_COLUMNS = ["prediction", "probability", "model_version"]


def _ids_as(ids: pd.Series, dtype: Any, *, label: str) -> pd.Series:
    """A labels file's ids in the predictions' id type, so that ``7``, ``"7"`` and ``"007"`` all match
    the prediction of id 7 (and the newer of two files wins for it)."""
    if dtype is None or ids.dtype == dtype:
        return ids
    try:
        if pd.api.types.is_numeric_dtype(dtype):
            return pd.to_numeric(ids, errors="raise").astype(dtype)
        return ids.astype(str) if pd.api.types.is_object_dtype(dtype) else ids.astype(dtype)
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"{label}: its ids cannot be matched with the predictions' {dtype} ids "
            f"({str(exc).splitlines()[0]}); write the ids as the scoring input has them"
        ) from None


def read_labels(spec: PipelineSpec, *, id_dtype: Any = None) -> pd.DataFrame:
    """Every label received so far: ``id_column`` and ``target``, one row per id (the latest file wins).

    ``id_dtype`` (the predictions' id type) is applied file by file, before the latest-wins rule.
    """
    assert spec.monitoring.labels is not None and spec.data.id_column
    id_column, target = spec.data.id_column, spec.data.target
    frames = []
    for uri in storage.list_files(spec.uri("labels")):
        fmt = detect_format(uri, spec.monitoring.labels.format)
        name = storage.basename(uri)
        present = set(map(str, read_header(uri, fmt).columns))
        missing = [c for c in (id_column, target) if c not in present]
        if missing:
            raise DataError(
                f"pipeline {spec.name}: labels file {name} lacks column(s) {listed(missing)}; "
                f"a labels file holds the id column {id_column!r} and the target {target!r}"
            )
        frame = read_columns(uri, fmt, [id_column, target])
        if frame[target].isna().any():
            raise DataError(
                f"pipeline {spec.name}: labels file {name} has {int(frame[target].isna().sum())} "
                f"empty {target!r} value(s); leave unlabelled ids out of the file instead"
            )
        frame[id_column] = _ids_as(
            frame[id_column], id_dtype, label=f"pipeline {spec.name}: labels file {name}"
        )
        frames.append(frame.assign(_order=storage.modified(uri)))
    if not frames:
        return pd.DataFrame(columns=[id_column, target])
    labels = pd.concat(frames, ignore_index=True).sort_values("_order", kind="stable")
    return labels.drop_duplicates(subset=[id_column], keep="last").drop(columns="_order")


def window_predictions(spec: PipelineSpec, batches: list[dict[str, Any]], *, now: float) -> pd.DataFrame:
    """Predictions scored within the labels window: id, prediction, probability (binary), version."""
    import pyarrow.parquet as pq

    assert spec.monitoring.labels is not None and spec.data.id_column
    since = now - spec.monitoring.labels.window
    frames = []
    for batch in batches:
        if batch.get("scored_at", 0) < since or not batch.get("output"):
            continue
        fs, path = storage.fs_for(batch["output"])
        with fs.open(path, "rb") as handle:
            source = pq.ParquetFile(handle)
            wanted = [spec.data.id_column, *(c for c in PREDICTION_COLUMNS if c in source.schema_arrow.names)]
            frame = source.read(columns=wanted).to_pandas()
        frames.append(frame.assign(model_version=frame["model_version"].astype(str)))
    if not frames:
        return pd.DataFrame(columns=[spec.data.id_column, "prediction", "model_version"])
    predictions = pd.concat(frames, ignore_index=True)
    # Batches come most recent first: a row scored twice (rescored) counts once, with its latest score.
    return predictions.drop_duplicates(subset=[spec.data.id_column], keep="first")


def _truth_like(truth: pd.Series, predicted: pd.Series) -> np.ndarray:
    """The labels in the predictions' type (a CSV may bring ``1``/``0`` for a boolean target)."""
    if pd.api.types.is_bool_dtype(predicted) and not pd.api.types.is_bool_dtype(truth):
        text = truth.astype(str).str.strip().str.lower()
        mapped = text.map({"true": True, "1": True, "1.0": True, "false": False, "0": False, "0.0": False})
        return mapped.to_numpy(dtype=bool) if mapped.notna().all() else truth.to_numpy()
    try:
        return truth.astype(predicted.dtype).to_numpy()
    except (TypeError, ValueError):
        return truth.to_numpy()


def model_classes(predicted: pd.Series, binary: bool) -> list[Any]:
    """The classes the version predicts. A binary model (it stores ``probability``) has two, even
    when all its predictions in the window are of one class: 0/1 or False/True."""
    seen = set(pd.unique(predicted))
    if binary and len(seen) < 2 and seen <= {0, 1}:
        return [False, True] if pd.api.types.is_bool_dtype(predicted) else [0, 1]
    try:
        return sorted(seen)
    except TypeError:
        return sorted(seen, key=str)


def version_metrics(task: str, joined: pd.DataFrame, target: str, classes: list[Any]) -> dict[str, float]:
    """The task's metrics on labelled rows, from the stored predictions (no model is loaded).

    ``classes``: the version's classes (``model_classes`` over all its predictions in the window;
    unused for regression). A label outside them is a DataError: the labels are in another form
    than the model's target (``yes``/``no`` for a 0/1 model), and every metric would be wrong.
    """
    predicted = joined["prediction"]
    truth = _truth_like(joined[target], predicted)
    if task == "regression":
        return from_scored(task, truth, Scored(predicted.to_numpy(), None, []))
    unknown = sorted(set(pd.unique(truth)) - set(classes), key=str)
    if unknown:
        raise DataError(
            f"labels hold {target} value(s) {listed(map(repr, unknown), 5)} that are not among the "
            f"model's classes {listed(map(repr, classes))}; write the target as the training data has it"
        )
    proba = None
    if len(classes) == 2 and "probability" in joined and joined["probability"].notna().all():
        positive = joined["probability"].to_numpy(dtype=np.float64)
        proba = np.column_stack([1.0 - positive, positive])
    return from_scored(task, truth, Scored(predicted.to_numpy(), proba, classes))


def _judge(spec: PipelineSpec, metrics: dict[str, float]) -> list[str]:
    """The gate's absolute thresholds this version no longer meets on labelled data."""
    broken = []
    for metric, bound in spec.evaluation.thresholds.items():
        value = metrics.get(metric)
        if value is None:  # e.g. ROC AUC with one class among the labelled rows: said, not judged
            continue
        if bound.min is not None and value < bound.min:
            broken.append(f"{metric} {value:.4f} < {bound.min}")
        if bound.max is not None and value > bound.max:
            broken.append(f"{metric} {value:.4f} > {bound.max}")
    return broken


def evaluate(
    spec: PipelineSpec, batches: list[dict[str, Any]], *, champion: str | None, now: float | None = None
) -> dict[str, Any]:
    """Per model version: labelled rows, coverage and metrics; the champion's judged when enough."""
    if spec.monitoring.labels is None:
        raise NothingToDo(f"pipeline {spec.name}: no monitoring.labels in the spec")
    now = time.time() if now is None else now
    id_column, target = spec.data.id_column, spec.data.target
    predictions = window_predictions(spec, batches, now=now)
    if predictions.empty:
        raise NothingToDo(
            f"pipeline {spec.name}: no predictions scored within the last "
            f"{spec.monitoring.labels.window / 86400:g} day(s) to compare with labels"
        )
    labels = read_labels(spec, id_dtype=predictions[id_column].dtype)
    joined = predictions.merge(labels, on=id_column, how="inner", validate="one_to_one")
    versions: dict[str, Any] = {}
    for version, rows in predictions.groupby("model_version", sort=True):
        labelled = joined[joined["model_version"] == version]
        entry: dict[str, Any] = {
            "scored_rows": len(rows),
            "labelled_rows": len(labelled),
            "coverage": round(len(labelled) / len(rows), 4),
        }
        if len(labelled):
            binary = "probability" in rows and rows["probability"].notna().all()
            classes = model_classes(rows["prediction"], binary) if spec.data.task == "classification" else []
            try:
                entry["metrics"] = version_metrics(spec.data.task, labelled, target, classes)
            except DataError as exc:
                raise DataError(f"pipeline {spec.name}: v{version} on labelled predictions: {exc}") from None
        versions[str(version)] = entry
    result: dict[str, Any] = {
        "pipeline": spec.name,
        "checked_at": now,
        "window_seconds": spec.monitoring.labels.window,
        "labels_received": len(labels),
        "versions": versions,
        "model_version": champion,
        "primary_metric": spec.evaluation.primary_metric,
        "judged": False,
        "degraded": False,
        "reasons": [],
    }
    mine = versions.get(str(champion)) if champion is not None else None
    if mine and mine["labelled_rows"] >= spec.monitoring.labels.min_rows:
        result["judged"] = True
        result["reasons"] = _judge(spec, mine["metrics"])
        result["degraded"] = bool(result["reasons"])
        result["not_computed"] = [m for m in spec.evaluation.thresholds if m not in mine["metrics"]]
    elif mine:
        result["reasons"] = [
            f"only {mine['labelled_rows']} labelled row(s) for v{champion}; "
            f"judged from {spec.monitoring.labels.min_rows}"
        ]
    elif champion is None:
        result["reasons"] = ["no champion yet"]
    else:
        result["reasons"] = [f"no prediction of v{champion} scored within the window"]
    result["primary_value"] = ((mine or {}).get("metrics") or {}).get(spec.evaluation.primary_metric)
    return result


def log_to_tracking(client: Any, run_id: str, result: dict[str, Any]) -> None:
    """One point per check of every metric of the judged version, on its training run."""
    from mlflow.entities import Metric

    version = result["versions"].get(str(result.get("model_version"))) or {}
    stamp = int(result["checked_at"] * 1000)
    points = [
        Metric(f"live_{name}", float(value), stamp, int(result["checked_at"]))
        for name, value in (version.get("metrics") or {}).items()
    ]
    if version:
        points.append(
            Metric("live_labelled_rows", float(version["labelled_rows"]), stamp, int(result["checked_at"]))
        )
    if points:
        client.log_batch(run_id, metrics=points)


@staged("performance")
def check(spec: PipelineSpec, *, run_key: str, tracking_uri: str | None = None) -> dict[str, Any]:
    """Performance of the recent predictions that have labels; report under ``run_key``."""
    from include.mlops import tracking
    from include.mlops.scoring.inference import scored_batches
    from include.mlops.tracking import alias_version

    client = tracking.client(tracking_uri)
    with tracking.service_errors(tracking_uri):
        champion = alias_version(client, spec.model_name, "champion")
    result = evaluate(spec, scored_batches(spec), champion=champion)
    uri = storage.join(spec.uri("reports"), "performance", run_key, "performance.json")
    result["report_json"] = uri
    storage.write_json(uri, result)
    if champion is not None and str(champion) in result["versions"]:
        with tracking.service_errors(tracking_uri):
            run_id = str(client.get_model_version(spec.model_name, str(champion)).run_id)
            log_to_tracking(client, run_id, result)
    mine = result["versions"].get(str(champion), {})
    log.info(
        "Labelled performance of v%s: %d of %d predictions labelled; %s %s; %s",
        champion,
        mine.get("labelled_rows", 0),
        mine.get("scored_rows", 0),
        spec.evaluation.primary_metric,
        "n/a" if result["primary_value"] is None else f"{result['primary_value']:.4f}",
        ("below the gate's thresholds: " + "; ".join(result["reasons"]))
        if result["degraded"]
        else ("; ".join(result["reasons"]) or "within the gate's thresholds"),
    )
    return result
