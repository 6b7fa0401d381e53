"""The gate's checks beyond thresholds: bootstrap CI, slices, latency, size, scoring schema.

Each function returns ``GateCheck`` records (see records.py), so every decision lists what was
measured, against what, and why it passed or failed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from include.mlops import metrics, storage
from include.mlops.data.reading import detect_format
from include.mlops.errors import listed
from include.mlops.gate import bootstrap
from include.mlops.gate.policy import bounds
from include.mlops.gate.records import GateCheck
from include.mlops.spec import PipelineSpec, SliceFloor


def bootstrap_check(
    spec: PipelineSpec,
    target: pd.Series,
    candidate: metrics.Scored,
    champion: metrics.Scored,
    exact: float,
) -> tuple[GateCheck, np.ndarray]:
    """The paired-bootstrap interval of the primary metric's improvement must clear the margin.

    Returns the check and the resampled improvements (the report draws them).
    """
    policy = spec.evaluation.bootstrap
    primary = spec.evaluation.primary_metric
    margin = policy.margin if policy.margin is not None else -spec.evaluation.champion.max_regression
    result = bootstrap.paired(
        spec.data.task,
        primary,
        np.asarray(target),
        candidate,
        champion,
        resamples=policy.resamples,
        confidence=policy.confidence,
        seed=policy.seed,
        exact=exact,
    )
    passed = result["lower"] >= margin
    pct = f"{policy.confidence:.0%}"
    record = GateCheck(
        f"bootstrap:{primary}",
        result["lower"],
        passed,
        f"{pct} lower bound >= {margin:+.4f}",
        f"{primary} improvement {result['improvement']:+.4f}, {pct} CI [{result['lower']:+.4f}, {result['upper']:+.4f}] "
        f"({policy.resamples} paired resamples, seed {policy.seed}); the lower bound "
        f"{'clears' if passed else 'does not clear'} the margin {margin:+.4f}",
        interval=(result["lower"], result["upper"]),
        margin=margin,
    )
    return record, result["distribution"]


def slice_checks(spec: PipelineSpec, holdout: pd.DataFrame, candidate: metrics.Scored) -> list[GateCheck]:
    """Each slice floor judged on every segment of its column (a good average can hide a bad segment)."""
    records = []
    target = holdout[spec.data.target].to_numpy()
    for floor in spec.evaluation.slices:
        name = f"slice:{floor.column}:{floor.metric}"
        if floor.column not in holdout.columns:
            reason = f"slice column {floor.column!r} is not in the holdout"
            records.append(GateCheck(name, None, False, "column present", reason))
            continue
        segments = holdout.groupby(floor.column, dropna=False, observed=True).indices.items()
        records += [
            segment_check(
                spec, floor, f"{name}:{segment}", f"{floor.column}={segment}", index, target, candidate
            )
            for segment, index in segments
        ]
    return records


def segment_check(
    spec: PipelineSpec,
    floor: SliceFloor,
    name: str,
    label: str,
    index: np.ndarray,
    target: np.ndarray,
    candidate: metrics.Scored,
) -> GateCheck:
    """One segment of a slice; segments below ``min_rows`` are reported but not judged."""
    bound = bounds(floor.min, floor.max)
    if len(index) < floor.min_rows:
        reason = f"{label}: only {len(index)} rows, below min_rows {floor.min_rows}: not judged"
        return GateCheck(name, None, True, f"{floor.min_rows} rows", reason)
    mask = np.zeros(len(target), dtype=bool)
    mask[index] = True
    value = metrics.from_scored(
        spec.data.task, target[mask], candidate.subset(mask), only={floor.metric}
    ).get(floor.metric)
    if value is None:
        return GateCheck(
            name, None, False, bound, f"{label}: {floor.metric} cannot be computed on this segment"
        )
    ok = (floor.min is None or value >= floor.min) and (floor.max is None or value <= floor.max)
    reason = (
        f"{label} ({len(index)} rows): {floor.metric} = {value:.4f} {'meets' if ok else 'misses'} {bound}"
    )
    return GateCheck(name, value, ok, bound, reason)


def latency_check(spec: PipelineSpec, model: Any, features: pd.DataFrame) -> GateCheck:
    """p95 prediction time of one batch, measured here (only meaningful on the deployment's hardware)."""
    budget = spec.evaluation.latency
    if budget is None:
        raise ValueError(f"pipeline {spec.name}: no latency budget to check against")
    batch = features.sample(budget.batch_rows, replace=len(features) < budget.batch_rows, random_state=0)
    model.predict(batch)  # warm-up: first calls pay for lazy initialisation
    timings = []
    for _ in range(budget.repeats):
        started = time.perf_counter()
        model.predict(batch)
        timings.append((time.perf_counter() - started) * 1000)
    p95 = float(np.percentile(timings, 95))
    ok = p95 <= budget.max_p95_ms
    return GateCheck(
        "latency:p95",
        p95,
        ok,
        f"<= {budget.max_p95_ms} ms",
        f"p95 prediction time for a batch of {budget.batch_rows} rows is {p95:.1f} ms "
        f"({'within' if ok else 'over'} the budget of {budget.max_p95_ms} ms, {budget.repeats} runs)",
    )


def size_check(spec: PipelineSpec, model_dir: Path) -> GateCheck:
    """The logged model's size on disk must fit the budget (serving images and memory are finite)."""
    size_mb = sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file()) / 1e6
    limit = spec.evaluation.max_model_mb
    if limit is None:
        raise ValueError(f"pipeline {spec.name}: no model size budget to check against")
    ok = size_mb <= limit
    return GateCheck(
        "model_size",
        size_mb,
        ok,
        f"<= {limit} MB",
        f"the logged model is {size_mb:.2f} MB ({'within' if ok else 'over'} the budget of {limit} MB)",
    )


def scoring_columns(spec: PipelineSpec) -> tuple[str | None, list[str]]:
    """Columns of the most recent scoring input (schema only, no data read)."""
    inputs = storage.list_files(spec.uri("scoring"))
    if not inputs:
        return None, []
    latest = max(inputs, key=storage.modified)
    fs, path = storage.fs_for(latest)
    with fs.open(path, "rb") as handle:
        if detect_format(latest, spec.inference.format) == "parquet":
            import pyarrow.parquet as pq

            return latest, list(pq.ParquetFile(handle).schema_arrow.names)
        return latest, list(pd.read_csv(handle, nrows=0).columns)


def schema_check(spec: PipelineSpec, required: list[str]) -> GateCheck:
    """Refuse a candidate that needs a column the scoring data lacks: it would fail in inference."""
    latest, columns = scoring_columns(spec)
    if latest is None:
        return GateCheck(
            "scoring_schema",
            None,
            True,
            "scoring columns",
            "no scoring input yet: nothing to compare the model's inputs with",
        )
    missing = [c for c in required if c not in columns]
    name = storage.basename(latest)
    return GateCheck(
        "scoring_schema",
        missing,
        not missing,
        "all model inputs present",
        f"the scoring data ({name}) lacks column(s) the candidate needs: {listed(missing)}"
        if missing
        else f"the scoring data ({name}) has every column the candidate needs",
    )
