"""What a landed file is, and when it is complete enough to ingest.

A *landed file* is one object directly under a pipeline's landing URI, with a *version token* that
changes whenever its content may have changed (local: size, mtime and ctime; S3: ETag and
LastModified; GCS: generation). The ingestion ledger keys on ``(pipeline, uri, token)``, so a file
re-landed later under the same name is a new file.

Completeness rule, the same for every scheme (``ready_reason``):

- names that never hold data are never complete: a writer's temporary names (dot- and
  underscore-files, ``.part``, ``.tmp``, ``._COPYING_`` and the like, see ``TEMPORARY_SUFFIXES``)
  and completion markers (``_SUCCESS``, ``<name>._SUCCESS``);
- a file is complete at once when a marker says so: ``<name>._SUCCESS`` next to it, or a folder
  ``_SUCCESS``, written no earlier than the file's last modification (a file rewritten after its
  marker is not covered by it);
- a file is complete at once when it has not been modified for ``settle_seconds`` (typically a
  file written elsewhere and moved in);
- otherwise it is complete once two listings at least ``STABLE_SECONDS`` apart saw the same
  version token: a file renamed into place (temporary name, then rename) never changes again, so
  it is taken after that short look, while a file still being written in place keeps getting a
  new size and mtime and keeps waiting. Only a writer that writes in place *and* pauses longer
  than ``STABLE_SECONDS`` mid-file can be mistaken for a finished one: write under a temporary
  name, or add a marker.

Cheap to import (standard library only): the triggerer imports it through the trigger module.
"""

from __future__ import annotations

import logging
import math
import os
import posixpath
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (uri, version token): one version of one file
MARKER = "_SUCCESS"  # a folder's completion marker (Hadoop, Spark, this project's datasets)
MARKER_SUFFIX = "._SUCCESS"  # <name>._SUCCESS marks the file <name> complete
STABLE_SECONDS = 2.0  # two listings this far apart saw the same version: the file is not being written

TEMPORARY_PREFIXES = (".", "_")
TEMPORARY_SUFFIXES = (
    ".part",
    ".partial",
    ".filepart",
    ".tmp",
    ".temp",
    ".crdownload",
    ".download",
    "._copying_",
    "~",
)


@dataclass(frozen=True)
class LandedFile:
    """One file in a landing zone, as listed: ``modified`` is epoch seconds (the store's clock)."""

    uri: str
    size: int
    modified: float
    token: str

    @property
    def name(self) -> str:
        """The file name, as reasons and logs show it."""
        return posixpath.basename(self.uri.rstrip("/"))

    @property
    def key(self) -> tuple[str, str]:
        """What identifies one version of a file in the ledger (a rewrite is a new key)."""
        return self.uri, self.token

    def age(self, now: float) -> float:
        """Seconds since the last write, to tell a settled file from one still being written."""
        return now - self.modified

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy, for trigger events and XCom."""
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> LandedFile:
        """The file back from ``to_dict()`` (a trigger event's payload)."""
        return cls(uri=raw["uri"], size=int(raw["size"]), modified=float(raw["modified"]), token=raw["token"])


def is_marker(name: str) -> bool:
    """A completion marker (``_SUCCESS``, ``<name>._SUCCESS``): a signal to read, never data to ingest."""
    return name == MARKER or name.upper().endswith(MARKER_SUFFIX.upper())


def is_temporary(name: str) -> bool:
    """Names that never hold data to ingest: a writer's names for incomplete files, and markers.

    Markers are included so that every caller that skips temporary names (the CLI's ingest too)
    also skips them.
    """
    lowered = name.lower()
    return (
        name.startswith(TEMPORARY_PREFIXES)
        or lowered.endswith(TEMPORARY_SUFFIXES)
        or "_copying_" in lowered
        or is_marker(name)
    )


def is_settled(file: LandedFile, now: float, settle_seconds: float) -> bool:
    """Not modified for ``settle_seconds`` (by the store's timestamp, against ``now``)."""
    return file.age(now) >= settle_seconds


def visible(files: Iterable[LandedFile]) -> list[LandedFile]:
    """The files that hold data (not temporary, not markers), sorted by URI."""
    return sorted((f for f in files if not is_temporary(f.name)), key=lambda f: f.uri)


def markers(files: Iterable[LandedFile]) -> dict[str, float]:
    """When each file (by URI) or folder (by URI, no trailing ``/``) was marked complete.

    ``<name>._SUCCESS`` marks the file ``<name>`` next to it; ``_SUCCESS`` marks its folder. The
    value is the marker's modification time, which ``ready_reason`` compares with the file's.
    """
    marked: dict[str, float] = {}
    for f in files:
        if f.name == MARKER:
            target = f.uri.rstrip("/").rsplit("/", 1)[0]
        elif is_marker(f.name):
            target = f.uri[: -len(MARKER_SUFFIX)]
        else:
            continue
        marked[target] = max(marked.get(target, -math.inf), f.modified)
    return marked


def observe(first_seen: Mapping[Key, float], files: Iterable[LandedFile], now: float) -> dict[Key, float]:
    """When each listed file version was first seen, for the ``STABLE_SECONDS`` rule.

    Keyed by ``(uri, token)``: a file that changed is a new key, seen for the first time now.
    Versions no longer listed are dropped, so a long-lived watcher's memory stays bounded.
    """
    return {f.key: first_seen.get(f.key, now) for f in visible(files)}


def ready_reason(
    file: LandedFile,
    now: float,
    settle_seconds: float,
    *,
    marked: Mapping[str, float] | None = None,
    first_seen: Mapping[Key, float] | None = None,
    stable_seconds: float = STABLE_SECONDS,
) -> str | None:
    """Why ``file`` is complete (``marker``, ``settled``, ``unchanged``), or None while it may still change.

    ``marked`` comes from ``markers()`` over the same listing; ``first_seen`` from ``observe()``
    over this and earlier listings. ``settle_seconds <= 0`` turns every rule off (all complete).
    """
    if settle_seconds <= 0:
        return "no settle time"
    marked = marked or {}
    folder = file.uri.rsplit("/", 1)[0]
    if max(marked.get(file.uri, -math.inf), marked.get(folder, -math.inf)) >= file.modified:
        return "marker"
    if is_settled(file, now, settle_seconds):
        return "settled"
    seen = (first_seen or {}).get(file.key)
    if seen is not None and now - seen >= min(stable_seconds, settle_seconds):
        return "unchanged"
    return None


def split_ready(
    files: Iterable[LandedFile],
    now: float,
    settle_seconds: float,
    *,
    first_seen: Mapping[Key, float] | None = None,
    stable_seconds: float = STABLE_SECONDS,
) -> tuple[list[LandedFile], list[LandedFile]]:
    """``(complete, still settling)`` among the data files of one listing (see ``ready_reason``)."""
    listing = list(files)
    marked = markers(listing)
    ready: list[LandedFile] = []
    young: list[LandedFile] = []
    for file in visible(listing):
        reason = ready_reason(
            file, now, settle_seconds, marked=marked, first_seen=first_seen, stable_seconds=stable_seconds
        )
        (ready if reason else young).append(file)
    return ready, young


def wait_for_ready(
    list_files: Callable[[], list[LandedFile]],
    settle_seconds: float,
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    stable_seconds: float = STABLE_SECONDS,
) -> tuple[list[LandedFile], list[LandedFile]]:
    """Complete files now; only when nothing else is ready, look again while files are settling.

    A run started by hand right after a file was renamed into place should take it after one short
    second look (``stable_seconds``), not after ``settle_seconds``; a run that already has work does
    not wait for files that are still settling (the next run takes them). A file that keeps
    changing is looked at again every ``stable_seconds`` and left for a later run once
    ``settle_seconds`` have passed in all. Returns ``(ready, still settling)``.
    """
    first_seen: dict[Key, float] = {}
    started = clock()
    while True:
        files = list_files()
        now = clock()
        first_seen = observe(first_seen, files, now)
        ready, young = split_ready(
            files, now, settle_seconds, first_seen=first_seen, stable_seconds=stable_seconds
        )
        remaining = settle_seconds - (now - started)
        if ready or not young or remaining <= 0:
            return ready, young
        pause = min(stable_seconds, settle_seconds, remaining)
        log.info(
            "%d file(s) were modified less than %ss ago: looking again in %.1fs to see whether they changed",
            len(young),
            settle_seconds,
            pause,
        )
        sleep(pause)


# Version tokens and listings ---------------------------------------------------------------------
def _epoch(value: Any) -> float:
    """Epoch seconds from a datetime or an RFC 3339 string (``...Z``), as the stores return them."""
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, (int, float)):
        return float(value)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def local_file(path: str, stat: os.stat_result) -> LandedFile:
    """A local file; ctime is in the token so a file moved back unchanged counts as re-landed."""
    return LandedFile(
        uri="file://" + path,
        size=stat.st_size,
        modified=stat.st_mtime,
        token=f"{stat.st_size}-{stat.st_mtime_ns}-{stat.st_ctime_ns}",
    )


def s3_object(bucket: str, obj: dict[str, Any]) -> LandedFile:
    """An S3 ``ListObjectsV2`` entry (boto3, aiobotocore or s3fs: same keys)."""
    etag = str(obj.get("ETag", "")).strip('"')
    modified = _epoch(obj["LastModified"])
    return LandedFile(
        uri=f"s3://{bucket}/{obj['Key']}",
        size=int(obj.get("Size", obj.get("size", 0))),
        modified=modified,
        token=f"{etag}-{int(modified * 1000)}",
    )


def gcs_object(bucket: str, obj: dict[str, Any]) -> LandedFile:
    """A GCS JSON API object resource (gcloud-aio or gcsfs); ``generation`` changes on every write."""
    return LandedFile(
        uri=f"gs://{bucket}/{obj['name']}",
        size=int(obj.get("size", 0)),
        modified=_epoch(obj.get("updated") or obj.get("timeCreated")),
        token=f"g{obj['generation']}",
    )


def scan_local(path: str) -> list[LandedFile]:
    """Files directly under a local folder (a missing folder has none)."""
    try:
        entries = list(os.scandir(path))
    except FileNotFoundError:
        return []
    files = []
    for entry in entries:
        try:
            if entry.is_file():
                files.append(local_file(entry.path, entry.stat()))
        except FileNotFoundError:  # moved away between the listing and the stat
            continue
    return files


def split_bucket(uri: str) -> tuple[str, str, str]:
    """``s3://bucket/a/b`` -> ``("s3", "bucket", "a/b/")``: the prefix of the files directly under it."""
    scheme, _, rest = uri.partition("://")
    bucket, _, key = rest.partition("/")
    key = key.strip("/")
    return scheme, bucket, f"{key}/" if key else ""


def scan(uri: str) -> list[LandedFile]:
    """Files directly under ``uri`` without Airflow: os.scandir for ``file://``, else fsspec.

    The Airflow adapters list S3 and GCS with the providers' hooks instead; both give the same
    tokens, because both read the same fields of the same API responses.
    """
    if uri.startswith("file://"):
        return scan_local(uri.removeprefix("file://"))
    from include.mlops import storage

    fs, path = storage.fs_for(uri)
    try:
        entries = fs.ls(path, detail=True, refresh=True)
    except FileNotFoundError:
        return []
    scheme, bucket, _ = split_bucket(uri)
    files = []
    for entry in entries:
        if entry.get("type") != "file":
            continue
        key = entry["name"].partition("/")[2]
        if scheme in ("s3", "s3a") and "ETag" in entry:
            files.append(s3_object(bucket, {**entry, "Key": key}))
        elif scheme in ("gs", "gcs") and "generation" in entry:
            files.append(gcs_object(bucket, {**entry, "name": key}))
        else:  # any other fsspec store: size and modification time are all there is
            modified = _epoch(entry.get("mtime") or entry.get("LastModified") or entry.get("updated") or 0)
            files.append(
                LandedFile(
                    uri=fs.unstrip_protocol(entry["name"]),
                    size=int(entry.get("size") or 0),
                    modified=modified,
                    token=f"{entry.get('size')}-{modified}",
                )
            )
    return files
