"""Uniform access to data URIs (``file://``, ``s3://``, ``gs://``) through fsspec.

Every write goes to a hidden temporary name first and is committed by a rename (local) or a copy
then delete (object stores), so a reader never sees a partial file and a retry simply overwrites
its own leftovers.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from include.mlops.errors import DataError

if TYPE_CHECKING:
    import fsspec

TEMP_PREFIX = "._tmp-"
SUCCESS = "_SUCCESS"


def fs_for(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The file system that serves ``uri`` and the path within it (protocol stripped)."""
    from fsspec.core import url_to_fs  # not at import: DAG parsing imports this module

    return url_to_fs(uri)


def join(uri: str, *parts: str) -> str:
    """Append path parts to a URI with ``/``, whatever the local OS separator is."""
    return posixpath.join(uri.rstrip("/"), *parts)


def basename(uri: str) -> str:
    """The last path component of a URI, ignoring a trailing ``/``."""
    return posixpath.basename(uri.rstrip("/"))


def _uri(fs: fsspec.AbstractFileSystem, path: str) -> str:
    return fs.unstrip_protocol(path)


def exists(uri: str) -> bool:
    """Whether a file or folder is present at ``uri``."""
    fs, path = fs_for(uri)
    return fs.exists(path)


def list_files(uri: str) -> list[str]:
    """Visible, complete files directly under ``uri`` (hidden and temporary names are skipped)."""
    fs, path = fs_for(uri)
    if not fs.exists(path):
        return []
    entries = fs.ls(path, detail=True)
    names = [
        e["name"]
        for e in entries
        if e["type"] == "file" and not posixpath.basename(e["name"]).startswith((".", "_"))
    ]
    return sorted(_uri(fs, n) for n in names)


def list_dirs(uri: str) -> list[str]:
    """Sub-folders directly under ``uri`` as sorted URIs; ``[]`` when ``uri`` does not exist."""
    fs, path = fs_for(uri)
    if not fs.exists(path):
        return []
    return sorted(_uri(fs, e["name"]) for e in fs.ls(path, detail=True) if e["type"] == "directory")


def size(uri: str) -> int:
    """File size in bytes."""
    fs, path = fs_for(uri)
    return int(fs.size(path))


def modified(uri: str) -> float:
    """Last-modified time as a POSIX timestamp, for ordering files by age."""
    fs, path = fs_for(uri)
    return fs.modified(path).timestamp()


def sha256(uri: str, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of the file, read in ``chunk``-sized blocks so large files stay out of memory."""
    digest = hashlib.sha256()
    fs, path = fs_for(uri)
    with fs.open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_bytes(uri: str) -> bytes:
    """The whole file in memory: for small files (manifests, reports), not data sets."""
    fs, path = fs_for(uri)
    return fs.cat_file(path)


def read_json(uri: str) -> Any:
    """The parsed JSON content of a small file."""
    return json.loads(read_bytes(uri))


@contextmanager
def atomic_path(uri: str) -> Iterator[str]:
    """Yield a temporary URI next to ``uri``; on success it is committed to ``uri``, else removed."""
    fs, path = fs_for(uri)
    parent = posixpath.dirname(path)
    fs.makedirs(parent, exist_ok=True)
    tmp = posixpath.join(parent, f"{TEMP_PREFIX}{uuid.uuid4().hex}-{posixpath.basename(path)}")
    try:
        yield _uri(fs, tmp)
        fs.mv(tmp, path)
    finally:
        if fs.exists(tmp):
            fs.rm(tmp)


def write_bytes(uri: str, data: bytes) -> str:
    """Write ``data`` atomically (see ``atomic_path``) and return ``uri``."""
    with atomic_path(uri) as tmp:
        fs, path = fs_for(tmp)
        with fs.open(path, "wb") as handle:
            handle.write(data)
    return uri


def write_json(uri: str, payload: Any) -> str:
    """Write ``payload`` atomically as indented, key-sorted JSON (other types via ``str``); return ``uri``."""
    return write_bytes(uri, json.dumps(payload, indent=2, sort_keys=True, default=str).encode())


def write_text(uri: str, text: str) -> str:
    """Write ``text`` atomically as UTF-8 and return ``uri``."""
    return write_bytes(uri, text.encode("utf-8"))


def move(src: str, dst: str) -> str:
    """Move a file, never overwriting: an existing destination gets a unique suffix.

    Across stores (``s3://`` landing, ``file://`` archive) the file is streamed into the
    destination's store (committed like every write, see ``atomic_path``) before the source is
    deleted, so a failure in between leaves a copy, never nothing."""
    src_fs, src_path = fs_for(src)
    dst_fs, dst_path = fs_for(dst)
    dst_fs.makedirs(posixpath.dirname(dst_path), exist_ok=True)
    if dst_fs.exists(dst_path):
        stem, dot, ext = posixpath.basename(dst_path).partition(".")
        dst_path = posixpath.join(posixpath.dirname(dst_path), f"{stem}-{uuid.uuid4().hex[:8]}{dot}{ext}")
    if _same_store(src_fs, dst_fs):
        src_fs.mv(src_path, dst_path)
        return _uri(src_fs, dst_path)
    destination = _uri(dst_fs, dst_path)
    with atomic_path(destination) as tmp:
        tmp_fs, tmp_path = fs_for(tmp)
        with src_fs.open(src_path, "rb") as reader, tmp_fs.open(tmp_path, "wb") as writer:
            while block := reader.read(1 << 20):
                writer.write(block)
    src_fs.rm(src_path)
    return destination


def _same_store(a: fsspec.AbstractFileSystem, b: fsspec.AbstractFileSystem) -> bool:
    """Whether a rename within one file system can move between the two (same protocol and options)."""
    return a is b or (a.protocol == b.protocol and a.storage_options == b.storage_options)


def mark_success(uri: str, payload: dict[str, Any] | None = None) -> None:
    """Commit the folder ``uri`` by writing its ``_SUCCESS`` marker (``payload`` as JSON) last."""
    write_json(join(uri, SUCCESS), payload or {})


def is_complete(uri: str) -> bool:
    """Whether the folder ``uri`` was committed by ``mark_success``; readers skip any that are not."""
    return exists(join(uri, SUCCESS))


def remove_tree(uri: str) -> None:
    """Delete a file or folder recursively; a missing ``uri`` is not an error."""
    fs, path = fs_for(uri)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def local_path(uri: str) -> str | None:
    """The plain path of a ``file://`` URI, else None."""
    return uri.removeprefix("file://") if uri.startswith("file://") else None


@contextmanager
def open_binary(uri: str) -> Iterator[Any]:
    """The file open for binary reading (local or fsspec)."""
    fs, path = fs_for(uri)
    try:
        handle = fs.open(path, "rb")
    except FileNotFoundError:
        raise DataError(f"{basename(uri)}: file not found at {uri}") from None
    with handle:
        yield handle
