"""Reading input files into DataFrames, with errors a person can act on."""

from __future__ import annotations

import codecs
import csv
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
from include.mlops.errors import DataError
from include.mlops.spec import PipelineSpec


def detect_format(uri: str, declared: str) -> str:
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


def check_columns(frame: pd.DataFrame, spec: PipelineSpec, *, name: str, with_target: bool = True) -> None:
    """The structural contract: the columns the spec relies on must be there."""
    required = [spec.data.id_column, spec.data.timestamp_column, *(spec.data.features or [])]
    if with_target:
        required.append(spec.data.target)
    missing = [c for c in required if c and c not in frame.columns]
    if missing:
        raise DataError(
            f"{name}: missing required column(s) {', '.join(missing)}; found {', '.join(map(str, frame.columns))}"
        )


def feature_columns(frame: pd.DataFrame, spec: PipelineSpec) -> list[str]:
    if spec.data.features:
        return list(spec.data.features)
    skip = {spec.data.target, spec.data.id_column, spec.data.timestamp_column}
    # Raw timestamps make poor features (one-hot over instants); list them in data.features to keep them.
    return [c for c in frame.columns if c not in skip and not pd.api.types.is_datetime64_any_dtype(frame[c])]


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
    with _binary(uri) as handle:
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


@contextmanager
def _binary(uri: str) -> Iterator[Any]:
    """The file open for binary reading (local or fsspec)."""
    fs, path = storage.fs_for(uri)
    try:
        handle = fs.open(path, "rb")
    except FileNotFoundError:
        raise DataError(f"{storage.basename(uri)}: file not found at {uri}") from None
    with handle:
        yield handle


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


BOMS = {
    b"\xef\xbb\xbf": "UTF-8",
    b"\xff\xfe": "UTF-16",
    b"\xfe\xff": "UTF-16",
}
PARQUET_MAGIC = b"PAR1"
FUTURE_TOLERANCE = pd.Timedelta(days=1)  # clock skew between the source system and us


def sniff_bytes(data: bytes, fmt: str, *, name: str, complete: bool = True) -> None:
    """Cheap checks on the raw bytes, so that the reason names the real problem, not a parser's symptom.

    ``complete=False``: ``data`` is the head of a larger CSV file (``sniff_file``); a character cut
    at its end is not an error and the rows are checked by the caller.
    """
    if fmt == "parquet":
        if data[:4] != PARQUET_MAGIC:
            looks = "text" if _is_text(data[:4096]) else "binary data"
            raise DataError(
                f"{name}: cannot be read as parquet: not a Parquet file (no PAR1 magic bytes at the start; it holds {looks}); "
                "export it as Parquet or land it with the extension of its real format"
            )
        if len(data) < 12 or data[-4:] != PARQUET_MAGIC:
            raise DataError(
                f"{name}: cannot be read as parquet: a truncated or corrupt Parquet file (no footer at the end); upload it again"
            )
        return
    for bom, encoding in BOMS.items():
        if data.startswith(bom):
            raise DataError(
                f"{name}: starts with a {encoding} byte-order mark; remove the byte-order mark "
                "(export as UTF-8 without BOM)"
            )
    if data[:4] == PARQUET_MAGIC or b"\x00" in data[:4096]:
        raise DataError(
            f"{name}: is binary data, not CSV text; export it as CSV or land it with its real extension"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if not complete and exc.reason == "unexpected end of data":
            text = data[: exc.start].decode("utf-8")
        else:
            raise DataError(
                f"{name}: is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); re-export it as UTF-8"
            ) from None
    header = text.split("\n", 1)[0]
    if "," not in header:
        for delimiter, label in ((";", "';'"), ("\t", "a tab"), ("|", "'|'")):
            if delimiter in header:
                raise DataError(
                    f"{name}: uses {label} as the delimiter; expected ',' (comma-separated values)"
                )
    if complete:
        _check_csv_rows(text, name=name)


SNIFF_HEAD_BYTES = 64 * 1024


def sniff_file(uri: str, fmt: str, *, name: str) -> None:
    """``sniff_bytes`` for a file too large to hold in memory, with the same reasons.

    Parquet: the magic bytes at both ends. CSV: the byte-order mark, binary content and delimiter
    from the first 64 KiB, then one streamed pass that decodes the whole file as UTF-8 and checks
    that every row has as many fields as the header (the parser would pad a short row with nulls).
    """
    total = storage.size(uri)
    with _binary(uri) as handle:
        if fmt == "parquet":
            if total <= 4096 + 4:
                sniff_bytes(handle.read(), fmt, name=name)
                return
            head = handle.read(4096)
            handle.seek(total - 4)
            sniff_bytes(head + handle.read(4), fmt, name=name)  # what sniff_bytes looks at
            return
        head = handle.read(SNIFF_HEAD_BYTES)
        sniff_bytes(head, fmt, name=name, complete=len(head) >= total)
        if len(head) < total:
            handle.seek(0)
            _check_stream_rows(handle, name=name)


def _check_stream_rows(handle: Any, *, name: str) -> None:
    """UTF-8 decoding and row widths of a whole CSV file, streamed (same messages as ``sniff_bytes``)."""
    text = io.TextIOWrapper(handle, encoding="utf-8", newline="\n")
    try:
        _check_csv_rows_iter(text, name=name)
    except UnicodeDecodeError:
        handle.seek(0)
        decoder = codecs.getincrementaldecoder("utf-8")()
        offset = 0
        while block := handle.read(1 << 20):
            pending = len(decoder.getstate()[0])
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                at = offset - pending + exc.start
                raise DataError(
                    f"{name}: is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {at}); "
                    "re-export it as UTF-8"
                ) from None
            offset += len(block)
        raise DataError(f"{name}: is not UTF-8 text; re-export it as UTF-8") from None
    finally:
        text.detach()


def _check_csv_rows(text: str, *, name: str) -> None:
    """Every row has as many fields as the header (a truncated row, a wide row, a schema change)."""
    _check_csv_rows_iter(io.StringIO(text), name=name)


CSV_FIELD_LIMIT = 1 << 30  # pandas reads fields of any length; the csv module stops at 128 KiB


def _check_csv_rows_iter(lines: Any, *, name: str) -> None:
    if csv.field_size_limit() < CSV_FIELD_LIMIT:
        csv.field_size_limit(CSV_FIELD_LIMIT)
    rows = csv.reader(lines)
    try:
        header = next(rows, None)
        if header is None:
            return
        width = len(header)
        for row in rows:
            if not row:
                continue
            if len(row) != width:
                # same words as the parser's own error (``_unreadable``), so streamed and whole reads agree
                raise DataError(
                    f"{name}: cannot be read as csv: line {rows.line_num} has {len(row)} fields, "
                    f"the header has {width}"
                )
    except csv.Error as exc:
        raise DataError(f"{name}: cannot be read as csv: line {rows.line_num}: {exc}") from None


def _is_text(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return b"\x00" not in data


def suite_columns(suite: dict[str, Any]) -> dict[str, set[str]]:
    """Column name -> the kinds of rule the suite applies to it ("numeric", "set", "any")."""
    kinds: dict[str, set[str]] = {}
    for expectation in suite.get("expectations", []):
        kwargs = expectation.get("kwargs") or {}
        column = kwargs.get("column")
        if not isinstance(column, str):
            continue
        bounds = [kwargs.get("min_value"), kwargs.get("max_value")]
        numeric = expectation.get("type") == "expect_column_values_to_be_between" and any(
            isinstance(b, int | float) and not isinstance(b, bool) for b in bounds
        )
        kinds.setdefault(column, set()).add("numeric" if numeric else "any")
    return kinds


def check_content(frame: pd.DataFrame, spec: PipelineSpec, suite: dict[str, Any], *, name: str) -> None:
    """Structural rules a Great Expectations suite cannot express, derived from the spec and the suite.

    The columns must be exactly those the spec and suite name (an extra or renamed column is a
    changed export, not noise); columns the suite bounds numerically must hold numbers; the
    timestamp column must parse and not lie in the future; a classification target needs two classes.
    Large files get the same rules, chunk by chunk, through ``ContentCheck``.
    """
    check = ContentCheck(list(map(str, frame.columns)), spec, suite, name=name)
    check.update(frame)
    check.finish()


class ContentCheck:
    """``check_content`` fed one chunk at a time, reaching the same verdict and the same message.

    The column rules are checked on the header when it is created; ``update`` tallies each chunk
    (counts of bad values, the first example in file order, the latest timestamp, up to two target
    classes: memory does not grow with the file) and ``finish`` raises the DataError that
    ``check_content`` raises on the whole file. ``restart`` forgets the tallies, for a second pass.
    """

    def __init__(self, columns: list[str], spec: PipelineSpec, suite: dict[str, Any], *, name: str) -> None:
        self.name = name
        data = spec.data
        named = suite_columns(suite)
        known = set(named) | {c for c in (data.id_column, data.timestamp_column, data.target) if c}
        known |= set(data.features or [])
        keys = {data.id_column, data.timestamp_column, data.target}
        # The schema is closed when the spec lists the features or the suite describes columns beyond
        # the keys; a suite that only checks ids and labels says nothing about which other columns may come.
        closed = bool(data.features) or any(c not in keys for c in named)
        extra = [c for c in columns if c not in known] if closed else []
        missing = sorted(c for c in named if c not in columns)
        if missing and extra:
            raise DataError(
                f"{name}: column(s) {', '.join(missing)} missing and unexpected column(s) {', '.join(extra)} "
                "found (renamed?); rename them back or update the spec and suite"
            )
        if missing:
            raise DataError(
                f"{name}: missing column(s) {', '.join(missing)} that the validation suite checks"
            )
        if extra:
            raise DataError(
                f"{name}: unexpected extra column(s) {', '.join(extra)}; add them to the spec's features and "
                "the suite, or drop them from the export"
            )
        self.numeric = [
            c
            for c in columns
            if "numeric" in named.get(c, set()) or (c == data.target and data.task == "regression")
        ]
        self.timestamp = data.timestamp_column if data.timestamp_column in columns else None
        self.target = data.target if data.task == "classification" and data.target in columns else None
        self.restart()

    def restart(self) -> None:
        self.rows = 0
        self._numbers = {column: _NumberTally() for column in self.numeric}
        self._times = _TimeTally()
        self._classes: list[Any] = []

    def update(self, frame: pd.DataFrame) -> None:
        self.rows += len(frame)
        for column, tally in self._numbers.items():
            tally.update(frame[column])
        if self.timestamp:
            self._times.update(frame[self.timestamp])
        if self.target and len(self._classes) < 2:
            for value in frame[self.target].dropna().unique():
                if not any(value == known for known in self._classes):
                    self._classes.append(value)
                    if len(self._classes) == 2:
                        break

    def finish(self) -> None:
        """Raise the first problem found, in ``check_content``'s order: numbers, timestamps, classes."""
        name = self.name
        for column, tally in self._numbers.items():
            tally.raise_problem(column, self.rows, name=name)
        if self.timestamp:
            self._times.raise_problem(self.timestamp, name=name)
        if self.target and len(self._classes) == 1:
            raise DataError(
                f"{name}: target {self.target} holds a single class ({self._classes[0]!r}) in all "
                f"{self.rows} rows; a classifier cannot learn from it - check the export's filter"
            )


class _NumberTally:
    """A column that should hold numbers, over chunks: bad values, overflow, text storage."""

    def __init__(self) -> None:
        self.bad = 0
        self.example: str | None = None
        self.overflow = False
        self.text_dtype: Any = None  # the dtype of the first chunk not stored as numbers
        self.numeric_overflow = False  # a chunk stored as numbers holds |x| >= 2**63

    def update(self, values: pd.Series) -> None:
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            # whole-file read: this chunk's numbers share a text column with other chunks' values
            # only when some chunk is not numeric; remember whether they would overflow there
            if not self.numeric_overflow and len(values):
                largest = np.nanmax(np.abs(values.to_numpy(dtype="float64", na_value=np.nan)), initial=0.0)
                self.numeric_overflow = bool(largest >= 2**63)
            return
        if self.text_dtype is None:
            self.text_dtype = values.dtype
        present = values.dropna()
        coerced = pd.to_numeric(present.astype(str), errors="coerce")
        bad = present[coerced.isna()]
        if len(bad) and self.example is None:
            self.example = str(bad.iloc[0])[:40]
        self.bad += len(bad)
        self.overflow = self.overflow or bool((coerced.abs() >= 2**63).any())

    def raise_problem(self, column: str, rows: int, *, name: str) -> None:
        if self.text_dtype is None:
            return  # stored as numbers throughout
        if self.bad:
            raise DataError(
                f"{name}: column {column} should hold numbers but {self.bad} of {rows} value(s) are not, "
                f"e.g. {self.example!r}"
            )
        if self.overflow or self.numeric_overflow:
            raise DataError(
                f"{name}: column {column} holds value(s) too large for a 64-bit number (overflow)"
            )
        raise DataError(
            f"{name}: column {column} is stored as {self.text_dtype} text; it should hold numbers"
        )


class _TimeTally:
    """The timestamp column over chunks: unparseable values and the latest instant."""

    def __init__(self) -> None:
        self.bad = 0
        self.example: str | None = None
        self.latest: pd.Timestamp | None = None

    def update(self, values: pd.Series) -> None:
        if pd.api.types.is_datetime64_any_dtype(values):
            parsed = values if values.dt.tz is not None else values.dt.tz_localize("UTC")
        else:
            present = values.dropna()
            parsed = pd.to_datetime(present.astype(str), errors="coerce", utc=True, format="ISO8601")
            bad = present[parsed.isna()]
            if len(bad) and self.example is None:
                self.example = str(bad.iloc[0])[:40]
            self.bad += len(bad)
        latest = parsed.max()
        if pd.notna(latest) and (self.latest is None or latest > self.latest):
            self.latest = latest

    def raise_problem(self, column: str, *, name: str) -> None:
        if self.bad:
            raise DataError(
                f"{name}: column {column} has {self.bad} unparseable timestamp(s), e.g. {self.example!r}; "
                "use ISO 8601"
            )
        if self.latest is not None and self.latest > pd.Timestamp.now(tz="UTC") + FUTURE_TOLERANCE:
            raise DataError(
                f"{name}: column {column} has timestamp(s) in the future (latest {self.latest.isoformat()}); "
                "check the source system's clock or time zone"
            )
