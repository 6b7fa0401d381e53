"""Batch inference, drift check and the retraining request."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from airflow.sdk import Context

from include.mlops.errors import listed
from mlops_airflow.links.mlflow_ui import LINKS, remember
from mlops_airflow.links.reports import DRIFT_LINKS, PERFORMANCE_LINKS
from mlops_airflow.operators.base import PipelineOperator

if TYPE_CHECKING:
    from airflow.sdk import XComArg

    # The champion pinned by the resolve task: its XCom at DAG build time, the dict when the task runs.
    Champion = dict[str, Any] | XComArg


def _flag(value: bool | str) -> bool:
    """A boolean param as rendered by Jinja (``"True"``) or passed as is."""
    return value if isinstance(value, bool) else str(value).strip().lower() == "true"


def _rendered(champion: Champion) -> dict[str, Any]:
    """The pinned champion as the task sees it: Airflow rendered the XComArg before ``run``."""
    return cast("dict[str, Any]", champion)


def _run_key(context: Context) -> str:
    """The run id as a folder name of the run's reports (no ``:`` or ``+``)."""
    return context["run_id"].replace(":", "").replace("+", "")


class ListScoringPartitionsOperator(PipelineOperator):
    """Return the URIs of the partitions to score (one input file or date folder each); skip if none.

    A cleared run lists its own partitions again, so it replaces exactly what it wrote.
    """

    template_fields = (*PipelineOperator.template_fields, "rescore")

    def __init__(self, *, rescore: bool | str = False, **kwargs: Any) -> None:
        """Only store the value: a boolean or its Jinja rendering (``"True"``)."""
        super().__init__(**kwargs)
        self.rescore = rescore

    def run(self, context: Context) -> list[str]:
        """The partitions still to score (or all of them with ``rescore``)."""
        from include.mlops.scoring.inference import list_partitions

        return list_partitions(self.spec, rescore=_flag(self.rescore), redo_run=context["run_id"])


class ResolveChampionOperator(PipelineOperator):
    """Pin the champion to one model version for the whole run; the mapped tasks all load it."""

    operator_extra_links = LINKS

    def run(self, context: Context) -> dict[str, Any]:
        """Resolve the ``champion`` alias once, so every mapped task scores with the same version."""
        from include.mlops.scoring.inference import resolve_champion

        champion = resolve_champion(self.spec, self.tracking_uri)
        remember(self, tracking_uri=self.tracking_uri, model=champion["model"], version=champion["version"])
        return champion


class ScorePartitionOperator(PipelineOperator):
    """Score one partition with the pinned champion and commit its output atomically.

    Mapped over the partitions (``expand(partition=...)``): each one runs, fails and retries alone, and
    a retry replaces the partition's output.
    """

    template_fields = (*PipelineOperator.template_fields, "partition", "champion")

    def __init__(self, *, partition: str, champion: Champion, **kwargs: Any) -> None:
        """Only store the values: one mapped partition and the champion pinned by ``resolve``."""
        super().__init__(**kwargs)
        self.partition = partition
        self.champion = champion

    def run(self, context: Context) -> dict[str, Any]:
        """Score the partition; a retry replaces its output."""
        from include.mlops.scoring.inference import score_partition

        return score_partition(
            self.spec,
            self.partition,
            champion=_rendered(self.champion),
            run_id=context["run_id"],
            tracking_uri=self.tracking_uri,
        )


class CollectPredictionsOperator(PipelineOperator):
    """Summarise what the run scored and emit the predictions Asset event (all partitions committed)."""

    template_fields = (*PipelineOperator.template_fields, "champion", "results")

    def __init__(self, *, champion: Champion, results: Any, **kwargs: Any) -> None:
        """Only store the values: the pinned champion and the mapped scoring results."""
        super().__init__(**kwargs)
        self.champion = champion
        self.results = results

    def run(self, context: Context) -> dict[str, Any]:
        """Summarise the run and put the summary on the predictions Asset event."""
        from include.mlops.scoring.inference import summarize

        summary = summarize(
            _rendered(self.champion), list(self.results[:]) if self.results else []
        )  # one XCom request
        summary.pop("files")  # the manifests stay next to the predictions, not in XCom
        self.log.info(
            "Scored %d partition(s), %d rows, with %s",
            summary["partitions"],
            summary["rows"],
            summary["model_uri"],
        )
        for outlet in self.outlets:
            context["outlet_events"][outlet].extra = {
                "model_version": summary["model_version"],
                "rows": summary["rows"],
                "outputs": summary["outputs"],
            }
        return summary


class DriftCheckOperator(PipelineOperator):
    """Compare the latest scored inputs with the champion's training reference (Evidently)."""

    operator_extra_links = DRIFT_LINKS

    def run(self, context: Context) -> dict[str, Any]:
        """Check drift; notify when it reaches the threshold (the retrain request is a later task)."""
        from include.mlops.monitoring.drift import check

        result = check(self.spec, run_key=_run_key(context), tracking_uri=self.tracking_uri)
        result.pop("columns", None)  # per-column detail stays in the report files, not in XCom
        if result.get("drift_detected"):
            columns = result.get("drifted_columns") or []
            self.notify(
                context,
                "drift_detected",
                f"drift share {result['drift_share']:.2f} reached the threshold {result['threshold']:.2f}; "
                f"drifted columns: {listed(columns) or 'none listed'}",
                report=result.get("report_html"),
            )
        return result


class PerformanceCheckOperator(PipelineOperator):
    """Score the champion's recent predictions against labels that arrived later (``monitoring.labels``)."""

    operator_extra_links = PERFORMANCE_LINKS

    def run(self, context: Context) -> dict[str, Any]:
        """Check the champion on labelled predictions; notify when it fell below the gate."""
        from include.mlops.monitoring.performance import check

        result = check(self.spec, run_key=_run_key(context), tracking_uri=self.tracking_uri)
        if result.get("degraded"):
            self.notify(
                context,
                "performance_degraded",
                f"the champion v{result['model_version']} no longer meets the gate's thresholds on "
                f"labelled predictions: {'; '.join(result['reasons'])}",
                report=result.get("report_json"),
            )
        return result


class RequestRetrainOperator(PipelineOperator):
    """Emit ``retrain-requested`` when drift passed the threshold (or the champion's labelled
    performance fell below the gate's thresholds) and the cool-down and in-flight rules allow it."""

    def __init__(self, *, drift_task_id: str, performance_task_id: str | None = None, **kwargs: Any) -> None:
        """Only store the values: the tasks whose results decide the request."""
        super().__init__(**kwargs)
        self.drift_task_id = drift_task_id
        self.performance_task_id = performance_task_id

    def run(self, context: Context) -> dict[str, Any]:
        """Decide (cool-down, in-flight request), record the decision, and emit the request or skip."""
        from include.mlops import tracking
        from include.mlops.errors import NothingToDo
        from include.mlops.monitoring import retraining

        drift = context["ti"].xcom_pull(task_ids=self.drift_task_id)
        performance = (
            context["ti"].xcom_pull(task_ids=self.performance_task_id) if self.performance_task_id else None
        )
        if not drift and not performance:
            raise NothingToDo(f"pipeline {self.pipeline}: no drift or performance result to act on")
        client = tracking.client(self.tracking_uri)
        with tracking.service_errors(self.tracking_uri):
            requested, reason = retraining.decide(self.spec, drift, performance=performance, client=client)
        retraining.record(self.spec, drift, requested=requested, reason=reason, performance=performance)
        if not requested:
            self.log.info("Retraining held back: %s", reason)
            raise NothingToDo(f"pipeline {self.pipeline}: no retraining requested: {reason}")
        self.log.info("Requesting retraining: %s", reason)
        for outlet in self.outlets:
            context["outlet_events"][outlet].extra = {
                "drift_share": (drift or {}).get("drift_share"),
                "report": (drift or {}).get("report_html") or (performance or {}).get("report_json"),
                "reason": reason,
            }
        return {"requested": True, "reason": reason}
