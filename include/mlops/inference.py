"""Batch inference: the champion scores every new input file, streamed chunk by chunk.

The champion version is resolved once per run and written into every prediction row. Each input
file's predictions are committed atomically (temporary name, then rename, then ``_SUCCESS``), so a
re-run replaces its own output and a reader never sees a partial file.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pandas as pd

from include.mlops import storage, tracking
from include.mlops.errors import DataError, NothingToDo
from include.mlops.evaluation import _alias_version
from include.mlops.spec import PipelineSpec
from include.mlops.tabular import detect_format

log = logging.getLogger(__name__)


def _chunks(uri: str, fmt: str, rows: int) -> Iterator[pd.DataFrame]:
    import pyarrow.parquet as pq

    fs, path = storage.fs_for(uri)
    with fs.open(path, "rb") as handle:
        try:
            if fmt == "parquet":
                for batch in pq.ParquetFile(handle).iter_batches(batch_size=rows):
                    yield batch.to_pandas()
            else:
                yield from pd.read_csv(handle, chunksize=rows)
        except (OSError, ValueError) as exc:
            raise DataError(
                f"{storage.basename(uri)}: cannot be read as {fmt}: {str(exc).splitlines()[0]}"
            ) from None


def output_folder(spec: PipelineSpec, input_uri: str) -> str:
    return storage.join(spec.uri("predictions"), storage.basename(input_uri))


def _predict(model: Any, features: pd.DataFrame) -> dict[str, Any]:
    columns: dict[str, Any] = {"prediction": model.predict(features)}
    if hasattr(model, "predict_proba"):
        proba = model.predict_proba(features)
        if proba.shape[1] == 2:
            columns["probability"] = proba[:, 1]
    return columns


def score_file(
    spec: PipelineSpec, model: Any, input_uri: str, *, version: str, run_id: str, inputs: list[str]
) -> dict[str, Any]:
    """Score one file into ``predictions/<stem>/predictions.parquet``; return its manifest."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    name = storage.basename(input_uri)
    folder = output_folder(spec, input_uri)
    target_uri = storage.join(folder, "predictions.parquet")
    storage.remove_tree(storage.join(folder, storage.SUCCESS))  # the old output is now stale
    started, done, writer = time.monotonic(), 0, None
    with storage.atomic_path(target_uri) as tmp:
        fs, tmp_path = storage.fs_for(tmp)
        with fs.open(tmp_path, "wb") as sink:
            for chunk in _chunks(
                input_uri, detect_format(input_uri, spec.inference.format), spec.inference.chunk_rows
            ):
                missing = [c for c in inputs if c not in chunk.columns]
                if missing:
                    raise DataError(
                        f"pipeline {spec.name}: {name} lacks column(s) the champion v{version} needs: {', '.join(missing)}"
                    )
                out = pd.DataFrame(_predict(model, chunk[inputs]))
                if spec.data.id_column and spec.data.id_column in chunk.columns:
                    out.insert(0, spec.data.id_column, chunk[spec.data.id_column].to_numpy())
                out["model_version"] = version
                out["run_id"] = run_id
                table = pa.Table.from_pandas(out, preserve_index=False)
                writer = writer or pq.ParquetWriter(sink, table.schema)
                writer.write_table(table)
                done += len(out)
                elapsed = time.monotonic() - started
                log.info("%s: %d rows scored (%.0f rows/s)", name, done, done / max(elapsed, 1e-9))
            if writer is None:
                raise DataError(f"pipeline {spec.name}: {name} has no rows to score")
            writer.close()
    manifest = {
        "input": input_uri,
        "rows": done,
        "model": spec.model_name,
        "model_version": version,
        "run_id": run_id,
        "scored_at": time.time(),
        "output": target_uri,
    }
    storage.mark_success(folder, manifest)
    return manifest


def champion(spec: PipelineSpec, tracking_uri: str | None = None) -> tuple[str, Any, list[str]]:
    """(version, loaded model, input column names), resolved once per run."""
    import mlflow

    client = tracking.client(tracking_uri)
    with tracking.service_errors(tracking_uri):
        version = _alias_version(client, spec.model_name, "champion")
        if version is None:
            raise NothingToDo(f"pipeline {spec.name}: there is no champion model yet; nothing to score with")
        uri = f"models:/{spec.model_name}/{version}"
        model = mlflow.sklearn.load_model(uri)
        signature = mlflow.models.get_model_info(uri).signature
    inputs = signature.inputs.input_names() if signature else list(model.feature_names_in_)
    return version, model, inputs


def score(
    spec: PipelineSpec, *, run_id: str, rescore: bool = False, tracking_uri: str | None = None
) -> dict[str, Any]:
    """Score every input that has no complete output yet (all of them with ``rescore``)."""
    inputs = storage.list_files(spec.uri("scoring"))
    pending = [u for u in inputs if rescore or not storage.is_complete(output_folder(spec, u))]
    if not pending:
        raise NothingToDo(f"pipeline {spec.name}: no new scoring input in {spec.uri('scoring')}")
    version, model, columns = champion(spec, tracking_uri)
    log.info("Scoring %d file(s) with %s v%s", len(pending), spec.model_name, version)
    manifests = [score_file(spec, model, u, version=version, run_id=run_id, inputs=columns) for u in pending]
    return {"model_version": version, "files": manifests, "rows": sum(m["rows"] for m in manifests)}


def scored_batches(spec: PipelineSpec) -> list[dict[str, Any]]:
    """Manifests of every complete prediction output, most recent first."""
    found = []
    for folder in storage.list_dirs(spec.uri("predictions")):
        if storage.is_complete(folder):
            found.append(storage.read_json(storage.join(folder, storage.SUCCESS)))
    return sorted(found, key=lambda m: m["scored_at"], reverse=True)
