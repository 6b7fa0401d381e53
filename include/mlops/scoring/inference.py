"""Batch inference: the champion scores the scoring inputs, one partition at a time, streamed.

Why it is shaped this way (layout and guarantees in ``docs/inference.md``):

* A **partition** is the unit of work, of retry and of output: one file directly under
  ``inference.input``, or one folder there (a date partition such as ``2026-01-05/`` or
  ``date=2026-01-05/``) with every file in it. The DAG maps one task over each pending partition,
  so partitions score in parallel and a failed one is retried alone.
* The champion is **resolved once per run** (``resolve_champion``) to a pinned
  ``models:/<name>/<version>`` URI; every partition loads that URI, so an alias that moves during
  the run cannot mix two versions in one run.
* A partition is **streamed** chunk by chunk (``inference.chunk_rows`` rows; Parquet through Arrow
  record batches, CSV through pandas' chunked reader), so memory depends on the chunk, not on the
  size of the input. A classifier is run once per chunk (``predict_proba``; labels are its argmax,
  verified against ``predict`` on the first rows), not twice.
* Its output is **committed atomically**: the old ``_SUCCESS`` is removed first, the predictions are
  written under a hidden temporary name and renamed onto ``predictions.parquet``, then the new
  ``_SUCCESS`` manifest is written. Re-scoring a partition replaces exactly that file, and leftovers
  of a killed attempt are removed by the next one.
* Inputs are checked against the model signature (from the file footer for Parquet, per chunk for
  CSV) and a mismatch names every missing and every mistyped column.
"""

from __future__ import annotations

import logging
import posixpath
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd

from include.mlops import storage, tracking
from include.mlops.data.reading import detect_format
from include.mlops.errors import DataError, NothingToDo
from include.mlops.predictor import Predictor
from include.mlops.spec import PipelineSpec
from include.mlops.tracking import alias_version, model_dir

log = logging.getLogger(__name__)

PREDICTIONS_FILE = "predictions.parquet"
ROW_ID = "row_id"  # the row id column when the spec declares no id column: position in the partition
PROGRESS_SECONDS = 30.0  # how often a partition logs rows done, rows/s and ETA
READ_BUFFER_BYTES = 1 << 20  # Parquet column data is streamed through buffers of this size

# MLflow signature type -> kinds of input column that score correctly against it. Integers are
# fine for a double column (training declares integer columns as doubles); an all-null column is
# fine for any type (it reads as float or null whatever it should hold).
ACCEPTED = {
    "double": {"integer", "float"},
    "float": {"integer", "float"},
    "long": {"integer"},
    "integer": {"integer"},
    "boolean": {"boolean"},
    "string": {"string"},
    "binary": {"binary"},
    "datetime": {"datetime"},
}


# ---------------------------------------------------------------------------------------------
# The champion
# ---------------------------------------------------------------------------------------------


def resolve_champion(spec: PipelineSpec, tracking_uri: str | None = None) -> dict[str, Any]:
    """The champion as a pinned version, with its signature's input columns (JSON, for XCom).

    Resolved once per run: every partition then loads ``model_uri`` (a version, not the alias).
    """
    import mlflow

    client = tracking.client(tracking_uri)
    with tracking.service_errors(tracking_uri):
        version = alias_version(client, spec.model_name, "champion")
        if version is None:
            raise NothingToDo(f"pipeline {spec.name}: there is no champion model yet; nothing to score with")
        model_version = client.get_model_version(spec.model_name, version)
        uri = f"models:/{spec.model_name}/{version}"
        signature = mlflow.models.get_model_info(uri).signature
    inputs = None
    if signature is not None and signature.inputs is not None and signature.inputs.has_input_names():
        inputs = [{"name": c["name"], "type": str(c.get("type", ""))} for c in signature.inputs.to_dict()]
    champion = {
        "model": spec.model_name,
        "version": version,
        "model_uri": uri,
        "mlflow_run_id": model_version.run_id,
        "inputs": inputs,
        "resolved_at": time.time(),
    }
    log.info("Champion of %s resolved to %s for this run", spec.model_name, uri)
    return champion


def load_model(champion: dict[str, Any], tracking_uri: str | None = None) -> Any:
    """The pinned champion version as a scikit-learn model (read in place from a local store)."""
    import mlflow

    client = tracking.client(tracking_uri)
    started = time.monotonic()
    with tracking.service_errors(tracking_uri), tempfile.TemporaryDirectory() as tmp:
        model = mlflow.sklearn.load_model(str(model_dir(client, champion["model"], champion["version"], tmp)))
    log.info("Loaded %s in %.1f s", champion["model_uri"], time.monotonic() - started)
    return model


def input_columns(champion: dict[str, Any], model: Any) -> list[dict[str, str | None]]:
    """The columns the model reads, with their signature type (None when there is no signature)."""
    if champion.get("inputs"):
        return [{"name": c["name"], "type": c.get("type")} for c in champion["inputs"]]
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        raise DataError(
            f"{champion['model_uri']} has neither a signature nor feature names: cannot tell which columns it reads"
        )
    return [{"name": str(n), "type": None} for n in names]


# ---------------------------------------------------------------------------------------------
# Partitions
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Partition:
    """One unit of scoring: a file, or a folder of files, directly under the scoring input."""

    name: str
    uri: str
    files: tuple[str, ...]
    fingerprint: tuple[tuple[str, int, str], ...]  # (file name, size, modified): changes when the input does


def _visible(entry: dict[str, Any]) -> bool:
    return not posixpath.basename(entry["name"].rstrip("/")).startswith((".", "_"))


def _stamp(entry: dict[str, Any]) -> tuple[str, int, str]:
    modified = next(
        (entry[k] for k in ("mtime", "LastModified", "updated", "last_modified") if entry.get(k)), ""
    )
    return posixpath.basename(entry["name"]), int(entry.get("size") or 0), str(modified)


def _file_entries(fs: Any, path: str) -> list[dict[str, Any]]:
    entries = [e for e in fs.ls(path, detail=True) if e["type"] == "file" and _visible(e)]
    return sorted(entries, key=lambda e: e["name"])


def _make_partition(fs: Any, entry: dict[str, Any]) -> Partition:
    uri = fs.unstrip_protocol(entry["name"].rstrip("/"))
    files = [entry] if entry["type"] == "file" else _file_entries(fs, entry["name"])
    return Partition(
        name=storage.basename(uri),
        uri=uri,
        files=tuple(fs.unstrip_protocol(f["name"]) for f in files),
        fingerprint=tuple(_stamp(f) for f in files),
    )


def partitions(spec: PipelineSpec) -> list[Partition]:
    """Every partition under the scoring input (folders without visible files are not partitions)."""
    fs, root = storage.fs_for(spec.uri("scoring"))
    if not fs.exists(root):
        return []
    found = [_make_partition(fs, e) for e in fs.ls(root, detail=True) if _visible(e)]
    return sorted((p for p in found if p.files), key=lambda p: p.name)


def describe_partition(uri: str) -> Partition:
    fs, path = storage.fs_for(uri)
    try:
        entry = fs.info(path)
    except FileNotFoundError:
        raise DataError(f"scoring partition {uri} does not exist") from None
    entry["name"] = path
    partition = _make_partition(fs, entry)
    if not partition.files:
        raise DataError(f"scoring partition {uri} holds no input file")
    return partition


def output_folder(spec: PipelineSpec, input_uri: str) -> str:
    return storage.join(spec.uri("predictions"), storage.basename(input_uri))


def _manifest(folder: str) -> dict[str, Any] | None:
    try:
        return storage.read_json(storage.join(folder, storage.SUCCESS))
    except FileNotFoundError:
        return None


def list_partitions(spec: PipelineSpec, *, rescore: bool = False, redo_run: str | None = None) -> list[str]:
    """URIs of the partitions to score: no complete output yet, or an input changed since it was
    scored (a file added to a date folder), or, with ``rescore``, all of them.

    ``redo_run``: partitions whose output this run id wrote are pending again, so a cleared Airflow
    run redoes (and replaces) exactly its own partitions instead of finding nothing to do.
    """
    pending = []
    for partition in partitions(spec):
        manifest = None if rescore else _manifest(output_folder(spec, partition.uri))
        changed = (
            manifest is not None
            and manifest.get("fingerprint") is not None
            and [list(f) for f in partition.fingerprint] != manifest["fingerprint"]
        )
        own = manifest is not None and redo_run is not None and manifest.get("run_id") == redo_run
        if manifest is None or changed or own:
            pending.append(partition.uri)
    if not pending:
        raise NothingToDo(f"pipeline {spec.name}: no new scoring input in {spec.uri('scoring')}")
    log.info("%d partition(s) to score: %s", len(pending), ", ".join(map(storage.basename, pending)))
    return pending


# ---------------------------------------------------------------------------------------------
# Signature check
# ---------------------------------------------------------------------------------------------


def _arrow_kind(arrow_type: Any) -> str:
    import pyarrow as pa

    t = arrow_type.value_type if pa.types.is_dictionary(arrow_type) else arrow_type
    checks = (
        ("null", pa.types.is_null),
        ("boolean", pa.types.is_boolean),
        ("integer", pa.types.is_integer),
        ("float", lambda x: pa.types.is_floating(x) or pa.types.is_decimal(x)),
        (
            "string",
            lambda x: pa.types.is_string(x) or pa.types.is_large_string(x) or pa.types.is_string_view(x),
        ),
        (
            "binary",
            lambda x: (
                pa.types.is_binary(x) or pa.types.is_large_binary(x) or pa.types.is_fixed_size_binary(x)
            ),
        ),
        ("datetime", lambda x: pa.types.is_timestamp(x) or pa.types.is_date(x)),
    )
    return next((kind for kind, check in checks if check(t)), "other")


def _pandas_kind(series: pd.Series) -> str:
    api = pd.api.types
    if api.is_bool_dtype(series.dtype):
        kind = "boolean"
    elif api.is_integer_dtype(series.dtype):
        kind = "integer"
    elif api.is_float_dtype(series.dtype):
        kind = "float"
    elif api.is_datetime64_any_dtype(series.dtype):
        kind = "datetime"
    elif api.is_string_dtype(series.dtype) or isinstance(series.dtype, pd.CategoricalDtype):
        kind = "string"
    else:
        kind = "other"
    return kind


def signature_problems(
    found: dict[str, tuple[str | None, str]], columns: list[dict[str, Any]], id_column: str | None
) -> tuple[list[str], list[str]]:
    """(missing, mistyped) columns; ``found`` maps a column name to (kind, type as written); a kind
    of None is not known yet (a CSV header) and not checked."""
    missing = [c["name"] for c in columns if c["name"] not in found]
    if id_column and id_column not in found:
        missing.append(f"{id_column} (the id column)")
    mistyped = []
    for column in columns:
        accepted = ACCEPTED.get(column["type"] or "")
        if accepted is None or column["name"] not in found:
            continue
        kind, written = found[column["name"]]
        if kind is not None and kind not in accepted and kind != "null":
            mistyped.append(f"{column['name']} is {written} (the model expects {column['type']})")
    return missing, mistyped


def _file_columns(uri: str, fmt: str, label: str) -> dict[str, tuple[str | None, str]]:
    """A file's columns before any row is read: the Parquet footer's types, a CSV header's names."""
    import pyarrow as pa

    try:
        if fmt == "parquet":
            return {f.name: (_arrow_kind(f.type), str(f.type)) for f in _parquet_source(uri).schema_arrow}
        fs, path = storage.fs_for(uri)
        with fs.open(path, "rb") as handle:
            return {str(name): (None, "") for name in pd.read_csv(handle, nrows=0).columns}
    except (OSError, ValueError, pa.ArrowException, pd.errors.ParserError) as exc:
        raise _read_error(label, fmt, exc) from None


def _raise_mismatch(label: str, champion: dict[str, Any], missing: list[str], mistyped: list[str]) -> None:
    if not missing and not mistyped:
        return
    parts = []
    if missing:
        parts.append(f"missing column(s): {', '.join(missing)}")
    if mistyped:
        parts.append(f"mistyped column(s): {', '.join(mistyped)}")
    raise DataError(
        f"{label} does not match the signature of {champion['model']} v{champion['version']}: {'; '.join(parts)}"
    )


# ---------------------------------------------------------------------------------------------
# Reading, predicting, writing
# ---------------------------------------------------------------------------------------------


@dataclass
class Chunk:
    features: pd.DataFrame  # the model's input columns, in signature order
    ids: Any  # Arrow array or numpy array of the id column, or None (row ids are then positions)
    rows: int
    bytes_read: int | None = None  # position in the file, for progress when rows are not known (CSV)


def _read_error(label: str, fmt: str, exc: Exception) -> DataError:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return DataError(f"{label}: cannot be read as {fmt}: {reason}")


def _parquet_source(uri: str) -> Any:
    """A ParquetFile read as a stream of pages, so memory follows the chunk, not the file.

    Arrow's default (``pre_buffer``, whole column chunks) holds entire row groups and reads ahead:
    its peak grows with the file. Local files are opened by Arrow itself, not through Python.
    """
    import pyarrow.parquet as pq

    options = {"buffer_size": READ_BUFFER_BYTES, "pre_buffer": False}
    local = storage.local_path(uri)
    if local is not None:
        return pq.ParquetFile(local, **options)
    fs, path = storage.fs_for(uri)
    return pq.ParquetFile(fs.open(path, "rb"), **options)


def _parquet_chunks(
    uri: str,
    label: str,
    columns: list[dict[str, Any]],
    id_column: str | None,
    chunk_rows: int,
    champion: dict,
) -> Iterator[Chunk]:
    import pyarrow as pa

    names = [c["name"] for c in columns]
    wanted = names + ([id_column] if id_column and id_column not in names else [])
    try:
        batches = _parquet_source(uri).iter_batches(batch_size=chunk_rows, columns=wanted)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise _read_error(label, "parquet", exc) from None
    while True:
        try:
            batch = next(batches, None)
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise _read_error(label, "parquet", exc) from None
        if batch is None:
            return
        ids = batch.column(id_column) if id_column else None
        yield Chunk(batch.select(names).to_pandas(), ids, batch.num_rows)


def _csv_chunks(
    uri: str,
    label: str,
    columns: list[dict[str, Any]],
    id_column: str | None,
    chunk_rows: int,
    champion: dict,
) -> Iterator[Chunk]:
    names = [c["name"] for c in columns]
    wanted = set(names) | ({id_column} if id_column else set())
    # String columns are read as text: "00123" must stay a string, not become an integer.
    dtypes = {c["name"]: object for c in columns if c["type"] == "string"}
    types = {c["name"]: c["type"] for c in columns}
    fs, path = storage.fs_for(uri)
    with fs.open(path, "rb") as handle:
        try:
            reader = pd.read_csv(handle, chunksize=chunk_rows, usecols=lambda c: c in wanted, dtype=dtypes)
            for frame in reader:
                found = {}
                for name in frame.columns:
                    kind = _pandas_kind(frame[name])
                    accepted = ACCEPTED.get(types.get(name) or "")
                    if accepted and kind not in accepted and frame[name].isna().all():
                        kind = "null"  # an empty column in this chunk: pandas reads it as float
                    found[name] = (kind, str(frame[name].dtype))
                _raise_mismatch(label, champion, *signature_problems(found, columns, id_column))
                ids = frame[id_column].to_numpy() if id_column else None
                yield Chunk(frame[names], ids, len(frame), bytes_read=handle.tell())
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            raise _read_error(label, "csv", exc) from None


def _constant(value: str, rows: int) -> Any:
    """A string column holding one value: a dictionary array (no per-row string is built)."""
    import numpy as np
    import pyarrow as pa

    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(rows, dtype=np.int8)), pa.array([value]))


def _dictionary_columns(schema: Any, id_name: str) -> list[str]:
    """Columns worth dictionary-encoding: few distinct values. Trying it on ids and probabilities
    costs more than writing everything else (the writer falls back only after hashing a page)."""
    import pyarrow as pa

    return [
        f.name for f in schema if f.name not in (id_name, "probability") and not pa.types.is_floating(f.type)
    ]


class Progress:
    """Logs rows done, rows/s and the ETA at most every ``every`` seconds, and once at the end."""

    def __init__(self, label: str, total_rows: int | None, every: float) -> None:
        self.label, self.total, self.every = label, total_rows, every
        self.started = self.last = time.monotonic()
        self.rows = 0

    def update(self, rows: int, fraction: float | None = None) -> None:
        self.rows += rows
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self._log(now, fraction)

    def _log(self, now: float, fraction: float | None) -> None:
        elapsed = max(now - self.started, 1e-9)
        rate = self.rows / elapsed
        if self.total:
            fraction = self.rows / self.total
        if fraction:
            eta = _duration(elapsed * (1 - fraction) / fraction)
            total = f"/{self.total}" if self.total else ""
            log.info(
                "%s: %d%s rows (%.0f%%), %.0f rows/s, ETA %s",
                self.label,
                self.rows,
                total,
                100 * fraction,
                rate,
                eta,
            )
        else:
            log.info("%s: %d rows, %.0f rows/s", self.label, self.rows, rate)

    def seconds(self) -> float:
        return time.monotonic() - self.started


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _remove_leftovers(folder: str) -> None:
    """Temporary files of an attempt that was killed before it could clean up after itself."""
    fs, path = storage.fs_for(folder)
    if not fs.exists(path):
        return
    for entry in fs.ls(path, detail=False):
        if posixpath.basename(entry).startswith(storage.TEMP_PREFIX):
            log.info("Removing %s, left by an attempt that did not finish", posixpath.basename(entry))
            fs.rm(entry)


def _total_rows(files: tuple[str, ...], fmt_of: dict[str, str]) -> int | None:
    """Rows of a Parquet partition from the file footers (None for CSV: progress then uses bytes)."""
    if any(fmt_of[f] != "parquet" for f in files):
        return None
    try:
        return sum(_parquet_source(f).metadata.num_rows for f in files)
    except Exception:  # unreadable: the read itself will report it
        return None


def score_partition(
    spec: PipelineSpec,
    partition_uri: str,
    *,
    champion: dict[str, Any],
    run_id: str,
    model: Any = None,
    tracking_uri: str | None = None,
    progress_every: float = PROGRESS_SECONDS,
) -> dict[str, Any]:
    """Score one partition into ``<output>/<partition>/predictions.parquet``; return its manifest.

    ``champion`` is what ``resolve_champion`` returned for this run; ``model`` may be passed when it
    is already loaded (scoring several partitions in one process).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    partition = describe_partition(partition_uri)
    model = model if model is not None else load_model(champion, tracking_uri)
    columns = input_columns(champion, model)
    id_column = spec.data.id_column
    version, chunk_rows = str(champion["version"]), spec.inference.chunk_rows
    fmt_of = {f: detect_format(f, spec.inference.format) for f in partition.files}
    label = f"pipeline {spec.name}: {partition.name}"

    labels = {
        f: label if len(partition.files) == 1 else f"{label}/{storage.basename(f)}" for f in partition.files
    }
    for uri in partition.files:  # before the old output is touched: a mismatch leaves it as it was
        found = _file_columns(uri, fmt_of[uri], labels[uri])
        _raise_mismatch(labels[uri], champion, *signature_problems(found, columns, id_column))

    folder = output_folder(spec, partition.uri)
    target_uri = storage.join(folder, PREDICTIONS_FILE)
    storage.remove_tree(storage.join(folder, storage.SUCCESS))  # the old output is stale from now on
    _remove_leftovers(folder)

    predictor = Predictor(model)
    progress = Progress(label, _total_rows(partition.files, fmt_of), progress_every)
    log.info(
        "%s: scoring %d file(s)%s with %s",
        label,
        len(partition.files),
        f", {progress.total} rows" if progress.total else "",
        champion["model_uri"],
    )
    id_name = id_column or ROW_ID
    sizes = dict(zip(partition.files, (size for _, size, _ in partition.fingerprint), strict=True))
    total_bytes, bytes_before = max(sum(sizes.values()), 1), 0
    writer, done = None, 0
    with storage.atomic_path(target_uri) as tmp:
        local = storage.local_path(tmp)
        fs, tmp_path = storage.fs_for(tmp)
        sink = None if local is not None else fs.open(tmp_path, "wb")
        try:
            for uri in partition.files:
                file_label = labels[uri]
                read = _parquet_chunks if fmt_of[uri] == "parquet" else _csv_chunks
                for chunk in read(uri, file_label, columns, id_column, chunk_rows, champion):
                    try:
                        predicted = predictor(chunk.features)
                    except (ValueError, TypeError) as exc:
                        raise DataError(
                            f"{file_label}: {champion['model']} v{version} cannot score it: {str(exc).splitlines()[0]}"
                        ) from None
                    ids = chunk.ids if chunk.ids is not None else np.arange(done, done + chunk.rows)
                    table = pa.table(
                        {
                            id_name: ids,
                            **predicted,
                            "model_version": _constant(version, chunk.rows),
                            "run_id": _constant(run_id, chunk.rows),
                        }
                    )
                    if writer is None:
                        writer = pq.ParquetWriter(
                            local if local is not None else sink,
                            table.schema,
                            use_dictionary=_dictionary_columns(table.schema, id_name),
                        )
                    elif table.schema != writer.schema:
                        try:
                            table = table.cast(writer.schema)
                        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                            raise DataError(
                                f"{file_label}: its columns differ in type from the partition's first file: {exc}"
                            ) from None
                    writer.write_table(table)
                    done += chunk.rows
                    fraction = None
                    if chunk.bytes_read is not None:
                        fraction = (bytes_before + chunk.bytes_read) / total_bytes
                    progress.update(chunk.rows, fraction)
                bytes_before += sizes[uri]
            if writer is None:
                raise DataError(f"{label} has no rows to score")
        finally:
            if writer is not None:
                writer.close()
            if sink is not None:
                sink.close()
    seconds = progress.seconds()
    log.info(
        "%s: %d rows scored in %.1f s (%.0f rows/s) -> %s",
        label,
        done,
        seconds,
        done / max(seconds, 1e-9),
        target_uri,
    )
    manifest = {
        "partition": partition.name,
        "input": partition.uri,
        "inputs": list(partition.files),
        "fingerprint": [list(f) for f in partition.fingerprint],
        "rows": done,
        "model": champion["model"],
        "model_version": version,
        "model_uri": champion["model_uri"],
        "run_id": run_id,
        "scored_at": time.time(),
        "seconds": round(seconds, 3),
        "output": target_uri,
    }
    storage.mark_success(folder, manifest)
    return manifest


# ---------------------------------------------------------------------------------------------
# A whole run
# ---------------------------------------------------------------------------------------------


def summarize(champion: dict[str, Any], manifests: list[dict[str, Any]]) -> dict[str, Any]:
    """What one run scored: the version, and per partition its manifest."""
    manifests = [m for m in manifests if m]
    return {
        "model": champion["model"],
        "model_version": str(champion["version"]),
        "model_uri": champion["model_uri"],
        "partitions": len(manifests),
        "rows": sum(m["rows"] for m in manifests),
        "outputs": [m["output"] for m in manifests],
        "files": manifests,
    }


def score(
    spec: PipelineSpec, *, run_id: str, rescore: bool = False, tracking_uri: str | None = None
) -> dict[str, Any]:
    """Score every pending partition in this process, one after the other (CLI, tests).

    The DAG does the same with one mapped task per partition.
    """
    pending = list_partitions(spec, rescore=rescore)
    champion = resolve_champion(spec, tracking_uri)
    model = load_model(champion, tracking_uri)
    manifests = [
        score_partition(spec, uri, champion=champion, run_id=run_id, model=model, tracking_uri=tracking_uri)
        for uri in pending
    ]
    return summarize(champion, manifests)


def scored_batches(spec: PipelineSpec) -> list[dict[str, Any]]:
    """Manifests of every complete prediction output, most recent first."""
    found = []
    for folder in storage.list_dirs(spec.uri("predictions")):
        if storage.is_complete(folder):
            found.append(storage.read_json(storage.join(folder, storage.SUCCESS)))
    return sorted(found, key=lambda m: m["scored_at"], reverse=True)
