"""The Assets that hand work from one stage DAG to the next, per pipeline."""

from __future__ import annotations

from dataclasses import dataclass

from airflow.sdk import Asset


@dataclass(frozen=True)
class PipelineAssets:
    validated: Asset
    candidate: Asset
    approved: Asset
    champion: Asset
    retrain_requested: Asset


def pipeline_assets(pipeline: str) -> PipelineAssets:
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
    )
