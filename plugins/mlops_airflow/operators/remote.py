"""What every remote-stage operator shares: the job's command and environment, reuse, the result record.

A remote stage (``train`` or ``score-partition``) runs ``python -m include.mlops`` in the project image
on Kubernetes, SageMaker or Vertex AI. The backend subclasses only build and submit the provider's
request; this base names the task instance (``Lineage``), tells the job where to write its result
record, reuses a record a previous try left, and turns the record into the task's outcome.

The provider's operator (``KubernetesPodOperator``, ``SageMakerTrainingOperator``, ...) is imported
and built inside ``execute``, never at DAG parse: those modules pull the kubernetes client, boto3 or
google-cloud. When it defers, Airflow resumes *this* task by the method name the provider chose, so
each subclass forwards those resume methods to a freshly built provider operator.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from airflow.sdk import Context

from include.mlops.remote import ENTRY_POINT, Lineage, read_record, result_uri
from mlops_airflow.exceptions import PipelineFailed, PipelineRetryable
from mlops_airflow.operators.base import PipelineOperator

if TYPE_CHECKING:
    from include.mlops.backend_spec import BackendSection

RemoteStage = Literal["train", "score-partition"]
_SPEC_STAGE: dict[str, Literal["training", "inference"]] = {
    "train": "training",
    "score-partition": "inference",
}
# Tracking URIs a job outside this machine cannot use: it would log into its own empty store.
_LOCAL_TRACKING = ("sqlite:", "file:", "/", ".")


# The operator class of each remote backend, imported on first use (the modules stay cheap to import).
REMOTE_OPERATORS: dict[str, tuple[str, str]] = {
    "kubernetes": ("mlops_airflow.operators.kubernetes", "KubernetesStageOperator"),
    "sagemaker": ("mlops_airflow.operators.sagemaker", "SageMakerStageOperator"),
    "vertex": ("mlops_airflow.operators.vertex", "VertexStageOperator"),
}


def remote_operator(backend: str) -> type[RemoteStageOperator]:
    """The operator class that runs a stage on ``backend``."""
    from importlib import import_module

    module, name = REMOTE_OPERATORS[backend]
    operator: type[RemoteStageOperator] = getattr(import_module(module), name)
    return operator


class RemoteStageOperator(PipelineOperator):
    """Run one stage as a remote job and read its result record back when the job ends.

    ``stage`` is ``train`` (register a candidate version) or ``score-partition`` (score ``partition``
    with the pinned ``champion``). Subclasses implement ``submit(context)``: build the provider's
    operator and run it (it may defer); after it returns, call ``collect(context)``.
    """

    backend: ClassVar[str] = ""
    template_fields: tuple[str, ...] = (*PipelineOperator.template_fields, "partition", "champion")

    def __init__(
        self,
        *,
        stage: RemoteStage,
        partition: str | None = None,
        champion: Any = None,
        **kwargs: Any,
    ) -> None:
        """Only store the values; the spec, the connections and the job request are built at run time."""
        super().__init__(**kwargs)
        self.stage = stage
        self.partition = partition
        self.champion = champion

    # What the job needs -----------------------------------------------------------------------------
    @property
    def section(self) -> BackendSection:
        """The spec's section for this backend (``training.<backend>`` or the inference one)."""
        backend, section = self.spec.backend_of(_SPEC_STAGE[self.stage])
        if section is None or backend != self.backend:
            raise PipelineFailed(
                f"pipeline {self.pipeline}: {_SPEC_STAGE[self.stage]}.backend is {backend!r}, "
                f"not {self.backend!r}; the DAG is out of date, let the dag-processor parse it again"
            )
        return section

    def lineage_of(self, context: Context) -> Lineage:
        """This task instance, without the try number: every try shares the lineage."""
        map_index = getattr(context["ti"], "map_index", None)  # 0 is the first partition, not "unmapped"
        return Lineage(
            dag_id=context["dag"].dag_id,
            run_id=context["run_id"],
            task_id=context["task"].task_id,
            map_index=-1 if map_index is None else int(map_index),
        )

    def record_uri(self, context: Context) -> str:
        """Where the job writes its result record (run-scoped, under the pipeline's state area)."""
        return result_uri(self.spec.uri("state"), self.lineage_of(context))

    def job_command(self) -> list[str]:
        """The image's entry point (``python -m include.mlops``)."""
        return list(ENTRY_POINT)

    def job_args(self, context: Context) -> list[str]:
        """Arguments of the entry point for this stage and task instance."""
        args = [
            self.stage,
            self.pipeline,
            "--lineage",
            self.lineage_of(context).to_json(),
            "--result-uri",
            self.record_uri(context),
        ]
        if self.stage == "score-partition":
            args += [
                "--partition",
                str(self.partition),
                "--champion",
                json.dumps(self.champion, separators=(",", ":"), default=str),
                "--run-id",
                context["run_id"],
            ]
        return args

    def job_env(self) -> dict[str, str]:
        """Environment of the job: where MLflow and the data are (credentials come from the platform)."""
        from include.mlops.paths import data_root

        tracking = self.tracking_uri
        if tracking.startswith(_LOCAL_TRACKING):
            raise PipelineFailed(
                f"pipeline {self.pipeline}: the {self.backend} backend needs an MLflow tracking server the job "
                f"can reach, but connection {self.mlflow_conn_id!r} points at {tracking}; set its host to "
                "the server's http(s) URL"
            )
        env = {"MLFLOW_TRACKING_URI": tracking, "MLOPS_DATA_ROOT": data_root(), "PYTHONUNBUFFERED": "1"}
        env.update(self.mlflow_hook.job_credentials())
        return env

    # Outcome ----------------------------------------------------------------------------------------
    def finished(self, context: Context) -> dict[str, Any] | None:
        """The result record a previous try left when its job succeeded, else ``None``."""
        found = read_record(self.record_uri(context))
        if found and found.get("status") == "succeeded":
            return found
        return None

    def execute(self, context: Context) -> Any:
        """Reuse a finished job of this task instance, else submit one (the provider may defer)."""
        done = self.finished(context)
        if done is not None:
            self.log.info(
                "A %s job of this task instance already finished (%s); reusing its result instead of running it again",
                self.stage,
                self.record_uri(context),
            )
            self.sweep(context)
            return self.finish(context, done["result"])
        self.log.info("Running %s for pipeline %s on %s", self.stage, self.pipeline, self.backend)
        return self.submit(context)

    def submit(self, context: Context) -> Any:
        """Build the provider's operator and run it, then ``collect``; each backend implements it."""
        raise NotImplementedError

    def sweep(self, context: Context) -> None:
        """Remove what earlier tries of this task instance left on the platform (jobs that end by themselves: nothing)."""

    def collect(self, context: Context, *, job_error: str | None = None) -> Any:
        """Turn the job's result record into the task's outcome.

        ``job_error`` is the platform's one-line reason when the job itself failed (pod exit code,
        OOMKilled, FailureReason): it is used when the job did not get as far as writing a record.
        """
        uri = self.record_uri(context)
        found = read_record(uri)
        if found is None:
            reason = job_error or f"the job ended without writing its result record {uri}"
            raise PipelineRetryable(
                f"pipeline {self.pipeline}: {self.stage} on {self.backend} failed: {reason}"
            )
        if found.get("status") != "succeeded":
            message = f"pipeline {self.pipeline}: {self.stage} on {self.backend} failed: {found.get('error')}"
            raise PipelineFailed(message) if found.get("deterministic") else PipelineRetryable(message)
        return self.finish(context, found["result"])

    def finish(self, context: Context, result: Any) -> Any:
        """What the local operator does with the stage's result (links, Asset events), then return it."""
        if self.stage == "train":
            from mlops_airflow.operators.model import announce_trained

            return announce_trained(self, context, result)
        return result
