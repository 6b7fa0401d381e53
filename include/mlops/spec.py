"""The pipeline spec: one YAML file per model, validated when it is loaded.

Every problem is reported as ``<file>: <field>: <what is wrong>``, one line each, so that a broken
spec can be fixed without reading a traceback. Cheap to import: pydantic and PyYAML only.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from include.mlops.backend_spec import OBJECT_STORES, BackendSection, StageBackends, parse_duration
from include.mlops.errors import SpecError
from include.mlops.paths import expand, pipelines_dir

CLASSIFICATION_METRICS = ("roc_auc", "f1", "accuracy", "precision", "recall", "log_loss")
REGRESSION_METRICS = ("rmse", "mae", "r2")
LOWER_IS_BETTER = frozenset({"log_loss", "rmse", "mae"})

# libyaml's safe loader when present: parsing 20 specs drops from ~100 ms to ~15 ms.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")
_PRESETS = {"@once", "@hourly", "@daily", "@weekly", "@monthly", "@yearly"}


def check_schedule(value: str | None) -> str | None:
    """A cron expression or preset; checked with croniter when it is installed (it is with Airflow)."""
    if value is None or value in _PRESETS:
        return value
    try:
        from croniter import croniter
    except ImportError:  # a training container without Airflow: the DAG side has checked it
        return value
    if not croniter.is_valid(value):
        raise ValueError(f"{value!r} is not a cron expression or one of {', '.join(sorted(_PRESETS))}")
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LandingEventsSpec(_Model):
    """``data.events:``: S3 event notifications, delivered to an SQS queue, that start ingestion.

    The queue is the pipeline's own (docs/ingestion.md): the watcher deletes every message it
    receives and keeps those about new objects directly under the landing prefix.
    """

    # http(s)://<host>/<12-digit account>/<name>: AWS (sqs.<region>.amazonaws.com), or a local
    # emulator such as moto or LocalStack.
    QUEUE_URL: ClassVar[re.Pattern[str]] = re.compile(
        r"^https?://(?P<host>[^/\s]+)/(?P<account>\d{12})/(?P<name>[A-Za-z0-9_-]{1,80}(?:\.fifo)?)$"
    )
    AWS_HOST: ClassVar[re.Pattern[str]] = re.compile(
        r"^sqs\.(?P<region>[a-z]{2}(?:-[a-z]+)+-\d)\.amazonaws\.com(?:\.cn)?$"
    )
    REGION: ClassVar[re.Pattern[str]] = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-\d$")

    source: Literal["sqs"] = "sqs"
    queue: str
    aws_conn_id: str | None = None  # default: data.landing_conn_id, else aws_default
    region: str | None = None  # default: the queue URL's region, else the connection's
    suffix: str | None = None  # only keys ending with it start a run (e.g. .parquet)
    wait_seconds: Annotated[int, Field(ge=1, le=20)] = 20  # SQS long polling

    @classmethod
    def queue_region(cls, url: str) -> str | None:
        """``eu-west-1`` for ``https://sqs.eu-west-1.amazonaws.com/...``; None for other hosts."""
        match = cls.QUEUE_URL.match(url)
        host = cls.AWS_HOST.match(match.group("host")) if match else None
        return host.group("region") if host else None

    @field_validator("queue")
    @classmethod
    def _queue_url(cls, value: str) -> str:
        if value.startswith("arn:"):
            raise ValueError(
                f"{value!r} is an ARN; give the queue URL, https://sqs.<region>.amazonaws.com/<account>/<name>"
            )
        try:
            url = expand(value)
        except SpecError as exc:
            raise ValueError(str(exc)) from None
        match = cls.QUEUE_URL.match(url)
        if match is None:
            raise ValueError(
                f"{url!r} is not an SQS queue URL; expected https://sqs.<region>.amazonaws.com/<12-digit account>/<queue name>"
            )
        if match.group("name").endswith(".fifo"):
            raise ValueError(
                f"S3 event notifications cannot be sent to a FIFO queue ({match.group('name')}); use a standard queue"
            )
        return value

    @field_validator("region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        if value is not None and not cls.REGION.match(value):
            raise ValueError(f"{value!r} is not an AWS region such as eu-west-1")
        return value

    @field_validator("suffix")
    @classmethod
    def _suffix(cls, value: str | None) -> str | None:
        if value is not None and (not value or "/" in value):
            raise ValueError(f"{value!r} must be the end of a file name, such as .parquet (no '/')")
        return value

    @model_validator(mode="after")
    def _same_region(self) -> LandingEventsSpec:
        in_url = self.queue_region(expand(self.queue))
        if self.region and in_url and self.region != in_url:
            raise ValueError(
                f"region {self.region!r} differs from the queue URL's region {in_url!r}; drop region"
            )
        return self


class DataSpec(_Model):
    """``data:``: where a pipeline's files land, how ingestion starts and which columns matter."""

    landing: str
    format: Literal["csv", "parquet"] = "parquet"
    target: str
    task: Literal["classification", "regression"]
    id_column: str | None = None
    timestamp_column: str | None = None
    features: list[str] | None = None
    schedule: str | None = "@hourly"
    datasets: str | None = None
    quarantine: str | None = None
    archive: str | None = None
    # Event-driven ingestion (docs/ingestion.md).
    trigger: Literal["schedule", "event"] = "schedule"
    landing_conn_id: str | None = None
    settle_seconds: int = 30
    poll_interval: int = 30
    claim_timeout: int = 21600
    events: LandingEventsSpec | None = None  # trigger: event from S3 notifications via SQS, not polling

    _schedule = field_validator("schedule")(classmethod(lambda cls, v: check_schedule(v)))

    @field_validator("settle_seconds", "poll_interval", "claim_timeout", mode="before")
    @classmethod
    def _seconds(cls, value: Any, info: Any) -> int:
        seconds = parse_duration(value)
        least = {"settle_seconds": 0, "poll_interval": 1, "claim_timeout": 60}[info.field_name]
        if seconds < least:
            raise ValueError(f"must be at least {least} seconds, got {seconds}")
        return seconds

    @model_validator(mode="before")
    @classmethod
    def _event_schedule_default(cls, raw: Any) -> Any:
        # With trigger: event, landing events start ingestion; a time schedule is an opt-in sweep for
        # the polling watcher and a daily default for queued S3 events, which can be missed (files that
        # landed before the notification was set up, messages lost between receipt and the Asset event).
        if isinstance(raw, dict) and raw.get("trigger") == "event" and "schedule" not in raw:
            return {**raw, "schedule": "@daily" if raw.get("events") else None}
        return raw

    @model_validator(mode="after")
    def _event_schedule(self) -> DataSpec:
        if self.trigger == "event" and self.schedule == "@once":
            raise ValueError(
                "schedule '@once' cannot be combined with trigger: event; use a cron, a preset or null"
            )
        return self

    @model_validator(mode="after")
    def _events_need_s3(self) -> DataSpec:
        if self.events is None:
            return self
        if self.trigger != "event":
            raise ValueError("events: S3 notifications start ingestion only with trigger: event; set it too")
        try:
            landing = expand(self.landing)
        except SpecError as exc:
            raise ValueError(str(exc)) from None
        if not landing.startswith(("s3://", "s3a://")):
            raise ValueError(
                f"events: an SQS source carries S3 notifications, but landing {landing} is not s3://; "
                "use an s3:// landing, or drop events to watch the landing zone by polling"
            )
        return self

    @model_validator(mode="after")
    def _distinct_columns(self) -> DataSpec:
        special = [c for c in (self.target, self.id_column, self.timestamp_column) if c]
        if len(set(special)) != len(special):
            raise ValueError("target, id_column and timestamp_column must be different columns")
        clash = set(self.features or ()) & set(special)
        if clash:
            raise ValueError(f"features must not include the target, id or timestamp column: {sorted(clash)}")
        return self


class ValidationSpec(_Model):
    """``validation:``: the Great Expectations suite every landed file must pass."""

    suite: str


class TrainingSpec(StageBackends):
    """``training:``: the estimator, its parameters, the holdout split and where it trains."""

    estimator: str
    params: dict[str, Any] = Field(default_factory=dict)
    holdout_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.2
    seed: int = 42
    reference_rows: Annotated[int, Field(gt=0)] = 5000

    @field_validator("estimator")
    @classmethod
    def _dotted(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+$", value):
            raise ValueError(f"{value!r} is not a dotted class path such as sklearn.linear_model.Ridge")
        return value

    @model_validator(mode="after")
    def _backend_config(self) -> TrainingSpec:
        if self.backend != "local" and self.backend_section() is None:
            raise ValueError(f"backend {self.backend!r} needs a '{self.backend}:' section")
        return self


class Threshold(_Model):
    """One ``evaluation.thresholds`` entry: inclusive bounds on a metric (``min``, ``max`` or both)."""

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bounded(self) -> Threshold:
        if self.min is None and self.max is None:
            raise ValueError("a threshold needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class ChampionPolicy(_Model):
    """``evaluation.champion:``: how a candidate must compare with the current champion."""

    min_improvement: float = 0.0
    max_regression: Annotated[float, Field(ge=0)] = 0.01


class BootstrapPolicy(_Model):
    """Paired bootstrap CI of the primary metric's improvement over the champion."""

    resamples: Annotated[int, Field(ge=0, le=100_000)] = 1000  # 0 switches the check off
    confidence: Annotated[float, Field(gt=0.5, lt=1)] = 0.95
    margin: float | None = None  # lower bound must be >= margin; default: -champion.max_regression
    seed: int = 7


class SliceFloor(_Model):
    """A metric floor (and/or ceiling) for every segment of a column, e.g. each contract type."""

    column: str
    metric: str
    min: float | None = None
    max: float | None = None
    min_rows: Annotated[int, Field(ge=1)] = 50  # smaller segments are reported, not judged

    @model_validator(mode="after")
    def _bounded(self) -> SliceFloor:
        if self.min is None and self.max is None:
            raise ValueError(f"slice {self.column}/{self.metric} needs min, max or both")
        return self


class LatencyBudget(_Model):
    """``evaluation.latency:``: the p95 prediction-time budget of one ``predict`` call."""

    max_p95_ms: Annotated[float, Field(gt=0)]
    batch_rows: Annotated[int, Field(gt=0)] = 1000
    repeats: Annotated[int, Field(ge=5)] = 30


class EvaluationSpec(_Model):
    """``evaluation:``: the checks a candidate must pass at the gate before it can be promoted."""

    primary_metric: str
    thresholds: dict[str, Threshold] = Field(default_factory=dict)
    champion: ChampionPolicy = ChampionPolicy()
    bootstrap: BootstrapPolicy = BootstrapPolicy()
    slices: list[SliceFloor] = Field(default_factory=list)
    latency: LatencyBudget | None = None
    max_model_mb: Annotated[float, Field(gt=0)] | None = None
    check_scoring_schema: bool = True  # refuse a candidate needing columns the scoring data lacks


class RegistrySpec(_Model):
    """``registry:``: the registered model name and whether promotion waits for a human."""

    model_name: str | None = None
    approval: Literal["auto", "manual"] = "auto"


class InferenceSpec(StageBackends):
    """``inference:``: when batch scoring runs, what it reads, where predictions go and where it runs.

    A remote ``backend`` without its own section uses the ``training:`` section of that backend.
    """

    schedule: str | None = "@daily"
    input: str
    output: str
    format: Literal["csv", "parquet"] = "parquet"
    chunk_rows: Annotated[int, Field(gt=0)] = 100_000
    parallelism: Annotated[int, Field(ge=1, le=256)] = 4  # partitions (pods, jobs) scoring at once

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str | None) -> str | None:
        if value == "@once":
            raise ValueError("@once cannot be combined with the champion Asset trigger; use a cron or null")
        return check_schedule(value)


class LabelsSpec(_Model):
    """Ground truth that arrives after scoring: files with the id column and the target column."""

    uri: str
    format: Literal["csv", "parquet"] = "parquet"
    window: int = 30 * 86400  # predictions scored this long before the check are judged
    min_rows: Annotated[int, Field(ge=1)] = 200  # fewer labelled rows: reported, not judged

    @field_validator("window", mode="before")
    @classmethod
    def _window(cls, value: Any) -> int:
        seconds = parse_duration(value)
        if seconds <= 0:
            raise ValueError("must be positive")
        return seconds


class MonitoringSpec(_Model):
    """``monitoring:``: when drift is checked, when it requests retraining, and late labels."""

    schedule: str | None = "@daily"
    drift_share_threshold: Annotated[float, Field(gt=0, le=1)] = 0.3
    retrain_cooldown: int = 86400
    retrain_timeout: int = 6 * 3600
    window_batches: Annotated[int, Field(gt=0)] = 1
    reports: str | None = None
    labels: LabelsSpec | None = None

    _schedule = field_validator("schedule")(classmethod(lambda cls, v: check_schedule(v)))

    @field_validator("retrain_cooldown", "retrain_timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> int:
        seconds = parse_duration(value)
        if seconds < 0:
            raise ValueError("must not be negative")
        return seconds


class NotificationsSpec(_Model):
    """``notifications:``: which pipeline events send a message, over which channel, to whom."""

    events: list[
        Literal["gate_failed", "drift_detected", "performance_degraded", "promoted", "quarantined"]
    ] = Field(default_factory=list)
    notifier: Literal["log", "smtp"] = "log"
    to: list[str] = Field(default_factory=list)
    from_email: str = "airflow-mlops@localhost"
    smtp_conn_id: str = "smtp_default"

    @model_validator(mode="after")
    def _recipients(self) -> NotificationsSpec:
        if self.notifier == "smtp" and self.events and not self.to:
            raise ValueError("notifier 'smtp' needs at least one address in 'to'")
        return self


class PipelineSpec(_Model):
    """A whole spec file: one model's pipeline, from landing to monitoring."""

    name: str
    owner: str = "ml-platform"
    description: str = ""
    tags: list[str] = Field(default_factory=list)
    data: DataSpec
    validation: ValidationSpec
    training: TrainingSpec
    evaluation: EvaluationSpec
    registry: RegistrySpec = RegistrySpec()
    inference: InferenceSpec
    monitoring: MonitoringSpec = MonitoringSpec()
    notifications: NotificationsSpec = NotificationsSpec()
    source: str = Field(default="", exclude=True)

    @field_validator("name")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                f"{value!r} must be lower case letters, digits and underscores, starting with a letter"
            )
        return value

    @model_validator(mode="after")
    def _metrics_fit_task(self) -> PipelineSpec:
        allowed = CLASSIFICATION_METRICS if self.data.task == "classification" else REGRESSION_METRICS
        slice_metrics = [s.metric for s in self.evaluation.slices]
        for metric in [self.evaluation.primary_metric, *self.evaluation.thresholds, *slice_metrics]:
            if metric not in allowed:
                raise ValueError(
                    f"evaluation metric {metric!r} does not fit a {self.data.task} task; use one of {', '.join(allowed)}"
                )
        return self

    @model_validator(mode="after")
    def _labels_need_ids(self) -> PipelineSpec:
        if self.monitoring.labels is not None and not self.data.id_column:
            raise ValueError(
                "monitoring.labels needs data.id_column: late labels are matched to predictions by id"
            )
        return self

    @model_validator(mode="after")
    def _remote_backends(self) -> PipelineSpec:
        if self.inference.backend != "local" and self.backend_of("inference")[1] is None:
            name = self.inference.backend
            raise ValueError(
                f"inference.backend {name!r} needs an 'inference.{name}:' or a 'training.{name}:' section"
            )
        for stage, kinds in (("training", ("datasets",)), ("inference", ("scoring", "predictions"))):
            backend, section = self.backend_of(stage)
            if section is not None:
                for kind in kinds:
                    self._check_reachable(stage, backend, section, kind)
        return self

    def _check_reachable(self, stage: str, backend: str, section: BackendSection, kind: str) -> None:
        """A remote job reads and writes through the object store, or a volume mounted at the same path."""
        uri = self.uri(kind)
        if uri.startswith(OBJECT_STORES[backend]):
            return
        volume = getattr(section, "data_volume", None)
        path = uri.removeprefix("file://")  # local URIs are file:///abs/path; the mount is /abs/path
        if volume is not None and (
            path == volume.mount_path or path.startswith(volume.mount_path.rstrip("/") + "/")
        ):
            return
        stores = " or ".join(OBJECT_STORES[backend])
        fix = f"use {stores} (set MLOPS_DATA_ROOT or the {kind} location)"
        if backend == "kubernetes":
            fix += " or mount it with kubernetes.data_volume"
        raise ValueError(f"{stage}.backend {backend!r} cannot reach the {kind} location {uri}: {fix}")

    def backend_of(self, stage: Literal["training", "inference"] | str) -> tuple[str, BackendSection | None]:
        """``(backend, section)`` of a heavy stage; inference falls back to training's section."""
        part: StageBackends = self.training if stage == "training" else self.inference
        section = part.backend_section()
        if section is None and stage == "inference" and part.backend != "local":
            section = getattr(self.training, part.backend)
        return part.backend, section

    # Derived names and locations ------------------------------------------------------------
    @property
    def model_name(self) -> str:
        """Registered model name: ``registry.model_name``, else the pipeline name."""
        return self.registry.model_name or self.name

    @property
    def experiment_name(self) -> str:
        """MLflow experiment of the pipeline's training runs."""
        return f"mlops/{self.name}"

    def uri(self, kind: str) -> str:
        """Resolved URI of one of the pipeline's storage areas (landing, datasets, quarantine, ...)."""
        explicit = {
            "landing": self.data.landing,
            "datasets": self.data.datasets,
            "quarantine": self.data.quarantine,
            "archive": self.data.archive,
            "scoring": self.inference.input,
            "predictions": self.inference.output,
            "reports": self.monitoring.reports,
            "labels": self.monitoring.labels.uri if self.monitoring.labels else None,
        }
        if kind not in explicit and kind != "state":
            raise KeyError(kind)
        template = explicit.get(kind) or f"{{MLOPS_DATA_ROOT}}/{kind}/{self.name}"
        return expand(template)


def _location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc if not str(part).startswith("function-")) or "(top level)"


def parse_spec(raw: Any, source: str) -> PipelineSpec:
    """Validate already-parsed YAML; raise one SpecError listing every problem."""
    if not isinstance(raw, dict):
        raise SpecError(f"{source}: the file must hold a mapping of spec fields, got {type(raw).__name__}")
    try:
        return PipelineSpec(**raw, source=source)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown field (check its spelling against docs/spec.md)"
            lines.append(f"{source}: {_location(err['loc'])}: {msg}")
        raise SpecError("\n".join(lines)) from None
    except TypeError as exc:
        raise SpecError(f"{source}: {exc}") from None


def load_spec(path: str | Path) -> PipelineSpec:
    """Read and validate one spec file; unreadable or invalid YAML also raises a one-line SpecError."""
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_YAML_LOADER)
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the spec: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
        raise SpecError(f"{path}: not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None
    return parse_spec(raw, str(path))


def load_specs(directory: str | Path | None = None) -> tuple[list[PipelineSpec], dict[str, str]]:
    """Load every ``*.yaml`` spec; broken ones are returned as ``{file: error}``, not raised."""
    directory = Path(directory) if directory else pipelines_dir()
    specs: list[PipelineSpec] = []
    errors: dict[str, str] = {}
    seen: dict[str, str] = {}
    for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
        try:
            spec = load_spec(path)
        except SpecError as exc:
            errors[str(path)] = str(exc)
            continue
        if spec.name in seen:
            errors[str(path)] = f"{path}: name: {spec.name!r} is already used by {seen[spec.name]}"
            continue
        seen[spec.name] = str(path)
        specs.append(spec)
    return specs, errors


def find_spec(name: str, directory: str | Path | None = None) -> PipelineSpec:
    """The valid spec named ``name``; the SpecError also lists broken specs (the wanted one may be there)."""
    specs, errors = load_specs(directory)
    for spec in specs:
        if spec.name == name:
            return spec
    broken = "; ".join(errors.values())
    raise SpecError(
        f"no valid pipeline spec named {name!r}" + (f" (broken specs: {broken})" if broken else "")
    )
