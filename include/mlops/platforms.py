"""Each platform's contract with the entry point: where a job's arguments come from, where its outcome goes.

The same ``python -m include.mlops <stage>`` runs in a Kubernetes pod, a SageMaker training or
processing job and a Vertex AI custom job. Every platform starts it its own way and reads the
outcome its own way; ``detect`` finds out where the process runs, from the files and variables the
platform provides, and the CLI honours what it finds:

* **SageMaker training** runs the image's entry point with the single argument ``train``; the
  pipeline, the lineage, the result record's URI and any stage option are in
  ``/opt/ml/input/config/hyperparameters.json`` (every value a string). The record is also written
  to ``/opt/ml/model/result.json`` (SageMaker uploads ``/opt/ml/model`` to the job's output path),
  and a failure's one-line reason to ``/opt/ml/output/failure``: its first 1,024 characters become
  the job's ``FailureReason``.
* **SageMaker processing** (``score-partition``) passes the arguments as ``ContainerArguments``; a
  failure's reason goes to ``/opt/ml/output/message``, whose first 1 KB becomes ``ExitMessage``.
* **Vertex AI** sets ``AIP_MODEL_DIR`` (``<base_output_directory>/model/``, a ``gs://`` URI) when the
  job has an output directory: the record is also written to ``$AIP_MODEL_DIR/result.json``.
  ``CLOUD_ML_JOB_ID`` and ``CLOUD_ML_PROJECT_ID`` name the job in the log.
* **Kubernetes** passes plain arguments; a failure's reason also goes to the container's
  termination message file (``/dev/termination-log``), where ``kubectl describe`` and the operator
  read it.

A job with more than one machine (``sagemaker.instance_count``, ``vertex.replica_count``) starts
the entry point on each of them, but the stages are single-process: only the primary runs the
stage; every other replica logs why and exits 0 at once, so one job registers one model version
and writes one result. The primary is the first of SageMaker's ``resourceconfig.json`` ``hosts``
and Vertex's ``workerpool0`` replica 0 (``CLUSTER_SPEC``).

``MLOPS_SAGEMAKER_ROOT`` (default ``/opt/ml``) and ``MLOPS_TERMINATION_LOG`` move those files, for
tests. Standard library only; framework-free.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from include.mlops.errors import SpecError

log = logging.getLogger(__name__)

SAGEMAKER_ROOT_ENV = "MLOPS_SAGEMAKER_ROOT"
TERMINATION_LOG_ENV = "MLOPS_TERMINATION_LOG"
TERMINATION_LOG = "/dev/termination-log"
SAGEMAKER_FAILURE_BYTES = 1024  # FailureReason / ExitMessage keep the first 1 KB
TERMINATION_BYTES = 4096  # Kubernetes keeps at most 4096 bytes of a termination message
RECORD_FILE = "result.json"
# Hyperparameters SageMaker's own SDKs add; they are not options of the entry point.
_SAGEMAKER_RESERVED = "sagemaker_"


@dataclass(frozen=True)
class FailureFile:
    """A local file a platform reads a failed job's reason from, and how much of it it keeps."""

    path: Path
    limit_bytes: int
    create_parent: bool = True


@dataclass(frozen=True)
class Platform:
    """Where this process runs and what that platform expects from it."""

    name: str = "local"
    hyperparameters: Path | None = None  # SageMaker training: the job's arguments
    record_copies: tuple[str, ...] = ()  # URIs the result record is written to besides --result-uri
    failure_files: tuple[FailureFile, ...] = ()
    details: dict[str, str] = field(default_factory=dict)  # job ids, for the log
    secondary: str = ""  # set on a replica that is not the job's primary: which one it is

    def describe(self) -> None:
        """Log where the job runs (job name and ids), once, at start."""
        if self.name == "local":
            return
        named = ", ".join(f"{key} {value}" for key, value in self.details.items() if value)
        log.info("Running as a %s job%s", self.name, f" ({named})" if named else "")

    def arguments(self, argv: list[str]) -> list[str]:
        """The command line to run: SageMaker's bare ``train`` becomes the one its hyperparameters describe."""
        if argv == ["train"] and self.hyperparameters is not None:
            return sagemaker_arguments(self.hyperparameters)
        return argv

    def report_failure(self, message: str) -> None:
        """Leave ``message`` (one line) where the platform looks for a failed job's reason."""
        for target in self.failure_files:
            data = message.encode("utf-8")[: target.limit_bytes].decode("utf-8", errors="ignore")
            try:
                if target.create_parent:
                    target.path.parent.mkdir(parents=True, exist_ok=True)
                target.path.write_text(data, encoding="utf-8")
            except OSError as exc:
                log.warning("Could not write the failure reason to %s: %s", target.path, exc)


def sagemaker_root(environ: Mapping[str, str] = os.environ) -> Path:
    """SageMaker's file tree in the container (``/opt/ml``)."""
    return Path(environ.get(SAGEMAKER_ROOT_ENV) or "/opt/ml")


def detect(environ: Mapping[str, str] = os.environ) -> Platform:
    """The platform this process runs on, from the files and variables each one provides."""
    root = sagemaker_root(environ)
    hyperparameters = root / "input" / "config" / "hyperparameters.json"
    if hyperparameters.is_file() or environ.get("TRAINING_JOB_NAME"):
        return Platform(
            name="SageMaker training",
            hyperparameters=hyperparameters if hyperparameters.is_file() else None,
            record_copies=(str(root / "model" / RECORD_FILE),),
            failure_files=(FailureFile(root / "output" / "failure", SAGEMAKER_FAILURE_BYTES),),
            details={"name": environ.get("TRAINING_JOB_NAME", "")},
            secondary=_sagemaker_secondary(root / "input" / "config" / "resourceconfig.json"),
        )
    if (root / "config" / "processingjobconfig.json").is_file() or environ.get("PROCESSING_JOB_NAME"):
        return Platform(
            name="SageMaker processing",
            failure_files=(FailureFile(root / "output" / "message", SAGEMAKER_FAILURE_BYTES),),
            details={"name": environ.get("PROCESSING_JOB_NAME") or _processing_job_name(root)},
            secondary=_sagemaker_secondary(root / "config" / "resourceconfig.json"),
        )
    termination = _termination_file(environ)
    if environ.get("AIP_MODEL_DIR") or environ.get("CLOUD_ML_JOB_ID"):
        model_dir = environ.get("AIP_MODEL_DIR", "")
        return Platform(
            name="Vertex AI custom",
            record_copies=(f"{model_dir.rstrip('/')}/{RECORD_FILE}",) if model_dir else (),
            failure_files=termination,
            details={
                "id": environ.get("CLOUD_ML_JOB_ID", ""),
                "project": environ.get("CLOUD_ML_PROJECT_ID", ""),
                "model dir": model_dir,
            },
            secondary=_vertex_secondary(environ.get("CLUSTER_SPEC", "")),
        )
    if environ.get("KUBERNETES_SERVICE_HOST") or termination:
        return Platform(
            name="Kubernetes pod", failure_files=termination, details={"pod": environ.get("HOSTNAME", "")}
        )
    return Platform()


def _sagemaker_secondary(resource_config: Path) -> str:
    """``host N of M`` when this SageMaker instance is not the first of the job's hosts, else ``""``."""
    try:
        config = json.loads(resource_config.read_text(encoding="utf-8"))
        hosts, current = list(config["hosts"]), str(config["current_host"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""  # a single-instance job (or no file): this is the primary
    if not hosts or current == sorted(hosts)[0]:
        return ""
    return f"host {current} of {len(hosts)}"


def _vertex_secondary(cluster_spec: str) -> str:
    """``workerpoolN replica I`` when this Vertex replica is not ``workerpool0`` replica 0, else ``""``."""
    try:
        task = json.loads(cluster_spec)["task"]
        pool, index = str(task["type"]), int(task["index"])
    except (ValueError, KeyError, TypeError):
        return ""
    return "" if (pool, index) == ("workerpool0", 0) else f"{pool} replica {index}"


def _termination_file(environ: Mapping[str, str]) -> tuple[FailureFile, ...]:
    """The termination message file: the one named by ``MLOPS_TERMINATION_LOG``, else Kubernetes'
    ``/dev/termination-log`` when the kubelet mounted one (never created outside a pod)."""
    explicit = environ.get(TERMINATION_LOG_ENV)
    if explicit:
        return (FailureFile(Path(explicit), TERMINATION_BYTES),)
    default = Path(TERMINATION_LOG)
    if default.is_file() and os.access(default, os.W_OK):
        return (FailureFile(default, TERMINATION_BYTES, create_parent=False),)
    return ()


def _processing_job_name(root: Path) -> str:
    try:
        config = json.loads((root / "config" / "processingjobconfig.json").read_text())
        return str(config.get("ProcessingJobName", ""))
    except (OSError, ValueError, AttributeError):
        return ""


def sagemaker_arguments(path: Path) -> list[str]:
    """``train <pipeline> --lineage ... --result-uri ... [--<option> value]`` from ``hyperparameters.json``.

    Keys are the entry point's option names with ``_`` for ``-`` (``pipeline``, ``lineage``,
    ``result_uri``, ``run_id``, ...); every value is a string, as SageMaker passes it. A flag
    (``rescore``) is set by ``"true"``. Keys SageMaker's SDKs add (``sagemaker_*``) are ignored.
    """
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SpecError(f"{path}: cannot read SageMaker's hyperparameters: {exc}") from None
    if not isinstance(raw, dict):
        raise SpecError(
            f"{path}: SageMaker's hyperparameters must be a JSON object, got {type(raw).__name__}"
        )
    values = {str(k): str(v) for k, v in raw.items() if not str(k).startswith(_SAGEMAKER_RESERVED)}
    pipeline = values.pop("pipeline", "").strip()
    if not pipeline:
        raise SpecError(
            f"{path}: SageMaker's hyperparameters have no 'pipeline'; the training job's HyperParameters "
            "must name it (with 'lineage' and 'result_uri')"
        )
    argv = ["train", pipeline]
    for key, value in values.items():
        option = "--" + key.replace("_", "-")
        if key in _FLAGS:
            if value.strip().lower() in ("true", "1", "yes"):
                argv.append(option)
            continue
        argv += [option, value]
    return argv


_FLAGS = frozenset({"rescore"})
