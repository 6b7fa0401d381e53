"""Append-only promotion history, kept as tags on the registered model.

Each entry is one tag ``mlops.history.<UTC timestamp>.<id>`` holding a JSON record (action, from and
to versions, gate decision id, who/what triggered it, Airflow dag/run ids). Keys never collide, so
concurrent writers cannot overwrite each other, and an entry's ``key`` (e.g. the Airflow run and
action) makes a re-run write nothing new.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from include.mlops import tracking
from include.mlops.tags import HISTORY_PREFIX

PREFIX = HISTORY_PREFIX  # one tag per entry: <prefix><UTC timestamp>.<id>


def entries(client: Any, model: str) -> list[dict[str, Any]]:
    """All history entries of a registered model, oldest first."""
    from mlflow.exceptions import MlflowException

    try:
        tags = client.get_registered_model(model).tags
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return []
        raise
    found = []
    for name, value in tags.items():
        if name.startswith(PREFIX):
            try:
                found.append(json.loads(value))
            except json.JSONDecodeError:
                found.append({"tag": name, "unreadable": value})
    return sorted(found, key=lambda e: (e.get("at", ""), e.get("id", "")))


def append(client: Any, model: str, entry: dict[str, Any]) -> dict[str, Any]:
    """Record ``entry`` unless one with the same ``key`` exists; return the stored entry."""
    key = entry.get("key")
    if key:
        for existing in entries(client, model):
            if existing.get("key") == key:
                return existing
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    record = {"id": uuid.uuid4().hex[:12], "at": stamp, **entry}
    client.set_registered_model_tag(
        model, f"{PREFIX}{stamp}.{record['id']}", json.dumps(record, sort_keys=True)
    )
    return record


def show(model: str, tracking_uri: str | None = None) -> list[dict[str, Any]]:
    """The history for the CLI, with tracking-server failures reported as such."""
    client = tracking.client(tracking_uri)
    with tracking.service_errors(tracking_uri):
        return entries(client, model)


def format_table(records: list[dict[str, Any]]) -> str:
    """A readable table for ``python -m include.mlops history``."""
    if not records:
        return "(no promotion history yet)"
    lines = [f"{'when (UTC)':<24} {'action':<9} {'from':>5} {'to':>5}  {'decision':<12} {'by':<28} reason"]
    for r in records:
        by = (r.get("dag_id") and f"{r.get('dag_id')}/{str(r.get('run_id', ''))[:14]}") or r.get("by", "cli")
        lines.append(
            f"{r.get('at', ''):<24} {r.get('action', ''):<9} {r.get('from') or '-'!s:>5} "
            f"{r.get('to') or '-'!s:>5}  {str(r.get('decision') or '-')[:12]:<12} {by[:28]:<28} {r.get('reason', '')}"
        )
    return "\n".join(lines)
