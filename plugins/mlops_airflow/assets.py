"""The Assets that hand work from one stage DAG to the next, per pipeline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from airflow.sdk import Asset, AssetWatcher

if TYPE_CHECKING:
    from include.mlops.spec import PipelineSpec


@dataclass(frozen=True)
class PipelineAssets:
    """The Assets one pipeline's stage DAGs hand work over with (one per stage outcome)."""

    validated: Asset
    candidate: Asset
    approved: Asset
    champion: Asset
    retrain_requested: Asset
    predictions: Asset


def pipeline_assets(pipeline: str) -> PipelineAssets:
    """A pipeline's Assets, named ``mlops.<pipeline>.<stage>`` so that names never collide."""

    def make(stage: str) -> Asset:
        # Name-only Assets: a URI scheme would make Airflow load every provider's URI normalizers
        # (and boto3 with them) at DAG-parse time.
        return Asset(name=f"mlops.{pipeline}.{stage}", group="mlops")

    return PipelineAssets(
        validated=make("validated"),
        candidate=make("candidate"),
        approved=make("approved"),
        champion=make("champion"),
        retrain_requested=make("retrain-requested"),
        predictions=make("predictions"),
    )


def landing_asset(spec: PipelineSpec) -> Asset:
    """``mlops.<p>.landed``, updated by a watcher of the landing zone (for ``data.trigger: event``).

    The watcher's trigger runs in the triggerer while a DAG scheduled on this Asset is active and
    unpaused; each of its events is an Asset event that starts ``<p>__ingest``. With
    ``data.events`` the trigger receives S3 notifications from the pipeline's SQS queue
    (``S3EventQueueTrigger``); otherwise it polls the landing zone (``LandingFileTrigger``).
    """
    if spec.data.events is not None:
        from mlops_airflow.triggers.s3_events import S3EventQueueTrigger

        watcher = AssetWatcher(name=f"{spec.name}__landing_sqs", trigger=S3EventQueueTrigger.for_spec(spec))
    else:
        from mlops_airflow.triggers.landing import LandingFileTrigger

        watcher = AssetWatcher(
            name=f"{spec.name}__landing", trigger=LandingFileTrigger.for_spec(spec, watch=True)
        )
    return Asset(name=f"mlops.{spec.name}.landed", group="mlops", watchers=[watcher])
