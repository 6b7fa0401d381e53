"""Wait, inside a DAG, for complete files in a pipeline's landing zone."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator, Context, PokeReturnValue, conf

from mlops_airflow.exceptions import PipelineRetryable
from mlops_airflow.hooks.landing import run_sync
from mlops_airflow.operators.base import PipelineMixin
from mlops_airflow.triggers.landing import LandingFileTrigger


class LandingFileSensor(PipelineMixin, BaseSensorOperator):
    """Return the URIs of the complete, unprocessed files in a pipeline's landing zone.

    Deferrable when ``deferrable`` is true (default: Airflow's ``[operators] default_deferrable``, as
    for the providers' sensors): it checks once, then waits in the triggerer
    (``LandingFileTrigger``), not in a worker slot. It only looks; the ingest DAG's ``discover`` task
    claims the files. The landing URI, connection, settle time and poll interval come from the
    pipeline's spec unless they are given here. A bad spec or landing URI fails without retry; a
    store that is down is retried.
    """

    template_fields = ("pipeline", "landing", "conn_id")
    ui_color = "#e8f1fb"

    def __init__(
        self,
        *,
        pipeline: str,
        landing: str | None = None,
        conn_id: str | None = None,
        settle_seconds: int | None = None,
        poll_interval: float | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        """Only store the values: the spec is read when the sensor runs."""
        super().__init__(**kwargs)
        self.pipeline = pipeline
        self.landing = landing
        self.conn_id = conn_id
        self.settle_seconds = settle_seconds
        self.poll_interval = poll_interval
        self.deferrable = deferrable

    def make_trigger(self) -> LandingFileTrigger:
        """The one-shot trigger (``watch=False``) for this pipeline's landing zone."""
        return LandingFileTrigger.for_spec(
            self.spec,
            watch=False,
            landing=self.landing,
            conn_id=self.conn_id,
            settle_seconds=self.settle_seconds,
            poll_interval=self.poll_interval,
        )

    def ready_now(self) -> list[str]:
        """The URIs ready at this moment, listed in the worker with the trigger's own rules."""
        _, pending = self.call_core(lambda: run_sync(self.make_trigger().ready_files()))
        return [f.uri for f in pending]

    def poke(self, context: Context) -> PokeReturnValue:
        """One look (non-deferrable mode): done as soon as a file is ready."""
        uris = self.ready_now()
        return PokeReturnValue(is_done=bool(uris), xcom_value=uris)

    def execute(self, context: Context) -> list[str] | None:
        """Return at once if files are ready, else defer to the trigger (or poke when not deferrable)."""
        if not self.deferrable:
            return super().execute(context)
        uris = self.ready_now()
        if uris:
            self.log.info("%d file(s) are ready: %s", len(uris), uris)
            return uris
        self.defer(
            trigger=self.call_core(self.make_trigger),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout) if self.timeout else None,
        )
        return None  # never reached: defer() raises

    def execute_complete(self, context: Context, event: dict[str, Any]) -> list[str]:
        """The trigger's event: the ready files, or an error the task's retries may overcome."""
        if event.get("status") != "success":
            raise PipelineRetryable(
                f"pipeline {self.pipeline}: watching the landing zone failed: {event.get('message')}"
            )
        uris = [f["uri"] for f in event["files"]]
        self.log.info("%d file(s) are ready: %s", len(uris), uris)
        return uris
