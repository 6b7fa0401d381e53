"""What a scoring partition is, where its output goes, and which partitions are pending.

A partition is the unit of work, of retry and of output: one file directly under
``inference.input``, or one folder there (a date partition such as ``2026-01-05/``) with every file
in it. Its fingerprint (names, sizes, modification times) tells when an input changed since it was
scored.
"""

from __future__ import annotations

import logging
import posixpath
from dataclasses import dataclass
from typing import Any

from include.mlops import storage
from include.mlops.errors import DataError, NothingToDo, listed
from include.mlops.spec import PipelineSpec

log = logging.getLogger(__name__)

PREDICTIONS_FILE = "predictions.parquet"


@dataclass(frozen=True)
class Partition:
    """One unit of scoring: a file, or a folder of files, directly under the scoring input."""

    name: str
    uri: str
    files: tuple[str, ...]
    fingerprint: tuple[tuple[str, int, str], ...]  # (file name, size, modified): changes when the input does

    def file_sizes(self) -> dict[str, int]:
        """Bytes of each file, from the listing (progress of a CSV partition is told in bytes)."""
        return dict(zip(self.files, (size for _, size, _ in self.fingerprint), strict=True))


def visible(entry: dict[str, Any]) -> bool:
    """Hidden (``.``) and marker (``_``) names are never inputs: temp files, ``_SUCCESS``, CRCs."""
    return not posixpath.basename(entry["name"].rstrip("/")).startswith((".", "_"))


def stamp(entry: dict[str, Any]) -> tuple[str, int, str]:
    """A file's fingerprint entry, whatever the filesystem calls its modification time."""
    modified = next(
        (entry[k] for k in ("mtime", "LastModified", "updated", "last_modified") if entry.get(k)), ""
    )
    return posixpath.basename(entry["name"]), int(entry.get("size") or 0), str(modified)


def file_entries(fs: Any, path: str) -> list[dict[str, Any]]:
    """The visible files of a folder, sorted so a partition always reads them in the same order."""
    entries = [e for e in fs.ls(path, detail=True) if e["type"] == "file" and visible(e)]
    return sorted(entries, key=lambda e: e["name"])


def make_partition(fs: Any, entry: dict[str, Any]) -> Partition:
    """The partition of one listing entry (a file, or a folder and its files)."""
    uri = fs.unstrip_protocol(entry["name"].rstrip("/"))
    files = [entry] if entry["type"] == "file" else file_entries(fs, entry["name"])
    return Partition(
        name=storage.basename(uri),
        uri=uri,
        files=tuple(fs.unstrip_protocol(f["name"]) for f in files),
        fingerprint=tuple(stamp(f) for f in files),
    )


def partitions(spec: PipelineSpec) -> list[Partition]:
    """Every partition under the scoring input (folders without visible files are not partitions)."""
    fs, root = storage.fs_for(spec.uri("scoring"))
    if not fs.exists(root):
        return []
    found = [make_partition(fs, e) for e in fs.ls(root, detail=True) if visible(e)]
    return sorted((p for p in found if p.files), key=lambda p: p.name)


def describe_partition(uri: str) -> Partition:
    """The partition at ``uri`` as it is now (a mapped task gets only the URI)."""
    fs, path = storage.fs_for(uri)
    try:
        entry = fs.info(path)
    except FileNotFoundError:
        raise DataError(f"scoring partition {uri} does not exist") from None
    entry["name"] = path
    partition = make_partition(fs, entry)
    if not partition.files:
        raise DataError(f"scoring partition {uri} holds no input file")
    return partition


def output_folder(spec: PipelineSpec, input_uri: str) -> str:
    """A partition's output folder: named like the partition, under ``inference.output``."""
    return storage.join(spec.uri("predictions"), storage.basename(input_uri))


def read_manifest(folder: str) -> dict[str, Any] | None:
    """The ``_SUCCESS`` manifest of a complete output, None while there is none."""
    try:
        return storage.read_json(storage.join(folder, storage.SUCCESS))
    except FileNotFoundError:
        return None


def is_pending(partition: Partition, manifest: dict[str, Any] | None, redo_run: str | None) -> bool:
    """No complete output, an input changed since, or the output is this (cleared) run's own."""
    if manifest is None:
        return True
    changed = (
        manifest.get("fingerprint") is not None
        and [list(f) for f in partition.fingerprint] != manifest["fingerprint"]
    )
    own = redo_run is not None and manifest.get("run_id") == redo_run
    return changed or own


def list_partitions(spec: PipelineSpec, *, rescore: bool = False, redo_run: str | None = None) -> list[str]:
    """URIs of the partitions to score: no complete output yet, or an input changed since it was
    scored (a file added to a date folder), or, with ``rescore``, all of them.

    ``redo_run``: partitions whose output this run id wrote are pending again, so a cleared Airflow
    run redoes (and replaces) exactly its own partitions instead of finding nothing to do.
    """
    pending = [
        p.uri
        for p in partitions(spec)
        if rescore or is_pending(p, read_manifest(output_folder(spec, p.uri)), redo_run)
    ]
    if not pending:
        raise NothingToDo(f"pipeline {spec.name}: no new scoring input in {spec.uri('scoring')}")
    log.info("%d partition(s) to score: %s", len(pending), listed(map(storage.basename, pending)))
    return pending
