"""Label and field selectors as the apiserver parses and applies them.

Labels: ``a=b``, ``a==b``, ``a!=b``, ``a``, ``!a``, ``a in (x,y)``, ``a notin (x,y)``, comma-separated
(AND). Fields: ``path=value``, ``path==value``, ``path!=value`` on the fields each kind supports
(pods: ``metadata.name``, ``metadata.namespace``, ``spec.nodeName``, ``status.phase``, ...; events:
``involvedObject.name``, ``involvedObject.kind``, ``reason``, ``type``, ...). An unsupported field
is a 400 like the real server's "field label not supported".
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from tests.backends.kube.objects import Invalid

Matcher = Callable[[dict[str, Any]], bool]

_FIELDS: dict[str, tuple[str, ...]] = {
    "pods": (
        "metadata.name",
        "metadata.namespace",
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ),
    "events": (
        "metadata.name",
        "metadata.namespace",
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ),
    "namespaces": ("metadata.name", "status.phase"),
    "secrets": ("metadata.name", "metadata.namespace", "type"),
    "persistentvolumeclaims": ("metadata.name", "metadata.namespace"),
    "nodes": ("metadata.name", "spec.unschedulable"),
}
_SET_OP = re.compile(r"^\s*(!?)\s*([^\s!=(),]+)\s*(?:(in|notin)\s*\(([^)]*)\)|(==|=|!=)\s*([^\s,]*))?\s*$")


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside ``( )``."""
    parts, depth, current = [], 0, []
    for char in text:
        depth += (char == "(") - (char == ")")
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p for p in (p.strip() for p in parts) if p]


def _label_requirement(term: str) -> Matcher:
    match = _SET_OP.match(term)
    if not match:
        raise Invalid(f"unable to parse requirement: found '{term}', expected: identifier", bad_request=True)
    negated, key, set_op, values, op, value = match.groups()
    if negated and (set_op or op):
        raise Invalid(f"unable to parse requirement: {term!r}", bad_request=True)
    if negated:
        return lambda labels: key not in labels
    if set_op:
        members = {v.strip() for v in values.split(",") if v.strip()}
        if set_op == "in":
            return lambda labels: labels.get(key) in members
        return lambda labels: labels.get(key) not in members
    if op in ("=", "=="):
        return lambda labels: key in labels and labels[key] == value
    if op == "!=":
        return lambda labels: labels.get(key) != value
    return lambda labels: key in labels


def label_matcher(selector: str | None) -> Matcher:
    """A predicate on an object for a ``labelSelector`` (None or empty: everything)."""
    if not selector:
        return lambda obj: True
    requirements = [_label_requirement(term) for term in _split_top_level(selector)]

    def matches(obj: dict[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(req(labels) for req in requirements)

    return matches


def field_value(obj: dict[str, Any], path: str) -> str:
    """The string value of a dotted field path (missing: empty string, booleans lower-case)."""
    value: Any = obj
    if path == "source":
        return ((obj.get("source") or {}).get("component")) or obj.get("reportingComponent") or ""
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def field_matcher(kind: str, selector: str | None) -> Matcher:
    """A predicate on an object for a ``fieldSelector`` (None or empty: everything)."""
    if not selector:
        return lambda obj: True
    checks: list[tuple[str, bool, str]] = []
    for term in _split_top_level(selector):
        match = re.fullmatch(r"\s*([A-Za-z.]+)\s*(==|=|!=)\s*(.*?)\s*", term)
        if not match:
            raise Invalid(f"invalid selector: '{selector}'; can't understand '{term}'", bad_request=True)
        path, op, value = match.groups()
        if path not in _FIELDS.get(kind, ("metadata.name", "metadata.namespace")):
            raise Invalid(f"field label not supported: {path}", bad_request=True)
        checks.append((path, op != "!=", value))

    def matches(obj: dict[str, Any]) -> bool:
        return all((field_value(obj, path) == value) == equal for path, equal, value in checks)

    return matches
