"""Spec sections of the remote backends: where a heavy stage runs when it leaves the Airflow worker.

``training.backend`` and ``inference.backend`` pick ``local`` (the worker), ``kubernetes`` (a pod),
``sagemaker`` (a training or processing job) or ``vertex`` (a custom job). Each remote backend has
its own section with what its users set; everything is checked when the spec loads, so a typo in an
ARN or a GPU count without a GPU type is a one-line error naming the file and the field, not a
failed job an hour later. Cheap to import: pydantic only.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Backend = Literal["local", "kubernetes", "sagemaker", "vertex"]
REMOTE_BACKENDS: tuple[str, ...] = ("kubernetes", "sagemaker", "vertex")

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$")
_IMAGE = re.compile(
    r"^[a-z0-9][a-z0-9._-]*(:[0-9]+)?(/[a-z0-9._-]+)+(:[\w][\w.-]{0,127})?(@sha256:[0-9a-f]{64})?$"
)
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
_SAGEMAKER_INSTANCE = re.compile(r"^ml\.[a-z0-9]+\.[a-z0-9]+$")
_GCP_PROJECT = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_GCP_REGION = re.compile(r"^[a-z]+-[a-z]+[0-9]+$")
_ACCELERATOR = re.compile(r"^[A-Z][A-Z0-9_]+$")
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str | int) -> int:
    """``"1d"`` -> 86400. Plain integers are seconds (the spec's one duration syntax)."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(f"{text!r} is not a duration such as 30m, 12h, 1d or 1w")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _image(value: str) -> str:
    if not _IMAGE.match(value):
        raise ValueError(
            f"{value!r} is not a registry-qualified image reference such as "
            "registry.example.com/team/airflow-mlops:1.4.0"
        )
    if ":" not in value.rsplit("/", 1)[-1] and "@" not in value:
        raise ValueError(
            f"{value!r} has no tag or digest; pin the image the job runs (…:1.4.0 or …@sha256:…)"
        )
    return value


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

    requests: dict[str, str] = Field(default_factory=dict)
    limits: dict[str, str] = Field(default_factory=dict)

    @field_validator("requests", "limits", mode="before")
    @classmethod
    def _quantities(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for name, quantity in value.items():
                if not _QUANTITY.match(str(quantity)):
                    raise ValueError(
                        f"{name}: {quantity!r} is not a Kubernetes quantity such as 500m, 2 or 4Gi"
                    )
            return {name: str(quantity) for name, quantity in value.items()}
        return value

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

    claim_name: str
    mount_path: str

    @field_validator("claim_name")
    @classmethod
    def _claim(cls, value: str) -> str:
        if not _DNS_LABEL.match(value) or len(value) > 253:
            raise ValueError(f"{value!r} is not a valid claim name (lower case letters, digits and '-')")
        return value

    @field_validator("mount_path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"{value!r} must be an absolute path")
        return value.rstrip("/") or "/"


class KubernetesBackend(_Section):
    """``kubernetes:``: the pod a stage runs in (KubernetesPodOperator)."""

    image: str
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    namespace: str = "default"
    service_account: str | None = None
    resources: Resources = Resources()
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    image_pull_secrets: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    env_from_secrets: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    active_deadline: int = 6 * 3600
    startup_timeout: int = 300
    schedule_timeout: int = 300
    pod_template_file: str | None = None
    data_volume: DataVolume | None = None
    kubernetes_conn_id: str = "kubernetes_default"

    _image = field_validator("image")(classmethod(lambda cls, v: _image(v)))

    @field_validator("active_deadline", "startup_timeout", "schedule_timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> int:
        result = parse_duration(value)
        if result <= 0:
            raise ValueError("must be positive")
        return result

    @field_validator("namespace", "service_account")
    @classmethod
    def _dns_name(cls, value: str | None) -> str | None:
        if value is not None and (not _DNS_LABEL.match(value) or len(value) > 63):
            raise ValueError(
                f"{value!r} is not a Kubernetes name (lower case letters, digits and '-', at most 63)"
            )
        return value

    @field_validator("image_pull_secrets", "env_from_secrets")
    @classmethod
    def _secret_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.match(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", name) or len(name) > 253:
                raise ValueError(f"{name!r} is not a Kubernetes secret name")
        return value

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not re.match(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$", name):
                raise ValueError(f"{name!r} is not a valid environment variable name")
        return {name: str(v) for name, v in value.items()}


class SageMakerVpc(_Section):
    """``sagemaker.vpc:``: the subnets and security groups the job's instances join."""

    subnets: Annotated[list[str], Field(min_length=1, max_length=16)]
    security_group_ids: Annotated[list[str], Field(min_length=1, max_length=5)]

    @field_validator("subnets")
    @classmethod
    def _subnets(cls, value: list[str]) -> list[str]:
        for subnet in value:
            if not re.match(r"^subnet-[0-9a-f]{8,17}$", subnet):
                raise ValueError(f"{subnet!r} is not a subnet id such as subnet-0123abcd")
        return value

    @field_validator("security_group_ids")
    @classmethod
    def _groups(cls, value: list[str]) -> list[str]:
        for group in value:
            if not re.match(r"^sg-[0-9a-f]{8,17}$", group):
                raise ValueError(f"{group!r} is not a security group id such as sg-0123abcd")
        return value


class SageMakerBackend(_Section):
    """``sagemaker:``: the training job (and, for inference, the processing job) a stage runs as."""

    image: str
    role_arn: str
    instance_type: str = "ml.m5.xlarge"
    instance_count: Annotated[int, Field(ge=1, le=100)] = 1
    volume_size_gb: Annotated[int, Field(ge=1, le=16384)] = 30
    max_runtime: int = 6 * 3600
    spot: bool = False
    max_wait: int | None = None
    checkpoint_uri: str | None = None
    output_path: str
    vpc: SageMakerVpc | None = None
    environment: dict[str, str] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)
    region: str | None = None
    aws_conn_id: str = "aws_default"

    _image = field_validator("image")(classmethod(lambda cls, v: _image(v)))

    @field_validator("role_arn")
    @classmethod
    def _role(cls, value: str) -> str:
        if not _ROLE_ARN.match(value):
            raise ValueError(
                f"{value!r} is not an IAM role ARN such as arn:aws:iam::123456789012:role/SageMakerRole"
            )
        return value

    @field_validator("instance_type")
    @classmethod
    def _instance(cls, value: str) -> str:
        if not _SAGEMAKER_INSTANCE.match(value):
            raise ValueError(f"{value!r} is not a SageMaker instance type such as ml.m5.xlarge")
        return value

    @field_validator("max_runtime", "max_wait", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> int | None:
        if value is None:
            return None
        result = parse_duration(value)
        if not 1 <= result <= 28 * 86400:
            raise ValueError("must be between 1 second and 28 days (SageMaker's limit)")
        return result

    @field_validator("output_path", "checkpoint_uri")
    @classmethod
    def _s3(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$", value):
            raise ValueError(f"{value!r} must be an s3:// URI (bucket and optional prefix)")
        return value.rstrip("/") if value else value

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

    project: str
    region: str
    image: str
    machine_type: str = "n1-standard-4"
    accelerator_type: str | None = None
    accelerator_count: Annotated[int, Field(ge=0, le=16)] = 0
    replica_count: Annotated[int, Field(ge=1)] = 1
    boot_disk_size_gb: Annotated[int, Field(ge=10, le=65536)] = 100
    service_account: str | None = None
    staging_bucket: str
    network: str | None = None
    timeout: int = 6 * 3600
    environment: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    gcp_conn_id: str = "google_cloud_default"

    _image = field_validator("image")(classmethod(lambda cls, v: _image(v)))

    @field_validator("project")
    @classmethod
    def _project(cls, value: str) -> str:
        if not _GCP_PROJECT.match(value):
            raise ValueError(
                f"{value!r} is not a Google Cloud project id (6-30 lower case letters, digits, '-')"
            )
        return value

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        if not _GCP_REGION.match(value):
            raise ValueError(f"{value!r} is not a Google Cloud region such as europe-west4")
        return value

    @field_validator("accelerator_type")
    @classmethod
    def _accelerator(cls, value: str | None) -> str | None:
        if value is not None and not _ACCELERATOR.match(value):
            raise ValueError(f"{value!r} is not an accelerator type such as NVIDIA_TESLA_T4")
        return value

    @field_validator("staging_bucket")
    @classmethod
    def _gs(cls, value: str) -> str:
        if not re.match(r"^gs://[a-z0-9][a-z0-9._-]{1,61}[a-z0-9](/.*)?$", value):
            raise ValueError(f"{value!r} must be a gs:// URI (bucket and optional prefix)")
        return value.rstrip("/")

    @field_validator("service_account")
    @classmethod
    def _account(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[^@\s]+@[a-z0-9-]+\.iam\.gserviceaccount\.com$", value):
            raise ValueError(
                f"{value!r} is not a service account e-mail such as trainer@proj.iam.gserviceaccount.com"
            )
        return value

    @field_validator("network")
    @classmethod
    def _network(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^projects/[0-9]+/global/networks/[a-z0-9-]+$", value):
            raise ValueError(f"{value!r} must be projects/<project number>/global/networks/<name>")
        return value

    @field_validator("timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> int:
        result = parse_duration(value)
        if result <= 0:
            raise ValueError("must be positive")
        return result

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
