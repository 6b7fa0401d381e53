"""The quarantine zone: list quarantined batches, and release a fixed file back into the landing zone.

Layout (``spec.uri("quarantine")``): one folder per failed validation, named
``<UTC time>-<first 8 hex of the file's sha256>``, holding the file byte for byte next to its
``validation.json``, ``validation.html`` and ``data_docs.html``.

``release`` moves the file back to the landing zone under its original name, in two renames (a
hidden temporary name the landing zone ignores, then the real name), and leaves ``RELEASED.json``
in the folder: who, when, where to, the sha256 at quarantine and at release. The reports stay, so
the folder remains the record of why the batch was held. The ledger sees a new version of the file
(a local move changes its ctime, an object-store copy its ETag / generation and time), so the next
ingest run claims and validates it again, once.
"""

from __future__ import annotations

import getpass
import os
import posixpath
import time
import uuid
from typing import Any

from include.mlops import storage
from include.mlops.data.report_files import QUARANTINE_TIME, REPORT_FILES, report_uris
from include.mlops.data.validation import STRUCTURAL_EXPECTATION, ValidationOutcome
from include.mlops.errors import MlopsError, listed
from include.mlops.spec import PipelineSpec

MARKER = "RELEASED.json"


class ReleaseRefused(MlopsError):
    """A quarantined file cannot (or should not) be released as asked; nothing was moved."""


def list_quarantine(spec: PipelineSpec) -> list[dict[str, Any]]:
    """Every quarantine folder of the pipeline, oldest first: file(s), reason, time, release status."""
    entries = []
    for folder in storage.list_dirs(spec.uri("quarantine")):
        names = {storage.basename(u) for u in storage.list_files(folder)}  # one listing per folder
        report = _report(folder) if REPORT_FILES["json"] in names else {}
        meta = report.get("meta") or {}
        released = _read(storage.join(folder, MARKER)) if MARKER in names else None
        entries.append(
            {
                "folder": storage.basename(folder),
                "uri": folder,
                "files": sorted(names - {*REPORT_FILES.values(), MARKER}),
                "source": meta.get("source"),
                "reason": _reason(report),
                "quarantined_at": _folder_time(folder),
                "run_id": meta.get("run_id"),
                "status": "released" if released else "quarantined",
                "released": released,
                "reports": {
                    kind: uri for kind, uri in report_uris(folder).items() if REPORT_FILES[kind] in names
                },
            }
        )
    return sorted(entries, key=lambda e: (e["quarantined_at"] or "", e["folder"]))


def format_table(entries: list[dict[str, Any]]) -> str:
    """``list_quarantine``'s entries as the CLI prints them: one block per folder, reason indented."""
    if not entries:
        return "No quarantined batch."
    lines = []
    for e in entries:
        files = ", ".join(e["files"]) or (e["released"] or {}).get("file", "-")
        lines.append(f"{e['folder']}  {e['quarantined_at'] or '?'}  {e['status']:<11}  {files}")
        lines.append(f"    reason: {e['reason']}")
        if e["released"]:
            r = e["released"]
            lines.append(f"    released {r.get('released_at')} by {r.get('released_by')} to {r.get('to')}")
    return "\n".join(lines)


def release(
    spec: PipelineSpec, target: str, *, force: bool = False, who: str | None = None
) -> dict[str, Any]:
    """Move a quarantined (and, normally, fixed) file back into the landing zone; return the record.

    ``target``: a quarantine folder (its name, path or URI) or the quarantined file in it. Refused,
    with nothing moved, when the folder does not exist, holds no file (or several, and ``target``
    names none of them), the landing zone already holds a file with that name, or the content is
    unchanged since quarantine (same sha256: it would fail again) unless ``force``.
    """
    folder, chosen = _quarantine_folder(spec, target)
    source = _quarantined_file(spec, folder, chosen)
    report = _report(folder)
    meta = report.get("meta") or {}
    name = _landing_name(meta, source)
    destination = _free_destination(spec, name)
    before = meta.get("sha256")
    after = storage.sha256(source)
    if before == after and not force:
        raise ReleaseRefused(
            f"pipeline {spec.name}: {name} is unchanged since it was quarantined (sha256 {after[:16]}...), "
            "so it would fail validation again; fix the file in the quarantine folder first, or pass "
            "--force to ingest it as it is (e.g. after changing the suite or the spec)"
        )
    moved = _land(spec, source, name, destination)
    record = {
        "pipeline": spec.name,
        "file": name,
        "from": source,
        "to": moved,
        "released_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "released_by": who or _user(),
        "sha256_quarantined": before,
        "sha256_released": after,
        "edited": before != after,
        "forced": bool(force and before == after),
        "reason": _reason(report),
    }
    storage.write_json(storage.join(folder, MARKER), record)
    return record


def _quarantine_folder(spec: PipelineSpec, target: str) -> tuple[str, str | None]:
    """(folder, file named by ``target`` or None), refused unless it is one of this pipeline's folders."""
    zone = spec.uri("quarantine")
    folder, chosen = _resolve(zone, target)
    if not storage.exists(folder):
        raise ReleaseRefused(
            f"pipeline {spec.name}: quarantine folder {folder} does not exist; list the quarantined "
            f"batches with: python -m include.mlops quarantine {spec.name}"
        )
    if not _inside(zone, folder):
        raise ReleaseRefused(
            f"pipeline {spec.name}: {folder} is not a quarantine folder of this pipeline (they are in "
            f"{zone}); land a file from elsewhere by copying it into the landing zone"
        )
    return folder, chosen


def _quarantined_file(spec: PipelineSpec, folder: str, chosen: str | None) -> str:
    """The one data file to release from ``folder``: refused when there is none, several, or a link."""
    marker = _read(storage.join(folder, MARKER))
    files = _data_files(folder)
    if chosen is not None:
        files = [u for u in files if storage.basename(u) == storage.basename(chosen)]
    if not files:
        already = f" (already released {marker.get('released_at')} to {marker.get('to')})" if marker else ""
        raise ReleaseRefused(
            f"pipeline {spec.name}: quarantine folder {folder} holds no quarantined file{already}"
        )
    if len(files) > 1:
        raise ReleaseRefused(
            f"pipeline {spec.name}: quarantine folder {folder} holds several files "
            f"({listed(map(storage.basename, files))}); name the one to release"
        )
    source = files[0]
    local = storage.local_path(source)
    if local is not None and os.path.islink(local):
        raise ReleaseRefused(
            f"pipeline {spec.name}: {source} is a symbolic link; land the file itself instead of releasing it"
        )
    return source


def _landing_name(meta: dict[str, Any], source: str) -> str:
    """The name the file landed with, unless that name would leave the landing zone or hide in it."""
    name = meta.get("source") or storage.basename(source)
    if name != posixpath.basename(name) or name.startswith((".", "_")) or not name:
        name = storage.basename(source)
    return name


def _free_destination(spec: PipelineSpec, name: str) -> str:
    """Where the file goes in the landing zone; refused when a file of that name is already there."""
    destination = storage.join(spec.uri("landing"), name)
    if storage.exists(destination):
        raise ReleaseRefused(
            f"pipeline {spec.name}: the landing zone already holds {name} ({destination}); wait until "
            "it is ingested, or move it away, then release again"
        )
    return destination


def _land(spec: PipelineSpec, source: str, name: str, destination: str) -> str:
    """Move the file into the landing zone in two renames; returns where it landed.

    The hidden name is ignored by the landing zone (discover, sensors); the second rename makes the
    complete file appear at once under its real name.
    """
    landing = spec.uri("landing")
    hidden = storage.join(landing, f"{storage.TEMP_PREFIX}{uuid.uuid4().hex}-{name}")
    staged = storage.move(source, hidden)
    if storage.exists(destination):  # landed meanwhile: put ours back, refuse
        storage.move(staged, source)
        raise ReleaseRefused(
            f"pipeline {spec.name}: {name} landed in {landing} meanwhile; release again later"
        )
    return storage.move(staged, destination)


def _inside(zone: str, folder: str) -> bool:
    """Whether ``folder`` is one of the zone's own folders (a direct child; symbolic links resolved)."""
    zone_local, folder_local = storage.local_path(zone), storage.local_path(folder)
    if zone_local is not None and folder_local is not None:
        parent = os.path.dirname(os.path.realpath(folder_local))
        return parent == os.path.realpath(zone_local)
    return folder.rstrip("/").rsplit("/", 1)[0] == zone.rstrip("/")


def _resolve(zone: str, target: str) -> tuple[str, str | None]:
    """(folder URI, file URI or None) for a folder name, a local path or a URI."""
    if "://" in target:
        uri = target.rstrip("/")
    elif os.path.sep in target or target.startswith("."):
        uri = "file://" + os.path.abspath(target)
    else:
        uri = storage.join(zone, target)
    fs, path = storage.fs_for(uri)
    if fs.exists(path) and not fs.isdir(path):
        return uri.rsplit("/", 1)[0], uri
    return uri, None


def _data_files(folder: str) -> list[str]:
    skip = {*REPORT_FILES.values(), MARKER}
    return [u for u in storage.list_files(folder) if storage.basename(u) not in skip]


def _report(folder: str) -> dict[str, Any]:
    return _read(storage.join(folder, REPORT_FILES["json"])) or {}


def _read(uri: str) -> dict[str, Any] | None:
    try:
        return storage.read_json(uri)
    except (FileNotFoundError, ValueError):
        return None


def _reason(report: dict[str, Any]) -> str:
    if not report:
        return "(no validation.json)"
    failures = ValidationOutcome(success=bool(report.get("success")), result=report).failures
    if not failures:
        return "(no failed expectation recorded)"
    for item in report.get("results", []):  # structural failures carry the whole reason
        config = item.get("expectation_config") or {}
        if config.get("type") == STRUCTURAL_EXPECTATION:
            return " ".join(str((item.get("result") or {}).get("observed_value")).split())
    text = "; ".join(failures[:3]) + (f"; and {len(failures) - 3} more" if len(failures) > 3 else "")
    return " ".join(text.split())


def _folder_time(folder: str) -> str | None:
    stamp = storage.basename(folder).split("-", 1)[0]
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.strptime(stamp, QUARANTINE_TIME))
    except ValueError:
        return None


def _user() -> str:
    for variable in ("MLOPS_USER", "AIRFLOW_CTX_DAG_OWNER"):
        if os.environ.get(variable):
            return os.environ[variable]
    try:
        return getpass.getuser()
    except Exception:  # no login name (some containers)
        return f"uid {os.getuid()}" if hasattr(os, "getuid") else "unknown"
