"""Names of the artifacts every training run logs, and how to read them back.

Training writes them (``model/training.py``); the gate reads the holdout and monitoring reads the
reference (``monitoring/reference.py``). One place for the names keeps writer and readers in step.
"""

from __future__ import annotations

import tempfile
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

HOLDOUT_ARTIFACT = "data/holdout.parquet"
REFERENCE_ARTIFACT = "data/reference.parquet"
# Drift reference: per-column statistics of the whole training set and of the model's predictions
# (include/mlops/monitoring/drift_stats.py), and the predictions on the REFERENCE_ARTIFACT rows, in order.
REFERENCE_PROFILE_ARTIFACT = "data/reference_profile.json"
REFERENCE_PREDICTIONS_ARTIFACT = "data/reference_predictions.parquet"
DATA_ARTIFACTS = (
    HOLDOUT_ARTIFACT,
    REFERENCE_ARTIFACT,
    REFERENCE_PROFILE_ARTIFACT,
    REFERENCE_PREDICTIONS_ARTIFACT,
)


def download_run_frame(run_id: str, artifact: str) -> pd.DataFrame:
    """A Parquet artifact of a run, read into a DataFrame (the download is removed afterwards)."""
    import mlflow
    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact, dst_path=tmp)
        return pd.read_parquet(path)
