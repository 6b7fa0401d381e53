"""Run a remote stage (``train``, ``score-partition``) as a Vertex AI custom job.

``VertexStageOperator`` builds the exact ``google.cloud.aiplatform_v1.CustomJob`` for the spec's
``vertex:`` section (the project image running ``python -m include.mlops``, machine, accelerators,
service account, network, a run-scoped ``base_output_directory`` so that ``AIP_MODEL_DIR`` is per
task instance, a timeout, labels naming the task instance) and submits it through the google
provider's ``CustomJobHook`` (``create_custom_job``, ``list_custom_jobs``, ``wait_for_custom_job``,
``cancel_custom_job``). Deferrable by default (Airflow's ``[operators] default_deferrable``): it then
waits in the triggerer with ``VertexCustomJobTrigger``, which runs the provider's ``CustomJobTrigger``
and adds what it lacks: cancelling the job when a user kills the deferred task.

Why the hook and not ``CreateCustomJobOperator``: that operator always creates a job, keeps the job
id to itself until it has finished waiting, and defers to a trigger without ``on_kill``; a retry here
must adopt a job of the same lineage that is still running, and the job must be cancelled however
the task is killed. The waiting (sync polling and the trigger) is the provider's own code.

The job writes its result record (``include.mlops.remote``) to the pipeline's state area; the task
reads it back when the job ends. Cheap to import: google-cloud and the provider's hook modules are
imported when the task runs.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

from airflow.sdk import Context, conf
from airflow.triggers.base import BaseTrigger, TriggerEvent

from include.mlops.backend_spec import VertexBackend
from mlops_airflow.exceptions import PipelineFailed, PipelineRetryable
from mlops_airflow.operators.remote import RemoteStageOperator

if TYPE_CHECKING:
    from airflow.providers.google.cloud.hooks.vertex_ai.custom_job import CustomJobHook
    from google.cloud.aiplatform_v1 import CustomJob

    from include.mlops.remote import Lineage

# States of a job that is still going: a retried task waits for it instead of starting another.
ACTIVE_STATES = ("JOB_STATE_QUEUED", "JOB_STATE_PENDING", "JOB_STATE_RUNNING", "JOB_STATE_UPDATING")
# Errors of the Vertex API that the same request would get again: fail without retry.
_DETERMINISTIC_API_ERRORS = (
    "InvalidArgument",
    "PermissionDenied",
    "NotFound",
    "FailedPrecondition",
    "Unauthenticated",
)
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
MAX_LABELS = 64
T = TypeVar("T")


def one_line(text: object, limit: int = 500) -> str:
    """``text`` squeezed onto one line (a job's error may span several), at most ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def gcp_labels(labels: dict[str, str]) -> dict[str, str]:
    """Labels made valid for Google Cloud: lower case letters, digits, ``_`` and ``-``, at most 63
    characters, keys starting with a letter (``airflow-mlops/dag-id`` -> ``airflow-mlops_dag-id``)."""

    def clean(text: str) -> str:
        return re.sub(r"[^a-z0-9_-]", "_", text.lower())[:63]

    result = {}
    for key, value in labels.items():
        name = clean(key)
        result[name if name[:1].isalpha() else f"l{name}"[:63]] = clean(value)
    return result


class VertexCustomJobTrigger(BaseTrigger):
    """Wait for a Vertex AI custom job with the provider's ``CustomJobTrigger``, and cancel the job
    when a user kills the deferred task (``on_kill``; the provider's trigger has none).

    The events are the provider's (``status``, ``message``, ``custom_job`` on success) plus ``job``,
    the job's resource name.
    """

    def __init__(
        self,
        *,
        project_id: str,
        location: str,
        custom_job_id: str,
        gcp_conn_id: str = "google_cloud_default",
        poll_interval: float = 30,
    ) -> None:
        super().__init__()
        self.project_id = project_id
        self.location = location
        self.custom_job_id = custom_job_id
        self.gcp_conn_id = gcp_conn_id
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Class path and keyword arguments (primitives only)."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "project_id": self.project_id,
                "location": self.location,
                "custom_job_id": self.custom_job_id,
                "gcp_conn_id": self.gcp_conn_id,
                "poll_interval": self.poll_interval,
            },
        )

    @property
    def job_name(self) -> str:
        """The job's resource name."""
        return f"projects/{self.project_id}/locations/{self.location}/customJobs/{self.custom_job_id}"

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll with the provider's trigger; forward its one event with the job's name added."""
        from airflow.providers.google.cloud.triggers.vertex_ai import CustomJobTrigger

        waiting = CustomJobTrigger(
            project_id=self.project_id,
            location=self.location,
            custom_job_id=self.custom_job_id,
            gcp_conn_id=self.gcp_conn_id,
            poll_interval=self.poll_interval,  # type: ignore[arg-type]  # a float sleeps as well
        )
        async for event in waiting.run():
            yield TriggerEvent({**event.payload, "job": self.job_name})
            return

    async def on_kill(self) -> None:
        """Cancel the job: the user killed the task while it was deferred."""
        from airflow.providers.google.cloud.hooks.vertex_ai.custom_job import CustomJobAsyncHook

        self.log.info("The task was killed; cancelling Vertex AI custom job %s", self.job_name)
        client = await CustomJobAsyncHook(gcp_conn_id=self.gcp_conn_id).get_job_service_client(
            region=self.location
        )
        await client.cancel_custom_job(request={"name": self.job_name})


class VertexStageOperator(RemoteStageOperator):
    """Run ``python -m include.mlops <stage>`` as a Vertex AI custom job and read its result back.

    A retried task first reuses a succeeded result record, then adopts a job of the same lineage
    that is still queued or running, and only then creates a job. The job's resource name is logged
    and kept in ``job_name`` before waiting; ``on_kill`` cancels it (the trigger does the same when
    the task is killed while deferred). A job that fails before writing its record fails the task
    with Vertex's ``error.message`` on one line.
    """

    backend: ClassVar[str] = "vertex"
    ui_color = "#e6f4ea"

    def __init__(
        self,
        *,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 30,
        **kwargs: Any,
    ) -> None:
        """Only store the values; the request is built from the spec when the task runs."""
        super().__init__(**kwargs)
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.job_name: str | None = None

    # The request ------------------------------------------------------------------------------------
    @property
    def vertex(self) -> VertexBackend:
        """The spec's ``vertex:`` section for this stage."""
        return cast(VertexBackend, self.section)  # ``section`` checked that the backend is vertex

    @cached_property
    def hook(self) -> CustomJobHook:
        """The google provider's custom-job hook on the section's connection."""
        from airflow.exceptions import AirflowNotFoundException
        from airflow.providers.google.cloud.hooks.vertex_ai.custom_job import CustomJobHook

        conn_id = self.vertex.gcp_conn_id
        try:
            return CustomJobHook(gcp_conn_id=conn_id)
        except AirflowNotFoundException:
            raise PipelineFailed(
                f"pipeline {self.pipeline}: the Google Cloud connection {conn_id!r} (vertex.gcp_conn_id) is "
                "not defined; add it (an empty google_cloud_platform connection uses workload identity)"
            ) from None

    def output_directory(self, context: Context) -> str:
        """The job's ``base_output_directory``: one folder per task instance (every try shares it)."""
        name = self.lineage_of(context).job_name(self.pipeline, self.stage)
        return f"{self.vertex.staging_bucket}/airflow-mlops/{self.pipeline}/{name}"

    def job_labels(self, lineage: Lineage) -> dict[str, str]:
        """The lineage's labels in Google Cloud's label syntax, then the section's own labels."""
        labels = gcp_labels(
            {**lineage.labels(), "airflow-mlops/pipeline": self.pipeline, "airflow-mlops/stage": self.stage}
        )
        for key, value in self.vertex.labels.items():
            if not _LABEL_KEY.match(key) or not _LABEL_VALUE.match(value):
                raise PipelineFailed(
                    f"pipeline {self.pipeline}: vertex.labels {key}: {value!r} is not a Google Cloud label; "
                    "use lower case letters, digits, '_' and '-' (keys start with a letter, at most 63 each)"
                )
            labels[key] = value
        if len(labels) > MAX_LABELS:
            raise PipelineFailed(
                f"pipeline {self.pipeline}: vertex.labels has {len(self.vertex.labels)} labels; with the "
                f"operator's own that is {len(labels)}, and a custom job takes at most {MAX_LABELS}: drop some"
            )
        return labels

    def machine_spec(self) -> dict[str, Any]:
        """Machine type and accelerators; an accelerator name Vertex does not know fails here."""
        from google.cloud.aiplatform_v1 import AcceleratorType

        spec: dict[str, Any] = {"machine_type": self.vertex.machine_type}
        name = self.vertex.accelerator_type
        if name:
            members: dict[str, Any] = dict(AcceleratorType.__members__)
            if name not in members or name == "ACCELERATOR_TYPE_UNSPECIFIED":
                known = [n for n in members if n.startswith("NVIDIA")][:6]
                raise PipelineFailed(
                    f"pipeline {self.pipeline}: vertex.accelerator_type {name!r} is not a Vertex AI "
                    f"accelerator; use one of {', '.join(known)}, ..."
                )
            spec["accelerator_type"] = members[name]
            spec["accelerator_count"] = self.vertex.accelerator_count
        return spec

    def worker_pools(self, context: Context) -> list[dict[str, Any]]:
        """The primary replica (Vertex wants exactly one in the first pool), then any other replicas."""
        env = {**self.job_env(), **self.vertex.environment}
        pool = {
            "machine_spec": self.machine_spec(),
            "replica_count": 1,
            "disk_spec": {"boot_disk_size_gb": self.vertex.boot_disk_size_gb},
            "container_spec": {
                "image_uri": self.vertex.image,
                "command": self.job_command(),
                "args": self.job_args(context),
                "env": [{"name": name, "value": value} for name, value in env.items()],
            },
        }
        pools = [pool]
        if self.vertex.replica_count > 1:
            pools.append({**pool, "replica_count": self.vertex.replica_count - 1})
        return pools

    def custom_job(self, context: Context) -> CustomJob:
        """The exact ``CustomJob`` this task instance submits (building it checks every field name)."""
        from google.cloud.aiplatform_v1 import CustomJob

        lineage = self.lineage_of(context)
        spec: dict[str, Any] = {
            "worker_pool_specs": self.worker_pools(context),
            "base_output_directory": {"output_uri_prefix": self.output_directory(context)},
            "scheduling": {"timeout": timedelta(seconds=self.vertex.timeout)},
        }
        if self.vertex.service_account:
            spec["service_account"] = self.vertex.service_account
        if self.vertex.network:
            spec["network"] = self.vertex.network
        return CustomJob(
            display_name=lineage.job_name(self.pipeline, self.stage),
            job_spec=spec,
            labels=self.job_labels(lineage),
        )

    # Submitting and waiting ---------------------------------------------------------------------------
    def running_job(self, context: Context) -> CustomJob | None:
        """A job of this task instance that is still queued or running (a previous try's), if any."""
        lineage = self.lineage_of(context)
        wanted = self.job_labels(lineage)
        jobs = self.api(
            "list the custom jobs",
            lambda: list(
                self.hook.list_custom_jobs(
                    project_id=self.vertex.project,
                    region=self.vertex.region,
                    page_size=None,
                    page_token=None,
                    filter=f'display_name="{lineage.job_name(self.pipeline, self.stage)}"',
                    read_mask=None,
                )
            ),
        )
        for job in jobs:
            same = all(job.labels.get(key) == value for key, value in wanted.items())
            if same and job.state.name in ACTIVE_STATES:
                return job
        return None

    def create(self, context: Context) -> CustomJob:
        """Create the custom job for this task instance."""
        request = self.custom_job(context)
        return self.api(
            "create the custom job",
            lambda: self.hook.create_custom_job(
                project_id=self.vertex.project, region=self.vertex.region, custom_job=request
            ),
        )

    def api(self, doing: str, call: Callable[[], T]) -> T:
        """Call the Vertex API; a refused request fails without retry, an outage is retried."""
        from google.api_core.exceptions import GoogleAPICallError

        try:
            return call()
        except GoogleAPICallError as exc:
            message = (
                f"pipeline {self.pipeline}: Vertex AI could not {doing} in {self.vertex.project}/"
                f"{self.vertex.region}: {one_line(exc.message or exc)}"
            )
            if type(exc).__name__ in _DETERMINISTIC_API_ERRORS:
                raise PipelineFailed(message) from None
            raise PipelineRetryable(message) from exc

    def submit(self, context: Context) -> Any:
        """Adopt a running job of this lineage or create one, record its name, then wait for it."""
        job = self.running_job(context)
        if job is not None:
            self.log.info("A job of this task instance is still %s: waiting for it", job.state.name)
        else:
            job = self.create(context)
        self.job_name = job.name
        job_id = self.hook.extract_custom_job_id(custom_job_name=job.name)
        self.log.info(
            "Vertex AI custom job %s (console: https://console.cloud.google.com/vertex-ai/locations/%s/"
            "training/%s/cpu?project=%s)",
            job.name,
            self.vertex.region,
            job_id,
            self.vertex.project,
        )
        if self.deferrable:
            self.defer(
                trigger=VertexCustomJobTrigger(
                    project_id=self.vertex.project,
                    location=self.vertex.region,
                    custom_job_id=job_id,
                    gcp_conn_id=self.vertex.gcp_conn_id,
                    poll_interval=self.poll_interval,
                ),
                method_name="execute_complete",
            )
        return self.wait(context, job_id)

    def wait(self, context: Context, job_id: str) -> Any:
        """Poll with the provider's hook until the job ends, then read the result record."""
        from airflow.exceptions import AirflowException

        error = None
        try:
            self.hook.wait_for_custom_job(
                project_id=self.vertex.project,
                region=self.vertex.region,
                custom_job_id=job_id,
                poll_interval=self.poll_interval,  # a float sleeps as well
            )
        except (RuntimeError, AirflowException) as exc:  # the job failed, was cancelled, or polling did
            error = f"custom job {self.job_name}: {one_line(exc)}"
        return self.collect(context, job_error=error)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Resume after the trigger's event: read the result record, or report the job's error."""
        self.job_name = event.get("job")
        if event.get("status") != "success":
            return self.collect(
                context, job_error=f"custom job {self.job_name}: {one_line(event.get('message'))}"
            )
        self.log.info("%s", event.get("message"))
        return self.collect(context)

    def on_kill(self) -> None:
        """Cancel the job this try is waiting for (the trigger cancels it when the task is deferred)."""
        if not self.job_name:
            return
        from google.api_core.exceptions import GoogleAPICallError

        self.log.info("Cancelling Vertex AI custom job %s", self.job_name)
        try:
            self.hook.cancel_custom_job(
                project_id=self.vertex.project,
                region=self.vertex.region,
                custom_job=self.hook.extract_custom_job_id(custom_job_name=self.job_name),
            )
        except GoogleAPICallError as exc:  # ended meanwhile, or the API is down: say so, kill anyway
            self.log.warning("Could not cancel %s: %s", self.job_name, one_line(exc))
