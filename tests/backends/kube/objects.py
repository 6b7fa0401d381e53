"""What the emulated API server does to an object on its way in: defaults, validation, quantities, times.

Mirrors the real apiserver closely enough for the providers' clients: a created pod gets the
defaults Kubernetes 1.30 fills in (restart policy, DNS policy, grace period, service account,
image pull policy, termination message path and policy, requests copied from limits, QoS class),
and a pod the real API would refuse (no containers, no image, bad names or labels, duplicate
container names) is refused with the same 422 ``Invalid`` wording.
"""

from __future__ import annotations

import datetime as dt
import re
import time
import uuid
from decimal import Decimal, InvalidOperation
from typing import Any

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1)}
_DECIMAL |= {"k": Decimal(10**3), "M": Decimal(10**6), "G": Decimal(10**9), "T": Decimal(10**12)}
_DECIMAL |= {"P": Decimal(10**15), "E": Decimal(10**18)}


class ApiError(Exception):
    """An API failure, rendered as a ``Status`` object with this HTTP code and reason."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details


class Invalid(ApiError):
    """A request the real apiserver refuses with 422 ``Invalid`` (or 400 ``BadRequest``)."""

    def __init__(self, message: str, *, bad_request: bool = False) -> None:
        super().__init__(400 if bad_request else 422, "BadRequest" if bad_request else "Invalid", message)


def now() -> dt.datetime:
    """The current UTC time."""
    return dt.datetime.now(dt.UTC)


def rfc3339(moment: dt.datetime | None = None) -> str:
    """A timestamp as the API writes it in objects (second precision, ``Z``)."""
    return (moment or now()).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_nano(epoch_ns: int) -> str:
    """A log-line timestamp as the kubelet writes it (nanosecond precision, ``Z``)."""
    seconds, nanos = divmod(epoch_ns, 1_000_000_000)
    stamp = dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{nanos:09d}Z"


def micro_time() -> str:
    """A MicroTime value (events' ``eventTime``)."""
    return now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> float:
    """Epoch seconds of an RFC 3339 timestamp (``sinceTime``)."""
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise Invalid(
            f'invalid value "{text}" for sinceTime: not an RFC 3339 time', bad_request=True
        ) from None


def new_uid() -> str:
    """A fresh object uid."""
    return str(uuid.uuid4())


def epoch_ns() -> int:
    """Now, in nanoseconds since the epoch."""
    return time.time_ns()


def quantity(value: Any) -> Decimal:
    """A resource quantity (``500m``, ``2``, ``1.5Gi``, ``128974848``, ``129e6``) as a number."""
    text = str(value).strip()
    match = re.fullmatch(r"([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([A-Za-z]*)", text)
    if not match:
        raise Invalid(
            f"quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {text!r}"
        )
    number, suffix = match.groups()
    try:
        base = Decimal(number)
    except InvalidOperation:
        raise Invalid(f"invalid quantity {text!r}") from None
    if suffix in _BINARY:
        return base * _BINARY[suffix]
    if suffix in _DECIMAL:
        return base * _DECIMAL[suffix]
    raise Invalid(f"unable to parse quantity's suffix: {text!r}")


def container_requests(container: dict[str, Any]) -> dict[str, Decimal]:
    """The container's requests (after defaulting, limits fill missing requests)."""
    resources = container.get("resources") or {}
    return {name: quantity(v) for name, v in (resources.get("requests") or {}).items()}


def pod_requests(spec: dict[str, Any]) -> dict[str, Decimal]:
    """What the scheduler reserves for a pod: max(sum of app containers, each init container)."""
    total: dict[str, Decimal] = {}
    for container in spec.get("containers") or []:
        for name, amount in container_requests(container).items():
            total[name] = total.get(name, Decimal(0)) + amount
    for container in spec.get("initContainers") or []:
        for name, amount in container_requests(container).items():
            total[name] = max(total.get(name, Decimal(0)), amount)
    return total


def qos_class(spec: dict[str, Any]) -> str:
    """Guaranteed, Burstable or BestEffort, as the apiserver computes it."""
    containers = (spec.get("containers") or []) + (spec.get("initContainers") or [])
    resources = [c.get("resources") or {} for c in containers]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    for res in resources:
        limits, requests = res.get("limits") or {}, res.get("requests") or {}
        for name in ("cpu", "memory"):
            if name not in limits or quantity(limits[name]) != quantity(requests.get(name, limits[name])):
                return "Burstable"
    return "Guaranteed"


def check_name(kind: str, name: str, *, label: bool = False) -> None:
    """A metadata.name valid for its kind (DNS-1123 subdomain, or label for namespaces)."""
    pattern, limit = (_DNS_LABEL, 63) if label else (_DNS_SUBDOMAIN, 253)
    if not name or len(name) > limit or not pattern.match(name):
        rule = "RFC 1123 label" if label else "RFC 1123 subdomain"
        raise Invalid(
            f'{kind} "{name}" is invalid: metadata.name: Invalid value: "{name}": a lowercase {rule} must '
            "consist of lower case alphanumeric characters, '-' or '.', and must start and end with an "
            "alphanumeric character"
        )


def check_labels(kind: str, name: str, labels: dict[str, Any] | None, field: str = "metadata.labels") -> None:
    """Label keys (optional DNS prefix + name) and values (<= 63 characters, label syntax)."""
    for key, value in (labels or {}).items():
        prefix, _, short = key.rpartition("/")
        if (prefix and not _DNS_SUBDOMAIN.match(prefix)) or len(short) > 63 or not _LABEL_NAME.match(short):
            raise Invalid(
                f"{kind} \"{name}\" is invalid: {field}: Invalid value: \"{key}\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
            )
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            raise Invalid(
                f"{kind} \"{name}\" is invalid: {field}: Invalid value: \"{value}\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
            )


def _check_container(name: str, path: str, container: dict[str, Any], seen: set[str]) -> None:
    cname = container.get("name") or ""
    if not cname:
        raise Invalid(f'Pod "{name}" is invalid: {path}.name: Required value')
    if not _DNS_LABEL.match(cname) or len(cname) > 63:
        raise Invalid(
            f'Pod "{name}" is invalid: {path}.name: Invalid value: "{cname}": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or \'-\''
        )
    if cname in seen:
        raise Invalid(f'Pod "{name}" is invalid: {path}.name: Duplicate value: "{cname}"')
    seen.add(cname)
    if not container.get("image"):
        raise Invalid(f'Pod "{name}" is invalid: {path}.image: Required value')
    for j, env in enumerate(container.get("env") or []):
        if not _ENV_NAME.match(env.get("name") or ""):
            raise Invalid(
                f"Pod \"{name}\" is invalid: {path}.env[{j}].name: Invalid value: \"{env.get('name')}\": a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit"
            )
    _check_resources(name, path, container.get("resources") or {})


def _check_resources(name: str, path: str, resources: dict[str, Any]) -> None:
    limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
    for res, amount in requests.items():
        if res in limits and quantity(amount) > quantity(limits[res]):
            raise Invalid(
                f'Pod "{name}" is invalid: {path}.resources.requests: Invalid value: "{amount}": must be less than or equal to {res} limit of {limits[res]}'
            )
        if "/" in res and not res.startswith(("kubernetes.io/", "requests.")) and res not in limits:
            raise Invalid(
                f'Pod "{name}" is invalid: {path}.resources.limits: Required value: Limit must be set for non overcommitable resources'
            )
    for res, amount in limits.items():
        if quantity(amount) < 0:
            raise Invalid(
                f'Pod "{name}" is invalid: {path}.resources.limits[{res}]: Invalid value: "{amount}": must be greater than or equal to 0'
            )


def validate_pod(pod: dict[str, Any]) -> None:
    """Refuse what the real apiserver refuses (422 Invalid), with its wording."""
    meta = pod.get("metadata") or {}
    name = meta.get("name") or ""
    check_name("Pod", name)
    check_labels("Pod", name, meta.get("labels"))
    spec = pod.get("spec")
    if not isinstance(spec, dict) or not spec.get("containers"):
        raise Invalid(f'Pod "{name}" is invalid: spec.containers: Required value')
    seen: set[str] = set()
    for i, container in enumerate(spec.get("initContainers") or []):
        _check_container(name, f"spec.initContainers[{i}]", container, seen)
    for i, container in enumerate(spec["containers"]):
        _check_container(name, f"spec.containers[{i}]", container, seen)
    policy = spec.get("restartPolicy", "Always")
    if policy not in ("Always", "OnFailure", "Never"):
        raise Invalid(
            f'Pod "{name}" is invalid: spec.restartPolicy: Unsupported value: "{policy}": supported values: "Always", "OnFailure", "Never"'
        )
    deadline = spec.get("activeDeadlineSeconds")
    if deadline is not None and (not isinstance(deadline, int) or deadline <= 0):
        raise Invalid(
            f'Pod "{name}" is invalid: spec.activeDeadlineSeconds: Invalid value: {deadline}: must be between 1 and 2147483647, inclusive'
        )
    check_labels("Pod", name, spec.get("nodeSelector"), "spec.nodeSelector")


def _default_container(container: dict[str, Any]) -> None:
    image = container.get("image", "")
    tag = image.rsplit("/", 1)[-1]
    latest = "@" not in image and (":" not in tag or tag.endswith(":latest"))
    container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    resources = container.setdefault("resources", {})
    limits = resources.get("limits") or {}
    if limits:
        requests = resources.setdefault("requests", {})
        for res, amount in limits.items():
            requests.setdefault(res, amount)


def default_pod(pod: dict[str, Any]) -> None:
    """Fill in the defaults the apiserver adds to a created pod (in place)."""
    spec = pod.setdefault("spec", {})
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    spec.setdefault("priority", 0)
    account = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    spec["serviceAccountName"] = spec["serviceAccount"] = account
    tolerations = spec.setdefault("tolerations", [])
    for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
        if not any(t.get("key") == key for t in tolerations):
            tolerations.append(
                {"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
            )
    for container in (spec.get("initContainers") or []) + spec.get("containers", []):
        _default_container(container)
    pod["status"] = {"phase": "Pending", "qosClass": qos_class(spec)}


# Pod fields the API lets an update change (everything else in spec is immutable).
MUTABLE_POD_SPEC = ("activeDeadlineSeconds", "tolerations", "schedulingGates")


def check_pod_update(old: dict[str, Any], new: dict[str, Any]) -> None:
    """Refuse a pod update that changes immutable spec fields (only images, deadline, tolerations move)."""

    def frozen(spec: dict[str, Any]) -> dict[str, Any]:
        kept = {k: v for k, v in spec.items() if k not in MUTABLE_POD_SPEC}
        for key in ("containers", "initContainers"):
            kept[key] = [{k: v for k, v in c.items() if k != "image"} for c in spec.get(key) or []]
        return kept

    if frozen(old.get("spec") or {}) != frozen(new.get("spec") or {}):
        name = (old.get("metadata") or {}).get("name")
        raise Invalid(
            f'Pod "{name}" is invalid: spec: Forbidden: pod updates may not change fields other than '
            "`spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,"
            "`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds`"
        )
