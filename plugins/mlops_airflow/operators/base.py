"""Shared behaviour of the pipeline operators: spec loading, MLflow URI, error translation."""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import Any, TypeVar

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from include.mlops.errors import MlopsError, NothingToDo

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
            raise AirflowFailException(str(exc)) from None
        raise AirflowException(str(exc)) from exc


class PipelineOperator(BaseOperator):
    """Base of every stage operator. Subclasses implement ``run(context)`` with calls on the core."""

    template_fields = ("pipeline", "mlflow_conn_id")
    ui_color = "#e8f1fb"

    def __init__(self, *, pipeline: str, mlflow_conn_id: str = "mlflow_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pipeline = pipeline
        self.mlflow_conn_id = mlflow_conn_id

    @cached_property
    def spec(self):
        from include.mlops.spec import find_spec

        return find_spec(self.pipeline)

    @cached_property
    def tracking_uri(self) -> str:
        from mlops_airflow.hooks.mlflow_tracking import MlflowHook

        return MlflowHook(mlflow_conn_id=self.mlflow_conn_id).get_tracking_uri()

    @staticmethod
    def lineage(context: Context) -> dict[str, str]:
        return {
            "airflow.dag_id": context["dag"].dag_id,
            "airflow.run_id": context["run_id"],
            "airflow.task_id": context["task"].task_id,
        }

    def execute(self, context: Context) -> Any:
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

    def run(self, context: Context) -> Any:
        raise NotImplementedError

    def call_core(self, fn: Callable[[], T]) -> T:
        return run_core(fn)
