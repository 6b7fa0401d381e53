"""The three PATCH flavours of the API: JSON merge patch, strategic merge patch and JSON patch.

The kubernetes clients send a dict body as ``application/strategic-merge-patch+json`` and a list
as ``application/json-patch+json``. Strategic merge is a merge patch where the lists Kubernetes
declares with a merge key (containers, env, volumes, ports, conditions, ...) merge item by item on
that key instead of being replaced; ``null`` deletes a key in both merge flavours.
"""

from __future__ import annotations

import copy
from typing import Any

from tests.backends.kube.objects import ApiError, Invalid

# The merge keys of the list fields a pod, node or namespace patch touches in practice.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
    "conditions": "type",
    "containerStatuses": "name",
    "initContainerStatuses": "name",
    "ownerReferences": "uid",
    "taints": "key",
    "addresses": "type",
}


def merge_patch(target: Any, patch: Any, *, strategic: bool = False) -> Any:
    """RFC 7386 merge of ``patch`` into ``target`` (a new value; inputs are not changed)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue  # strategic-merge directives ($patch, $setElementOrder, ...): ignored
        if value is None:
            result.pop(key, None)
        elif (
            strategic and key in MERGE_KEYS and isinstance(value, list) and isinstance(result.get(key), list)
        ):
            result[key] = _merge_list(result[key], value, MERGE_KEYS[key])
        else:
            result[key] = merge_patch(result.get(key), value, strategic=strategic)
    return result


def _merge_list(current: list[Any], patch: list[Any], key: str) -> list[Any]:
    merged = copy.deepcopy(current)
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            return copy.deepcopy(patch)
        index = next(
            (i for i, old in enumerate(merged) if isinstance(old, dict) and old.get(key) == item[key]), None
        )
        if item.get("$patch") == "delete":
            if index is not None:
                merged.pop(index)
        elif index is None:
            merged.append(merge_patch({}, item, strategic=True))
        else:
            merged[index] = merge_patch(merged[index], item, strategic=True)
    return merged


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise Invalid(
            f"the server rejected our request due to an error in our request: invalid JSON pointer {path!r}"
        )
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str]) -> tuple[Any, str]:
    node = doc
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node, parts[-1]


def _apply_operation(doc: Any, op: dict[str, Any]) -> Any:
    kind, parts = op.get("op"), _pointer(op.get("path", ""))
    if kind in ("move", "copy"):
        source, name = _parent(doc, _pointer(op["from"]))
        value = copy.deepcopy(source[int(name)] if isinstance(source, list) else source[name])
        if kind == "move":
            doc = _apply_operation(doc, {"op": "remove", "path": op["from"]})
        return _apply_operation(doc, {"op": "add", "path": op["path"], "value": value})
    if not parts:
        return copy.deepcopy(op.get("value"))
    parent, name = _parent(doc, parts)
    if kind == "test":
        current = parent[int(name)] if isinstance(parent, list) else parent.get(name)
        if current != op.get("value"):
            raise Invalid(
                f"the server rejected our request due to an error in our request: testing value {op['path']} failed"
            )
    elif kind == "remove":
        del parent[int(name) if isinstance(parent, list) else name]
    elif kind == "add" and isinstance(parent, list):
        parent.insert(len(parent) if name == "-" else int(name), copy.deepcopy(op["value"]))
    elif kind in ("add", "replace"):
        if kind == "replace" and not isinstance(parent, list) and name not in parent:
            raise Invalid(
                f"the server rejected our request due to an error in our request: replace operation does not apply: doc is missing key: {op['path']}"
            )
        parent[int(name) if isinstance(parent, list) else name] = copy.deepcopy(op["value"])
    else:
        raise Invalid(
            f"the server rejected our request due to an error in our request: unexpected op {kind!r}"
        )
    return doc


def json_patch(target: Any, operations: list[Any]) -> Any:
    """RFC 6902 JSON patch (a new value); a bad path or failed test is a 422."""
    doc = copy.deepcopy(target)
    for op in operations:
        try:
            doc = _apply_operation(doc, op)
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            if isinstance(exc, Invalid):
                raise
            raise Invalid(
                f"the server rejected our request due to an error in our request: {op!r}: {exc}"
            ) from None
    return doc


def apply_patch(target: dict[str, Any], body: Any, content_type: str) -> dict[str, Any]:
    """Apply a PATCH body by its content type, as the apiserver does."""
    ctype = content_type.split(";")[0].strip().lower()
    if ctype == "application/json-patch+json":
        if not isinstance(body, list):
            raise Invalid(
                "the server rejected our request due to an error in our request: a JSON patch must be a list",
                bad_request=True,
            )
        return json_patch(target, body)
    if ctype in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
        if not isinstance(body, dict):
            raise Invalid(
                "the server rejected our request due to an error in our request: a merge patch must be an object",
                bad_request=True,
            )
        return merge_patch(target, body, strategic=ctype.startswith("application/strategic"))
    raise ApiError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format - accepted media types include: "
        f"application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, "
        f"application/strategic-merge-patch+json (got {ctype})",
    )
