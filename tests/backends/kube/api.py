"""The emulated Kubernetes API server (core/v1 over HTTP, aiohttp): what the real clients call.

Served: discovery (``/version``, ``/api``, ``/api/v1``, ``/apis``) and health; for pods, events,
namespaces, secrets, config maps, service accounts and nodes: create (with ``generateName`` and
``dryRun``), get, list and watch (label and field selectors, ``resourceVersion`` /
``resourceVersionMatch``, ``limit`` / ``continue``, ``timeoutSeconds``, legacy ``/watch/`` paths),
update (optimistic concurrency on ``resourceVersion``), patch (JSON, merge and strategic merge),
delete (grace period, preconditions) and deletecollection; the pod ``status`` subresource and pod
``log`` (``container``, ``follow``, ``timestamps``, ``sinceSeconds``, ``sinceTime``, ``tailLines``,
``limitBytes``, ``previous``). Errors are ``Status`` objects with the real codes, reasons and
wording. ``/_emulator/...`` is the test-only side door (images, pods ever created, processes, reset).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.backends.kube import objects
from tests.backends.kube.images import Image, Registry
from tests.backends.kube.kubelet import Kubelet
from tests.backends.kube.objects import ApiError, Invalid
from tests.backends.kube.patching import apply_patch
from tests.backends.kube.selectors import field_matcher, label_matcher
from tests.backends.kube.store import KINDS, Store, not_found

VERSION = {
    "major": "1",
    "minor": "30",
    "gitVersion": "v1.30.0",
    "gitCommit": "7c48c2bd72b9bf5c44d21d7338cc7bea77d0ad2a",
    "gitTreeState": "clean",
    "buildDate": "2024-04-17T17:27:03Z",
    "goVersion": "go1.22.2",
    "compiler": "gc",
    "platform": "linux/amd64",
    "emulator": "tests.backends.kube",
}
SUBRESOURCES = {
    "pods": ("status", "log"),
    "nodes": ("status",),
    "namespaces": ("status", "finalize"),
    "persistentvolumeclaims": ("status",),
}
VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
SHORT_NAMES = {
    "persistentvolumeclaims": ["pvc"],
    "pods": ["po"],
    "events": ["ev"],
    "namespaces": ["ns"],
    "configmaps": ["cm"],
    "serviceaccounts": ["sa"],
    "nodes": ["no"],
}
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
WATCH_TIMEOUT = 1800


@dataclass
class Target:
    """What a request path addresses."""

    plural: str
    namespace: str | None = None
    name: str | None = None
    sub: str | None = None
    legacy_watch: bool = False


def status_body(error: ApiError) -> dict[str, Any]:
    """The ``Status`` object of a failed request."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": error.message,
        "reason": error.reason,
        "code": error.code,
    }
    if error.details:
        body["details"] = error.details
    return body


def parse_path(parts: list[str]) -> Target:
    """Map ``/api/v1/...`` segments (after ``v1``) to a target; unknown paths are a 404."""
    legacy = bool(parts) and parts[0] == "watch"
    parts = parts[1:] if legacy else parts
    if len(parts) >= 3 and parts[0] == "namespaces" and parts[2] not in ("status", "finalize"):
        target = Target(parts[2], parts[1], *([*parts[3:5], None, None])[:2], legacy_watch=legacy)
        if not KINDS.get(target.plural, ("", False))[1] or len(parts) > 5:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
    elif 1 <= len(parts) <= 3 and parts[0] in KINDS:
        target = Target(parts[0], None, *([*parts[1:3], None, None])[:2], legacy_watch=legacy)
        if target.name is not None and KINDS[target.plural][1]:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
    else:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    if target.sub is not None and target.sub not in SUBRESOURCES.get(target.plural, ()):
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    return target


def _int_param(request: web.Request, name: str) -> int | None:
    value = request.query.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise Invalid(f'invalid value "{value}" for {name}: must be an integer', bad_request=True) from None


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("true", "1")


async def _json_body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, "BadRequest", f"the request body is not valid JSON: {exc}") from None


class ApiServer:
    """HTTP handlers over the store, the kubelet and the image registry."""

    def __init__(
        self, store: Store, kubelet: Kubelet, registry: Registry, node_template: dict[str, Any]
    ) -> None:
        self.store, self.kubelet, self.registry = store, kubelet, registry
        self.node_template = node_template
        self.address = ""

    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.dispatch)
        return app

    # ----------------------------------------------------------------- dispatch
    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        """Route a request by its path, render failures as ``Status``."""
        try:
            return await self._route(request)
        except ApiError as exc:
            return web.json_response(status_body(exc), status=exc.code)
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as exc:  # an emulator bug: a 500 with the reason, like an apiserver panic
            error = ApiError(500, "InternalError", f"kube emulator error: {exc!r}")
            return web.json_response(status_body(error), status=500)

    async def _route(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok")
        if path.startswith("/_emulator/"):
            return await self._side_door(request, path.removeprefix("/_emulator/"))
        discovery = self._discovery(path)
        if discovery is not None:
            if request.method != "GET":
                raise ApiError(
                    405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
                )
            return web.json_response(discovery)
        parts = path.split("/")[1:]
        if parts[:2] != ["api", "v1"]:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return await self._resource(request, parse_path(parts[2:]))

    def _discovery(self, path: str) -> dict[str, Any] | None:
        if path == "/":
            return {"paths": ["/api", "/api/v1", "/apis", "/healthz", "/livez", "/readyz", "/version"]}
        if path == "/version":
            return VERSION
        if path == "/api":
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": self.address}],
            }
        if path == "/apis":
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": []}
        if path == "/api/v1":
            return {"kind": "APIResourceList", "groupVersion": "v1", "resources": self._resources()}
        return None

    @staticmethod
    def _resources() -> list[dict[str, Any]]:
        resources = []
        for plural, (kind, namespaced) in KINDS.items():
            resources.append(
                {
                    "name": plural,
                    "singularName": kind.lower(),
                    "namespaced": namespaced,
                    "kind": kind,
                    "verbs": VERBS,
                    "shortNames": SHORT_NAMES.get(plural, []),
                }
            )
            for sub in SUBRESOURCES.get(plural, ()):
                verbs = ["get"] if sub == "log" else ["get", "patch", "update"]
                resources.append(
                    {
                        "name": f"{plural}/{sub}",
                        "singularName": "",
                        "namespaced": namespaced,
                        "kind": kind,
                        "verbs": verbs,
                    }
                )
        return resources

    async def _resource(self, request: web.Request, target: Target) -> web.StreamResponse:
        method = request.method
        if target.sub == "log":
            if method != "GET":
                raise ApiError(
                    405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
                )
            return await self._log(request, target)
        if target.name is None:
            return await self._collection(request, target)
        if method == "GET":
            if target.legacy_watch:
                return await self._watch(request, target)
            return web.json_response(self.store.require(target.plural, target.namespace, target.name))
        if method == "PUT":
            return web.json_response(self._update(target, await _json_body(request)))
        if method == "PATCH":
            body = await _json_body(request)
            return web.json_response(self._patch(target, body, request.headers.get("Content-Type", "")))
        if method == "DELETE":
            return await self._delete(request, target)
        raise ApiError(
            405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
        )

    async def _collection(self, request: web.Request, target: Target) -> web.StreamResponse:
        if request.method == "GET":
            if target.legacy_watch or _flag(request, "watch"):
                return await self._watch(request, target)
            return web.json_response(self._list(request, target))
        if request.method == "POST":
            if KINDS[target.plural][1] and target.namespace is None:
                raise ApiError(
                    405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
                )
            body = await _json_body(request)
            created = self.create_object(target, body, dry_run=bool(request.query.get("dryRun")))
            return web.json_response(created, status=201)
        if request.method == "DELETE":
            return web.json_response(await self._delete_collection(request, target))
        raise ApiError(
            405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
        )

    # ----------------------------------------------------------------- read
    def _selected(self, request: web.Request, target: Target) -> list[dict[str, Any]]:
        labels = label_matcher(request.query.get("labelSelector"))
        fields = field_matcher(target.plural, request.query.get("fieldSelector"))
        return [o for o in self.store.items(target.plural, target.namespace) if labels(o) and fields(o)]

    def _list(self, request: web.Request, target: Target) -> dict[str, Any]:
        version, match = request.query.get("resourceVersion"), request.query.get("resourceVersionMatch")
        if match and not version:
            raise Invalid("resourceVersionMatch is forbidden unless resourceVersion is provided")
        if match == "Exact" and version != str(self.store.revision):
            raise ApiError(410, "Expired", f"too old resource version: {version} ({self.store.revision})")
        items = self._selected(request, target)
        offset = 0
        if request.query.get("continue"):
            try:
                offset = int(json.loads(base64.b64decode(request.query["continue"]))["start"])
            except (ValueError, KeyError, binascii.Error):
                raise ApiError(400, "BadRequest", "continue key is not valid") from None
        limit = _int_param(request, "limit") or 0
        page = items[offset : offset + limit] if limit > 0 else items[offset:]
        metadata: dict[str, Any] = {"resourceVersion": str(self.store.revision)}
        if limit > 0 and offset + limit < len(items):
            token = json.dumps({"start": offset + limit, "rv": self.store.revision}).encode()
            metadata |= {
                "continue": base64.b64encode(token).decode(),
                "remainingItemCount": len(items) - offset - limit,
            }
        for item in page:
            item.pop("kind", None)
            item.pop("apiVersion", None)
        return {
            "kind": f"{KINDS[target.plural][0]}List",
            "apiVersion": "v1",
            "metadata": metadata,
            "items": page,
        }

    async def _watch(self, request: web.Request, target: Target) -> web.StreamResponse:
        labels = label_matcher(request.query.get("labelSelector"))
        fields = field_matcher(target.plural, request.query.get("fieldSelector"))
        if target.name is not None:
            name_fields = field_matcher(target.plural, f"metadata.name={target.name}")
            selected = lambda obj: labels(obj) and fields(obj) and name_fields(obj)  # noqa: E731
        else:
            selected = lambda obj: labels(obj) and fields(obj)  # noqa: E731
        response = web.StreamResponse(
            headers={"Content-Type": "application/json", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        try:
            watch = self.store.watch(
                target.plural, target.namespace, selected, request.query.get("resourceVersion")
            )
        except ApiError as exc:
            await response.write(json.dumps({"type": "ERROR", "object": status_body(exc)}).encode() + b"\n")
            return response
        timeout = _int_param(request, "timeoutSeconds") or WATCH_TIMEOUT
        try:
            await self._stream_watch(request, response, watch.queue, time.monotonic() + timeout)
        finally:
            self.store.unwatch(watch)
        return response

    @staticmethod
    async def _stream_watch(
        request: web.Request,
        response: web.StreamResponse,
        queue: asyncio.Queue[dict[str, Any]],
        deadline: float,
    ) -> None:
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                event = await asyncio.wait_for(queue.get(), min(remaining, 0.5))
            except TimeoutError:
                if request.transport is None or request.transport.is_closing():
                    return
                continue
            try:
                await response.write(json.dumps(event).encode() + b"\n")
            except (ConnectionResetError, RuntimeError):
                return

    # ----------------------------------------------------------------- write
    def _check_namespace(self, target: Target, body: dict[str, Any]) -> None:
        meta = body.setdefault("metadata", {})
        if not KINDS[target.plural][1]:
            return
        if meta.get("namespace") and meta["namespace"] != target.namespace:
            raise ApiError(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the request",
            )
        meta["namespace"] = target.namespace
        if self.store.get("namespaces", None, target.namespace or "") is None:
            raise not_found("namespaces", target.namespace or "")

    def create_object(self, target: Target, body: Any, *, dry_run: bool = False) -> dict[str, Any]:
        """Create an object as POST does (names, namespace, labels, per-kind defaults and checks)."""
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the request body must be a JSON object")
        meta = body.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        if not meta.get("name"):
            raise Invalid(
                f'{KINDS[target.plural][0]} "" is invalid: metadata.name: Required value: name or generateName is required'
            )
        self._check_namespace(target, body)
        objects.check_labels(KINDS[target.plural][0], meta["name"], meta.get("labels"))
        prepare = getattr(self, f"_prepare_{target.plural}", None)
        if prepare is not None:
            prepare(body)
        if dry_run:
            return body
        created = self.store.create(target.plural, body)
        if target.plural == "pods":
            self.kubelet.admit(created)
        elif target.plural == "namespaces":
            self._seed_namespace(meta["name"])
        return created

    def _prepare_pods(self, pod: dict[str, Any]) -> None:
        objects.validate_pod(pod)
        objects.default_pod(pod)
        meta, account = pod["metadata"], pod["spec"]["serviceAccountName"]
        if self.store.get("serviceaccounts", meta["namespace"], account) is None:
            raise ApiError(
                403,
                "Forbidden",
                f'pods "{meta["name"]}" is forbidden: error looking up service account {meta["namespace"]}/{account}: serviceaccount "{account}" not found',
                {"name": meta["name"], "kind": "pods"},
            )

    @staticmethod
    def _prepare_namespaces(namespace: dict[str, Any]) -> None:
        name = namespace["metadata"]["name"]
        objects.check_name("Namespace", name, label=True)
        namespace["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
        namespace["spec"] = {"finalizers": ["kubernetes"]}
        namespace["status"] = {"phase": "Active"}

    @staticmethod
    def _prepare_persistentvolumeclaims(claim: dict[str, Any]) -> None:
        spec = claim.setdefault("spec", {})
        spec.setdefault("accessModes", ["ReadWriteOnce"])
        spec.setdefault("resources", {"requests": {"storage": "1Gi"}})
        spec.setdefault("volumeMode", "Filesystem")
        size = spec["resources"].get("requests", {}).get("storage", "1Gi")
        claim["status"] = {
            "phase": "Bound",
            "accessModes": spec["accessModes"],
            "capacity": {"storage": size},
        }

    @staticmethod
    def _prepare_secrets(secret: dict[str, Any]) -> None:
        data = secret.setdefault("data", {}) or {}
        for key, value in data.items():
            try:
                base64.b64decode(value, validate=True)
            except (binascii.Error, TypeError, ValueError):
                raise ApiError(
                    400,
                    "BadRequest",
                    f'Secret in version "v1" cannot be handled as a Secret: illegal base64 data in data[{key}]',
                ) from None
        for key, value in (secret.pop("stringData", None) or {}).items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        secret["data"] = data
        secret.setdefault("type", "Opaque")

    def _seed_namespace(self, name: str) -> None:
        if self.store.get("serviceaccounts", name, "default") is None:
            self.store.create("serviceaccounts", {"metadata": {"name": "default", "namespace": name}})

    def _update(self, target: Target, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the request body must be a JSON object")
        current = self.store.require(target.plural, target.namespace, target.name or "")
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        if wanted and wanted != current["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {target.plural} "{target.name}": the object has been modified; please apply your changes to the latest version and try again',
                {"name": target.name, "kind": target.plural},
            )
        return self._store_update(target, current, body)

    def _patch(self, target: Target, body: Any, content_type: str) -> dict[str, Any]:
        current = self.store.require(target.plural, target.namespace, target.name or "")
        return self._store_update(target, current, apply_patch(current, body, content_type))

    def _store_update(self, target: Target, current: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        new.setdefault("metadata", {})["name"] = current["metadata"]["name"]
        if target.sub == "status":
            merged = {**current, "status": new.get("status", current.get("status"))}
        else:
            merged = {**new, "status": current.get("status")} if "status" in current else dict(new)
            objects.check_labels(KINDS[target.plural][0], target.name or "", merged["metadata"].get("labels"))
            if target.plural == "pods":
                objects.check_pod_update(current, merged)
            if target.plural == "secrets":
                self._prepare_secrets(merged)
        merged["kind"], merged["apiVersion"] = current["kind"], "v1"
        return self.store.replace(target.plural, merged)

    async def _delete(self, request: web.Request, target: Target) -> web.StreamResponse:
        options = await _json_body(request) or {}
        current = self.store.require(target.plural, target.namespace, target.name or "")
        preconditions = options.get("preconditions") or {}
        for key in ("uid", "resourceVersion"):
            if preconditions.get(key) and preconditions[key] != current["metadata"].get(key):
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {target.plural} "{target.name}": Precondition failed: {key}: {preconditions[key]}, ObjectMeta.{key[0].upper() + key[1:]}: {current["metadata"].get(key)}',
                )
        if request.query.get("dryRun"):
            return web.json_response(current)
        grace = _int_param(request, "gracePeriodSeconds")
        if grace is None:
            grace = options.get("gracePeriodSeconds")
        return web.json_response(self.delete_object(target.plural, current, grace))

    def delete_object(self, plural: str, current: dict[str, Any], grace: int | None) -> dict[str, Any]:
        """Delete an object the way its kind is deleted (pods through the kubelet, namespaces emptied)."""
        meta = current["metadata"]
        if plural == "pods":
            return self._delete_pod(current, grace)
        if plural == "namespaces":
            return self._delete_namespace(current)
        return self.store.remove(plural, meta.get("namespace"), meta["name"])

    def _delete_pod(self, pod: dict[str, Any], grace: int | None) -> dict[str, Any]:
        meta = pod["metadata"]
        if meta.get("deletionTimestamp"):
            return pod
        seconds = int(grace if grace is not None else pod["spec"].get("terminationGracePeriodSeconds", 30))
        if self.kubelet.delete(pod, seconds):
            if self.store.get("pods", meta["namespace"], meta["name"]) is None:
                return pod  # the kubelet already let it go
            return self.store.remove("pods", meta["namespace"], meta["name"])
        meta["deletionTimestamp"] = objects.rfc3339(objects.now() + objects.dt.timedelta(seconds=seconds))
        meta["deletionGracePeriodSeconds"] = seconds
        return self.store.replace("pods", pod)

    def _delete_namespace(self, namespace: dict[str, Any]) -> dict[str, Any]:
        name = namespace["metadata"]["name"]
        if name in SYSTEM_NAMESPACES:
            raise ApiError(
                403, "Forbidden", f'namespaces "{name}" is forbidden: this namespace may not be deleted'
            )
        for plural, (_, namespaced) in KINDS.items():
            if namespaced and plural != "pods":
                for obj in self.store.items(plural, name):
                    self.store.remove(plural, name, obj["metadata"]["name"])
        for pod in self.store.items("pods", name):
            self._delete_pod(pod, 0)
        return self.store.remove("namespaces", None, name)

    async def _delete_collection(self, request: web.Request, target: Target) -> dict[str, Any]:
        grace = _int_param(request, "gracePeriodSeconds")
        options = await _json_body(request) or {}
        if grace is None:
            grace = options.get("gracePeriodSeconds")
        deleted = [self.delete_object(target.plural, obj, grace) for obj in self._selected(request, target)]
        return {
            "kind": f"{KINDS[target.plural][0]}List",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": str(self.store.revision)},
            "items": deleted,
        }

    # ----------------------------------------------------------------- logs
    async def _log(self, request: web.Request, target: Target) -> web.StreamResponse:
        pod = self.store.require("pods", target.namespace, target.name or "")
        run = self.kubelet.log_run(pod, request.query.get("container"), _flag(request, "previous"))
        since = _int_param(request, "sinceSeconds")
        cutoff_ns = 0
        if since is not None:
            cutoff_ns = time.time_ns() - since * 1_000_000_000
        elif request.query.get("sinceTime"):
            cutoff_ns = int(objects.parse_time(request.query["sinceTime"]) * 1_000_000_000)
        tail, limit = _int_param(request, "tailLines"), _int_param(request, "limitBytes")
        stamps = _flag(request, "timestamps")
        index = len(run.lines) - tail if tail is not None else 0
        index = max(index, 0)
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        budget = [limit if limit is not None and limit > 0 else -1]
        follow = _flag(request, "follow")
        while True:
            done = run.done  # read first: every line of a finished run is in before it is marked done
            lines = run.lines[index:]
            index += len(lines)
            chunk = b"".join(self._format(ns, line, stamps) for ns, line in lines if ns >= cutoff_ns)
            if not await self._send(response, chunk, budget) or not follow or done:
                break
            if request.transport is None or request.transport.is_closing():
                break
            await run.wait_change(0.5)
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            await response.write_eof()
        return response

    @staticmethod
    def _format(ns: int, line: bytes, stamps: bool) -> bytes:
        return (objects.rfc3339_nano(ns).encode() + b" " + line) if stamps else line

    @staticmethod
    async def _send(response: web.StreamResponse, chunk: bytes, budget: list[int]) -> bool:
        """Write a chunk within ``limitBytes``; False when the stream should end."""
        if budget[0] >= 0:
            chunk = chunk[: budget[0]]
            budget[0] -= len(chunk)
        if chunk:
            try:
                await response.write(chunk)
            except (ConnectionResetError, RuntimeError):
                return False
        return budget[0] != 0

    # ----------------------------------------------------------------- the test-only side door
    async def _side_door(self, request: web.Request, what: str) -> web.StreamResponse:
        if what == "images" and request.method == "POST":
            payload = await _json_body(request) or {}
            self.registry.register(Image(**payload))
            return web.json_response(payload, status=201)
        if what == "images":
            return web.json_response([image.to_json() for image in self.registry.all()])
        if what == "pods-ever":
            namespace = request.query.get("namespace")
            pods = [
                p
                for p in self.store.pods_ever.values()
                if not namespace or p["metadata"]["namespace"] == namespace
            ]
            return web.json_response(pods)
        if what == "processes":
            return web.json_response(self.kubelet.processes())
        if what == "reset" and request.method == "POST":
            await self.reset()
            return web.json_response({"reset": True})
        raise ApiError(404, "NotFound", f"unknown emulator endpoint /_emulator/{what}")

    async def reset(self) -> None:
        """Back to a fresh cluster: user namespaces gone, pods killed, events cleared, node as started."""
        for namespace in self.store.items("namespaces"):
            if namespace["metadata"]["name"] not in SYSTEM_NAMESPACES:
                self._delete_namespace(namespace)
        for name in SYSTEM_NAMESPACES:
            for pod in self.store.items("pods", name):
                self._delete_pod(pod, 0)
            for plural in ("events", "secrets", "configmaps", "persistentvolumeclaims"):
                for obj in self.store.items(plural, name):
                    self.store.remove(plural, name, obj["metadata"]["name"])
        node = self.store.get("nodes", None, self.node_template["metadata"]["name"])
        if node is not None:
            fresh = json.loads(json.dumps(self.node_template))
            fresh["metadata"] = {**node["metadata"], "labels": fresh["metadata"]["labels"]}
            self.store.replace("nodes", fresh)
        self.store.pods_ever.clear()
