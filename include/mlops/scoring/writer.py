"""Atomic output of one partition: a reader sees the old predictions, the new ones, or none; never half.

Commit order: the old ``_SUCCESS`` is removed first (the old output is stale from then on), the
predictions are written under a hidden temporary name and renamed onto ``predictions.parquet``,
then the new ``_SUCCESS`` manifest is written. Leftovers of a killed attempt are removed by the
next one, so a retry replaces exactly its partition's output.
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from include.mlops import storage
from include.mlops.errors import DataError
from include.mlops.scoring.partitions import PREDICTIONS_FILE

log = logging.getLogger(__name__)


def constant(value: str, rows: int) -> Any:
    """A string column holding one value: a dictionary array (no per-row string is built)."""
    import numpy as np
    import pyarrow as pa

    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(rows, dtype=np.int8)), pa.array([value]))


def dictionary_columns(schema: Any, id_name: str) -> list[str]:
    """Columns worth dictionary-encoding: few distinct values. Trying it on ids and probabilities
    costs more than writing everything else (the writer falls back only after hashing a page)."""
    import pyarrow as pa

    return [
        f.name for f in schema if f.name not in (id_name, "probability") and not pa.types.is_floating(f.type)
    ]


def remove_leftovers(folder: str) -> None:
    """Temporary files of an attempt that was killed before it could clean up after itself."""
    fs, path = storage.fs_for(folder)
    if not fs.exists(path):
        return
    for entry in fs.ls(path, detail=False):
        if posixpath.basename(entry).startswith(storage.TEMP_PREFIX):
            log.info("Removing %s, left by an attempt that did not finish", posixpath.basename(entry))
            fs.rm(entry)


class PartitionWriter:
    """Streams one partition's prediction tables into ``<folder>/predictions.parquet``, atomically.

    Use: ``begin()``, then ``with writer.open(): writer.write(table, label)...``, then
    ``commit(manifest)``. The Parquet schema is the first table's; later tables are cast to it.
    """

    def __init__(self, folder: str, id_name: str) -> None:
        self.folder = folder
        self.id_name = id_name
        self.target = storage.join(folder, PREDICTIONS_FILE)
        self.rows = 0
        self._writer: Any = None
        self._sink: Any = None
        self._local: str | None = None

    def begin(self) -> None:
        """Invalidate the old output, then clear what a killed attempt left behind."""
        storage.remove_tree(storage.join(self.folder, storage.SUCCESS))  # stale from now on
        remove_leftovers(self.folder)

    @contextmanager
    def open(self, label: str) -> Iterator[PartitionWriter]:
        """A hidden temporary file, renamed onto the target only when the block ends without error."""
        with storage.atomic_path(self.target) as tmp:
            self._local = storage.local_path(tmp)
            fs, tmp_path = storage.fs_for(tmp)
            self._sink = None if self._local is not None else fs.open(tmp_path, "wb")
            try:
                yield self
                if self._writer is None:
                    raise DataError(f"{label} has no rows to score")
            finally:
                self._close()

    def write(self, table: Any, label: str) -> None:
        """Append one chunk's predictions (``label`` names the file in a type-mismatch error)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._writer is None:
            self._writer = pq.ParquetWriter(
                self._local if self._local is not None else self._sink,
                table.schema,
                use_dictionary=dictionary_columns(table.schema, self.id_name),
            )
        elif table.schema != self._writer.schema:
            try:
                table = table.cast(self._writer.schema)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise DataError(
                    f"{label}: its columns differ in type from the partition's first file: {exc}"
                ) from None
        self._writer.write_table(table)
        self.rows += table.num_rows

    def commit(self, manifest: dict[str, Any]) -> None:
        """Write the ``_SUCCESS`` manifest: from now on readers see the new predictions."""
        storage.mark_success(self.folder, manifest)

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._sink is not None:
            self._sink.close()
        self._writer = self._sink = None
