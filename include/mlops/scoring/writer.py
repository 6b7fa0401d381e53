"""Atomic output of one partition: a reader sees the old predictions, the new ones, or none; never half.

Commit order: the old ``_SUCCESS`` is removed first (the old output is stale from then on), the
predictions are written under a hidden temporary name and renamed onto ``predictions.parquet``,
then the new ``_SUCCESS`` manifest is written.

Leftovers. Each attempt writes its own ``._tmp-<uuid>-predictions.parquet`` (``storage.atomic_path``
draws the token), so every temporary file belongs to exactly one attempt. ``begin()`` removes another
attempt's temporary file only once its owner is gone, so that an attempt the scheduler thinks dead
but that still writes (a zombie) and its retry never delete each other's live file:

- on a local or mounted file system the writing attempt holds an exclusive ``flock`` on its file
  from creation until after the rename; the kernel drops it when the process ends, even by
  ``SIGKILL``. A file whose lock can be taken has no live owner and is removed at once; a locked one
  is kept. (Where the file system has no locks, the age rule below applies.)
- on an object store (``s3://``, ``gs://``) a temporary object appears only when its upload is
  complete, just before the rename. It is removed once its last modification is more than
  ``LEFTOVER_GRACE`` seconds old; a younger one may still be renamed by its owner and is kept.

A kept leftover is hidden and never read; a later attempt on the partition removes it.
"""

from __future__ import annotations

import errno
import logging
import os
import posixpath
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

from include.mlops import storage
from include.mlops.errors import DataError, ServiceUnavailable
from include.mlops.scoring.partitions import PREDICTIONS_FILE

log = logging.getLogger(__name__)

# Seconds after its last modification when an object store's temporary object counts as abandoned.
LEFTOVER_GRACE = 15 * 60
# flock's answers that mean "this file system has no locks" rather than "someone holds it".
NO_LOCKS = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.ENOSYS})


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


def remove_leftovers(folder: str, *, grace: float = LEFTOVER_GRACE) -> None:
    """Remove the temporary files in ``folder`` whose attempt is gone (the module's docstring says how
    that is told); keep the others."""
    fs, path = storage.fs_for(folder)
    if not fs.exists(path):
        return
    local = _is_local(fs)
    for entry in fs.ls(path, detail=False):
        name = posixpath.basename(entry)
        if not name.startswith(storage.TEMP_PREFIX):
            continue
        alive = _local_owner(entry) if local else None
        if alive is None:
            alive = _recent(fs, entry, grace)
        if alive:
            log.info("Keeping %s: another attempt may still be writing it", name)
        else:
            log.info("Removed %s, left by an attempt that did not finish", name)


def _is_local(fs: Any) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocol


def _local_owner(path: str) -> bool | None:
    """True if a live attempt holds ``path``'s lock; False if nobody did (the file is removed, under
    the lock); None if the file system has no locks."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False  # removed meanwhile (its owner renamed it)
    except OSError:
        return None  # cannot be opened for locking (permissions): judged by its age
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        return None if exc.errno in NO_LOCKS else True
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    finally:
        os.close(fd)
    return False


def _recent(fs: Any, path: str, grace: float) -> bool:
    """True if ``path`` was modified within ``grace`` seconds (or when is unknown); else remove it."""
    try:
        modified = fs.modified(path)
    except NotImplementedError:
        return True  # a file system that cannot tell: kept (hidden, never read)
    except FileNotFoundError:
        return False  # renamed by its owner meanwhile: nothing to remove
    if time.time() - modified.timestamp() <= grace:  # aware datetimes (naive ones: local time)
        return True
    fs.rm(path)
    return False


class _Lease:
    """The writing attempt's ``flock`` on its local temporary file, held until after the rename."""

    def __init__(self) -> None:
        self.fd: int | None = None

    def hold(self, path: str) -> None:
        """Create ``path`` and lock it before anything is written to it."""
        import fcntl

        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)  # waits only for a begin() removing it right now
        except OSError as exc:
            if exc.errno in NO_LOCKS:
                return  # no locks here: leftovers are judged by their age
            raise
        if os.fstat(self.fd).st_nlink == 0:
            raise ServiceUnavailable(
                f"{path}: another attempt removed this attempt's temporary file as it was created; "
                "the partition will be retried"
            )

    def __enter__(self) -> _Lease:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the lock
            self.fd = None


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
        """Invalidate the old output, then clear what an attempt that is gone left behind (never a
        file another attempt is still writing: see the module's docstring)."""
        storage.remove_tree(storage.join(self.folder, storage.SUCCESS))  # stale from now on
        remove_leftovers(self.folder)

    @contextmanager
    def open(self, label: str) -> Iterator[PartitionWriter]:
        """A hidden temporary file, renamed onto the target only when the block ends without error.

        On a local file system the file is created and locked first; the lock is released after the
        rename (``lease`` is left last), so no other attempt's ``begin()`` removes it meanwhile.
        """
        with _Lease() as lease, storage.atomic_path(self.target) as tmp:
            self._local = storage.local_path(tmp)
            fs, tmp_path = storage.fs_for(tmp)
            if _is_local(fs):
                lease.hold(tmp_path)
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
        """Finish the Parquet file and close the sink; the writer is reset and the sink closed even
        when finishing fails (the error still propagates, and the temporary file is discarded)."""
        writer, sink = self._writer, self._sink
        self._writer = self._sink = self._local = None
        try:
            if writer is not None:
                writer.close()
        finally:
            if sink is not None:
                sink.close()
