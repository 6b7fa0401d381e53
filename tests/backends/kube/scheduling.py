"""The scheduler's filter step for the emulator's one node: selector, affinity, taints, resources.

``unfit_reasons`` returns what the real default-scheduler would say for the node in its
``FailedScheduling`` event ("1 node(s) didn't match Pod's node affinity/selector", "1 node(s) had
untolerated taint {dedicated: gpu}", "1 Insufficient nvidia.com/gpu", ...); ``failed_scheduling``
builds the whole message.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from tests.backends.kube.objects import pod_requests, quantity

_BLOCKING_EFFECTS = ("NoSchedule", "NoExecute")
_NOT_HELPFUL = "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."


def _tolerates(toleration: dict[str, Any], taint: dict[str, Any]) -> bool:
    if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
        return False
    if toleration.get("operator", "Equal") == "Exists":
        return not toleration.get("key") or toleration["key"] == taint.get("key")
    return toleration.get("key") == taint.get("key") and (toleration.get("value") or "") == (
        taint.get("value") or ""
    )


def untolerated_taint(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any] | None:
    """The first NoSchedule/NoExecute taint of the node the pod does not tolerate."""
    tolerations = spec.get("tolerations") or []
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("effect") in _BLOCKING_EFFECTS and not any(_tolerates(t, taint) for t in tolerations):
            return taint
    return None


def _expression_holds(expr: dict[str, Any], values: dict[str, str]) -> bool:
    key, op, wanted = expr.get("key"), expr.get("operator"), expr.get("values") or []
    have = values.get(key) if key is not None else None
    if op == "In":
        return have in wanted
    if op == "NotIn":
        return have not in wanted
    if op == "Exists":
        return key in values
    if op == "DoesNotExist":
        return key not in values
    if op in ("Gt", "Lt") and have is not None and wanted:
        try:
            return int(have) > int(wanted[0]) if op == "Gt" else int(have) < int(wanted[0])
        except ValueError:
            return False
    return False


def _affinity_matches(spec: dict[str, Any], node: dict[str, Any]) -> bool:
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = required.get("nodeSelectorTerms") or []
    if not terms:
        return True
    labels = (node.get("metadata") or {}).get("labels") or {}
    fields = {"metadata.name": node["metadata"]["name"]}
    return any(
        all(_expression_holds(e, labels) for e in term.get("matchExpressions") or [])
        and all(_expression_holds(e, fields) for e in term.get("matchFields") or [])
        for term in terms
    )


def selector_matches(spec: dict[str, Any], node: dict[str, Any]) -> bool:
    """nodeSelector and required node affinity both hold for the node."""
    labels = (node.get("metadata") or {}).get("labels") or {}
    selector = spec.get("nodeSelector") or {}
    return all(labels.get(k) == v for k, v in selector.items()) and _affinity_matches(spec, node)


def insufficient(spec: dict[str, Any], node: dict[str, Any], bound: list[dict[str, Any]]) -> list[str]:
    """The resources the node lacks for the pod, given the pods already bound to it."""
    allocatable = (node.get("status") or {}).get("allocatable") or {}
    used: dict[str, Decimal] = {"pods": Decimal(len(bound))}
    for other in bound:
        for name, amount in pod_requests(other.get("spec") or {}).items():
            used[name] = used.get(name, Decimal(0)) + amount
    wanted = pod_requests(spec)
    wanted["pods"] = Decimal(1)
    short = []
    for name, amount in sorted(wanted.items()):
        if amount <= 0:
            continue
        capacity = quantity(allocatable[name]) if name in allocatable else Decimal(0)
        if used.get(name, Decimal(0)) + amount > capacity:
            short.append(name if name != "pods" else "Too many pods")
    return short


def unfit_reasons(spec: dict[str, Any], node: dict[str, Any], bound: list[dict[str, Any]]) -> list[str]:
    """Why the pod cannot go on the node (empty: it fits), in the scheduler's words."""
    if (node.get("spec") or {}).get("unschedulable"):
        return ["1 node(s) were unschedulable"]
    reasons = []
    if not selector_matches(spec, node):
        reasons.append("1 node(s) didn't match Pod's node affinity/selector")
    taint = untolerated_taint(spec, node)
    if taint is not None:
        value = f": {taint['value']}" if taint.get("value") else ""
        reasons.append(f"1 node(s) had untolerated taint {{{taint.get('key')}{value}}}")
    if not reasons:
        reasons += [
            f"1 Insufficient {name}" if name != "Too many pods" else "1 Too many pods"
            for name in insufficient(spec, node, bound)
        ]
    return reasons


def claim_problem(spec: dict[str, Any], claim_of: Any) -> str | None:
    """The scheduler's message for a missing or unbound PersistentVolumeClaim (``claim_of(name)``)."""
    for volume in spec.get("volumes") or []:
        name = (volume.get("persistentVolumeClaim") or {}).get("claimName")
        if not name:
            continue
        claim = claim_of(name)
        if claim is None:
            return f'0/1 nodes are available: persistentvolumeclaim "{name}" not found. {_NOT_HELPFUL}'
        if (claim.get("status") or {}).get("phase") != "Bound":
            return (
                f"0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims. {_NOT_HELPFUL}"
            )
    return None


def failed_scheduling(reasons: list[str]) -> str:
    """The FailedScheduling message for the reasons the node was filtered out."""
    resources = any("Insufficient" in r or "Too many" in r for r in reasons)
    preemption = (
        "0/1 nodes are available: 1 No preemption victims found for incoming pod."
        if resources
        else "0/1 nodes are available: 1 Preemption is not helpful for scheduling."
    )
    return f"0/1 nodes are available: {', '.join(sorted(reasons))}. preemption: {preemption}"
