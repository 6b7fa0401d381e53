"""What a landed file is, and when it is complete enough to ingest.

A *landed file* is one object directly under a pipeline's landing URI, with a *version token* that
changes whenever its content may have changed (local: size, mtime and ctime; S3: ETag and
LastModified; GCS: generation). The ingestion ledger keys on ``(pipeline, uri, token)``, so a file
re-landed later under the same name is a new file.

Completeness rule, the same for every scheme:

- temporary names are never complete: dot- and underscore-files, and names ending in ``.part``,
  ``.tmp``, ``._COPYING_`` and the like (see ``TEMPORARY_SUFFIXES``);
- a file is *settled* once it has not been modified for ``settle_seconds``. A local file that is
  still being written keeps getting a new mtime, so it is not settled. S3 and GCS objects are
  atomic once visible; the same age rule is applied anyway, as a guard against writers that upload
  a file in several steps.

Cheap to import (standard library only): the triggerer imports it through the trigger module.
"""

from __future__ import annotations

import logging
import os
import posixpath
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

log = logging.getLogger(__name__)

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


def is_temporary(name: str) -> bool:
    """Names writers use while a file is incomplete; such files are never picked up."""
    lowered = name.lower()
    return (
        name.startswith(TEMPORARY_PREFIXES) or lowered.endswith(TEMPORARY_SUFFIXES) or "_copying_" in lowered
    )


def is_settled(file: LandedFile, now: float, settle_seconds: float) -> bool:
    """Not modified for ``settle_seconds`` (by the store's timestamp, against ``now``)."""
    return file.age(now) >= settle_seconds


def visible(files: Iterable[LandedFile]) -> list[LandedFile]:
    """The files that are not temporary, sorted by URI."""
    return sorted((f for f in files if not is_temporary(f.name)), key=lambda f: f.uri)


def split_ready(
    files: Iterable[LandedFile], now: float, settle_seconds: float
) -> tuple[list[LandedFile], list[LandedFile]]:
    """``(settled, still settling)`` among the visible files."""
    ready: list[LandedFile] = []
    young: list[LandedFile] = []
    for file in visible(files):
        (ready if is_settled(file, now, settle_seconds) else young).append(file)
    return ready, young


def wait_for_ready(
    list_files: Callable[[], list[LandedFile]],
    settle_seconds: float,
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[list[LandedFile], list[LandedFile]]:
    """Complete files now, waiting (at most ``settle_seconds``, once) only when nothing else is ready.

    A run started by hand right after a file landed should still take it; a run that already has
    work does not wait for files that are still settling (the next run takes them). After the
    wait, a file counts as complete if its version token did not change during the wait and it is
    settled, or the wait itself lasted ``settle_seconds`` (which also covers clock skew between
    this host and the store). Returns ``(ready, still settling)``.
    """
    ready, young = split_ready(list_files(), clock(), settle_seconds)
    if ready or not young or settle_seconds <= 0:
        return ready, young
    now = clock()
    pause = min(settle_seconds, max(settle_seconds - f.age(now) for f in young))
    log.info(
        "%d file(s) are still settling (modified less than %ss ago): waiting %.1fs for them",
        len(young),
        settle_seconds,
        pause,
    )
    sleep(pause)
    before = {f.uri: f.token for f in young}
    waited_long_enough = pause >= settle_seconds
    now = clock()
    ready, young = [], []
    for file in visible(list_files()):
        unchanged = before.get(file.uri) == file.token
        settled = is_settled(file, now, settle_seconds) and (unchanged or file.uri not in before)
        (ready if settled or (unchanged and waited_long_enough) else young).append(file)
    return ready, young


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
