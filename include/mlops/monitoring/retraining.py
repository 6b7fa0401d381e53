"""Retraining requests that cannot storm: a cool-down, and one request in flight per pipeline.

A request is made when the drift share reaches its threshold, or when the champion's performance on
predictions whose labels arrived later falls below the gate's absolute thresholds (``performance``).
Every drift check's decision (requested or not, and why) is appended to the table
``retraining_decisions`` of the coordination store (``include.mlops.coordination``: Postgres in
production, so every worker sees the same history; the last ``KEEP`` entries per pipeline are kept).
It is also the drift history read by ``python -m include.mlops drift-history <pipeline>``. A history
left by an older version in ``<state>/retrain_requests.json`` is imported on first use.

A request is *in flight* from the moment it is made until a model version registered after it
carries a gate decision (passed or failed): until then the loop drift -> train -> gate has not
closed, and a second request would only queue a duplicate training. A request older than
``monitoring.retrain_timeout`` is considered lost (e.g. the train DAG was paused) and no longer
blocks, which is logged.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from include.mlops import coordination, storage, tracking
from include.mlops.spec import PipelineSpec
from include.mlops.tags import GATE_DECISION

log = logging.getLogger(__name__)


KEEP = 500  # decisions kept per pipeline (the cool-down and in-flight rules read only the last request)
_imported: set[tuple[str, str]] = set()  # (store URL, pipeline) whose legacy file this process checked


def _legacy_uri(spec: PipelineSpec) -> str:
    """Where versions before the coordination store kept the history (on the data root)."""
    return storage.join(spec.uri("state"), "retrain_requests.json")


def _import_legacy(spec: PipelineSpec, store_url: str) -> None:
    """Copy a history left in ``retrain_requests.json`` into the store, once (the file is kept)."""
    from sqlalchemy import text

    if (store_url, spec.name) in _imported:
        return
    uri = _legacy_uri(spec)
    if storage.exists(uri):
        entries = storage.read_json(uri)
        with coordination.transaction(store_url, write=True, serialize=f"retraining:{spec.name}") as db:
            found = db.execute(
                text("SELECT 1 FROM retraining_decisions WHERE pipeline = :p LIMIT 1"), {"p": spec.name}
            ).first()
            if found is None and entries:
                _insert(db, spec.name, entries)
                log.info("Imported %d retraining decision(s) of %s from %s", len(entries), spec.name, uri)
    _imported.add((store_url, spec.name))


def _insert(db: Any, pipeline: str, entries: list[dict[str, Any]]) -> None:
    from sqlalchemy import text

    db.execute(
        text(
            "INSERT INTO retraining_decisions (pipeline, at, requested, entry) VALUES (:p, :at, :req, :entry)"
        ),
        [
            {
                "p": pipeline,
                "at": e["at"],
                "req": int(bool(e.get("requested"))),
                "entry": json.dumps(e, sort_keys=True, default=str),
            }
            for e in entries
        ],
    )


def history(spec: PipelineSpec) -> list[dict[str, Any]]:
    """Every recorded retraining decision of the pipeline, oldest first (the cool-down reads it)."""
    from sqlalchemy import text

    store_url = coordination.url()
    _import_legacy(spec, store_url)
    with coordination.transaction(store_url, what="the retraining history") as db:
        rows = db.execute(
            text("SELECT entry FROM retraining_decisions WHERE pipeline = :p ORDER BY id"), {"p": spec.name}
        )
        return [json.loads(r.entry) for r in rows]


def gated_since(client: Any, model: str, since: float) -> str | None:
    """The first version registered after ``since`` (epoch seconds) that has a gate decision."""
    for version in sorted(tracking.model_versions(client, model), key=lambda v: int(v.version)):
        created = (version.creation_timestamp or 0) / 1000
        if created >= since and (version.tags or {}).get(GATE_DECISION):
            return str(version.version)
    return None


def _triggers(
    drift: dict[str, Any] | None, performance: dict[str, Any] | None
) -> tuple[list[str], list[str]]:
    """(reasons to retrain, reasons not to) from the drift check and the labelled-performance check."""
    why, why_not = [], []
    if drift:
        share, limit = drift["drift_share"], drift["threshold"]
        if drift.get("drift_detected"):
            why.append(f"drift share {share:.2f} >= threshold {limit:.2f}")
        else:
            why_not.append(f"drift share {share:.2f} is below the threshold {limit:.2f}")
    if performance:
        version = performance.get("model_version")
        if performance.get("degraded"):
            why.append(
                f"labelled performance of v{version} is below the gate's thresholds: "
                + "; ".join(performance["reasons"])
            )
        elif performance.get("judged"):
            why_not.append(f"labelled performance of v{version} meets the gate's thresholds")
        else:  # not judged: the check says why (too few labelled rows, no champion, ...)
            why_not.extend(performance.get("reasons") or [])
    return why, why_not


def decide(
    spec: PipelineSpec,
    drift: dict[str, Any] | None,
    *,
    performance: dict[str, Any] | None = None,
    now: float | None = None,
    client: Any | None = None,
) -> tuple[bool, str]:
    """Whether to request a retrain for this drift (and labelled-performance) result, and why (not).

    ``client`` (an MlflowClient) enables the one-in-flight rule; without it only the cool-down applies.
    """
    now = time.time() if now is None else now
    why, why_not = _triggers(drift, performance)
    if not why:
        return False, "; ".join(why_not) or "no drift or performance result to act on"
    previous = [r for r in history(spec) if r.get("requested")]
    if previous:
        last = previous[-1]
        elapsed = now - last["at"]
        if elapsed < spec.monitoring.retrain_cooldown:
            return False, (
                f"retraining was requested {elapsed / 3600:.1f} h ago; the cool-down is "
                f"{spec.monitoring.retrain_cooldown / 3600:.1f} h"
            )
        if client is not None:
            closed_by = gated_since(client, spec.model_name, last["at"])
            if closed_by is None and elapsed < spec.monitoring.retrain_timeout:
                return False, (
                    f"the retraining requested {elapsed / 3600:.1f} h ago is still in flight (no version "
                    f"trained and gated since); one request at a time"
                )
            if closed_by is None:
                log.warning(
                    "The retraining requested %.1f h ago never reached the gate (timeout %.1f h); "
                    "requesting again",
                    elapsed / 3600,
                    spec.monitoring.retrain_timeout / 3600,
                )
    return True, "; ".join(why)


def _performance_entry(performance: dict[str, Any] | None) -> dict[str, Any] | None:
    if not performance:
        return None
    version = performance["versions"].get(str(performance.get("model_version"))) or {}
    return {
        "model_version": performance.get("model_version"),
        "metric": performance.get("primary_metric"),
        "value": performance.get("primary_value"),
        "labelled_rows": version.get("labelled_rows", 0),
        "coverage": version.get("coverage"),
        "judged": bool(performance.get("judged")),
        "degraded": bool(performance.get("degraded")),
        "report": performance.get("report_json"),
    }


def record(
    spec: PipelineSpec,
    drift: dict[str, Any] | None,
    *,
    requested: bool,
    reason: str,
    performance: dict[str, Any] | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """Append the decision (the drift history too); returns the entry."""
    drift = drift or {}
    entry = {
        "at": time.time() if now is None else now,
        "requested": requested,
        "reason": reason,
        "drift_share": drift.get("drift_share"),
        "threshold": drift.get("threshold"),
        "drift_detected": bool(drift.get("drift_detected")),
        "drifted_columns": drift.get("drifted_columns") or [],
        "report": drift.get("report_html"),
        "model_version": drift.get("model_version") or (performance or {}).get("model_version"),
        "performance": _performance_entry(performance),
    }
    from sqlalchemy import text

    store_url = coordination.url()
    _import_legacy(spec, store_url)
    with coordination.transaction(store_url, write=True, what="the retraining history") as db:
        _insert(db, spec.name, [entry])
        db.execute(
            text(
                "DELETE FROM retraining_decisions WHERE pipeline = :p AND id NOT IN (SELECT id FROM"
                " retraining_decisions WHERE pipeline = :p ORDER BY id DESC LIMIT :keep)"
            ),
            {"p": spec.name, "keep": KEEP},
        )
    return entry


def drift_history(spec: PipelineSpec) -> list[dict[str, Any]]:
    """Every recorded drift or labelled-performance check, oldest first."""
    return [e for e in history(spec) if e.get("drift_share") is not None or e.get("performance")]


def _performance_cell(entry: dict[str, Any]) -> str:
    perf = entry.get("performance")
    if not perf:
        return "-"
    value = "n/a" if perf.get("value") is None else f"{perf['value']:.3f}"
    flag = " LOW" if perf.get("degraded") else ""
    return f"{perf['metric']}={value} n={perf['labelled_rows']}{flag}"


def format_drift_history(entries: list[dict[str, Any]]) -> str:
    """A readable table: per model version, the drift share over time, the columns that drifted and,
    when labels arrive, the primary metric on the labelled predictions."""
    if not entries:
        return "(no drift check recorded yet)"
    lines = [
        f"{'when (UTC)':<20} {'version':>7} {'share':>6} {'limit':>6}  {'retrain':<9} "
        f"{'labelled performance':<26} drifted columns"
    ]
    for e in entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e["at"]))
        share, limit = e.get("drift_share"), e.get("threshold")
        flagged = e.get("drift_detected") or (e.get("performance") or {}).get("degraded")
        retrain = "requested" if e.get("requested") else ("held" if flagged else "-")
        lines.append(
            f"{when:<20} {e.get('model_version') or '-'!s:>7} "
            f"{'-' if share is None else format(share, '.2f'):>6} "
            f"{'-' if limit is None else format(limit, '.2f'):>6}  {retrain:<9} "
            f"{_performance_cell(e):<26} {', '.join(e.get('drifted_columns') or []) or '-'}"
        )
    return "\n".join(lines)
