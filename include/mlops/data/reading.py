"""Reading input files into DataFrames, with errors a person can act on."""

from __future__ import annotations

import io
import os
import posixpath
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd

from include.mlops import storage
from include.mlops.data.sniffing import sniff_bytes
from include.mlops.errors import DataError
from include.mlops.storage import open_binary


def detect_format(uri: str, declared: str) -> str:
    """The file's extension wins over the spec, so a mixed landing zone still reads right."""
    ext = posixpath.splitext(uri)[1].lower().lstrip(".")
    return ext if ext in {"csv", "parquet"} else declared


def read_frame(uri: str, fmt: str) -> pd.DataFrame:
    """Read one whole file; any parse problem becomes a one-line DataError."""
    name = storage.basename(uri)
    try:
        data = storage.read_bytes(uri)
    except FileNotFoundError:
        raise DataError(f"{name}: file not found at {uri}") from None
    if not data:
        raise DataError(f"{name}: the file is empty (0 bytes)")
    sniff_bytes(data, fmt, name=name)
    try:
        if fmt == "parquet":
            frame = pd.read_parquet(io.BytesIO(data))
        else:
            frame = pd.read_csv(io.BytesIO(data))
    except Exception as exc:
        raise _unreadable(name, fmt, exc) from None
    if frame.empty:
        raise DataError(f"{name}: the file has no data rows")
    return frame


# --- Streaming: large files in bounded memory -------------------------------------------------
#
# Each chunk must hold exactly the values, dtypes and index labels that ``read_frame`` would give
# the same rows, so that validating chunk by chunk can agree with validating the whole file:
#
# * CSV: pandas' C parser infers each column's type per block of rows (2**20 // number of columns,
#   rounded down to a power of two) and concatenates the blocks; a chunk size that is a multiple of
#   that block makes every chunk the concatenation of the same blocks a whole-file read parses.
# * Parquet: Arrow turns an integer column with nulls into float64 and a boolean one into object,
#   per batch; ``parquet_dtypes`` reads from the footer which columns the whole file turns.
# * Whole-file dtypes that only show once the file has been read (a CSV column that is int64 in one
#   chunk and float64 in another) are passed back in as ``dtypes`` and applied to every chunk.

CSV_BLOCK_CELLS = 2**20  # pandas' C parser: rows per type-inference block = this // columns (power of 2)


def csv_block_rows(columns: int) -> int:
    """Rows per type-inference block of pandas' C CSV parser for a table this wide."""
    heuristic = CSV_BLOCK_CELLS // max(columns, 1)
    rows = 1
    while rows * 2 < heuristic:
        rows *= 2
    return rows


def aligned_chunk_rows(rows: int, block: int) -> int:
    """``rows`` rounded up to a whole number of parser blocks (at least one)."""
    return max(1, -(-rows // block)) * block


def read_header(uri: str, fmt: str) -> pd.DataFrame:
    """The file's columns as an empty frame, read from the footer / header line only."""
    name = storage.basename(uri)
    _check_not_empty(uri, name)
    with _source(uri) as source:
        try:
            if fmt == "parquet":
                import pyarrow.parquet as pq

                return pq.ParquetFile(source).schema_arrow.empty_table().to_pandas()
            return pd.read_csv(source, nrows=0)
        except Exception as exc:
            raise _unreadable(name, fmt, exc) from None


def parquet_rows(uri: str) -> int:
    """Row count from the Parquet footer (no data read)."""
    import pyarrow.parquet as pq

    with _source(uri) as source:
        try:
            return int(pq.ParquetFile(source).metadata.num_rows)
        except Exception as exc:
            raise _unreadable(storage.basename(uri), "parquet", exc) from None


def parquet_dtypes(uri: str) -> dict[str, Any]:
    """Columns whose whole-file dtype differs from a null-free batch's (ints/bools with nulls).

    Arrow makes such a column float64 / object only in batches that hold a null, while a whole-file
    read does so for every row; the footer's null counts say which columns are affected. A column
    whose statistics are missing is left out (chunk dtypes are compared after the read anyway).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    with _source(uri) as source:
        parquet = pq.ParquetFile(source, pre_buffer=False)
        schema, meta = parquet.schema_arrow, parquet.metadata
        dtypes: dict[str, Any] = {}
        for index in range(meta.num_columns):
            column = meta.schema.column(index)
            if "." in column.path or column.name not in schema.names:
                continue  # nested field: Arrow keeps it as object either way
            arrow_type = schema.field(column.name).type
            if not (pa.types.is_integer(arrow_type) or pa.types.is_boolean(arrow_type)):
                continue
            nulls = 0
            for group in range(meta.num_row_groups):
                stats = meta.row_group(group).column(index).statistics
                if stats is None or not stats.has_null_count:
                    nulls = -1
                    break
                nulls += stats.null_count
            if nulls > 0:
                dtypes[column.name] = (
                    np.dtype("float64") if pa.types.is_integer(arrow_type) else np.dtype(object)
                )
        return dtypes


def iter_frames(
    uri: str,
    fmt: str,
    *,
    rows: int,
    columns: list[str] | None = None,
    dtypes: dict[str, Any] | None = None,
) -> Iterator[pd.DataFrame]:
    """The file as consecutive DataFrames of ``rows`` rows (CSV: rounded up to whole parser blocks).

    Each chunk carries the index labels, dtypes and values ``read_frame`` gives those rows, so
    results computed per chunk refer to the same rows and values as whole-file results.
    """
    name = storage.basename(uri)
    _check_not_empty(uri, name)
    with _source(uri) as source:
        reader = (
            _parquet_frames(source, rows, columns) if fmt == "parquet" else _csv_frames(source, rows, columns)
        )
        while True:
            try:
                frame = next(reader)
            except StopIteration:
                return
            except DataError:
                raise
            except Exception as exc:
                raise _unreadable(name, fmt, exc) from None
            yield _cast(frame, dtypes)
            del frame  # one chunk alive at a time: the caller's, not a stale one here


def read_columns(
    uri: str, fmt: str, columns: list[str] | None, *, dtypes: dict[str, Any] | None = None
) -> pd.DataFrame:
    """Some columns of the file, every row (None: every column), streamed from the file handle."""
    name = storage.basename(uri)
    with _source(uri) as source:
        try:
            if fmt == "parquet":
                frame = pd.read_parquet(source, columns=columns)
            else:
                frame = pd.read_csv(source, usecols=columns)
        except Exception as exc:
            raise _unreadable(name, fmt, exc) from None
    return _cast(frame, dtypes)


def write_parquet(uri: str, fmt: str, dest: str, *, rows: int) -> tuple[int, list[str]]:
    """Copy a file into one Parquet file at ``dest`` chunk by chunk; returns (rows, columns).

    Parquet is copied batch by batch in its own Arrow schema. CSV chunks are converted with the
    schema of the chunks so far; when a later chunk needs a wider type (a column that was all null,
    or int64 then float64) the copy starts again with the unified schema, as a whole-frame write
    would have inferred it from every row.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    name = storage.basename(uri)
    columns = list(map(str, read_header(uri, fmt).columns))
    if fmt == "parquet":
        written = 0
        with _source(uri) as source, _sink(dest) as sink:
            parquet = pq.ParquetFile(source, pre_buffer=False)
            with pq.ParquetWriter(sink, parquet.schema_arrow) as writer:
                for batch in parquet.iter_batches(batch_size=rows):
                    writer.write_batch(batch)
                    written += batch.num_rows
        return written, columns
    schema: pa.Schema | None = None
    for _attempt in range(len(columns) + 2):  # each restart widens at least one column
        written, widened = 0, None
        with _sink(dest) as sink:
            writer = None
            try:
                for frame in iter_frames(uri, fmt, rows=rows):
                    table = pa.Table.from_pandas(frame, preserve_index=False)
                    if schema is None:
                        schema = table.schema
                    if not table.schema.equals(schema):
                        unified = pa.unify_schemas([schema, table.schema], promote_options="permissive")
                        if not unified.equals(schema):
                            widened = unified
                            break
                        table = table.cast(schema)
                    if writer is None:
                        writer = pq.ParquetWriter(sink, schema)
                    writer.write_table(table)
                    written += table.num_rows
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
                raise DataError(f"{name}: cannot be written as Parquet: {str(exc).splitlines()[0]}") from None
            finally:
                if writer is not None:
                    writer.close()
        if widened is None:
            return written, columns
        schema = widened
    raise DataError(f"{name}: the column types keep changing from chunk to chunk; cannot write Parquet")


@contextmanager
def _sink(uri: str) -> Iterator[Any]:
    """A local path, or an fsspec file handle open for writing."""
    local = storage.local_path(uri)
    if local is not None:
        yield local
        return
    fs, path = storage.fs_for(uri)
    with fs.open(path, "wb") as handle:
        yield handle


@contextmanager
def _source(uri: str) -> Iterator[Any]:
    """A local path (read natively by Arrow / pandas) or an open fsspec file handle."""
    local = storage.local_path(uri)
    if local is not None:
        if not os.path.exists(local):
            raise DataError(f"{storage.basename(uri)}: file not found at {uri}")
        yield local
        return
    with open_binary(uri) as handle:
        yield handle


def _parquet_frames(source: Any, rows: int, columns: list[str] | None) -> Iterator[pd.DataFrame]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    # pre_buffer would keep the raw bytes of every row group read so far: memory growing with the file
    parquet = pq.ParquetFile(source, pre_buffer=False)
    index = (parquet.schema_arrow.pandas_metadata or {}).get("index_columns") or []
    ranged = (
        index[0]
        if len(index) == 1 and isinstance(index[0], dict) and index[0].get("kind") == "range"
        else None
    )
    offset = 0
    for batch in parquet.iter_batches(batch_size=rows, columns=columns, use_pandas_metadata=True):
        frame = pa.Table.from_batches([batch]).to_pandas()
        if not index or ranged is not None:  # the whole file gets a RangeIndex: continue it
            start, step = (ranged["start"], ranged["step"]) if ranged else (0, 1)
            frame.index = pd.RangeIndex(
                start + offset * step,
                start + (offset + len(frame)) * step,
                step,
                name=ranged.get("name") if ranged else None,
            )
        offset += len(frame)
        del batch
        yield frame
        del frame


def _csv_frames(source: Any, rows: int, columns: list[str] | None) -> Iterator[pd.DataFrame]:
    width = len(pd.read_csv(source, nrows=0).columns)
    if hasattr(source, "seek"):
        source.seek(0)
    chunk = aligned_chunk_rows(rows, csv_block_rows(width))
    with pd.read_csv(source, chunksize=chunk, usecols=columns) as reader:
        for frame in reader:
            yield frame
            del frame


def _check_not_empty(uri: str, name: str) -> None:
    try:
        size = storage.size(uri)
    except FileNotFoundError:
        raise DataError(f"{name}: file not found at {uri}") from None
    if size == 0:
        raise DataError(f"{name}: the file is empty (0 bytes)")


def _cast(frame: pd.DataFrame, dtypes: dict[str, Any] | None) -> pd.DataFrame:
    for column, dtype in (dtypes or {}).items():
        if column in frame.columns and frame[column].dtype != dtype:
            frame[column] = frame[column].astype(dtype)
    return frame


def _unreadable(name: str, fmt: str, exc: Exception) -> DataError:
    """A one-line summary of a parser error, without the library's internals."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    fields = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", text)
    if fields:
        expected, line, saw = fields.groups()
        text = f"line {line} has {saw} fields, the header has {expected}"
    elif len(text) > 160:
        text = text[:157] + "..."
    return DataError(f"{name}: cannot be read as {fmt}: {text}")
