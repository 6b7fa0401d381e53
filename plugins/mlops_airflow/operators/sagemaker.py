"""Run a remote stage as a SageMaker job: ``train`` as a training job, ``score-partition`` as a processing job.

``SageMakerStageOperator`` builds the request from the spec's ``sagemaker:`` section and runs it
through the amazon provider's own operators, built when the task runs:

- ``train`` -> ``SageMakerTrainingOperator``. The project image runs with SageMaker's ``train``
  argument (no ``ContainerEntrypoint``: the image's entry point is ``python -m include.mlops``) and
  reads the pipeline, the lineage and the result record's URI from
  ``/opt/ml/input/config/hyperparameters.json``.
- ``score-partition`` -> ``SageMakerProcessingOperator`` with the entry point and its arguments as
  ``ContainerEntrypoint`` / ``ContainerArguments``.

Deferrable by default (Airflow's ``[operators] default_deferrable``). The provider defers to its
``SageMakerTrigger`` and names the method Airflow resumes *this* task with (``execute_complete``),
so this operator forwards it to a freshly built provider operator. The trigger is wrapped in
``SageMakerJobTrigger``, which runs the provider's trigger unchanged and adds what it lacks:
stopping the job when a user kills the deferred task.

Job names are ``<pipeline>-<stage>-<lineage digest>-<try>``: unique per try, and every try of one
task instance shares the prefix, so a retry after a worker crash finds the job still running and
waits for it instead of starting a second one. The name is logged and kept in ``job_name`` before
waiting; ``on_kill`` stops the job. When the job ends, its CloudWatch log is copied into the task
log and the job's result record (``include.mlops.remote``) decides the outcome; a job that failed
before writing one fails the task with SageMaker's ``FailureReason`` on one line.

Cheap to import: boto3, botocore and the provider's modules are imported when the task runs.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import logging
import math
import re
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Any, ClassVar, cast

from airflow.sdk import Context, conf
from airflow.sdk.exceptions import AirflowException, TaskDeferred
from airflow.triggers.base import BaseTrigger, TriggerEvent

from include.mlops.backend_spec import SageMakerBackend
from mlops_airflow.exceptions import MlopsTaskError, PipelineFailed, PipelineRetryable
from mlops_airflow.operators.remote import RemoteStageOperator

if TYPE_CHECKING:
    from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook
    from airflow.providers.amazon.aws.operators.sagemaker import (
        SageMakerProcessingOperator,
        SageMakerTrainingOperator,
    )
    from botocore.exceptions import ClientError

log = logging.getLogger(__name__)

# Where the training image keeps checkpoints that SageMaker syncs with ``checkpoint_uri`` (spot).
CHECKPOINT_PATH = "/opt/ml/checkpoints"
# SageMaker's API limits: job names, tags, one processing container argument, processing runtime.
MAX_JOB_NAME = 63
MAX_TAGS = 50
MAX_ARGUMENT = 256
MAX_PROCESSING_RUNTIME = 777600
# How long after the job's own limit (max_runtime, or max_wait with spot) waiting gives up.
WAIT_SLACK_SECONDS = 3600
# Error codes of the SageMaker API that a later try may not get: retry; any other code fails.
_TRANSIENT_API_ERRORS = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ServiceUnavailable",
        "InternalFailure",
        "InternalServerError",
        "RequestTimeout",
        "ResourceLimitExceeded",
    }
)
_TAG_UNSAFE = re.compile(r"[^\w\s.:/=+\-@]+")


def one_line(text: object, limit: int = 500) -> str:
    """``text`` squeezed onto one line (a FailureReason may span several), at most ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


@lru_cache(maxsize=4)
def instance_types(shape: str) -> tuple[str, ...]:
    """The instance types botocore's SageMaker service model accepts for ``shape``
    (``TrainingInstanceType`` or ``ProcessingInstanceType``)."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    return tuple(model.shape_for(shape).enum)


@dataclass(frozen=True)
class JobKind:
    """What differs between a training and a processing job (API names, provider operator, logs)."""

    job_type: str  # "Training" | "Processing": SageMaker's and SageMakerTrigger's name
    operator: str  # the provider's operator class
    stage: str  # short stage name in job names

    @property
    def noun(self) -> str:
        """``training`` / ``processing`` (messages, boto3 method names)."""
        return self.job_type.lower()

    @property
    def name_key(self) -> str:
        """The request's and the description's job name field."""
        return f"{self.job_type}JobName"

    @property
    def status_key(self) -> str:
        """The description's status field."""
        return f"{self.job_type}JobStatus"

    @property
    def instance_shape(self) -> str:
        """The botocore shape holding the valid instance types."""
        return f"{self.job_type}InstanceType"

    @property
    def log_group(self) -> str:
        """Where SageMaker sends the job's output (one stream per instance, ``<job>/...``)."""
        return f"/aws/sagemaker/{self.job_type}Jobs"

    def describe(self, hook: SageMakerHook, name: str) -> dict[str, Any]:
        """``Describe<Kind>Job``."""
        result: dict[str, Any] = getattr(hook, f"describe_{self.noun}_job")(name)
        return result

    def stop(self, hook: SageMakerHook, name: str) -> None:
        """``Stop<Kind>Job``."""
        getattr(hook.get_conn(), f"stop_{self.noun}_job")(**{self.name_key: name})

    def running(self, hook: SageMakerHook, prefix: str) -> list[dict[str, Any]]:
        """Summaries of the jobs named ``<prefix>-...`` that are still in progress."""
        query = {"NameContains": prefix, "StatusEquals": "InProgress"}
        jobs: list[dict[str, Any]] = getattr(hook, f"list_{self.noun}_jobs")(**query)
        return [job for job in jobs if job[self.name_key].startswith(f"{prefix}-")]


KINDS: dict[str, JobKind] = {
    "train": JobKind("Training", "SageMakerTrainingOperator", "train"),
    "score-partition": JobKind("Processing", "SageMakerProcessingOperator", "score"),
}


def stop_job(hook: SageMakerHook, kind: JobKind, name: str) -> None:
    """Stop a job; one that already ended is only logged (SageMaker refuses to stop it)."""
    from botocore.exceptions import ClientError

    try:
        kind.stop(hook, name)
        log.info("Asked SageMaker to stop %s job %s", kind.noun, name)
    except ClientError as exc:
        log.warning("Could not stop SageMaker %s job %s: %s", kind.noun, name, one_line(exc))


def run_nested(operator: Any, call: Callable[[], Any]) -> Any:
    """Call a provider operator's method inside this task. Airflow warns when an operator's
    ``execute`` runs inside another's; here that is the design, so the call is marked as the inner
    operator's own (the warning would otherwise appear in every task log)."""
    try:
        from airflow.sdk.bases.operator import ExecutorSafeguard

        token = ExecutorSafeguard.tracker.set(operator)
    except (ImportError, AttributeError):  # a later Airflow without the guard
        return call()
    try:
        return call()
    finally:
        ExecutorSafeguard.tracker.reset(token)


class SageMakerJobTrigger(BaseTrigger):
    """Wait for a SageMaker job with the provider's ``SageMakerTrigger`` (same arguments, same events),
    and stop the job when a user kills the deferred task (``on_kill``; the provider's trigger has none)."""

    def __init__(
        self,
        *,
        job_name: str,
        job_type: str,
        waiter_delay: int = 30,
        waiter_max_attempts: int = 480,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        verify: bool | str | None = None,
        botocore_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.job_name = job_name
        self.job_type = job_type
        self.waiter_delay = waiter_delay
        self.waiter_max_attempts = waiter_max_attempts
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.verify = verify
        self.botocore_config = botocore_config

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Class path and keyword arguments (primitives only)."""
        kwargs = {
            "job_name": self.job_name,
            "job_type": self.job_type,
            "waiter_delay": self.waiter_delay,
            "waiter_max_attempts": self.waiter_max_attempts,
            "aws_conn_id": self.aws_conn_id,
            "region_name": self.region_name,
            "verify": self.verify,
            "botocore_config": self.botocore_config,
        }
        return f"{type(self).__module__}.{type(self).__qualname__}", kwargs

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """The provider's trigger, unchanged: one event (success, failed, stopped, timeout or error)."""
        from airflow.providers.amazon.aws.triggers.sagemaker import SageMakerTrigger

        _, kwargs = self.serialize()
        async for event in SageMakerTrigger(**kwargs).run():
            yield event
            return

    async def on_kill(self) -> None:
        """Stop the job: the user killed the task while it was deferred."""
        from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

        kind = next(k for k in KINDS.values() if k.job_type.lower() == self.job_type.lower())
        hook = SageMakerHook(
            aws_conn_id=self.aws_conn_id,
            region_name=self.region_name,
            verify=self.verify,
            config=self.botocore_config,
        )
        self.log.info("The task was killed; stopping SageMaker %s job %s", kind.noun, self.job_name)
        await asyncio.to_thread(stop_job, hook, kind, self.job_name)


class SageMakerStageOperator(RemoteStageOperator):
    """Run ``python -m include.mlops <stage>`` as a SageMaker job and read its result record back.

    ``train`` runs as a training job, each ``score-partition`` as a processing job. A retried task
    first reuses a succeeded result record, then waits for a job of the same lineage that is still
    in progress, and only then starts a job. ``poll_interval`` is the seconds between status checks
    (in the worker or in the triggerer); ``log_lines`` caps how many of the job's last CloudWatch log
    lines (per instance) are copied into the task log when the job ends.
    """

    backend: ClassVar[str] = "sagemaker"
    ui_color = "#fdf1e3"

    def __init__(
        self,
        *,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: int = 30,
        log_lines: int = 200,
        **kwargs: Any,
    ) -> None:
        """Only store the values; the request is built from the spec when the task runs."""
        super().__init__(**kwargs)
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.log_lines = log_lines
        self.job_name: str | None = None

    # The request ------------------------------------------------------------------------------------
    @property
    def sagemaker(self) -> SageMakerBackend:
        """The spec's ``sagemaker:`` section for this stage."""
        return cast(SageMakerBackend, self.section)  # ``section`` checked that the backend is sagemaker

    @property
    def section_path(self) -> str:
        """Where the section is in the spec, for error messages."""
        own = self.stage == "score-partition" and self.spec.inference.sagemaker is not None
        return "inference.sagemaker" if own else "training.sagemaker"

    @property
    def kind(self) -> JobKind:
        """Training or processing job."""
        return KINDS[self.stage]

    @cached_property
    def hook(self) -> SageMakerHook:
        """The amazon provider's SageMaker hook on the section's connection and region."""
        from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

        return SageMakerHook(aws_conn_id=self.sagemaker.aws_conn_id, region_name=self.sagemaker.region)

    def job_prefix(self, context: Context) -> str:
        """``<pipeline>-<stage>-<lineage digest>``: shared by every try of this task instance."""
        return self.lineage_of(context).job_name(self.pipeline, self.kind.stage, max_length=MAX_JOB_NAME - 5)

    def new_job_name(self, context: Context) -> str:
        """This try's job name (``<prefix>-<try number>``)."""
        return f"{self.job_prefix(context)}-{int(getattr(context['ti'], 'try_number', 1) or 1)}"

    def environment(self) -> dict[str, str]:
        """The job's environment: MLflow and the data root, then the section's own variables."""
        return {**self.job_env(), **self.sagemaker.environment}

    def tags(self, context: Context) -> list[dict[str, str]]:
        """Tags naming the pipeline and the task instance, then the section's own tags."""
        lineage = self.lineage_of(context)
        pairs = {
            "airflow-mlops:pipeline": self.pipeline,
            "airflow-mlops:dag-id": lineage.dag_id,
            "airflow-mlops:run-id": lineage.run_id,
            "airflow-mlops:task-id": lineage.task_id,
            "airflow-mlops:map-index": str(lineage.map_index),
            "airflow-mlops:lineage": lineage.digest(),
            **self.sagemaker.tags,
        }
        return [
            {"Key": _TAG_UNSAFE.sub("_", key)[:128], "Value": _TAG_UNSAFE.sub("_", value)[:256]}
            for key, value in list(pairs.items())[:MAX_TAGS]
        ]

    def hyperparameters(self, context: Context) -> dict[str, str]:
        """What the image's ``train`` reads from ``/opt/ml/input/config/hyperparameters.json``."""
        return {
            "pipeline": self.pipeline,
            "lineage": self.lineage_of(context).to_json(),
            "result_uri": self.record_uri(context),
        }

    def training_config(self, context: Context) -> dict[str, Any]:
        """The ``CreateTrainingJob`` request."""
        section = self.sagemaker
        stopping: dict[str, int] = {"MaxRuntimeInSeconds": section.max_runtime}
        config: dict[str, Any] = {
            "TrainingJobName": self.new_job_name(context),
            "AlgorithmSpecification": {"TrainingImage": section.image, "TrainingInputMode": "File"},
            "HyperParameters": self.hyperparameters(context),
            "RoleArn": section.role_arn,
            "OutputDataConfig": {"S3OutputPath": section.output_path},
            "ResourceConfig": {
                "InstanceType": section.instance_type,
                "InstanceCount": section.instance_count,
                "VolumeSizeInGB": section.volume_size_gb,
            },
            "StoppingCondition": stopping,
            "Environment": self.environment(),
            "Tags": self.tags(context),
        }
        if section.spot:
            config["EnableManagedSpotTraining"] = True
            stopping["MaxWaitTimeInSeconds"] = cast(int, section.max_wait)  # the spec requires it
        if section.checkpoint_uri:
            config["CheckpointConfig"] = {"S3Uri": section.checkpoint_uri, "LocalPath": CHECKPOINT_PATH}
        if section.vpc:
            config["VpcConfig"] = {
                "Subnets": list(section.vpc.subnets),
                "SecurityGroupIds": list(section.vpc.security_group_ids),
            }
        return config

    def processing_config(self, context: Context) -> dict[str, Any]:
        """The ``CreateProcessingJob`` request."""
        section = self.sagemaker
        config: dict[str, Any] = {
            "ProcessingJobName": self.new_job_name(context),
            "AppSpecification": {
                "ImageUri": section.image,
                "ContainerEntrypoint": self.job_command(),
                "ContainerArguments": self.container_arguments(context),
            },
            "ProcessingResources": {
                "ClusterConfig": {
                    "InstanceCount": section.instance_count,
                    "InstanceType": section.instance_type,
                    "VolumeSizeInGB": section.volume_size_gb,
                }
            },
            "StoppingCondition": {"MaxRuntimeInSeconds": min(section.max_runtime, MAX_PROCESSING_RUNTIME)},
            "RoleArn": section.role_arn,
            "Environment": self.environment(),
            "Tags": self.tags(context),
        }
        if section.vpc:
            config["NetworkConfig"] = {
                "VpcConfig": {
                    "Subnets": list(section.vpc.subnets),
                    "SecurityGroupIds": list(section.vpc.security_group_ids),
                }
            }
        return config

    def container_arguments(self, context: Context) -> list[str]:
        """The entry point's arguments within SageMaker's 256 characters per argument: a pinned
        champion too long for that (its input columns) is stored next to the result record and
        passed by URI; any other argument too long fails the task."""
        from include.mlops import storage

        args = self.job_args(context)
        if "--champion" in args:
            at = args.index("--champion") + 1
            if len(args[at]) > MAX_ARGUMENT:
                uri = self.record_uri(context).removesuffix(".json") + ".champion.json"
                storage.write_json(uri, json.loads(args[at]))
                args[at] = uri
        for arg in args:
            if len(arg) > MAX_ARGUMENT:
                raise PipelineFailed(
                    f"pipeline {self.pipeline}: the {self.kind.noun} job argument {arg[:60]!r}... has "
                    f"{len(arg)} characters, above SageMaker's {MAX_ARGUMENT}; use shorter run ids or locations"
                )
        return args

    def request(self, context: Context) -> dict[str, Any]:
        """The job request of this stage."""
        return self.training_config(context) if self.stage == "train" else self.processing_config(context)

    def check_instance_type(self) -> None:
        """Refuse, before any request, an instance type SageMaker does not offer for this kind of job."""
        wanted = self.sagemaker.instance_type
        valid = instance_types(self.kind.instance_shape)
        if wanted in valid:
            return
        close = difflib.get_close_matches(wanted, valid, n=3, cutoff=0.6)
        examples = close or [t for t in ("ml.m5.xlarge", "ml.c5.2xlarge", "ml.g5.xlarge") if t in valid]
        raise PipelineFailed(
            f"pipeline {self.pipeline}: {self.section_path}.instance_type {wanted!r} is an unknown instance "
            f"type for SageMaker {self.kind.noun} jobs (valid: {', '.join(examples)}, ... "
            f"{len(valid)} in all); fix the spec"
        )

    @property
    def max_attempts(self) -> int:
        """Status checks before waiting gives up: the job's own limit plus an hour, at ``poll_interval``."""
        limit = (self.sagemaker.max_wait or self.sagemaker.max_runtime) + WAIT_SLACK_SECONDS
        return max(1, math.ceil(limit / max(self.poll_interval, 1)))

    def provider_operator(
        self, config: dict[str, Any]
    ) -> SageMakerTrainingOperator | SageMakerProcessingOperator:
        """The amazon provider's training or processing operator for ``config``."""
        from airflow.providers.amazon.aws.operators import sagemaker as provider

        options: dict[str, Any] = {
            "task_id": self.task_id,
            "config": config,
            "aws_conn_id": self.sagemaker.aws_conn_id,
            "region_name": self.sagemaker.region,
            "wait_for_completion": True,
            "check_interval": self.poll_interval,
            "max_attempts": self.max_attempts,
            "max_ingestion_time": None,  # StoppingCondition bounds the job; SageMaker enforces it
            "action_if_job_exists": "fail",  # a try's name is its own: never start a renamed twin
            "deferrable": self.deferrable,
            "execution_timeout": self.execution_timeout,
        }
        if self.stage == "train":
            # The provider's live tail re-describes the job only every 30 s and is skipped when
            # deferred; the log is copied once the job has ended instead (``copy_job_log``).
            options["print_log"] = False
        operator: SageMakerTrainingOperator | SageMakerProcessingOperator = getattr(
            provider, self.kind.operator
        )(**options)
        return operator

    # Running ----------------------------------------------------------------------------------------
    def running_job(self, context: Context) -> str | None:
        """A job of this task instance still in progress (a previous try's, after a worker crash)."""
        jobs = self.kind.running(self.hook, self.job_prefix(context))
        if not jobs:
            return None
        newest = max(jobs, key=lambda job: job["CreationTime"])
        return str(newest[self.kind.name_key])

    def submit(self, context: Context) -> Any:
        """Wait for this task instance's job still in progress, else start one (the provider may defer)."""
        self.check_instance_type()
        running = self.call_api(lambda: self.running_job(context))
        if running is not None:
            self.job_name = running
            self.log.info(
                "SageMaker %s job %s of this task instance is still in progress (started by an earlier "
                "try); waiting for it instead of starting another",
                self.kind.noun,
                running,
            )
            return self.wait_for(context, running)
        operator = self.provider_operator(self.request(context))
        self.job_name = operator.config[self.kind.name_key]
        self.log.info(
            "Starting SageMaker %s job %s (%d x %s, image %s) for %s",
            self.kind.noun,
            self.job_name,
            self.sagemaker.instance_count,
            self.sagemaker.instance_type,
            self.sagemaker.image,
            self.lineage_of(context).to_json(),
        )
        return self.outcome(context, lambda: run_nested(operator, lambda: operator.execute(context)))

    def wait_for(self, context: Context, job_name: str) -> Any:
        """Wait for an existing job: in the triggerer when deferrable, else polling here."""
        if self.deferrable:
            self.defer(
                trigger=self.trigger(job_name),
                method_name="execute_complete",
                timeout=self.execution_timeout,
            )
        kind = self.kind
        return self.outcome(
            context,
            lambda: self.hook.check_status(
                job_name,
                kind.status_key,
                lambda name: kind.describe(self.hook, name),
                self.poll_interval,
                non_terminal_states={"InProgress", "Stopping"},
            ),
        )

    def trigger(self, job_name: str) -> SageMakerJobTrigger:
        """The trigger that waits for ``job_name`` in the triggerer."""
        return SageMakerJobTrigger(
            job_name=job_name,
            job_type=self.kind.job_type,
            waiter_delay=self.poll_interval,
            waiter_max_attempts=self.max_attempts,
            aws_conn_id=self.sagemaker.aws_conn_id,
            region_name=self.sagemaker.region,
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Resume after the trigger fired: let the provider's operator judge the event, then collect."""
        self.job_name = (event or {}).get("job_name") or self.job_name
        operator = self.provider_operator({self.kind.name_key: self.job_name})
        return self.outcome(context, lambda: operator.execute_complete(context, event))

    def outcome(self, context: Context, wait: Callable[[], Any]) -> Any:
        """Run ``wait`` (the provider creating and/or waiting) and turn how the job ended into the result."""
        try:
            wait()
        except TaskDeferred as deferred:  # wait in the triggerer, with a trigger that can stop the job
            raise self.own_trigger(deferred) from None
        except MlopsTaskError:
            raise
        except AirflowException as exc:  # the provider's "job failed / stopped / timed out"
            self.log.info(
                "SageMaker %s job %s did not complete: %s", self.kind.noun, self.job_name, one_line(exc)
            )
            return self.ended(context, failed=True)
        except Exception as exc:
            error = self.api_error(exc)
            if error is exc:
                raise
            raise error from None
        return self.ended(context, failed=False)

    def own_trigger(self, deferred: TaskDeferred) -> TaskDeferred:
        """The provider's deferral with its trigger wrapped in ``SageMakerJobTrigger`` (same arguments)."""
        _, kwargs = deferred.trigger.serialize()
        self.log.info("Waiting for SageMaker %s job %s in the triggerer", self.kind.noun, kwargs["job_name"])
        return TaskDeferred(
            trigger=SageMakerJobTrigger(**kwargs),
            method_name=deferred.method_name,
            kwargs=deferred.kwargs,
            timeout=deferred.timeout,
        )

    def ended(self, context: Context, *, failed: bool) -> Any:
        """The job has ended: copy its log, then read the result record (with SageMaker's reason if failed)."""
        name = cast(str, self.job_name)
        description = self.describe_quietly(name)
        self.copy_job_log(name)
        status = description.get(self.kind.status_key)
        if status == "Completed" and not failed:
            self.log.info("SageMaker %s job %s completed", self.kind.noun, name)
            return self.collect(context)
        # a processing container's own words are its ExitMessage; SageMaker's FailureReason is generic
        reason = description.get("ExitMessage") or description.get("FailureReason") or "no reason given"
        job_error = one_line(
            f"SageMaker {self.kind.noun} job {name} {str(status or 'failed').lower()}: {reason}"
        )
        return self.collect(context, job_error=job_error)

    def describe_quietly(self, name: str) -> dict[str, Any]:
        """The job's description, or ``{}`` when it cannot be read (the record still decides)."""
        try:
            return self.kind.describe(self.hook, name)
        except Exception as exc:
            self.log.warning(
                "Could not describe SageMaker %s job %s: %s", self.kind.noun, name, one_line(exc)
            )
            return {}

    def copy_job_log(self, name: str) -> None:
        """Copy the last ``log_lines`` lines of each of the job's CloudWatch log streams into the task log."""
        group = self.kind.log_group
        try:
            logs = self.hook.logs_hook
            streams = logs.get_conn().describe_log_streams(logGroupName=group, logStreamNamePrefix=f"{name}/")
            for stream in streams.get("logStreams", []):
                stream_name = stream["logStreamName"]
                lines = deque(logs.get_log_events(group, stream_name), maxlen=self.log_lines)
                self.log.info("Job log %s:%s (last %d lines):", group, stream_name, len(lines))
                for event in lines:
                    self.log.info("| %s", event["message"].rstrip("\n"))
        except Exception as exc:  # the log is a convenience: never change the task's outcome for it
            self.log.warning(
                "Could not read the CloudWatch log of %s from %s: %s", name, group, one_line(exc)
            )

    def call_api(self, call: Callable[[], Any]) -> Any:
        """A SageMaker API call, with a refused request turned into a one-line task failure."""
        try:
            return call()
        except MlopsTaskError:
            raise
        except Exception as exc:
            error = self.api_error(exc)
            if error is exc:
                raise
            raise error from None

    def api_error(self, exc: Exception) -> Exception:
        """A one-line task failure for an API error: deterministic unless SageMaker said try later."""
        from botocore.exceptions import BotoCoreError, ClientError

        if isinstance(exc, ClientError):
            error = cast("ClientError", exc).response.get("Error", {})
            code, message = error.get("Code", "Unknown"), error.get("Message", str(exc))
            text = (
                f"pipeline {self.pipeline}: SageMaker refused the {self.kind.noun} job {self.job_name} "
                f"({code}: {one_line(message, 300)}); check {self.section_path} (role_arn, image, "
                f"instance_type, output_path) and the connection {self.sagemaker.aws_conn_id!r}"
            )
            return PipelineRetryable(text) if code in _TRANSIENT_API_ERRORS else PipelineFailed(text)
        if isinstance(exc, BotoCoreError):
            return PipelineRetryable(
                f"pipeline {self.pipeline}: could not reach SageMaker for {self.kind.noun} job {self.job_name}: "
                f"{one_line(exc, 300)}"
            )
        return exc

    def on_kill(self) -> None:
        """Stop the job this task started or adopted."""
        if self.job_name:
            self.log.info("The task was killed; stopping SageMaker %s job %s", self.kind.noun, self.job_name)
            stop_job(self.hook, self.kind, self.job_name)
