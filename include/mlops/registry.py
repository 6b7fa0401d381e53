"""Promotion and rollback with aliases only (``champion``, ``previous_champion``, ``challenger``).

Promotion is compare-and-set: the caller says which champion the gate compared against, and the
promotion is refused if the champion has moved since. Every promotion, rollback, refusal and
rejection is appended to the model's history (``include.mlops.history``).

Alias moves are serialised per model: in Airflow by the promote/rollback DAGs' ``max_active_runs=1``
and, on one host (the embedded default, tests, the CLI), by a file lock around the check and the
move, so two concurrent promotions cannot both pass the check.
"""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from include.mlops import history, tracking
from include.mlops.errors import NothingToDo, PromotionRefused
from include.mlops.evaluation import _alias_version, get_version
from include.mlops.paths import state_dir
from include.mlops.spec import PipelineSpec

log = logging.getLogger(__name__)


def aliases(spec: PipelineSpec, tracking_uri: str | None = None) -> dict[str, str | None]:
    client = tracking.client(tracking_uri)
    with tracking.service_errors(tracking_uri):
        return {alias: _alias_version(client, spec.model_name, alias) for alias in tracking.ALIASES}


@contextmanager
def model_lock(model: str) -> Iterator[None]:
    """Exclusive per-model lock across processes on this host."""
    folder = state_dir() / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{model}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _audit(lineage: dict[str, str] | None) -> dict[str, str]:
    lineage = lineage or {}
    return {
        "dag_id": lineage.get("airflow.dag_id", ""),
        "run_id": lineage.get("airflow.run_id", ""),
        "by": lineage.get("triggered_by", "airflow" if lineage.get("airflow.dag_id") else "cli"),
    }


def _key(action: str, version: str, lineage: dict[str, str] | None) -> str | None:
    """Idempotency key: the same Airflow run doing the same thing again records nothing new."""
    if lineage and lineage.get("airflow.run_id"):
        return f"{lineage.get('airflow.dag_id')}|{lineage['airflow.run_id']}|{action}|{version}"
    return None


def promote(
    spec: PipelineSpec,
    *,
    version: str,
    expected_champion: str | None,
    tracking_uri: str | None = None,
    reason: str = "gate passed",
    lineage: dict[str, str] | None = None,
    action: str = "promote",
    require_gate: bool = True,
) -> dict[str, Any]:
    """Make ``version`` the champion if the champion is still ``expected_champion``."""
    client = tracking.client(tracking_uri)
    model = spec.model_name
    with tracking.service_errors(tracking_uri), model_lock(model):
        tags = get_version(client, model, version).tags
        decision = tags.get("mlops.gate.id")
        current = _alias_version(client, model, "champion")
        audit = {**_audit(lineage), "action": action, "from": current, "to": version, "decision": decision}
        if current == version:
            if tags.get("mlops.promotion_id"):
                log.info("%s v%s is already the champion", model, version)
                return {
                    "model": model,
                    "champion": version,
                    "changed": False,
                    "previous_champion": _alias_version(client, model, "previous_champion"),
                }
            return _finish_interrupted(client, model, version, expected_champion, audit, reason, lineage)
        if require_gate and tags.get("mlops.gate.decision") != "passed":
            refusal = (
                f"{model} v{version} has no passed gate decision (gate: {tags.get('mlops.gate.decision')})"
            )
            history.append(
                client,
                model,
                {**audit, "action": "refused", "reason": refusal, "key": _key("refused", version, lineage)},
            )
            raise PromotionRefused(f"pipeline {spec.name}: refusing to promote: {refusal}")
        if current != expected_champion:
            refusal = (
                f"the gate compared v{version} with champion {_v(expected_champion)} but the champion is "
                f"now {_v(current)}; evaluate it again"
            )
            history.append(
                client,
                model,
                {**audit, "action": "refused", "reason": refusal, "key": _key("refused", version, lineage)},
            )
            raise PromotionRefused(f"pipeline {spec.name}: refusing to promote {model} v{version}: {refusal}")
        # Champion first: if the tracking server dies right after this write, the retry finds the move
        # done and completes previous_champion and the history (_finish_interrupted); no reader ever
        # sees a model without a champion.
        client.set_registered_model_alias(model, "champion", version)
        if current is not None:
            client.set_registered_model_alias(model, "previous_champion", current)
        if _alias_version(client, model, "challenger") == version:
            client.delete_registered_model_alias(model, "challenger")
        entry = history.append(
            client, model, {**audit, "reason": reason, "key": _key(action, version, lineage)}
        )
        client.set_model_version_tag(model, version, "mlops.promoted_at", entry["at"])
        client.set_model_version_tag(model, version, "mlops.promotion_id", entry["id"])
    log.info("%s: %s v%s to champion (previous champion: %s)", model, action, version, _v(current))
    return {
        "model": model,
        "champion": version,
        "previous_champion": current,
        "changed": True,
        "history_id": entry["id"],
    }


def _finish_interrupted(
    client: Any,
    model: str,
    version: str,
    expected: str | None,
    audit: dict[str, Any],
    reason: str,
    lineage: dict[str, str] | None,
) -> dict[str, Any]:
    """The champion alias moved but the promotion never finished (no ``mlops.promotion_id``):
    complete ``previous_champion``, the history entry and the version tags, as the cut-short run would have."""
    previous = _alias_version(client, model, "previous_champion")
    if expected is not None and previous != expected:
        client.set_registered_model_alias(model, "previous_champion", expected)
        previous = expected
    entry = history.append(
        client,
        model,
        {**audit, "from": expected, "reason": reason, "key": _key(audit["action"], version, lineage)},
    )
    client.set_model_version_tag(model, version, "mlops.promoted_at", entry["at"])
    client.set_model_version_tag(model, version, "mlops.promotion_id", entry["id"])
    log.info("Completed the interrupted promotion of %s v%s", model, version)
    return {
        "model": model,
        "champion": version,
        "previous_champion": previous,
        "changed": True,
        "history_id": entry["id"],
    }


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
        get_version(client, model, target)
        if target == current:
            raise PromotionRefused(f"pipeline {spec.name}: {model} v{target} is already the champion")
    return promote(
        spec,
        version=target,
        expected_champion=current,
        tracking_uri=tracking_uri,
        reason=f"rollback from {_v(current)}",
        lineage=lineage,
        action="rollback",
        require_gate=False,
    )


def record_rejection(
    spec: PipelineSpec,
    *,
    version: str,
    reason: str,
    tracking_uri: str | None = None,
    lineage: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A human rejected the promotion (manual approval): the champion stays, the history says why."""
    client = tracking.client(tracking_uri)
    model = spec.model_name
    with tracking.service_errors(tracking_uri):
        tags = get_version(client, model, version).tags
        entry = history.append(
            client,
            model,
            {
                **_audit(lineage),
                "action": "rejected",
                "from": _alias_version(client, model, "champion"),
                "to": version,
                "decision": tags.get("mlops.gate.id"),
                "reason": reason,
                "key": _key("rejected", version, lineage),
            },
        )
        client.set_model_version_tag(model, version, "mlops.approval", "rejected")
    return entry


def _v(version: str | None) -> str:
    return f"v{version}" if version else "(none)"
