"""Builds the stage DAGs of one pipeline spec. Cheap at parse time: no heavy imports here."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypedDict

from airflow.sdk import DAG, AssetOrTimeSchedule, CronTriggerTimetable, Param, TriggerRule
from airflow.sdk.definitions.asset import BaseAsset

from include.mlops.spec import PipelineSpec
from include.mlops.tags import GATE_DECISION
from mlops_airflow.assets import PipelineAssets, landing_asset, pipeline_assets
from mlops_airflow.operators.ingest import (
    AnnounceDatasetsOperator,
    DiscoverLandedFilesOperator,
    ValidateAndPublishOperator,
)
from mlops_airflow.operators.model import (
    EvaluateModelOperator,
    PromoteModelOperator,
    RollbackModelOperator,
    TrainModelOperator,
)
from mlops_airflow.operators.monitoring import (
    CollectPredictionsOperator,
    DriftCheckOperator,
    ListScoringPartitionsOperator,
    PerformanceCheckOperator,
    RequestRetrainOperator,
    ResolveChampionOperator,
    ScorePartitionOperator,
)
from mlops_airflow.operators.remote import remote_operator

START = datetime(2026, 1, 1)
GATE_TAGS = GATE_DECISION.rpartition(".")[0] + ".*"  # "mlops.gate.*", named in the approval's body


def dag_id(pipeline: str, stage: str) -> str:
    """``<pipeline>__<stage>``: the one naming rule the UI, the tests and the tools rely on."""
    return f"{pipeline}__{stage}"


def _default_args(spec: PipelineSpec) -> dict[str, Any]:
    """Retries with exponential backoff for transient failures; deterministic ones never retry."""
    return {
        "owner": spec.owner,
        "retries": 2,
        "retry_delay": timedelta(seconds=20),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
    }


def schedules_enabled() -> bool:
    """``MLOPS_DISABLE_SCHEDULES=1`` keeps only Asset and UI triggers (the demo and e2e tests use it)."""
    return os.environ.get("MLOPS_DISABLE_SCHEDULES", "").lower() not in {"1", "true", "yes"}


def _cron(cron: str | None) -> str | None:
    """The spec's cron, unless schedules are disabled."""
    return cron if schedules_enabled() else None


def _cron_or_assets(cron: str | None, assets: BaseAsset) -> BaseAsset | AssetOrTimeSchedule:
    """Run on the Assets, and also on the spec's cron (as a sweep) when one is set and enabled."""
    cron = _cron(cron)
    if not cron:
        return assets
    if cron.startswith("@"):
        cron = {
            "@hourly": "0 * * * *",
            "@daily": "0 0 * * *",
            "@weekly": "0 0 * * 0",
            "@monthly": "0 0 1 * *",
            "@yearly": "0 0 1 1 *",
        }.get(cron, cron)
    return AssetOrTimeSchedule(timetable=CronTriggerTimetable(cron, timezone="UTC"), assets=assets)


class DagArgs(TypedDict):
    """The keyword arguments every stage DAG of a pipeline shares (typed, so each DAG call is checked)."""

    start_date: datetime
    catchup: bool
    default_args: dict[str, Any]
    tags: list[str]
    doc_md: str | None


def _dag_args(spec: PipelineSpec) -> DagArgs:
    """Start date, catch-up, retry policy, tags and docs shared by the pipeline's DAGs."""
    return DagArgs(
        start_date=START,
        catchup=False,
        default_args=_default_args(spec),
        tags=["mlops", f"pipeline:{spec.name}", *spec.tags],
        doc_md=spec.description or None,
    )


def ingest_dag(spec: PipelineSpec, assets: PipelineAssets, common: DagArgs) -> DAG:
    """``<p>__ingest``: claim landed files, validate each one (mapped), announce what was published."""
    with DAG(
        dag_id(spec.name, "ingest"),
        # data.trigger: event -> the landing watcher's Asset (plus data.schedule as a sweep, if set).
        schedule=(
            _cron_or_assets(spec.data.schedule, landing_asset(spec))
            if spec.data.trigger == "event"
            else _cron(spec.data.schedule)
        ),
        description=f"Validate files landed in {spec.data.landing}; publish or quarantine them",
        max_active_runs=1,
        **common,
    ) as dag:
        discover = DiscoverLandedFilesOperator(task_id="discover", pipeline=spec.name)
        validate = ValidateAndPublishOperator.partial(
            task_id="validate", retries=0, pipeline=spec.name
        ).expand(uri=discover.output)
        announce = AnnounceDatasetsOperator(
            task_id="announce",
            validate_task_id="validate",
            outlets=[assets.validated],
            trigger_rule=TriggerRule.ALL_DONE,
            pipeline=spec.name,
        )
        # A leaf that fails when any file was quarantined, so the run shows as failed.
        from airflow.providers.standard.operators.empty import EmptyOperator

        verdict = EmptyOperator(task_id="all_files_valid", trigger_rule=TriggerRule.ALL_SUCCESS)
        validate >> [announce, verdict]
    return dag


def train_dag(spec: PipelineSpec, assets: PipelineAssets, common: DagArgs) -> DAG:
    """``<p>__train``: train on new validated data or on a retraining request."""
    with DAG(
        dag_id(spec.name, "train"),
        schedule=assets.validated | assets.retrain_requested,
        description=f"Train {spec.training.estimator} ({spec.training.backend}) and register a candidate",
        max_active_runs=1,
        **common,
    ) as dag:
        backend, _ = spec.backend_of("training")
        if backend == "local":
            TrainModelOperator(task_id="train", outlets=[assets.candidate], pipeline=spec.name)
        else:  # a pod, a SageMaker training job or a Vertex custom job runs the same entry point
            remote_operator(backend)(
                task_id="train", stage="train", outlets=[assets.candidate], pipeline=spec.name
            )
    return dag


def evaluate_dag(spec: PipelineSpec, assets: PipelineAssets, common: DagArgs) -> DAG:
    """``<p>__evaluate``: gate each new candidate (or a version given in the UI)."""
    with DAG(
        dag_id(spec.name, "evaluate"),
        schedule=assets.candidate,
        description=f"Gate the candidate on thresholds and against the champion ({spec.evaluation.primary_metric})",
        max_active_runs=1,
        params={
            "version": Param(None, type=["null", "string"], description="Model version (default: challenger)")
        },
        **common,
    ) as dag:
        EvaluateModelOperator(
            task_id="evaluate",
            version="{{ params.version or '' }}",
            outlets=[assets.approved],
            pipeline=spec.name,
        )
    return dag


def promote_dag(spec: PipelineSpec, assets: PipelineAssets, common: DagArgs) -> DAG:
    """``<p>__promote``: compare-and-set promotion, behind a human approval when the spec asks."""
    with DAG(
        dag_id(spec.name, "promote"),
        schedule=assets.approved,
        description="Move the champion alias to the approved version (compare-and-set)",
        max_active_runs=1,
        params={
            "version": Param(
                None, type=["null", "string"], description="Version to promote (default: approved)"
            )
        },
        **common,
    ) as dag:
        promote = PromoteModelOperator(
            task_id="promote",
            version="{{ params.version or '' }}",
            outlets=[assets.champion],
            pipeline=spec.name,
        )
        if spec.registry.approval == "manual":
            from mlops_airflow.operators.approval import PromotionApprovalOperator

            approve = PromotionApprovalOperator(
                task_id="approve",
                pipeline=spec.name,
                version="{{ params.version or '' }}",
                subject=f"Promote a new {spec.name} champion?",
                body=(
                    "The gate passed for the candidate that triggered this run. Read its decision record "
                    f"(tags `{GATE_TAGS}` and artifact `gate/` of its MLflow run), then Approve or Reject. "
                    "A rejection is recorded in the model's promotion history."
                ),
                retries=0,
            )
            approve >> promote
    return dag


def rollback_dag(spec: PipelineSpec, assets: PipelineAssets, common: DagArgs) -> DAG:
    """``<p>__rollback``: one UI trigger restores the previous (or a named) champion."""
    with DAG(
        dag_id(spec.name, "rollback"),
        schedule=None,
        description="Restore previous_champion (or a named version) as champion",
        max_active_runs=1,
        params={"to_version": Param(None, type=["null", "string"], description="Default: previous_champion")},
        **common,
    ) as dag:
        RollbackModelOperator(
            task_id="rollback",
            to_version="{{ params.to_version or '' }}",
            outlets=[assets.champion],
            pipeline=spec.name,
        )
    return dag


def inference_dag(spec: PipelineSpec, assets: PipelineAssets, common: DagArgs) -> DAG:
    """``<p>__inference``: score new partitions with one pinned champion, one mapped task each."""
    with DAG(
        dag_id(spec.name, "inference"),
        schedule=_cron_or_assets(spec.inference.schedule, assets.champion),
        description=f"Score new inputs in {spec.inference.input} with the champion",
        max_active_runs=1,
        params={"rescore": Param(False, type="boolean", description="Score every input again")},
        **common,
    ) as dag:
        # One mapped task per pending partition (input file or date folder), all with the version
        # `resolve` pinned; `collect` runs once every partition is committed.
        partitions = ListScoringPartitionsOperator(
            task_id="partitions", rescore="{{ params.rescore }}", pipeline=spec.name
        )
        resolve = ResolveChampionOperator(task_id="resolve", pipeline=spec.name)
        backend, _ = spec.backend_of("inference")
        scorer: Any = ScorePartitionOperator
        remote: dict[str, Any] = {}
        if backend != "local":  # each partition its own pod / processing job / custom job
            scorer, remote = remote_operator(backend), {"stage": "score-partition"}
        score = scorer.partial(
            task_id="score",
            champion=resolve.output,
            map_index_template="{{ task.partition.rstrip('/').rsplit('/', 1)[-1] }}",
            max_active_tis_per_dag=spec.inference.parallelism,
            pipeline=spec.name,
            **remote,
        ).expand(partition=partitions.output)
        partitions >> resolve  # nothing to score: no MLflow call
        CollectPredictionsOperator(
            task_id="collect",
            champion=resolve.output,
            results=score.output,
            outlets=[assets.predictions],
            pipeline=spec.name,
        )
    return dag


def drift_dag(spec: PipelineSpec, assets: PipelineAssets, common: DagArgs) -> DAG:
    """``<p>__drift``: check drift (and labelled performance) and request retraining when due."""
    with DAG(
        dag_id(spec.name, "drift"),
        schedule=_cron(spec.monitoring.schedule),
        description="Compare recent scoring inputs with the training reference (Evidently)",
        max_active_runs=1,
        **common,
    ) as dag:
        check = DriftCheckOperator(task_id="check_drift", pipeline=spec.name)
        labelled = spec.monitoring.labels is not None
        request = RequestRetrainOperator(
            task_id="request_retrain",
            drift_task_id="check_drift",
            performance_task_id="check_performance" if labelled else None,
            outlets=[assets.retrain_requested],
            # with labels: act on whichever check found something (no labels yet skips one of them)
            trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS if labelled else TriggerRule.ALL_SUCCESS,
            pipeline=spec.name,
        )
        check >> request
        if labelled:
            PerformanceCheckOperator(task_id="check_performance", pipeline=spec.name) >> request
    return dag


StageBuilder = Callable[[PipelineSpec, PipelineAssets, DagArgs], DAG]
STAGES: tuple[StageBuilder, ...] = (
    ingest_dag,
    train_dag,
    evaluate_dag,
    promote_dag,
    rollback_dag,
    inference_dag,
    drift_dag,
)


def build_dags(spec: PipelineSpec) -> dict[str, DAG]:
    """All stage DAGs of one pipeline, keyed by dag id."""
    assets = pipeline_assets(spec.name)
    common = _dag_args(spec)
    dags = (build(spec, assets, common) for build in STAGES)
    return {dag.dag_id: dag for dag in dags}
