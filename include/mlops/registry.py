"""Promotion and rollback with aliases only (``champion``, ``previous_champion``, ``challenger``).

Promotion is compare-and-set: the caller says which champion the gate compared against, and the
promotion is refused if the champion has moved since.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from include.mlops import tracking
from include.mlops.errors import NothingToDo, PromotionRefused
from include.mlops.evaluation import _alias_version, get_version
from include.mlops.spec import PipelineSpec

log = logging.getLogger(__name__)


def aliases(spec: PipelineSpec, tracking_uri: str | None = None) -> dict[str, str | None]:
    client = tracking.client(tracking_uri)
    with tracking.service_errors(tracking_uri):
        return {alias: _alias_version(client, spec.model_name, alias) for alias in tracking.ALIASES}


def promote(
    spec: PipelineSpec,
    *,
    version: str,
    expected_champion: str | None,
    tracking_uri: str | None = None,
    reason: str = "gate passed",
    lineage: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Make ``version`` the champion if the champion is still ``expected_champion``."""
    client = tracking.client(tracking_uri)
    model = spec.model_name
    with tracking.service_errors(tracking_uri):
        current = _alias_version(client, model, "champion")
        if current == version:
            log.info("%s v%s is already the champion; nothing to do", model, version)
            return {
                "model": model,
                "champion": version,
                "previous_champion": _alias_version(client, model, "previous_champion"),
                "changed": False,
            }
        if current != expected_champion:
            raise PromotionRefused(
                f"pipeline {spec.name}: refusing to promote {model} v{version}: the gate compared it with champion "
                f"{_v(expected_champion)} but the champion is now {_v(current)}; evaluate it again"
            )
        gate = get_version(client, model, version).tags.get("mlops.gate.decision")
        if gate != "passed" and reason == "gate passed":
            raise PromotionRefused(
                f"pipeline {spec.name}: {model} v{version} has no passed gate decision (tag: {gate})"
            )
        if current is not None:
            client.set_registered_model_alias(model, "previous_champion", current)
        client.set_registered_model_alias(model, "champion", version)
        if _alias_version(client, model, "challenger") == version:
            client.delete_registered_model_alias(model, "challenger")
        stamp = {
            "mlops.promoted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "mlops.promotion_reason": reason,
        }
        for key, value in {**stamp, **(lineage or {})}.items():
            client.set_model_version_tag(model, version, key.replace("airflow.", "mlops.promoted_by."), value)
    log.info("Promoted %s v%s to champion (previous champion: %s)", model, version, _v(current))
    return {"model": model, "champion": version, "previous_champion": current, "changed": True}


def rollback(
    spec: PipelineSpec,
    *,
    to_version: str | None = None,
    tracking_uri: str | None = None,
    lineage: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Restore ``previous_champion`` (or a named version) as champion; the replaced one becomes previous."""
    client = tracking.client(tracking_uri)
    model = spec.model_name
    with tracking.service_errors(tracking_uri):
        current = _alias_version(client, model, "champion")
        target = to_version or _alias_version(client, model, "previous_champion")
        if target is None:
            raise NothingToDo(
                f"pipeline {spec.name}: nothing to roll back to ({model} has no previous_champion)"
            )
        get_version(client, model, target)  # a deterministic error if the version does not exist
        if target == current:
            raise PromotionRefused(f"pipeline {spec.name}: {model} v{target} is already the champion")
    return promote(
        spec,
        version=target,
        expected_champion=current,
        tracking_uri=tracking_uri,
        reason=f"rollback from {_v(current)}",
        lineage=lineage,
    )


def _v(version: str | None) -> str:
    return f"v{version}" if version else "(none)"
