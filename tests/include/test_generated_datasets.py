"""The whole core lifecycle on generated tabular datasets of many shapes (issue 10).

A seeded generator (not hypothesis: the runtime stays bounded) builds small datasets and their specs
and runs, in-process against a throw-away embedded MLflow store and data root: check-data, ingest
(with a suite from ``suggest-suite``), train, gate, promote, score, drift and labelled performance.
Each stage must either succeed or fail with one clear line (under 500 characters) raised as one of
the project's own errors, classified as deterministic; never a library's exception, never a
half-written output. One dataset shape is one test: its stages share one store.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from include.mlops import storage
from include.mlops.data import ingest
from include.mlops.data.check_data import check_data
from include.mlops.data.suggest_suite import suggest_file
from include.mlops.errors import GateFailed, MlopsError
from include.mlops.gate import evaluation
from include.mlops.model import registry, training
from include.mlops.monitoring import drift, performance
from include.mlops.monitoring.drift_report import REPORT_COLUMNS
from include.mlops.scoring import inference
from include.mlops.spec import find_spec

pytestmark = pytest.mark.slow

MESSAGE_LIMIT = 500
UNSEEN_CITY = "Atlantis"


@dataclass(frozen=True)
class Shape:
    """One generated dataset: its task, target, file format, size and which odd columns it carries."""

    name: str
    task: str  # classification | regression
    target: str  # binary | multiclass | regression
    fmt: str  # csv | parquet
    rows: int = 240
    score_rows: int = 120
    odd_columns: bool = True  # every awkward column kind of ``columns`` below
    wide: int = 0  # extra numeric columns (a very wide table)
    float_ids: bool = False  # integer ids written as floats (1.0, 2.0, ...)
    estimator: str = ""
    slices: bool = False
    resamples: int = 30
    expect_failures: dict[str, str] = field(default_factory=dict)  # stage -> words of its message


SHAPES = [
    Shape("binary_csv", "classification", "binary", "csv", slices=True),
    Shape(
        "binary_parquet",
        "classification",
        "binary",
        "parquet",
        estimator="sklearn.ensemble.HistGradientBoostingClassifier",
    ),
    Shape("multiclass_strings_parquet", "classification", "multiclass", "parquet", float_ids=True),
    Shape("regression_outliers_csv", "regression", "regression", "csv", float_ids=True),
    Shape("regression_parquet", "regression", "regression", "parquet", odd_columns=False),
    Shape(
        "tiny_csv",
        "classification",
        "binary",
        "csv",
        rows=12,
        score_rows=6,
        expect_failures={"train": "training.holdout_fraction"},
    ),
    # a holdout of a few rows, with one class only, and fewer rows than the bootstrap resamples
    Shape(
        "small_rare_class_parquet", "classification", "rare", "parquet", rows=40, score_rows=10, resamples=200
    ),
    Shape("wide_parquet", "regression", "regression", "parquet", rows=80, score_rows=40, wide=1000),
]


# ---------------------------------------------------------------------------------------------
# The generator
# ---------------------------------------------------------------------------------------------


def columns(rng: np.random.Generator, rows: int, *, fmt: str, scoring: bool) -> dict[str, Any]:
    """Every awkward column kind, with the types the file format gives them."""
    start = pd.Timestamp("2026-01-01") + pd.Timedelta(days=60 if scoring else 0)
    dates = start + pd.to_timedelta(rng.integers(0, 30, rows), unit="D")
    times = start + pd.to_timedelta(rng.integers(0, 86400 * 30, rows), unit="s")
    cities = ["Paris", "Zürich", "São Paulo", "東京"] + ([UNSEEN_CITY] if scoring else [])
    data: dict[str, Any] = {
        "flag01": rng.integers(0, 2, rows),
        "coded12": rng.integers(1, 3, rows),
        "flag_float": np.where(rng.random(rows) < 0.1, np.nan, rng.integers(0, 2, rows).astype(float)),
        "level3": rng.integers(0, 3, rows),
        "constant": np.full(rows, 7),
        "all_null": np.full(rows, np.nan),
        "mostly_null": np.where(rng.random(rows) < 0.95, np.nan, rng.normal(size=rows)),
        "is_active": rng.random(rows) < 0.4,
        "maybe": rng.choice(np.array([True, False, None], dtype=object), rows),
        "token": [f"tok-{v}" for v in rng.integers(0, 10**9, rows)],
        "city": rng.choice(cities, rows),
        "größe €": rng.normal(170, 10, rows),
        "a b/c": rng.normal(size=rows),
    }
    if fmt == "parquet":
        data["signup_date"] = dates.normalize()
        data["seen_at"] = times
        data["seen_at_tz"] = times.tz_localize("UTC")
    else:
        data["signup_date"] = dates.strftime("%Y-%m-%d")
        data["seen_at"] = times.strftime("%Y-%m-%d %H:%M:%S")
        data["seen_at_tz"] = times.strftime("%Y-%m-%dT%H:%M:%S+02:00")
    return data


def make_frame(shape: Shape, rows: int, *, seed: int, offset: int, scoring: bool) -> pd.DataFrame:
    """One file's rows: id, time, a signal the target follows, the odd columns, the target."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=rows)
    ids = np.arange(offset, offset + rows)
    data: dict[str, Any] = {
        "row_id": ids.astype(float) if shape.float_ids else ids,
        "event_time": (pd.Timestamp("2026-01-01") + pd.to_timedelta(ids, unit="h")).strftime(
            "%Y-%m-%d %H:%M:%S"
        ),
        "signal": signal,
    }
    if shape.odd_columns:
        data.update(columns(rng, rows, fmt=shape.fmt, scoring=scoring))
    for i in range(shape.wide):
        data[f"w{i:04d}"] = rng.normal(size=rows).round(3)
    noise = rng.normal(scale=0.5, size=rows)
    if shape.target == "binary":
        data["label"] = (signal + noise > 0).astype(int)
    elif shape.target == "rare":
        data["label"] = np.where(signal < -1.0, "yes", "no")  # seed 1, 40 rows: none in the holdout
    elif shape.target == "multiclass":
        data["label"] = np.select([signal + noise < -0.4, signal + noise < 0.4], ["low", "mid"], "high")
    else:
        value = 3 * signal + noise
        outliers = rng.random(rows) < 0.03
        data["label"] = np.where(outliers, value * 100 + 500, value)
    return pd.DataFrame(data)


def write(frame: pd.DataFrame, uri: str, fmt: str) -> str:
    """Write a frame as the shape's file format, atomically."""
    with storage.atomic_path(uri) as tmp:
        if fmt == "parquet":
            frame.to_parquet(storage.local_path(tmp), index=False)
        else:
            frame.to_csv(storage.local_path(tmp), index=False)
    return uri


def write_spec(shape: Shape, folder: Path, suite: str) -> None:
    """The pipeline spec a new user would write for this dataset."""
    classification = shape.task == "classification"
    primary = "f1" if classification else "rmse"
    estimator = shape.estimator or (
        "sklearn.linear_model.LogisticRegression" if classification else "sklearn.linear_model.Ridge"
    )
    spec: dict[str, Any] = {
        "name": shape.name,
        "data": {
            "landing": f"{{MLOPS_DATA_ROOT}}/landing/{shape.name}",
            "format": shape.fmt,
            "target": "label",
            "task": shape.task,
            "id_column": "row_id",
            "timestamp_column": "event_time",
        },
        "validation": {"suite": suite},
        "training": {"estimator": estimator, "holdout_fraction": 0.25},
        "evaluation": {
            "primary_metric": primary,
            "thresholds": {primary: {"min": 0.0} if classification else {"max": 1e9}},
            "bootstrap": {"resamples": shape.resamples},
        },
        "inference": {
            "input": f"{{MLOPS_DATA_ROOT}}/scoring/{shape.name}",
            "output": f"{{MLOPS_DATA_ROOT}}/predictions/{shape.name}",
            "format": shape.fmt,
        },
        "monitoring": {
            "labels": {"uri": f"{{MLOPS_DATA_ROOT}}/labels/{shape.name}", "format": "parquet", "min_rows": 5}
        },
    }
    if shape.slices:
        spec["evaluation"]["slices"] = [{"column": "city", "metric": "f1", "min": 0.0, "min_rows": 5}]
    (folder / f"{shape.name}.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True))


# ---------------------------------------------------------------------------------------------
# Running the stages
# ---------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one stage did: its result, or the error it raised (one of ours)."""

    stage: str
    result: Any = None
    error: MlopsError | None = None
    seconds: float = 0.0


def run_stage(stage: str, fn: Callable[[], Any], data_root: Path) -> Outcome:
    """Run a stage; any exception that is not one of ours fails the test with the library's traceback."""
    started = time.monotonic()
    try:
        outcome = Outcome(stage, result=fn())
    except MlopsError as exc:
        outcome = Outcome(stage, error=exc)
        message = str(exc)
        assert "\n" not in message, f"{stage}: message on several lines: {message[:1000]}"
        assert len(message) < MESSAGE_LIMIT, f"{stage}: message of {len(message)} chars: {message[:1000]}"
        assert "Traceback" not in message
        assert exc.deterministic, f"{stage}: transient in a test with no service down: {message}"
    outcome.seconds = time.monotonic() - started
    assert_no_partial_output(data_root)
    return outcome


def assert_no_partial_output(data_root: Path) -> None:
    """No temporary file left, and every dataset or prediction folder is committed (``_SUCCESS``)."""
    if not data_root.exists():
        return
    for path in data_root.rglob("*"):
        assert not path.name.startswith("._tmp-"), f"temporary file left behind: {path}"
        if path.name in ("data.parquet", "predictions.parquet"):
            assert (path.parent / "_SUCCESS").exists(), f"uncommitted output: {path}"


def lifecycle(shape: Shape, tmp_path: Path, state: Path, pipelines_dir: Path) -> dict[str, Outcome]:
    """Every stage of the lifecycle on one generated dataset, in order; later stages run when they can."""
    data_root = state / "data"
    train_frame = make_frame(shape, shape.rows, seed=1, offset=0, scoring=False)
    source = write(train_frame, (tmp_path / f"train.{shape.fmt}").as_uri(), shape.fmt)
    suite = tmp_path / "suite.json"
    suggest_file(str(tmp_path / f"train.{shape.fmt}"), str(suite), id_column="row_id")
    write_spec(shape, pipelines_dir, str(suite))
    spec = find_spec(shape.name)
    done: dict[str, Outcome] = {}

    def stage(name: str, fn: Callable[[], Any]) -> Outcome:
        done[name] = run_stage(name, fn, data_root)
        return done[name]

    stage("check-data", lambda: check_data(spec, source))
    write(train_frame, storage.join(spec.uri("landing"), f"batch.{shape.fmt}"), shape.fmt)
    stage("ingest", lambda: [ingest.ingest_file(spec, uri) for uri in ingest.discover(spec)])
    if stage("train", lambda: training.train(spec)).error:
        return done
    version = done["train"].result.version
    gate = stage("evaluate", lambda: evaluation.evaluate(spec))
    if gate.error is not None and not isinstance(gate.error, GateFailed):
        return done
    stage(
        "promote",
        lambda: registry.promote(
            spec, version=version, expected_champion=None, require_gate=gate.error is None, reason="test"
        ),
    )
    scoring = make_frame(shape, shape.score_rows, seed=2, offset=100_000, scoring=True)
    write(scoring.drop(columns=["label"]), storage.join(spec.uri("scoring"), f"new.{shape.fmt}"), shape.fmt)
    if stage("score", lambda: inference.score(spec, run_id="run-1")).error:
        return done
    stage("drift", lambda: drift.check(spec, run_key="drift-1"))
    write(scoring[["row_id", "label"]], storage.join(spec.uri("labels"), "labels.parquet"), "parquet")
    stage("performance", lambda: performance.check(spec, run_key="perf-1"))
    return done


@pytest.mark.parametrize("shape", SHAPES, ids=[s.name for s in SHAPES])
def test_lifecycle_on_generated_dataset(shape, tmp_path, state, pipelines_dir):
    done = lifecycle(shape, tmp_path, state, pipelines_dir)
    report = {name: (str(o.error) if o.error else "ok", round(o.seconds, 1)) for name, o in done.items()}
    print(shape.name, report)
    failed = {name: str(o.error) for name, o in done.items() if o.error is not None}
    assert set(failed) == set(shape.expect_failures), report
    for name, words in shape.expect_failures.items():
        assert words in failed[name], report
    if shape.wide:  # the report draws at most REPORT_COLUMNS features; the summary has every verdict
        result = done["drift"].result
        assert len(result["columns"]) + len(result["skipped_columns"]) > shape.wide
        assert len(result["report_left_out"]) >= shape.wide - REPORT_COLUMNS
