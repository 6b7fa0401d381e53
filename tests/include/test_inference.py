"""Batch inference: partitions, streaming, atomic re-runs (also after a kill), signature checks, lineage.

Most tests score with a model fitted here and a champion record written the way
``inference.resolve_champion`` returns it (the MLflow signature's column types), without MLflow;
the tests marked slow go through a real embedded MLflow registry or a killed subprocess.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from include.mlops import datagen, storage
from include.mlops.data.columns import feature_columns
from include.mlops.errors import DataError, NothingToDo
from include.mlops.model import estimators, training
from include.mlops.paths import PROJECT_ROOT
from include.mlops.scoring import inference
from include.mlops.spec import PipelineSpec, find_spec

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fitted():
    """A churn model (the project's pipeline around the spec's estimator) and its champion record."""
    spec = find_spec("churn", directory=PROJECT_ROOT / "include" / "pipelines")
    frame = datagen.churn(3000, seed=1)
    features = frame[feature_columns(frame, spec)]
    model = estimators.build_model(spec, features).fit(features, frame["churned"])
    inputs = [
        {"name": c, "type": "double" if pd.api.types.is_numeric_dtype(features[c]) else "string"}
        for c in features.columns
    ]
    champion = {"model": "churn", "version": "7", "model_uri": "models:/churn/7", "inputs": inputs}
    return model, champion


@pytest.fixture
def spec(state, pipelines_dir) -> PipelineSpec:
    return with_chunk_rows(find_spec("churn"), 1000)


def with_chunk_rows(spec: PipelineSpec, rows: int) -> PipelineSpec:
    return spec.model_copy(update={"inference": spec.inference.model_copy(update={"chunk_rows": rows})})


def scoring_frame(rows: int, *, seed: int, id_offset: int = 0) -> pd.DataFrame:
    return datagen.churn(rows, seed=seed, id_offset=id_offset).drop(columns=["churned"])


def write_input(
    spec: PipelineSpec, name: str, frame: pd.DataFrame, *, row_group_size: int | None = None
) -> str:
    """An input file (or ``folder/file``) under the scoring area, written atomically."""
    uri = storage.join(spec.uri("scoring"), name)
    with storage.atomic_path(uri) as tmp:
        path = storage.local_path(tmp)
        if name.endswith(".csv"):
            frame.to_csv(path, index=False)
        else:
            pq.write_table(
                pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=row_group_size
            )
    return uri


def folder_entries(uri: str) -> list[str]:
    return sorted(os.listdir(storage.local_path(uri)))


# ---------------------------------------------------------------------------------------------
# Lineage and predictions
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_predictions_carry_model_version_run_id_and_row_id(spec, fitted, fmt):
    model, champion = fitted
    frame = scoring_frame(2500, seed=3, id_offset=50_000)
    uri = write_input(spec, f"batch.{fmt}", frame)

    manifest = inference.score_partition(spec, uri, champion=champion, run_id="scheduled__1", model=model)

    out = pd.read_parquet(manifest["output"])
    assert list(out.columns) == ["customer_id", "prediction", "probability", "model_version", "run_id"]
    assert out["customer_id"].tolist() == frame["customer_id"].tolist()  # input row ids, in input order
    assert set(out["model_version"]) == {"7"} and set(out["run_id"]) == {"scheduled__1"}
    features = frame[[c["name"] for c in champion["inputs"]]]
    assert np.array_equal(out["prediction"].to_numpy(), model.predict(features))
    assert np.allclose(out["probability"].to_numpy(), model.predict_proba(features)[:, 1])
    assert manifest["rows"] == 2500 and manifest["model_version"] == "7"
    assert manifest["model_uri"] == "models:/churn/7" and manifest["run_id"] == "scheduled__1"
    assert storage.read_json(storage.join(inference.output_folder(spec, uri), "_SUCCESS")) == manifest
    assert folder_entries(inference.output_folder(spec, uri)) == ["_SUCCESS", "predictions.parquet"]


def test_without_an_id_column_rows_are_numbered_across_a_folder_partition(spec, fitted):
    model, champion = fitted
    spec = spec.model_copy(update={"data": spec.data.model_copy(update={"id_column": None})})
    write_input(spec, "2026-01-05/part-0.parquet", scoring_frame(1200, seed=4))
    write_input(spec, "2026-01-05/part-1.csv", scoring_frame(800, seed=5))
    [partition] = inference.list_partitions(spec)

    manifest = inference.score_partition(spec, partition, champion=champion, run_id="r", model=model)

    out = pd.read_parquet(manifest["output"])
    assert out["row_id"].tolist() == list(range(2000))
    assert manifest["partition"] == "2026-01-05" and len(manifest["inputs"]) == 2


def test_one_pass_labels_fall_back_to_predict_where_argmax_differs(spec, fitted):
    """A model whose ``predict`` is not the argmax of ``predict_proba`` (e.g. a tuned threshold)."""
    model, champion = fitted

    class Thresholded:
        classes_ = model.classes_

        def predict_proba(self, features):
            return model.predict_proba(features)

        def predict(self, features):
            return (model.predict_proba(features)[:, 1] > 0.2).astype("int64")

    frame = scoring_frame(3000, seed=6)
    uri = write_input(spec, "batch.parquet", frame)
    manifest = inference.score_partition(spec, uri, champion=champion, run_id="r", model=Thresholded())
    out = pd.read_parquet(manifest["output"])
    features = frame[[c["name"] for c in champion["inputs"]]]
    assert np.array_equal(out["prediction"].to_numpy(), Thresholded().predict(features))


# ---------------------------------------------------------------------------------------------
# Streaming
# ---------------------------------------------------------------------------------------------


class Spy:
    """Wraps a model; records the rows of each call and Arrow's allocated bytes at that moment."""

    def __init__(self, model):
        self.model, self.classes_, self.calls = model, model.classes_, []

    def predict_proba(self, features):
        self.calls.append((len(features), pa.total_allocated_bytes()))
        return self.model.predict_proba(features)

    def predict(self, features):
        return self.model.predict(features)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_inputs_are_scored_chunk_by_chunk(spec, fitted, fmt):
    model, champion = fitted
    spec = with_chunk_rows(spec, 700)
    uri = write_input(spec, f"batch.{fmt}", scoring_frame(5000, seed=7))
    spy = Spy(model)
    manifest = inference.score_partition(spec, uri, champion=champion, run_id="r", model=spy)
    rows = [n for n, _ in spy.calls]
    assert sum(rows) == manifest["rows"] == 5000
    assert max(rows) <= 700 and len(rows) == 8  # ceil(5000 / 700) chunks, never the whole file
    assert pq.ParquetFile(storage.local_path(manifest["output"])).metadata.num_row_groups == 8


def test_memory_does_not_grow_with_the_input(spec, fitted):
    """Arrow's allocations while scoring a 4x larger file (same row groups, same chunks) stay flat.

    Arrow's default Parquet reading (whole column chunks, read ahead) would hold more and more.
    """
    model, champion = fitted
    spec = with_chunk_rows(spec, 2000)
    peaks = {}
    for rows in (50_000, 200_000):
        uri = write_input(spec, f"batch-{rows}.parquet", scoring_frame(rows, seed=8), row_group_size=10_000)
        spy = Spy(model)
        inference.score_partition(spec, uri, champion=champion, run_id="r", model=spy)
        peaks[rows] = max(allocated for _, allocated in spy.calls)
    assert peaks[200_000] <= 1.25 * peaks[50_000], peaks


def test_progress_is_logged_with_rate_and_eta(spec, fitted, caplog):
    model, champion = fitted
    uri = write_input(spec, "batch.csv", scoring_frame(3000, seed=9))
    with caplog.at_level(logging.INFO, logger="include.mlops.scoring"):
        inference.score_partition(spec, uri, champion=champion, run_id="r", model=model, progress_every=0)
    progress = [r.getMessage() for r in caplog.records if "rows/s, ETA" in r.getMessage()]
    assert len(progress) == 3  # one per chunk with progress_every=0
    assert "pipeline churn: batch.csv: 1000 rows (" in progress[0]  # CSV: the share comes from bytes read
    assert any("3000 rows scored in" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------------------------
# Signature check
# ---------------------------------------------------------------------------------------------


def test_signature_mismatch_names_missing_and_mistyped_columns(spec, fitted):
    model, champion = fitted
    frame = scoring_frame(500, seed=10).drop(columns=["age", "contract"])
    frame["monthly_charges"] = frame["monthly_charges"].astype(str)
    uri = write_input(spec, "bad.parquet", frame)
    with pytest.raises(DataError) as err:
        inference.score_partition(spec, uri, champion=champion, run_id="r", model=model)
    assert str(err.value) == (
        "pipeline churn: bad.parquet does not match the signature of churn v7: "
        "missing column(s): contract, age; mistyped column(s): monthly_charges is string (the model expects double)"
    )
    assert not storage.exists(inference.output_folder(spec, uri))  # checked before anything is written

    # A scored input replaced by a bad one: pending again, and the mismatch leaves the output as it was.
    good = write_input(spec, "good.parquet", scoring_frame(500, seed=10))
    first = inference.score_partition(spec, good, champion=champion, run_id="r", model=model)
    write_input(spec, "good.parquet", frame)
    assert good in inference.list_partitions(spec)
    with pytest.raises(DataError, match=r"good\.parquet does not match the signature"):
        inference.score_partition(spec, good, champion=champion, run_id="r2", model=model)
    assert inference.scored_batches(spec) == [first]


def test_csv_mismatch_in_a_later_chunk_and_a_missing_id_column(spec, fitted):
    model, champion = fitted
    frame = scoring_frame(3000, seed=11)
    frame["support_calls"] = frame["support_calls"].astype(object)
    frame.loc[2500, "support_calls"] = "many"  # only the third chunk reads as text
    uri = write_input(spec, "late.csv", frame)
    with pytest.raises(
        DataError, match=r"late.csv does not match .*support_calls is object \(the model expects double\)"
    ):
        inference.score_partition(spec, uri, champion=champion, run_id="r", model=model)
    assert not storage.is_complete(inference.output_folder(spec, uri))

    uri = write_input(spec, "no_id.parquet", scoring_frame(100, seed=12).drop(columns=["customer_id"]))
    with pytest.raises(DataError, match=r"missing column\(s\): customer_id \(the id column\)"):
        inference.score_partition(spec, uri, champion=champion, run_id="r", model=model)


def test_unreadable_input_is_a_data_error(spec, fitted):
    model, champion = fitted
    uri = storage.write_bytes(storage.join(spec.uri("scoring"), "garbage.parquet"), b"not parquet at all")
    with pytest.raises(DataError, match=r"garbage\.parquet: cannot be read as parquet"):
        inference.score_partition(spec, uri, champion=champion, run_id="r", model=model)


# ---------------------------------------------------------------------------------------------
# Partitions and re-runs
# ---------------------------------------------------------------------------------------------


def test_partitions_are_files_and_date_folders(spec, fitted):
    model, champion = fitted
    with pytest.raises(NothingToDo):
        inference.list_partitions(spec)
    write_input(spec, "a.parquet", scoring_frame(100, seed=13))
    write_input(spec, "2026-01-05/part-0.parquet", scoring_frame(100, seed=14))
    write_input(spec, "date=2026-01-06/part-0.parquet", scoring_frame(100, seed=15))
    write_input(spec, "_staging/part-0.parquet", scoring_frame(100, seed=16))  # hidden: not a partition
    storage.write_bytes(storage.join(spec.uri("scoring"), ".a.parquet.crc"), b"x")
    Path(storage.local_path(storage.join(spec.uri("scoring"), "empty"))).mkdir()

    pending = inference.list_partitions(spec)
    assert [storage.basename(u) for u in pending] == ["2026-01-05", "a.parquet", "date=2026-01-06"]
    for uri in pending:
        inference.score_partition(spec, uri, champion=champion, run_id="run-1", model=model)
    with pytest.raises(NothingToDo):
        inference.list_partitions(spec)
    assert len(inference.scored_batches(spec)) == 3

    # A file added to a scored date folder makes that partition pending again, alone.
    write_input(spec, "2026-01-05/part-1.parquet", scoring_frame(50, seed=17, id_offset=1000))
    [again] = inference.list_partitions(spec)
    assert storage.basename(again) == "2026-01-05"
    manifest = inference.score_partition(spec, again, champion=champion, run_id="run-2", model=model)
    assert manifest["rows"] == 150 and len(pd.read_parquet(manifest["output"])) == 150


def test_a_rerun_of_the_same_run_redoes_exactly_its_own_partitions(spec, fitted):
    model, champion = fitted
    first = write_input(spec, "a.parquet", scoring_frame(300, seed=18))
    inference.score_partition(spec, first, champion=champion, run_id="run-1", model=model)
    second = write_input(spec, "b.parquet", scoring_frame(300, seed=19, id_offset=300))
    inference.score_partition(spec, second, champion=champion, run_id="run-2", model=model)

    assert inference.list_partitions(spec, redo_run="run-2") == [second]  # a cleared run-2
    with pytest.raises(NothingToDo):
        inference.list_partitions(spec, redo_run="run-3")  # a new run: nothing new
    assert inference.list_partitions(spec, rescore=True) == [first, second]

    manifest = inference.score_partition(spec, second, champion=champion, run_id="run-2", model=model)
    out = pd.read_parquet(manifest["output"])
    assert len(out) == 300 and out["customer_id"].is_unique  # replaced, not appended
    assert folder_entries(inference.output_folder(spec, second)) == ["_SUCCESS", "predictions.parquet"]


KILLED_CHILD = textwrap.dedent(
    """
    import json, logging, pickle, sys
    from include.mlops.scoring import inference
    from include.mlops.spec import find_spec

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    model_path, champion_path, uri, run_id = sys.argv[1:5]
    spec = find_spec("churn")
    spec = spec.model_copy(update={"inference": spec.inference.model_copy(update={"chunk_rows": 1000})})
    with open(model_path, "rb") as handle:
        model = pickle.load(handle)
    with open(champion_path) as handle:
        champion = json.load(handle)
    inference.score_partition(spec, uri, champion=champion, run_id=run_id, model=model, progress_every=0)
    print("FINISHED", file=sys.stderr, flush=True)
    """
)


def kill_after_first_chunk(tmp_path: Path, fitted, uri: str, run_id: str) -> None:
    """Score ``uri`` in a subprocess and SIGKILL it once its first chunk is written."""
    model, champion = fitted
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(model))
    (tmp_path / "champion.json").write_text(json.dumps(champion))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins")])}
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            KILLED_CHILD,
            str(tmp_path / "model.pkl"),
            str(tmp_path / "champion.json"),
            uri,
            run_id,
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    seen = []
    try:
        for line in child.stderr:
            seen.append(line)
            if " rows (" in line:  # a progress line: logged after the chunk was written
                child.send_signal(signal.SIGKILL)
                break
    finally:
        child.wait(timeout=120)
    assert child.returncode == -signal.SIGKILL, "".join(seen[-20:])
    assert not any("FINISHED" in line for line in seen)


@pytest.mark.slow
def test_killed_mid_write_then_retried_leaves_exactly_one_complete_output(spec, fitted, tmp_path):
    frame = scoring_frame(300_000, seed=20)
    uri = write_input(spec, "big.parquet", frame)
    folder = inference.output_folder(spec, uri)

    kill_after_first_chunk(tmp_path, fitted, uri, "run-1")
    entries = folder_entries(folder)
    assert not storage.is_complete(folder)
    assert storage.list_files(folder) == []  # nothing visible: the partial file has a hidden name
    [partial] = entries
    assert (
        partial.startswith(storage.TEMP_PREFIX)
        and os.path.getsize(Path(storage.local_path(folder)) / partial) > 0
    )
    assert inference.scored_batches(spec) == []
    assert inference.list_partitions(spec) == [uri]

    model, champion = fitted
    manifest = inference.score_partition(
        spec, uri, champion=champion, run_id="run-1", model=model
    )  # the retry
    assert folder_entries(folder) == ["_SUCCESS", "predictions.parquet"]  # the leftover is gone
    out = pd.read_parquet(manifest["output"], columns=["customer_id"])
    assert manifest["rows"] == len(out) == 300_000
    assert np.array_equal(out["customer_id"].to_numpy(), frame["customer_id"].to_numpy())  # no duplicates

    # Killed while re-scoring a complete partition: the partition turns pending, the previous file
    # stays whole under its name until the retry replaces it.
    kill_after_first_chunk(tmp_path, fitted, uri, "run-2")
    assert not storage.is_complete(folder)
    assert inference.list_partitions(spec) == [uri]
    previous = pq.read_table(storage.local_path(manifest["output"]), columns=["run_id"])
    assert previous.num_rows == 300_000 and set(previous.column("run_id").to_pylist()) == {"run-1"}
    manifest = inference.score_partition(spec, uri, champion=champion, run_id="run-2", model=model)
    assert folder_entries(folder) == ["_SUCCESS", "predictions.parquet"]
    out = pd.read_parquet(manifest["output"], columns=["customer_id", "run_id"])
    assert len(out) == 300_000 and out["customer_id"].is_unique and set(out["run_id"]) == {"run-2"}


# ---------------------------------------------------------------------------------------------
# The champion: resolved once, the same version for every partition
# ---------------------------------------------------------------------------------------------


def register(model, features: pd.DataFrame, name: str) -> str:
    """Log and register a version the way ``training.train`` does (integer columns as doubles)."""
    import mlflow
    from mlflow.models import infer_signature

    from include.mlops import tracking

    example = features.head(100).astype(
        {c: "float64" for c in features.columns if pd.api.types.is_integer_dtype(features[c])}
    )
    with mlflow.start_run(experiment_id=tracking.ensure_experiment("mlops/churn")):
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(example, model.predict(example)),
            skops_trusted_types=training.own_types(model),
            pip_requirements=["scikit-learn"],
        )
    return str(mlflow.register_model(info.model_uri, name).version)


@pytest.mark.slow
def test_every_partition_scores_with_the_version_resolved_for_the_run(spec, fitted):
    from include.mlops import tracking

    client = tracking.client()
    frame = datagen.churn(2000, seed=21)
    features = frame[feature_columns(frame, spec)]
    v1 = register(estimators.build_model(spec, features).fit(features, frame["churned"]), features, "churn")
    flipped = estimators.build_model(spec, features).fit(features, 1 - frame["churned"])
    v2 = register(flipped, features, "churn")
    client.set_registered_model_alias("churn", "champion", v1)
    for name in ("a.parquet", "b.parquet", "2026-01-05/part-0.parquet"):
        write_input(spec, name, scoring_frame(400, seed=22))

    champion = inference.resolve_champion(spec)
    assert champion["model_uri"] == f"models:/churn/{v1}"  # pinned: a version, not the alias
    types = {c["name"]: c["type"] for c in champion["inputs"]}
    assert types["tenure_months"] == "double" and types["contract"] == "string"
    client.set_registered_model_alias("churn", "champion", v2)  # the alias moves mid-run

    manifests = [
        inference.score_partition(spec, uri, champion=champion, run_id="run-1")  # each loads the model
        for uri in inference.list_partitions(spec)
    ]
    assert {m["model_version"] for m in manifests} == {v1}
    expected = inference.load_model(champion).predict(scoring_frame(400, seed=22)[features.columns])
    for m in manifests:
        out = pd.read_parquet(m["output"])
        assert set(out["model_version"]) == {v1}
        assert np.array_equal(out["prediction"].to_numpy(), expected)
    summary = inference.summarize(champion, manifests)
    assert summary["partitions"] == 3 and summary["rows"] == 1200 and summary["model_version"] == v1


def test_pinned_champion_round_trips_through_xcom_json(fitted):
    from include.mlops.scoring.champion import PinnedChampion

    _, champion = fitted
    pinned = PinnedChampion.of(json.loads(json.dumps(champion)))
    assert pinned.version == "7" and [c.name for c in pinned.inputs] == [
        c["name"] for c in champion["inputs"]
    ]
    again = PinnedChampion.from_dict(pinned.to_dict())
    assert again == pinned and PinnedChampion.of(again) is again
    assert {k: v for k, v in pinned.to_dict().items() if k in champion} == champion


def test_booleans_with_gaps_read_from_csv_match_a_boolean_signature():
    """Issue 10: True/False/empty in a CSV reads as ``object``; it scores like MLflow's boolean."""
    from include.mlops.scoring.signature import InputColumn, pandas_kind, signature_problems

    read = pd.read_csv(io.StringIO("n,maybe\n1,True\n2,\n3,False\n"))
    assert read["maybe"].dtype == object and pandas_kind(read["maybe"]) == "boolean"
    assert pandas_kind(pd.Series(["a", None], dtype=object)) == "string"
    found = {"maybe": (pandas_kind(read["maybe"]), str(read["maybe"].dtype))}
    assert signature_problems(found, [InputColumn("maybe", "boolean")], None) == ([], [])
