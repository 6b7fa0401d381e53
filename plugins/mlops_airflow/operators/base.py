"""Shared behaviour of the pipeline operators: spec loading, MLflow URI, error translation."""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import Any, TypeVar

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from include.mlops.errors import MlopsError, NothingToDo

T = TypeVar("T")


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
        return self.call_core(lambda: self.run(context))

    def run(self, context: Context) -> Any:
        raise NotImplementedError

    def call_core(self, fn: Callable[[], T]) -> T:
        """Deterministic core errors fail without retry; transient ones retry; "nothing to do" skips."""
        try:
            return fn()
        except NothingToDo as exc:
            raise AirflowSkipException(str(exc)) from None
        except MlopsError as exc:
            if exc.deterministic:
                raise AirflowFailException(str(exc)) from None
            raise AirflowException(str(exc)) from exc
