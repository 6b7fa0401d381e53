"""Spec sections of the remote backends: where a heavy stage runs when it leaves the Airflow worker.

``training.backend`` and ``inference.backend`` pick ``local`` (the worker), ``kubernetes`` (a pod),
``sagemaker`` (a training or processing job) or ``vertex`` (a custom job). Each remote backend has
its own section with what its users set; everything is checked when the spec loads, so a typo in an
ARN or a GPU count without a GPU type is a one-line error naming the file and the field, not a
failed job an hour later. Cheap to import: pydantic only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

Backend = Literal["local", "kubernetes", "sagemaker", "vertex"]
REMOTE_BACKENDS: tuple[str, ...] = ("kubernetes", "sagemaker", "vertex")

_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$")
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

# Each kind of string a section names: the pattern it must match, what a refusal says after the
# value, and its longest length where the pattern does not bound it.
_KINDS: dict[str, tuple[str, str, int | None]] = {
    "claim name": (_DNS_LABEL, "is not a valid claim name (lower case letters, digits and '-')", 253),
    "kubernetes name": (
        _DNS_LABEL,
        "is not a Kubernetes name (lower case letters, digits and '-', at most 63)",
        63,
    ),
    "secret name": (r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "is not a Kubernetes secret name", 253),
    "environment name": (r"^[-._a-zA-Z][-._a-zA-Z0-9]*$", "is not a valid environment variable name", None),
    "absolute path": (r"^/", "must be an absolute path", None),
    "image": (
        r"^[a-z0-9][a-z0-9._-]*(:[0-9]+)?(/[a-z0-9._-]+)+(:[\w][\w.-]{0,127})?(@sha256:[0-9a-f]{64})?$",
        "is not a registry-qualified image reference such as registry.example.com/team/airflow-mlops:1.4.0",
        None,
    ),
    "role arn": (
        r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$",
        "is not an IAM role ARN such as arn:aws:iam::123456789012:role/SageMakerRole",
        None,
    ),
    "instance type": (
        r"^ml\.[a-z0-9]+\.[a-z0-9]+$",
        "is not a SageMaker instance type such as ml.m5.xlarge",
        None,
    ),
    "s3 uri": (
        r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$",
        "must be an s3:// URI (bucket and optional prefix)",
        None,
    ),
    "subnet": (r"^subnet-[0-9a-f]{8,17}$", "is not a subnet id such as subnet-0123abcd", None),
    "security group": (r"^sg-[0-9a-f]{8,17}$", "is not a security group id such as sg-0123abcd", None),
    "gcp project": (
        r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$",
        "is not a Google Cloud project id (6-30 lower case letters, digits, '-')",
        None,
    ),
    "gcp region": (r"^[a-z]+-[a-z]+[0-9]+$", "is not a Google Cloud region such as europe-west4", None),
    "accelerator": (r"^[A-Z][A-Z0-9_]+$", "is not an accelerator type such as NVIDIA_TESLA_T4", None),
    "gs uri": (
        r"^gs://[a-z0-9][a-z0-9._-]{1,61}[a-z0-9](/.*)?$",
        "must be a gs:// URI (bucket and optional prefix)",
        None,
    ),
    "service account": (
        r"^[^@\s]+@[a-z0-9-]+\.iam\.gserviceaccount\.com$",
        "is not a service account e-mail such as trainer@proj.iam.gserviceaccount.com",
        None,
    ),
    "network": (
        r"^projects/[0-9]+/global/networks/[a-z0-9-]+$",
        "must be projects/<project number>/global/networks/<name>",
        None,
    ),
}

_Names = TypeVar("_Names", bound=Iterable[str])


def parse_duration(text: str | int) -> int:
    """``"1d"`` -> 86400. Plain integers are seconds (the spec's one duration syntax)."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(f"{text!r} is not a duration such as 30m, 12h, 1d or 1w")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _matching(kind: str) -> Callable[[str], str]:
    """The check of one of ``_KINDS``: it refuses a value with ``'<value>' <what>``."""
    pattern, what, longest = _KINDS[kind]
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.match(value) or (longest is not None and len(value) > longest):
            raise ValueError(f"{value!r} {what}")
        return value

    return check


def _each(check: Callable[[str], str]) -> Callable[[_Names], _Names]:
    """``check`` on every item of a list (every key of a mapping); the first bad one is the error."""

    def check_all(values: _Names) -> _Names:
        for value in values:
            check(value)
        return values

    return check_all


def _pinned(image: str) -> str:
    if ":" not in image.rsplit("/", 1)[-1] and "@" not in image:
        raise ValueError(
            f"{image!r} has no tag or digest; pin the image the job runs (…:1.4.0 or …@sha256:…)"
        )
    return image


def _quantities(value: Any) -> Any:
    """Every value of a mapping a Kubernetes quantity, numbers read as text (``2`` -> ``"2"``)."""
    if isinstance(value, dict):
        for name, quantity in value.items():
            if not _QUANTITY.match(str(quantity)):
                raise ValueError(f"{name}: {quantity!r} is not a Kubernetes quantity such as 500m, 2 or 4Gi")
        return {name: str(quantity) for name, quantity in value.items()}
    return value


def _without_trailing_slash(path: str) -> str:
    return path.rstrip("/") or "/"


def _duration_or_none(value: Any) -> Any:
    """``parse_duration``, leaving ``null`` to the field's type (``max_wait`` may be null)."""
    return None if value is None else parse_duration(value)


def _seconds(most: int | None, refusal: str) -> Callable[[int], int]:
    """The check that a duration is at least 1 second (and at most ``most``)."""

    def check(seconds: int) -> int:
        if seconds < 1 or (most is not None and seconds > most):
            raise ValueError(refusal)
        return seconds

    return check


# The types the sections declare their fields with: each checks a value when the spec loads.
ClaimName = Annotated[str, AfterValidator(_matching("claim name"))]
KubernetesName = Annotated[str, AfterValidator(_matching("kubernetes name"))]
SecretNames = Annotated[list[str], AfterValidator(_each(_matching("secret name")))]
Quantities = Annotated[dict[str, str], BeforeValidator(_quantities)]
Environment = Annotated[dict[str, str], AfterValidator(_each(_matching("environment name")))]
AbsolutePath = Annotated[
    str, AfterValidator(_matching("absolute path")), AfterValidator(_without_trailing_slash)
]
Image = Annotated[str, AfterValidator(_matching("image")), AfterValidator(_pinned)]
RoleArn = Annotated[str, AfterValidator(_matching("role arn"))]
InstanceType = Annotated[str, AfterValidator(_matching("instance type"))]
S3Uri = Annotated[str, AfterValidator(_matching("s3 uri")), AfterValidator(_without_trailing_slash)]
Subnets = Annotated[list[str], Field(min_length=1, max_length=16), AfterValidator(_each(_matching("subnet")))]
SecurityGroups = Annotated[
    list[str], Field(min_length=1, max_length=5), AfterValidator(_each(_matching("security group")))
]
GcpProject = Annotated[str, AfterValidator(_matching("gcp project"))]
GcpRegion = Annotated[str, AfterValidator(_matching("gcp region"))]
Accelerator = Annotated[str, AfterValidator(_matching("accelerator"))]
GsUri = Annotated[str, AfterValidator(_matching("gs uri")), AfterValidator(_without_trailing_slash)]
ServiceAccount = Annotated[str, AfterValidator(_matching("service account"))]
Network = Annotated[str, AfterValidator(_matching("network"))]
Duration = Annotated[int, BeforeValidator(parse_duration), AfterValidator(_seconds(None, "must be positive"))]
SageMakerDuration = Annotated[
    int,
    BeforeValidator(_duration_or_none),
    AfterValidator(_seconds(28 * 86400, "must be between 1 second and 28 days (SageMaker's limit)")),
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Toleration(_Section):
    """One Kubernetes toleration, as in a pod spec."""

    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Toleration:
        if self.operator == "Exists" and self.value is not None:
            raise ValueError("a toleration with operator Exists must not set a value")
        if self.operator == "Equal" and self.key is None:
            raise ValueError("a toleration with operator Equal needs a key")
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError("toleration_seconds only applies to effect NoExecute")
        return self


class Resources(_Section):
    """Container requests and limits (``cpu``, ``memory``, ``ephemeral-storage``, ``nvidia.com/gpu``)."""

    requests: Quantities = Field(default_factory=dict)
    limits: Quantities = Field(default_factory=dict)

    @model_validator(mode="after")
    def _gpus(self) -> Resources:
        for name, quantity in {**self.requests, **self.limits}.items():
            if name.endswith("/gpu") and not re.match(r"^[0-9]+$", quantity):
                raise ValueError(f"{name}: GPUs are whole devices, got {quantity!r}")
        for name, quantity in self.requests.items():
            if name.endswith("/gpu") and self.limits.get(name) != quantity:
                raise ValueError(f"{name} must be set in limits (requests, if given, must equal limits)")
        return self


class DataVolume(_Section):
    """A persistent volume claim mounted where the pipeline's local data root lives (RWX: NFS, EFS, …)."""

    claim_name: ClaimName
    mount_path: AbsolutePath


class KubernetesBackend(_Section):
    """``kubernetes:``: the pod a stage runs in (KubernetesPodOperator)."""

    image: Image
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    namespace: KubernetesName = "default"
    service_account: KubernetesName | None = None
    resources: Resources = Resources()
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    image_pull_secrets: SecretNames = Field(default_factory=list)
    env: Environment = Field(default_factory=dict)
    env_from_secrets: SecretNames = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    active_deadline: Duration = 6 * 3600
    startup_timeout: Duration = 300
    schedule_timeout: Duration = 300
    pod_template_file: str | None = None
    data_volume: DataVolume | None = None
    kubernetes_conn_id: str = "kubernetes_default"


class SageMakerVpc(_Section):
    """``sagemaker.vpc:``: the subnets and security groups the job's instances join."""

    subnets: Subnets
    security_group_ids: SecurityGroups


class SageMakerBackend(_Section):
    """``sagemaker:``: the training job (and, for inference, the processing job) a stage runs as."""

    image: Image
    role_arn: RoleArn
    instance_type: InstanceType = "ml.m5.xlarge"
    instance_count: Annotated[int, Field(ge=1, le=100)] = 1
    volume_size_gb: Annotated[int, Field(ge=1, le=16384)] = 30
    max_runtime: SageMakerDuration = 6 * 3600
    spot: bool = False
    max_wait: SageMakerDuration | None = None
    checkpoint_uri: S3Uri | None = None
    output_path: S3Uri
    vpc: SageMakerVpc | None = None
    environment: dict[str, str] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)
    region: str | None = None
    aws_conn_id: str = "aws_default"

    @model_validator(mode="after")
    def _spot(self) -> SageMakerBackend:
        if self.spot:
            if self.checkpoint_uri is None:
                raise ValueError("spot: true needs checkpoint_uri (an interrupted spot job resumes from it)")
            if self.max_wait is None:
                raise ValueError(
                    "spot: true needs max_wait (how long to wait for spot capacity, >= max_runtime)"
                )
            if self.max_wait < self.max_runtime:
                raise ValueError(
                    f"max_wait ({self.max_wait}s) must be at least max_runtime ({self.max_runtime}s)"
                )
        elif self.max_wait is not None:
            raise ValueError("max_wait only applies with spot: true")
        return self


class VertexBackend(_Section):
    """``vertex:``: the Vertex AI custom job a stage runs as."""

    project: GcpProject
    region: GcpRegion
    image: Image
    machine_type: str = "n1-standard-4"
    accelerator_type: Accelerator | None = None
    accelerator_count: Annotated[int, Field(ge=0, le=16)] = 0
    replica_count: Annotated[int, Field(ge=1)] = 1
    boot_disk_size_gb: Annotated[int, Field(ge=10, le=65536)] = 100
    service_account: ServiceAccount | None = None
    staging_bucket: GsUri
    network: Network | None = None
    timeout: Duration = 6 * 3600
    environment: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    gcp_conn_id: str = "google_cloud_default"

    @model_validator(mode="after")
    def _accelerators(self) -> VertexBackend:
        if self.accelerator_count and not self.accelerator_type:
            raise ValueError(
                f"accelerator_count {self.accelerator_count} needs accelerator_type (e.g. NVIDIA_TESLA_T4)"
            )
        if self.accelerator_type and not self.accelerator_count:
            raise ValueError(f"accelerator_type {self.accelerator_type} needs accelerator_count >= 1")
        return self


BackendSection = KubernetesBackend | SageMakerBackend | VertexBackend

# Which object stores each backend's jobs can read with the credentials their platform gives them.
OBJECT_STORES: dict[str, tuple[str, ...]] = {
    "kubernetes": ("s3://", "gs://"),
    "sagemaker": ("s3://",),
    "vertex": ("gs://",),
}


class StageBackends(_Section):
    """The backend choice and per-backend sections shared by ``training:`` and ``inference:``."""

    backend: Backend = "local"
    kubernetes: KubernetesBackend | None = None
    sagemaker: SageMakerBackend | None = None
    vertex: VertexBackend | None = None

    def backend_section(self) -> BackendSection | None:
        """The section of the chosen backend (``None`` for ``local``)."""
        if self.backend == "local":
            return None
        section: BackendSection | None = getattr(self, self.backend)
        return section
