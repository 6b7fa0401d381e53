"""The drift check: Evidently's verdicts on the full data, from bounded summaries of a streamed window."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from include.mlops import artifacts, storage
from include.mlops.monitoring import drift, drift_report, drift_stats
from include.mlops.monitoring.drift_stats import CELLS
from include.mlops.monitoring.reference import load_reference

BAND = 0.05  # a full-data statistic this close to its threshold may get either verdict


def customers(rows: int, *, seed: int, drifted: bool) -> pd.DataFrame:
    """Mixed columns; with ``drifted`` some move clearly, some slightly, some not at all."""
    rng = np.random.default_rng(seed)
    d = 1.0 if drifted else 0.0
    return pd.DataFrame(
        {
            "balance": rng.normal(1000 + 600 * d, 1000, rows),  # clearly drifted
            "amount": rng.lognormal(3, 1, rows).round(2),  # stable, heavy tailed
            "wait_time": rng.exponential(1 + 0.13 * d, rows),  # drifted, near the threshold
            "visits": rng.poisson(8, rows).astype("int64"),  # stable integer, > 10 values
            # an int with 15 values in the reference but <= 10 in the window: Evidently then calls it
            # categorical, from the current data's type
            "weekday": rng.integers(0, 8 if drifted else 15, rows).astype("int64"),
            "rating": rng.choice([1.0, 2.0, 3.0, 4.0], rows, p=[0.1, 0.2, 0.3, 0.4]),  # numeric, 4 values
            "income": np.where(rng.random(rows) < 0.07, np.nan, rng.gamma(2, 30, rows)),  # nulls
            "plan": rng.choice(
                ["basic", "plus", "pro"], rows, p=[0.3, 0.3, 0.4] if drifted else [0.5, 0.3, 0.2]
            ),
            "browser": rng.choice(["a", "b", "c", "d", "e"], rows),
            "is_mobile": rng.random(rows) < 0.3,
            "segment": np.where(rng.random(rows) < 0.1, None, rng.choice(["s1", "s2", "s3"], rows)),
        }
    )


def write_window(folder, frame: pd.DataFrame, parts: int, fmt: str = "parquet") -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    uris = []
    for i, part in enumerate(np.array_split(np.arange(len(frame)), parts)):
        path = folder / f"batch-{i}.{fmt}"
        chunk = frame.iloc[part]
        if fmt == "parquet":
            chunk.to_parquet(path, index=False)
        else:
            chunk.to_csv(path, index=False)
        uris.append(str(path))
    return uris


def ours(reference: pd.DataFrame, uris: list[str], fmt: str = "parquet") -> dict[str, drift_stats.Decision]:
    """Profile (through its JSON form, as stored with the model), stream, compare."""
    stored = json.loads(json.dumps(drift_stats.profile_to_json(drift_stats.profile_frame(reference), {})))
    profile, _ = drift_stats.profile_from_json(stored)
    window = drift.sketch_files(uris, fmt, profile, list(profile), sample_rows=500, seed=0)
    decisions, skipped = drift_stats.compare(profile, window.summaries(), list(profile))
    assert not skipped
    return decisions


def evidently_on_full_data(reference: pd.DataFrame, current: pd.DataFrame) -> dict[str, dict]:
    from evidently import Report
    from evidently.presets import DataDriftPreset

    snapshot = Report([DataDriftPreset()]).run(current_data=current, reference_data=reference)
    return drift_report.column_decisions(snapshot.dict())


def assert_same_verdicts(mine: dict[str, drift_stats.Decision], full: dict[str, dict], rel: float) -> None:
    assert set(mine) == set(full)
    for column, expected in full.items():
        got = mine[column]
        assert (got.method, got.threshold) == (expected["method"], expected["threshold"]), column
        assert got.value == pytest.approx(expected["value"], rel=rel, abs=1e-9), column
        if abs(expected["value"] - expected["threshold"]) > BAND * expected["threshold"]:
            assert got.drifted == expected["drifted"], column


@pytest.fixture
def small_batches(monkeypatch):
    """Batches much smaller than the files, so summaries are merged across batches and files."""
    monkeypatch.setattr(drift, "BATCH_ROWS", 3000)


@pytest.mark.slow
def test_verdicts_match_evidently_on_the_full_data(tmp_path, small_batches):
    rows = CELLS + 8000  # both sides are summarised (quantile cells, histograms), not kept raw
    reference = customers(rows, seed=1, drifted=False)
    current = customers(rows, seed=2, drifted=True)
    mine = ours(reference, write_window(tmp_path / "window", current, parts=3))
    full = evidently_on_full_data(reference, current)

    assert_same_verdicts(mine, full, rel=1e-2)
    assert {c for c, d in mine.items() if d.drifted} >= {"balance", "plan"}
    assert not {"amount", "visits", "browser", "is_mobile", "segment"} & {
        c for c, d in mine.items() if d.drifted
    }
    assert mine["balance"].value > 0.5 and mine["plan"].value > 0.15
    assert mine["weekday"].column_type == "cat" and mine["visits"].column_type == "num"
    assert mine["rating"].stattest == "jensenshannon" and mine["wait_time"].stattest == "wasserstein"
    assert mine["income"].current_rows < rows  # nulls are left out, as Evidently does
    assert not mine["balance"].exact  # this really went through the summaries


def test_small_reference_gets_evidentlys_p_value_tests(tmp_path, small_batches):
    """At most 1000 reference rows: K-S, chi-square and z-tests, whose p-values depend on row counts."""
    rng = np.random.default_rng(7)
    reference = pd.DataFrame(
        {
            "x": rng.normal(0, 1, 600),
            "level": rng.integers(0, 3, 600).astype("int64"),
            "flag": rng.random(600) < 0.4,
            "kind": rng.choice(["a", "b", "c", "d"], 600),
        }
    )
    rows = CELLS + 4000  # the window side is summarised, and expanded back for the p-value tests
    current = pd.DataFrame(
        {
            "x": rng.normal(0.05, 1, rows).round(3),
            "level": rng.integers(0, 3, rows).astype("int64"),
            "flag": rng.random(rows) < 0.45,
            "kind": rng.choice(["a", "b", "c", "d"], rows, p=[0.25, 0.25, 0.3, 0.2]),
        }
    )
    mine = ours(reference, write_window(tmp_path / "window", current, parts=2))
    full = evidently_on_full_data(reference, current)

    assert {c: d.stattest for c, d in mine.items()} == {
        "x": "ks",
        "level": "chisquare",
        "flag": "z",
        "kind": "chisquare",
    }
    assert_same_verdicts(mine, full, rel=1e-6)


def test_csv_and_parquet_windows_give_the_same_verdicts(tmp_path, small_batches):
    reference = customers(6000, seed=3, drifted=False)
    current = customers(9000, seed=4, drifted=True)
    from_parquet = ours(reference, write_window(tmp_path / "p", current, parts=2))
    from_csv = ours(reference, write_window(tmp_path / "c", current, parts=2, fmt="csv"), fmt="csv")
    assert {c: d.drifted for c, d in from_csv.items()} == {c: d.drifted for c, d in from_parquet.items()}
    assert {c: d.value for c, d in from_csv.items()} == pytest.approx(
        {c: d.value for c, d in from_parquet.items()}, rel=1e-9
    )


def _sketch_state(window: drift_stats.WindowSketch) -> int:
    """Bytes the sketch keeps between batches."""
    total = window.sample.table.nbytes + window.sample.keys.nbytes
    for sketch in window.sketches.values():
        total += sum(a.nbytes for a in sketch.raw or [])
        total += 64 * len(sketch.counts or {})
        if sketch.edges is not None:
            total += sketch.bin_rows.nbytes + sketch.bin_sums.nbytes
    return total


def test_memory_does_not_grow_with_the_window(tmp_path, monkeypatch):
    """Ten times the rows: the same kept state and the same peak of Python/numpy allocations."""
    monkeypatch.setattr(drift, "BATCH_ROWS", 20_000)
    profile = drift_stats.profile_frame(customers(30_000, seed=5, drifted=False))
    measured = {}
    for rows in (40_000, 400_000):
        path = tmp_path / f"window-{rows}.parquet"
        customers(rows, seed=6, drifted=True).to_parquet(path, index=False, row_group_size=20_000)
        tracemalloc.start()
        window = drift.sketch_files([str(path)], "parquet", profile, list(profile), sample_rows=1000, seed=0)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert window.rows == rows and window.sample.table.num_rows == 1000
        assert all(s.raw is None for s in window.sketches.values())  # raw values only up to CELLS
        assert window.sketches["balance"].counts is None  # continuous: no value counts kept
        measured[rows] = (_sketch_state(window), peak)
    (small_state, small_peak), (big_state, big_peak) = measured[40_000], measured[400_000]
    assert big_state < 1.5 * small_state and big_state < 4_000_000  # 2 x 16k bins a numeric column
    assert big_peak < 1.5 * small_peak  # one batch at a time, not the window


def test_row_sample_is_uniform_and_does_not_depend_on_batching():
    table = pa.table({"i": np.arange(10_000)})
    samples = []
    for size in (7, 1000, 10_000):
        sample = drift_stats.RowSample(500, seed=3)
        for start in range(0, 10_000, size):
            sample.update(table.slice(start, size), start)
        samples.append(sample.frame()["i"].to_numpy())
    assert all(np.array_equal(samples[0], s) for s in samples[1:])
    assert len(set(samples[0])) == 500
    assert abs(samples[0].mean() - 5000) < 400  # spread over the whole stream, not its start


@pytest.mark.slow
def test_check_end_to_end_reports_prediction_drift(state, pipelines_dir):
    import mlflow

    from include.mlops.data import ingest
    from include.mlops.datagen import write_batch
    from include.mlops.model import registry, training
    from include.mlops.scoring import inference
    from include.mlops.spec import find_spec

    churn = find_spec("churn")
    write_batch(churn, "batch1", rows=3000, seed=11)
    for uri in ingest.discover(churn):
        ingest.ingest_file(churn, uri)
    v1 = training.train(churn)
    registry.promote(churn, version=v1.version, expected_champion=None, require_gate=False, reason="test")
    logged = {a.path for a in mlflow.MlflowClient().list_artifacts(v1.run_id, "data")}
    assert {artifacts.REFERENCE_PROFILE_ARTIFACT, artifacts.REFERENCE_PREDICTIONS_ARTIFACT} <= logged

    write_batch(churn, "score1", rows=4000, seed=22, drift=0.8, id_offset=100_000, scoring=True)
    inference.score(churn, run_id="run-1")
    result = drift.check(churn, run_key="d1")

    assert result["drift_detected"] and {"contract", "support_calls"} <= set(result["drifted_columns"])
    assert result["current_rows"] == 4000 and result["reference_rows"] == v1.training_rows
    predictions = result["prediction_drift"]
    assert set(predictions["columns"]) == {"prediction", "probability"}
    assert predictions["columns"]["probability"]["drifted"] and predictions["drift_detected"]
    # The Evidently report carries the same full-data values and verdicts as the summary.
    report = json.loads(storage.read_bytes(result["report_json"]))
    expected = {**result["columns"], **predictions["columns"]}
    assert {c: (d["value"], d["drifted"]) for c, d in drift_report.column_decisions(report).items()} == {
        c: (d["value"], d["drifted"]) for c, d in expected.items()
    }
    counted = next(m for m in report["metrics"] if "DriftedColumnsCount" in m["config"]["type"])
    assert counted["value"]["share"] == pytest.approx(result["drift_share"])
    assert "(full data)" in storage.read_bytes(result["report_html"]).decode()
    summary = storage.read_json(result["report_json"].replace("report.json", "summary.json"))
    assert summary["drift_share"] == result["drift_share"]


@pytest.mark.slow
def test_model_without_a_profile_falls_back_to_its_reference_sample(state):
    import mlflow

    from include.mlops import tracking

    client = tracking.client()  # the test's embedded store
    sample = customers(2000, seed=8, drifted=False)
    with mlflow.start_run(experiment_id=tracking.ensure_experiment("drift-fallback")) as run:
        path = state / "reference.parquet"
        sample.to_parquet(path, index=False)
        mlflow.log_artifact(str(path), "data")
    reference = load_reference(run.info.run_id, client)
    assert reference.predictions == {} and reference.prediction_sample is None
    assert reference.rows == 2000 and set(reference.features) == set(sample.columns)


@pytest.mark.parametrize("reference_rows", [300, 3000])
def test_two_valued_numeric_flags_are_tested_and_reported(tmp_path, reference_rows):
    """Issue 10: a 0/1 or 1/2 flag read as a number (floats, or integers with nulls) got Evidently's
    z-test for categories; the report then refused it (``StatTestInvalidFeatureTypeError``)."""
    rng = np.random.default_rng(3)

    def flags(rows: int, p: float) -> pd.DataFrame:
        frame = pd.DataFrame(
            {
                "x": rng.normal(0, 1, rows),
                "binary01": (rng.random(rows) < p).astype("int64"),
                "coded12": np.where(rng.random(rows) < p, 2.0, 1.0),
                "three": rng.integers(1, 4, rows).astype("float64"),
            }
        )
        frame.loc[::7, "binary01"] = None  # integers with nulls: read back as floats
        return frame

    reference, current = flags(reference_rows, 0.3), flags(800, 0.5)
    mine = ours(reference, write_window(tmp_path / "window", current, parts=2))
    for column in ("binary01", "coded12", "three"):
        assert mine[column].column_type == "num", column
        expected = drift_stats.default_stattest("num", reference_rows, 3 if column == "three" else 2)
        assert mine[column].stattest == expected.name
    html, report_json, left_out = drift_report.render_report(reference, current, mine, {}, drift_share=0.5)
    assert not left_out and "binary01" in html
    shown = drift_report.column_decisions(json.loads(report_json))
    assert {c: d["drifted"] for c, d in shown.items()} == {c: d.drifted for c, d in mine.items()}


@pytest.mark.parametrize("reference_rows", [10, 1000, 1001, 50_000])
@pytest.mark.parametrize("values", [1, 2, 3, 5, 6, 40])
@pytest.mark.parametrize("column_type", ["num", "cat"])
def test_default_stattest_is_evidentlys_own_choice(column_type, values, reference_rows):
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType

    ref = pd.Series(np.arange(min(reference_rows, 2000)) % values)
    cur = pd.Series(np.arange(values))
    kind = ColumnType.Numerical if column_type == "num" else ColumnType.Categorical
    if reference_rows > 2000:
        ref = pd.Series(np.arange(reference_rows) % values)
    assert drift_stats.default_stattest(column_type, reference_rows, values) is get_stattest(
        ref, cur, kind, None
    )


@pytest.mark.parametrize(
    "series",
    [
        pd.Series([0, 1] * 20),
        pd.Series([1.0, 2.0] * 20),
        pd.Series(range(40)),
        pd.Series(["a", "b"] * 20),
        pd.Series([f"t{i}" for i in range(40)]),
        pd.Series([True, False] * 20),
    ],
)
def test_column_type_is_evidentlys_inference(series):
    from evidently.core.datasets import infer_column_type

    kind = drift_stats.pandas_kind(series)
    ours_type = drift_stats.evidently_type(kind, series.nunique(), int(series.count()))
    assert ours_type == infer_column_type(series).value
