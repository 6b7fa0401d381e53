"""Retraining requests with a cool-down, so drift cannot cause a retrain storm."""

from __future__ import annotations

import time
from typing import Any

from include.mlops import storage
from include.mlops.spec import PipelineSpec


def _state_uri(spec: PipelineSpec) -> str:
    return storage.join(spec.uri("state"), "retrain_requests.json")


def history(spec: PipelineSpec) -> list[dict[str, Any]]:
    uri = _state_uri(spec)
    return storage.read_json(uri) if storage.exists(uri) else []


def decide(spec: PipelineSpec, drift: dict[str, Any], *, now: float | None = None) -> tuple[bool, str]:
    """Whether to request a retrain for this drift result, and why (or why not)."""
    now = time.time() if now is None else now
    if not drift.get("drift_detected"):
        return (
            False,
            f"drift share {drift['drift_share']:.2f} is below the threshold {drift['threshold']:.2f}",
        )
    previous = [r for r in history(spec) if r.get("requested")]
    if previous:
        elapsed = now - previous[-1]["at"]
        if elapsed < spec.monitoring.retrain_cooldown:
            return False, (
                f"retraining was requested {elapsed / 3600:.1f} h ago; the cool-down is "
                f"{spec.monitoring.retrain_cooldown / 3600:.1f} h"
            )
    return True, f"drift share {drift['drift_share']:.2f} >= threshold {drift['threshold']:.2f}"


def record(
    spec: PipelineSpec, drift: dict[str, Any], *, requested: bool, reason: str, now: float | None = None
) -> None:
    entries = history(spec)
    entries.append(
        {
            "at": time.time() if now is None else now,
            "requested": requested,
            "reason": reason,
            "drift_share": drift.get("drift_share"),
            "report": drift.get("report_html"),
            "model_version": drift.get("model_version"),
        }
    )
    storage.write_json(_state_uri(spec), entries[-500:])
