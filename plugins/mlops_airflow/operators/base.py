"""Shared behaviour of the pipeline tasks: spec loading, MLflow URI, lineage, error translation, notify.

``PipelineMixin`` is mixed into every task class of the project whatever Airflow base it needs
(``BaseOperator`` for the stage operators, ``BaseSensorOperator`` for the landing sensor,
``ApprovalOperator`` for human approval), so all of them load the spec, reach MLflow, tag lineage
and map core errors to Airflow outcomes the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowSkipException

from include.mlops.errors import MlopsError, NothingToDo
from include.mlops.tags import AIRFLOW_DAG_ID, AIRFLOW_RUN_ID, AIRFLOW_TASK_ID
from mlops_airflow.exceptions import PipelineFailed, PipelineRetryable

if TYPE_CHECKING:
    from include.mlops.spec import PipelineSpec
    from mlops_airflow.hooks.mlflow_tracking import MlflowHook

T = TypeVar("T")


def run_core(fn: Callable[[], T]) -> T:
    """Call the core the way every task does: deterministic core errors fail without retry (a bad
    file, a failed gate), transient ones retry (a service down), "nothing to do" skips."""
    try:
        return fn()
    except NothingToDo as exc:
        raise AirflowSkipException(str(exc)) from None
    except MlopsError as exc:
        if exc.deterministic:
            raise PipelineFailed(str(exc)) from None
        raise PipelineRetryable(str(exc)) from exc


class PipelineMixin:
    """What every task of a pipeline shares, whatever its Airflow base class.

    The concrete class's keyword-only constructor stores ``pipeline`` (and ``mlflow_conn_id`` when
    the task reaches MLflow); everything else is computed on first use, at run time, so building a
    DAG never reads a spec file or a connection.
    """

    pipeline: str
    mlflow_conn_id: str

    if TYPE_CHECKING:

        @property
        def log(self) -> Any:
            """The task logger (provided by the Airflow base class)."""

    @cached_property
    def spec(self) -> PipelineSpec:
        """The pipeline's validated spec, read once per task run (not at DAG parse)."""
        from include.mlops.spec import find_spec

        return find_spec(self.pipeline)

    @cached_property
    def mlflow_hook(self) -> MlflowHook:
        """The MLflow hook, built lazily so that parsing never resolves a connection."""
        from mlops_airflow.hooks.mlflow_tracking import MlflowHook

        return MlflowHook(mlflow_conn_id=self.mlflow_conn_id)

    @cached_property
    def tracking_uri(self) -> str:
        """The tracking URI of ``mlflow_conn_id``, resolved once per task run."""
        return self.mlflow_hook.get_tracking_uri()

    @staticmethod
    def lineage(context: Context) -> dict[str, str]:
        """Tags naming this task instance, written on MLflow runs so that a retry can find its work."""
        return {
            AIRFLOW_DAG_ID: context["dag"].dag_id,
            AIRFLOW_RUN_ID: context["run_id"],
            AIRFLOW_TASK_ID: context["task"].task_id,
        }

    def call_core(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` (a call on the core) with core errors translated to Airflow outcomes."""
        return run_core(fn)

    def notify(
        self,
        context: Context,
        event: str,
        summary: str,
        *,
        report: str | None = None,
        links: dict[str, str] | None = None,
    ) -> None:
        """Send ``event`` if the spec asks for it. A notification that cannot be sent is logged as a
        warning and never changes the task's outcome."""
        from include.mlops.notifications import Notice, wanted
        from mlops_airflow.notifiers import PipelineEventNotifier

        if not wanted(self.spec, event):
            return
        settings = self.spec.notifications
        notice = Notice(
            pipeline=self.pipeline,
            event=event,
            summary=summary,
            report=report,
            links={f"MLflow {name}": url for name, url in (links or {}).items()},
            where=f"{context['dag'].dag_id} / {context['run_id']} / {context['task'].task_id}",
        )
        try:
            PipelineEventNotifier(
                notice=notice,
                notifier=settings.notifier,
                to=settings.to,
                from_email=settings.from_email,
                smtp_conn_id=settings.smtp_conn_id,
            )(context)
        except Exception as exc:  # the event happened either way; say the message did not go out
            self.log.warning("Could not send the %s notification (%s): %s", event, settings.notifier, exc)


class PipelineOperator(PipelineMixin, BaseOperator):
    """Base of every stage operator. Subclasses implement ``run(context)`` with calls on the core."""

    template_fields: tuple[str, ...] = ("pipeline", "mlflow_conn_id")
    ui_color = "#e8f1fb"

    def __init__(self, *, pipeline: str, mlflow_conn_id: str = "mlflow_default", **kwargs: Any) -> None:
        """Only store the values: the spec and the connection are read when the task runs."""
        super().__init__(**kwargs)
        self.pipeline = pipeline
        self.mlflow_conn_id = mlflow_conn_id

    def execute(self, context: Context) -> Any:
        """Run the stage with core errors translated (fail, retry or skip) and failures notified."""
        return self.call_core(lambda: self._run_and_notify(context))

    def _run_and_notify(self, context: Context) -> Any:
        """``run``, with a notification for the failures a person should hear about."""
        from include.mlops.errors import GateFailed, ValidationFailed

        try:
            return self.run(context)
        except ValidationFailed as exc:
            self.notify(context, "quarantined", str(exc), report=exc.report_uri)
            raise
        except GateFailed as exc:
            decision = exc.decision or {}
            report = decision.get("report_artifact")
            run_link = getattr(self, "mlflow_links", {}).get("run")
            self.notify(
                context,
                "gate_failed",
                str(exc),
                report=f"{run_link} (artifact {report})" if run_link and report else report,
                links=getattr(self, "mlflow_links", {}),
            )
            raise

    def run(self, context: Context) -> Any:
        """The stage's work (calls on the core); every subclass implements it."""
        raise NotImplementedError
