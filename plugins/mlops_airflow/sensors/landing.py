"""Wait, inside a DAG, for complete files in a pipeline's landing zone."""

from __future__ import annotations

from datetime import timedelta
from functools import cached_property
from typing import Any

from airflow.sdk import BaseSensorOperator, Context, PokeReturnValue
from airflow.sdk.exceptions import AirflowException

from mlops_airflow.operators.base import run_core
from mlops_airflow.triggers.landing import LandingFileTrigger, run_sync


class LandingFileSensor(BaseSensorOperator):
    """Return the URIs of the complete, unprocessed files in a pipeline's landing zone.

    Deferrable by default: it checks once, then waits in the triggerer (``LandingFileTrigger``),
    not in a worker slot. It only looks; the ingest DAG's ``discover`` task claims the files. The
    landing URI, connection, settle time and poll interval come from the pipeline's spec unless
    they are given here.
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
        deferrable: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pipeline = pipeline
        self.landing = landing
        self.conn_id = conn_id
        self.settle_seconds = settle_seconds
        self.poll_interval = poll_interval
        self.deferrable = deferrable

    @cached_property
    def spec(self):
        from include.mlops.spec import find_spec

        return find_spec(self.pipeline)

    # A bad spec or landing URI fails without retry; a store that is down is retried.
    _core = staticmethod(run_core)

    def make_trigger(self) -> LandingFileTrigger:
        return LandingFileTrigger.for_spec(
            self.spec,
            watch=False,
            landing=self.landing,
            conn_id=self.conn_id,
            settle_seconds=self.settle_seconds,
            poll_interval=self.poll_interval,
        )

    def ready_now(self) -> list[str]:
        _, pending = self._core(lambda: run_sync(self.make_trigger().ready_files()))
        return [f.uri for f in pending]

    def poke(self, context: Context) -> PokeReturnValue:
        uris = self.ready_now()
        return PokeReturnValue(is_done=bool(uris), xcom_value=uris)

    def execute(self, context: Context) -> list[str] | None:
        if not self.deferrable:
            return super().execute(context)
        uris = self.ready_now()
        if uris:
            self.log.info("%d file(s) are ready: %s", len(uris), uris)
            return uris
        self.defer(
            trigger=self._core(self.make_trigger),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout) if self.timeout else None,
        )
        return None  # never reached: defer() raises

    def execute_complete(self, context: Context, event: dict[str, Any]) -> list[str]:
        if event.get("status") != "success":
            raise AirflowException(
                f"pipeline {self.pipeline}: watching the landing zone failed: {event.get('message')}"
            )
        uris = [f["uri"] for f in event["files"]]
        self.log.info("%d file(s) are ready: %s", len(uris), uris)
        return uris
