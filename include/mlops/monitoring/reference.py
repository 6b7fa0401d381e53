"""The drift reference of a model version: what its training data and predictions looked like.

Training writes it next to the model (``write_reference``): per-column statistics of every training
row and of the model's predictions on them, plus a row sample and its predictions. The drift check
loads it back (``load_reference``) to compare the scoring window with.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from include.mlops.artifacts import (
    REFERENCE_ARTIFACT,
    REFERENCE_PREDICTIONS_ARTIFACT,
    REFERENCE_PROFILE_ARTIFACT,
    download_run_frame,
)
from include.mlops.monitoring import drift_stats
from include.mlops.monitoring.drift_stats import ColumnSummary
from include.mlops.predictor import predict_frame

log = logging.getLogger(__name__)


def write_reference(
    folder: Path, model: Any, features: pd.DataFrame, sample: pd.DataFrame, *, seed: int
) -> None:
    """What the drift check compares with: statistics of all training rows, predictions of the sample."""
    profile = build_reference_profile(model, features, seed=seed)
    (folder / "reference_profile.json").write_text(json.dumps(profile), encoding="utf-8")
    predict_frame(model, sample).to_parquet(folder / "reference_predictions.parquet", index=False)


PREDICTION_REFERENCE_ROWS = 200_000  # training rows the model scores for the prediction reference


@dataclass
class Reference:
    """A model version's drift reference, as loaded from its training run."""

    features: dict[str, ColumnSummary]
    predictions: dict[str, ColumnSummary]
    sample: pd.DataFrame
    prediction_sample: pd.DataFrame | None = None

    @property
    def rows(self) -> int:
        """Rows of the training set behind the profile (nulls included)."""
        return max((s.rows + s.nulls for s in self.features.values()), default=0)


def build_reference_profile(model: Any, features: pd.DataFrame, *, seed: int) -> dict[str, Any]:
    """Per-column statistics of the training features and of the model's predictions on them."""
    started = time.monotonic()
    scored = features.sample(min(len(features), PREDICTION_REFERENCE_ROWS), random_state=seed)
    predictions = drift_stats.profile_frame(predict_frame(model, scored))
    profile = drift_stats.profile_to_json(drift_stats.profile_frame(features), predictions)
    log.info(
        "Drift reference profile of %d rows x %d columns (%d scored) in %.1f s",
        len(features),
        features.shape[1],
        len(scored),
        time.monotonic() - started,
    )
    return profile


def load_reference(run_id: str, client: Any = None) -> Reference:
    """The champion run's reference; runs older than the profile fall back to the row sample."""
    import mlflow
    import pyarrow.parquet as pq

    client = client or mlflow.MlflowClient()
    present = {a.path for a in client.list_artifacts(run_id, "data")}
    sample = download_run_frame(run_id, REFERENCE_ARTIFACT)
    if REFERENCE_PROFILE_ARTIFACT not in present:
        log.info("Run %s has no %s; using its reference sample", run_id, REFERENCE_PROFILE_ARTIFACT)
        return Reference(features=drift_stats.profile_frame(sample), predictions={}, sample=sample)
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=REFERENCE_PROFILE_ARTIFACT, dst_path=tmp
        )
        features, predictions = drift_stats.profile_from_json(json.loads(Path(path).read_text()))
        prediction_sample = None
        if REFERENCE_PREDICTIONS_ARTIFACT in present:
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=REFERENCE_PREDICTIONS_ARTIFACT, dst_path=tmp
            )
            prediction_sample = pq.read_table(path).to_pandas()
    return Reference(features, predictions, sample, prediction_sample)
