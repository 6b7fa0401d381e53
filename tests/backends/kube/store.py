"""The emulated etcd: objects by kind, namespace and name, one resourceVersion counter, watch fan-out.

Every write bumps the cluster-wide ``resourceVersion`` and becomes a watch event (ADDED, MODIFIED,
DELETED) kept in a bounded history, so a watch can resume from a resourceVersion (or get 410 Gone
when it is older than the history) exactly like the real API. A watch with a selector sees an
object leave its selection as DELETED and enter it as ADDED. All access happens on the emulator's
event loop thread; what leaves the store is a deep copy.
"""

from __future__ import annotations

import asyncio
import copy
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.backends.kube.objects import ApiError, new_uid, rfc3339

# plural -> (kind, namespaced)
KINDS: dict[str, tuple[str, bool]] = {
    "pods": ("Pod", True),
    "events": ("Event", True),
    "secrets": ("Secret", True),
    "configmaps": ("ConfigMap", True),
    "serviceaccounts": ("ServiceAccount", True),
    "persistentvolumeclaims": ("PersistentVolumeClaim", True),
    "namespaces": ("Namespace", False),
    "nodes": ("Node", False),
}
HISTORY = 20_000
Matcher = Callable[[dict[str, Any]], bool]
Listener = Callable[[str, str, dict[str, Any]], None]


@dataclass(eq=False)
class Watch:
    """One open watch: what it selects and the queue its events go to."""

    plural: str
    namespace: str | None
    matches: Matcher
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)

    def selects(self, obj: dict[str, Any] | None) -> bool:
        """Whether ``obj`` is in this watch's namespace and selection."""
        if obj is None:
            return False
        namespace = (obj.get("metadata") or {}).get("namespace")
        return (self.namespace is None or namespace == self.namespace) and self.matches(obj)


def not_found(plural: str, name: str) -> ApiError:
    """The apiserver's 404 for a missing object."""
    return ApiError(404, "NotFound", f'{plural} "{name}" not found', {"name": name, "kind": plural})


class Store:
    """Objects of every kind the emulator serves, with resourceVersions, history and watches."""

    def __init__(self) -> None:
        self.revision = 0
        self._objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {k: {} for k in KINDS}
        self._history: deque[tuple[int, str, str, dict[str, Any]]] = deque(maxlen=HISTORY)
        self._watches: set[Watch] = set()
        self.listeners: list[Listener] = []
        self.pods_ever: dict[str, dict[str, Any]] = {}

    def _key(self, plural: str, namespace: str | None, name: str) -> tuple[str, str]:
        return (namespace or "" if KINDS[plural][1] else "", name)

    def get(self, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """A copy of the object, or None."""
        obj = self._objects[plural].get(self._key(plural, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def require(self, plural: str, namespace: str | None, name: str) -> dict[str, Any]:
        """A copy of the object, or the apiserver's 404."""
        obj = self.get(plural, namespace, name)
        if obj is None:
            raise not_found(plural, name)
        return obj

    def items(self, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Copies of the objects of a kind (in one namespace, or all), in etcd key order."""
        return [
            copy.deepcopy(obj)
            for (ns, _), obj in sorted(self._objects[plural].items())
            if namespace is None or ns == namespace
        ]

    def create(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Store a new object (uid, resourceVersion, creationTimestamp set); 409 if the name is taken."""
        meta = obj.setdefault("metadata", {})
        key = self._key(plural, meta.get("namespace"), meta["name"])
        if key in self._objects[plural]:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{plural} "{meta["name"]}" already exists',
                {"name": meta["name"], "kind": plural},
            )
        kind, namespaced = KINDS[plural]
        if not namespaced:
            meta.pop("namespace", None)
        meta["uid"] = new_uid()
        meta["creationTimestamp"] = rfc3339()
        meta.pop("deletionTimestamp", None)
        obj["kind"], obj["apiVersion"] = kind, "v1"
        return self._write(plural, key, obj, "ADDED", None)

    def replace(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Store a new version of an existing object (its resourceVersion bumped)."""
        meta = obj["metadata"]
        key = self._key(plural, meta.get("namespace"), meta["name"])
        old = self._objects[plural].get(key)
        if old is None:
            raise not_found(plural, meta["name"])
        for frozen in ("uid", "creationTimestamp", "namespace", "name"):
            if frozen in old["metadata"]:
                meta[frozen] = old["metadata"][frozen]
        return self._write(plural, key, obj, "MODIFIED", old)

    def remove(self, plural: str, namespace: str | None, name: str) -> dict[str, Any]:
        """Delete an object for good (a DELETED event with a new resourceVersion)."""
        key = self._key(plural, namespace, name)
        old = self._objects[plural].pop(key, None)
        if old is None:
            raise not_found(plural, name)
        self.revision += 1
        final = copy.deepcopy(old)
        final["metadata"]["resourceVersion"] = str(self.revision)
        self._emit(plural, "DELETED", final, old)
        return copy.deepcopy(final)

    def _write(
        self, plural: str, key: tuple[str, str], obj: dict[str, Any], kind: str, old: dict[str, Any] | None
    ) -> dict[str, Any]:
        self.revision += 1
        stored = copy.deepcopy(obj)
        stored["metadata"]["resourceVersion"] = str(self.revision)
        self._objects[plural][key] = stored
        self._emit(plural, kind, stored, old)
        return copy.deepcopy(stored)

    def _emit(self, plural: str, kind: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        snapshot = copy.deepcopy(obj)
        if plural == "pods":
            self.pods_ever[snapshot["metadata"]["uid"]] = snapshot
        self._history.append((self.revision, plural, kind, snapshot))
        for watch in list(self._watches):
            if watch.plural == plural:
                self._deliver(watch, kind, snapshot, old)
        for listener in list(self.listeners):
            listener(plural, kind, snapshot)

    @staticmethod
    def _deliver(watch: Watch, kind: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        now_in, was_in = watch.selects(obj), watch.selects(old)
        if kind == "MODIFIED" and now_in and not was_in:
            kind = "ADDED"
        elif kind == "MODIFIED" and was_in and not now_in:
            kind, now_in = "DELETED", True
        if now_in:
            watch.queue.put_nowait({"type": kind, "object": copy.deepcopy(obj)})

    def watch(self, plural: str, namespace: str | None, matches: Matcher, since: str | None) -> Watch:
        """Open a watch: from ``since`` (history replayed; 410 if too old) or from now with ADDED for all."""
        watch = Watch(plural, namespace, matches)
        if since in (None, "", "0"):
            for obj in self.items(plural, namespace):
                if matches(obj):
                    watch.queue.put_nowait({"type": "ADDED", "object": obj})
        else:
            self._replay(watch, since)
        self._watches.add(watch)
        return watch

    def _replay(self, watch: Watch, since: str) -> None:
        try:
            start = int(since)
        except ValueError:
            raise ApiError(400, "BadRequest", f'invalid resource version "{since}"') from None
        oldest = self._history[0][0] if self._history else self.revision + 1
        if start + 1 < oldest and start < self.revision:
            raise ApiError(410, "Expired", f"too old resource version: {start} ({oldest - 1})")
        for revision, plural, kind, obj in self._history:
            if revision > start and plural == watch.plural and watch.selects(obj):
                watch.queue.put_nowait({"type": kind, "object": copy.deepcopy(obj)})

    def unwatch(self, watch: Watch) -> None:
        """Close a watch."""
        self._watches.discard(watch)
