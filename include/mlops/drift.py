"""Drift check: recent scoring inputs against the champion's training reference, with Evidently.

The reference sample is saved with each model version at training time; the current window is the
``monitoring.window_batches`` most recently scored input files. Reports (HTML + JSON) are written
per run under the pipeline's reports folder.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pandas as pd

from include.mlops import storage, tracking
from include.mlops.errors import NothingToDo
from include.mlops.evaluation import _alias_version
from include.mlops.inference import scored_batches
from include.mlops.spec import PipelineSpec
from include.mlops.tabular import detect_format, read_frame
from include.mlops.training import REFERENCE_ARTIFACT, download_run_frame

log = logging.getLogger(__name__)


def column_decisions(snapshot: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per-column verdicts from an Evidently snapshot (p-value tests drift below, distances at/above)."""
    decisions = {}
    for metric in snapshot["metrics"]:
        config = metric.get("config", {})
        if not config.get("type", "").endswith("ValueDrift"):
            continue
        method, threshold, value = config["method"], config["threshold"], float(metric["value"])
        drifted = value < threshold if "p_value" in method else value >= threshold
        decisions[config["column"]] = {
            "method": method,
            "threshold": threshold,
            "value": value,
            "drifted": drifted,
        }
    return decisions


def check(spec: PipelineSpec, *, run_key: str, tracking_uri: str | None = None) -> dict[str, Any]:
    from evidently import Report
    from evidently.presets import DataDriftPreset

    client = tracking.client(tracking_uri)
    with tracking.service_errors(tracking_uri):
        version = _alias_version(client, spec.model_name, "champion")
        if version is None:
            raise NothingToDo(
                f"pipeline {spec.name}: no champion yet, so no training reference to compare with"
            )
        run_id = client.get_model_version(spec.model_name, version).run_id
        reference = download_run_frame(run_id, REFERENCE_ARTIFACT)
    batches = scored_batches(spec)[: spec.monitoring.window_batches]
    if not batches:
        raise NothingToDo(f"pipeline {spec.name}: no scored input yet to compare with the reference")
    current = pd.concat(
        [read_frame(b["input"], detect_format(b["input"], spec.inference.format)) for b in batches],
        ignore_index=True,
    )
    columns = [c for c in reference.columns if c in current.columns]
    snapshot = Report([DataDriftPreset()]).run(
        current_data=current[columns], reference_data=reference[columns]
    )
    summary_metric = next(
        m for m in snapshot.dict()["metrics"] if "DriftedColumnsCount" in m["config"]["type"]
    )
    share = float(summary_metric["value"]["share"])
    decisions = column_decisions(snapshot.dict())
    folder = storage.join(spec.uri("reports"), "drift", run_key)
    html_uri, json_uri = storage.join(folder, "report.html"), storage.join(folder, "report.json")
    storage.write_text(html_uri, snapshot.get_html_str(as_iframe=False))
    storage.write_text(json_uri, snapshot.json())
    result = {
        "pipeline": spec.name,
        "model_version": version,
        "drift_share": share,
        "threshold": spec.monitoring.drift_share_threshold,
        "drift_detected": share >= spec.monitoring.drift_share_threshold,
        "drifted_columns": sorted(c for c, d in decisions.items() if d["drifted"]),
        "columns": decisions,
        "current_rows": len(current),
        "reference_rows": len(reference),
        "inputs": [b["input"] for b in batches],
        "report_html": html_uri,
        "report_json": json_uri,
        "checked_at": time.time(),
    }
    storage.write_json(storage.join(folder, "summary.json"), result)
    log.info(
        "Drift share %.2f (threshold %.2f) on %d rows; report: %s",
        share,
        spec.monitoring.drift_share_threshold,
        len(current),
        html_uri,
    )
    return result
