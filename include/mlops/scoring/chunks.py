"""Streamed readers of a scoring file: Parquet through Arrow record batches, CSV through pandas.

Memory follows ``inference.chunk_rows``, not the size of the input. Only the model's columns (and
the id column) are read; a file that cannot be read becomes one DataError naming it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from include.mlops import storage
from include.mlops.errors import DataError
from include.mlops.scoring.signature import (
    ACCEPTED,
    Found,
    InputColumn,
    arrow_kind,
    check_columns,
    pandas_kind,
)

READ_BUFFER_BYTES = 1 << 20  # Parquet column data is streamed through buffers of this size


@dataclass
class Chunk:
    """One slice of an input file, ready for the model."""

    features: Any  # a DataFrame of the model's input columns, in signature order
    ids: Any  # Arrow array or numpy array of the id column, or None (row ids are then positions)
    rows: int
    bytes_read: int | None = None  # position in the file, for progress when rows are not known (CSV)


@dataclass(frozen=True)
class ReadPlan:
    """What to read from every file of a partition, and whom a mismatch is reported against."""

    columns: list[InputColumn]
    id_column: str | None
    chunk_rows: int
    model: str  # ``<model> v<version>``, named by signature errors

    @property
    def names(self) -> list[str]:
        """The model's input column names, in signature order."""
        return [c.name for c in self.columns]


def read_error(label: str, fmt: str, exc: Exception) -> DataError:
    """A reader's exception as a DataError naming the file and the format."""
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return DataError(f"{label}: cannot be read as {fmt}: {reason}")


def parquet_source(uri: str) -> Any:
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


def file_columns(uri: str, fmt: str, label: str) -> Found:
    """A file's columns before any row is read: the Parquet footer's types, a CSV header's names."""
    import pandas as pd
    import pyarrow as pa

    try:
        if fmt == "parquet":
            return {f.name: (arrow_kind(f.type), str(f.type)) for f in parquet_source(uri).schema_arrow}
        fs, path = storage.fs_for(uri)
        with fs.open(path, "rb") as handle:
            return {str(name): (None, "") for name in pd.read_csv(handle, nrows=0).columns}
    except (OSError, ValueError, pa.ArrowException, pd.errors.ParserError) as exc:
        raise read_error(label, fmt, exc) from None


def total_rows(files: tuple[str, ...], fmt_of: dict[str, str]) -> int | None:
    """Rows of a Parquet partition from the file footers (None for CSV: progress then uses bytes)."""
    if any(fmt_of[f] != "parquet" for f in files):
        return None
    try:
        return sum(parquet_source(f).metadata.num_rows for f in files)
    except Exception:  # unreadable: the read itself will report it
        return None


def read_chunks(uri: str, fmt: str, label: str, plan: ReadPlan) -> Iterator[Chunk]:
    """The file's chunks in order, whatever its format."""
    return parquet_chunks(uri, label, plan) if fmt == "parquet" else csv_chunks(uri, label, plan)


def parquet_chunks(uri: str, label: str, plan: ReadPlan) -> Iterator[Chunk]:
    """Record batches of the model's columns (types were checked on the footer beforehand)."""
    import pyarrow as pa

    names, id_column = plan.names, plan.id_column
    wanted = names + ([id_column] if id_column and id_column not in names else [])
    try:
        batches = parquet_source(uri).iter_batches(batch_size=plan.chunk_rows, columns=wanted)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise read_error(label, "parquet", exc) from None
    while True:
        try:
            batch = next(batches, None)
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise read_error(label, "parquet", exc) from None
        if batch is None:
            return
        ids = batch.column(id_column) if id_column else None
        yield Chunk(batch.select(names).to_pandas(), ids, batch.num_rows)


def chunk_kinds(frame: Any, types: dict[str, str | None]) -> Found:
    """Kinds of a CSV chunk's columns; a column empty in this chunk counts as null, not float."""
    found: Found = {}
    for name in frame.columns:
        kind = pandas_kind(frame[name])
        accepted = ACCEPTED.get(types.get(name) or "")
        if accepted and kind not in accepted and frame[name].isna().all():
            kind = "null"  # an empty column in this chunk: pandas reads it as float
        found[name] = (kind, str(frame[name].dtype))
    return found


def csv_chunks(uri: str, label: str, plan: ReadPlan) -> Iterator[Chunk]:
    """pandas chunks of the model's columns, each checked against the signature as it is read."""
    import pandas as pd

    names, id_column = plan.names, plan.id_column
    wanted = set(names) | ({id_column} if id_column else set())
    # String columns are read as text: "00123" must stay a string, not become an integer.
    dtypes = {c.name: object for c in plan.columns if c.type == "string"}
    types = {c.name: c.type for c in plan.columns}
    fs, path = storage.fs_for(uri)
    with fs.open(path, "rb") as handle:
        try:
            reader = pd.read_csv(
                handle, chunksize=plan.chunk_rows, usecols=lambda c: c in wanted, dtype=dtypes
            )
            for frame in reader:
                check_columns(label, plan.model, chunk_kinds(frame, types), plan.columns, id_column)
                ids = frame[id_column].to_numpy() if id_column else None
                yield Chunk(frame[names], ids, len(frame), bytes_read=handle.tell())
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            raise read_error(label, "csv", exc) from None
