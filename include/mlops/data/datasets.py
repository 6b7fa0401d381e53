"""The catalogue of published datasets that training reads: every validated batch, oldest first."""

from __future__ import annotations

import pandas as pd

from include.mlops import storage
from include.mlops.errors import DataError
from include.mlops.spec import PipelineSpec


def published_datasets(spec: PipelineSpec) -> list[dict]:
    """Manifests of every complete published dataset, oldest first, with their ``uri``."""
    manifests = []
    for folder in storage.list_dirs(spec.uri("datasets")):
        if storage.is_complete(folder):
            manifest = storage.read_json(storage.join(folder, storage.SUCCESS))
            manifests.append({**manifest, "uri": folder})
    return sorted(manifests, key=lambda m: m.get("published_at", 0))


def load_training_frame(spec: PipelineSpec) -> tuple[pd.DataFrame, list[dict]]:
    """All published datasets, concatenated; later batches win on duplicate ids."""
    manifests = published_datasets(spec)
    if not manifests:
        raise DataError(f"pipeline {spec.name}: no validated dataset has been published yet")
    frames = []
    for manifest in manifests:  # through fsspec, not pyarrow's own s3/gcs client
        with storage.open_binary(storage.join(manifest["uri"], "data.parquet")) as handle:
            frames.append(pd.read_parquet(handle))
    frame = pd.concat(frames, ignore_index=True)
    if spec.data.id_column:
        frame = frame.drop_duplicates(subset=[spec.data.id_column], keep="last", ignore_index=True)
    return frame, manifests
