"""A container's process: its environment, command line and working directory, as the kubelet makes them.

Environment, in the kubelet's order: the image's ``ENV``; the ``envFrom`` sources (secrets,
config maps, with prefixes); the container's ``env`` (literal values with ``$(VAR)`` expansion,
``secretKeyRef``, ``configMapKeyRef``, ``fieldRef``, ``resourceFieldRef``); the service variables
of the API (``KUBERNETES_SERVICE_HOST``/``PORT``). Command line: ``command`` replaces the image's
ENTRYPOINT (and drops its CMD), ``args`` replaces CMD, ``$(VAR)`` expanded; ``python``/``python3``
is this interpreter (the "image" ships the project's environment). A secret or key that is missing
(and not optional) is a ``ConfigError``: the container waits in ``CreateContainerConfigError``.
"""

from __future__ import annotations

import base64
import math
import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.backends.kube.images import Image
from tests.backends.kube.objects import quantity

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_PYTHON = re.compile(r"^(?:/usr(?:/local)?/bin/)?python(?:3(?:\.\d+)?)?$")
_REF = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")
Lookup = Callable[[str, str, str], dict[str, Any] | None]  # (plural, namespace, name) -> object


class ConfigError(Exception):
    """The container cannot be configured (missing secret / config map / key)."""


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: defined names are replaced, ``$$`` is a literal ``$``."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _REF.sub(replace, text)


def _source_data(lookup: Lookup, namespace: str, kind: str, name: str) -> dict[str, str] | None:
    plural = "secrets" if kind == "secret" else "configmaps"
    obj = lookup(plural, namespace, name)
    if obj is None:
        return None
    if plural == "secrets":
        return {k: base64.b64decode(v).decode("utf-8", "replace") for k, v in (obj.get("data") or {}).items()}
    return dict(obj.get("data") or {})


def _key_ref(lookup: Lookup, namespace: str, kind: str, ref: dict[str, Any]) -> str | None:
    data = _source_data(lookup, namespace, kind, ref.get("name", ""))
    optional = bool(ref.get("optional"))
    if data is None:
        if optional:
            return None
        raise ConfigError(f'{kind} "{ref.get("name")}" not found')
    if ref.get("key") not in data:
        if optional:
            return None
        what = "Secret" if kind == "secret" else "ConfigMap"
        raise ConfigError(f"couldn't find key {ref.get('key')} in {what} {namespace}/{ref.get('name')}")
    return data[ref["key"]]


def _field_ref(pod: dict[str, Any], path: str) -> str:
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if match:
        return (meta.get(match.group(1)) or {}).get(match.group(2), "")
    values = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.hostIP": status.get("hostIP"),
        "status.podIP": status.get("podIP"),
    }
    return str(values.get(path) or "")


def _resource_ref(container: dict[str, Any], ref: dict[str, Any], allocatable: dict[str, Any]) -> str:
    section, _, name = ref.get("resource", "").partition(".")
    resources = container.get("resources") or {}
    amount = (resources.get(section) or {}).get(name) or allocatable.get(name, "0")
    divisor = quantity(ref.get("divisor") or "1")
    return str(math.ceil(quantity(amount) / divisor))


def _value_from(source: dict[str, Any], context: dict[str, Any], lookup: Lookup) -> str | None:
    namespace, pod = context["namespace"], context["pod"]
    if "secretKeyRef" in source:
        return _key_ref(lookup, namespace, "secret", source["secretKeyRef"])
    if "configMapKeyRef" in source:
        return _key_ref(lookup, namespace, "configmap", source["configMapKeyRef"])
    if "fieldRef" in source:
        return _field_ref(pod, source["fieldRef"].get("fieldPath", ""))
    if "resourceFieldRef" in source:
        return _resource_ref(context["container"], source["resourceFieldRef"], context["allocatable"])
    return None


def _env_from(container: dict[str, Any], namespace: str, lookup: Lookup) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        kind = "secret" if "secretRef" in source else "configmap"
        ref = source.get("secretRef") or source.get("configMapRef") or {}
        data = _source_data(lookup, namespace, kind, ref.get("name", ""))
        if data is None:
            if ref.get("optional"):
                continue
            raise ConfigError(f'{kind} "{ref.get("name")}" not found')
        env.update({source.get("prefix", "") + k: v for k, v in data.items()})
    return env


def container_env(
    image: Image, context: dict[str, Any], lookup: Lookup, extra: dict[str, str]
) -> dict[str, str]:
    """The process environment of a container (``context``: pod, container, namespace, allocatable)."""
    container = context["container"]
    env = {"PATH": DEFAULT_PATH, "HOSTNAME": context["pod"]["metadata"]["name"]}
    env.update(image.env)
    env.update(_env_from(container, context["namespace"], lookup))
    for item in container.get("env") or []:
        if "valueFrom" in item:
            value = _value_from(item["valueFrom"], context, lookup)
            if value is None:
                continue
        else:
            value = expand(str(item.get("value", "")), env)
        env[item["name"]] = value
    env.update(extra)
    return env


def command_line(container: dict[str, Any], image: Image, env: dict[str, str]) -> list[str]:
    """The process's argv: command/args over the image's ENTRYPOINT/CMD, ``$(VAR)`` expanded."""
    if container.get("command"):
        argv = list(container["command"]) + list(container.get("args") or [])
    else:
        args = container.get("args")
        argv = list(image.entrypoint or []) + list(args if args is not None else image.cmd or [])
    return [expand(str(part), env) for part in argv]


def executable(argv0: str, env: dict[str, str]) -> str:
    """The host program for the container's ``argv[0]`` (``python`` is this interpreter)."""
    if _PYTHON.match(argv0):
        return sys.executable
    if "/" in argv0:
        return argv0
    return shutil.which(argv0, path=env.get("PATH", DEFAULT_PATH)) or argv0


def working_dir(container: dict[str, Any], image: Image, root: Path) -> Path:
    """The process's working directory: ``workingDir``, else the image's WORKDIR, else the pod root.

    A container path that does not exist on this host is created under the pod's root folder.
    """
    wanted = container.get("workingDir") or image.workdir
    if not wanted:
        path = root / "rootfs"
    elif os.path.isdir(wanted):
        return Path(wanted)
    else:
        path = root / "rootfs" / wanted.lstrip("/")
    path.mkdir(parents=True, exist_ok=True)
    return path
