"""Promotion and rollback with aliases only (``champion``, ``previous_champion``, ``challenger``).

Promotion is compare-and-set: the caller says which champion the gate compared against, and the
promotion is refused if the champion has moved since. Every promotion, rollback, refusal and
rejection is appended to the model's history (``include.mlops.model.history``).

Alias moves are serialised per model across processes and hosts by the lock ``promote:<model>`` of
the coordination store (``include.mlops.coordination``: a Postgres advisory lock in production, a
lease in the SQLite file of the embedded default), held around the check and the move: of two
promotions at the same moment on two workers, the second sees the first's champion and is refused.
Waiting longer than ``LOCK_TIMEOUT`` raises ``LockTimeout`` (retried). In Airflow each of the
promote and rollback DAGs also runs one at a time.
"""

from __future__ import annotations

import json
import logging
from contextlib import AbstractContextManager
from typing import Any

from include.mlops import coordination, tracking
from include.mlops.errors import NothingToDo, PromotionRefused
from include.mlops.model import history
from include.mlops.spec import PipelineSpec
from include.mlops.stages import staged
from include.mlops.tags import (
    APPROVAL,
    GATE_DECISION,
    GATE_ID,
    GATE_PASSED,
    PENDING,
    PROMOTED_AT,
    PROMOTION_ID,
)
from include.mlops.tracking import alias_version, get_version

log = logging.getLogger(__name__)


def aliases(spec: PipelineSpec, tracking_uri: str | None = None) -> dict[str, str | None]:
    """Where each alias points now (None when unset): what promotion and rollback move."""
    client = tracking.client(tracking_uri)
    with tracking.service_errors(tracking_uri):
        return {alias: alias_version(client, spec.model_name, alias) for alias in tracking.ALIASES}


LOCK_TIMEOUT = 300.0  # seconds a promotion or rollback waits for another one of the same model


def model_lock(model: str, lineage: dict[str, str] | None = None) -> AbstractContextManager[None]:
    """Exclusive per-model lock across processes and hosts (the coordination store's
    ``promote:<model>``); the Airflow run holding it is named to whoever waits for it."""
    label = None
    if lineage and lineage.get("airflow.run_id"):
        label = f"{lineage.get('airflow.dag_id', '')} {lineage['airflow.run_id']}".strip()
    return coordination.lock(f"promote:{model}", timeout=LOCK_TIMEOUT, label=label)


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


def _replay_pending(client: Any, model: str) -> dict[str, Any] | None:
    """Finish an alias move that was cut short (intent written, champion moved, bookkeeping not done).

    Every move first writes its intent to the registered-model tag ``mlops.pending``; whoever next
    touches the model's aliases completes it, so a tracking server dying mid-way never leaves a
    half-recorded promotion. An intent whose champion move never happened is simply dropped.
    """
    from mlflow.exceptions import MlflowException

    try:
        raw = client.get_registered_model(model).tags.get(PENDING)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    if not raw:
        return None
    intent = json.loads(raw)
    entry = None
    if alias_version(client, model, "champion") == intent["to"]:
        entry = _complete(
            client, model, intent, challenger=alias_version(client, model, "challenger") == intent["to"]
        )
        log.info("Completed the interrupted %s of %s v%s", intent["entry"]["action"], model, intent["to"])
    client.delete_registered_model_tag(model, PENDING)
    return entry


def _complete(client: Any, model: str, intent: dict[str, Any], *, challenger: bool) -> dict[str, Any]:
    """The bookkeeping after the champion alias moved: previous_champion, the challenger alias (if it
    points at the new champion), history, version tags. Shared by a move and by its replay."""
    if intent["from"] is not None:
        client.set_registered_model_alias(model, "previous_champion", intent["from"])
    if challenger:
        client.delete_registered_model_alias(model, "challenger")
    entry = history.append(client, model, intent["entry"])
    client.set_model_version_tag(model, intent["to"], PROMOTED_AT, entry["at"])
    client.set_model_version_tag(model, intent["to"], PROMOTION_ID, entry["id"])
    return entry


def _move(
    client: Any, model: str, *, current: str | None, version: str, entry: dict[str, Any], challenger: bool
) -> dict[str, Any]:
    """Intent, champion, previous_champion, challenger, history, tags; then clear the intent.

    ``challenger``: the alias points at ``version`` (its ``ModelVersion.aliases`` says so). What the
    move just did is known, so it is completed directly rather than by reading the intent and the
    aliases back (three requests fewer; issue 11); a move cut short is replayed by the next caller.
    """
    intent = {"from": current, "to": version, "entry": entry}
    client.set_registered_model_tag(model, PENDING, json.dumps(intent, sort_keys=True))
    client.set_registered_model_alias(model, "champion", version)
    done = _complete(client, model, intent, challenger=challenger)
    client.delete_registered_model_tag(model, PENDING)
    return done


@staged("promote")
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
    with tracking.service_errors(tracking_uri), model_lock(model, lineage):
        _replay_pending(client, model)
        candidate = get_version(client, model, version)
        tags = candidate.tags
        current = alias_version(client, model, "champion")
        audit = {
            **_audit(lineage),
            "action": action,
            "from": current,
            "to": version,
            "decision": tags.get(GATE_ID),
        }
        if current == version:
            log.info("%s v%s is already the champion; nothing to do", model, version)
            return {
                "model": model,
                "champion": version,
                "changed": False,
                "previous_champion": alias_version(client, model, "previous_champion"),
            }
        refusal = _refusal(model, version, tags, current, expected_champion, require_gate=require_gate)
        if refusal:
            history.append(
                client,
                model,
                {**audit, "action": "refused", "reason": refusal, "key": _key("refused", version, lineage)},
            )
            raise PromotionRefused(f"pipeline {spec.name}: refusing to promote {model} v{version}: {refusal}")
        entry = _move(
            client,
            model,
            current=current,
            version=version,
            entry={**audit, "reason": reason, "key": _key(action, version, lineage)},
            challenger="challenger" in (candidate.aliases or []),
        )
    log.info("%s: %s v%s to champion (previous champion: %s)", model, action, version, _v(current))
    return {
        "model": model,
        "champion": version,
        "previous_champion": current,
        "changed": True,
        "history_id": entry.get("id"),
    }


@staged("rollback")
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
        with model_lock(model, lineage):
            finished = _replay_pending(client, model)
        current = alias_version(client, model, "champion")
        # This Airflow run already rolled back (its retry completed it just now, or another caller
        # did since): report that instead of rolling back a second time.
        own = _key("rollback", "", lineage)
        if own:
            done = next(
                (e for e in history.entries(client, model) if str(e.get("key", "")).startswith(own)), None
            )
            if done:
                return {
                    "model": model,
                    "champion": current,
                    "previous_champion": done.get("from"),
                    "changed": bool(finished),
                    "history_id": done.get("id"),
                }
        target = to_version or alias_version(client, model, "previous_champion")
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
                "from": alias_version(client, model, "champion"),
                "to": version,
                "decision": tags.get(GATE_ID),
                "reason": reason,
                "key": _key("rejected", version, lineage),
            },
        )
        client.set_model_version_tag(model, version, APPROVAL, "rejected")
    return entry


def _refusal(
    model: str,
    version: str,
    tags: dict[str, str],
    current: str | None,
    expected: str | None,
    *,
    require_gate: bool,
) -> str | None:
    """Why promoting ``version`` would be unsafe now, or None: no passed gate, or the champion moved."""
    if require_gate and tags.get(GATE_DECISION) != GATE_PASSED:
        return f"{model} v{version} has no passed gate decision (gate: {tags.get(GATE_DECISION)})"
    if current != expected:
        return (
            f"the gate compared v{version} with champion {_v(expected)} but the champion is "
            f"now {_v(current)}; evaluate it again"
        )
    return None


def _v(version: str | None) -> str:
    return f"v{version}" if version else "(none)"
