"""Training: fit the spec's scikit-learn estimator, log everything to MLflow, register a version.

The same function runs in an Airflow worker or in a training container (``python -m include.mlops
train``). The holdout split is a hash of the id column, so a row stays on the same side of the
split across retrains and the gate compares models on data neither of them was fitted on.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from include.mlops import metrics, tracking
from include.mlops.data.columns import feature_columns
from include.mlops.data.datasets import load_training_frame
from include.mlops.errors import DataError
from include.mlops.model.estimators import build_model
from include.mlops.monitoring.reference import write_reference
from include.mlops.spec import PipelineSpec

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_id: str
    experiment_id: str
    version: str
    model_uri: str
    metrics: dict[str, float]
    training_rows: int
    holdout_rows: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def holdout_mask(frame: pd.DataFrame, spec: PipelineSpec) -> np.ndarray:
    """Stable split: a row's side depends only on its id (or its position when there is no id)."""
    keys = (
        frame[spec.data.id_column].astype(str) if spec.data.id_column else pd.Series(frame.index.astype(str))
    )
    salt = str(spec.training.seed)
    buckets = keys.map(lambda k: int(hashlib.blake2b(f"{salt}:{k}".encode(), digest_size=4).hexdigest(), 16))
    return (buckets.to_numpy() % 10_000) < spec.training.holdout_fraction * 10_000


def _prepare(frame: pd.DataFrame, spec: PipelineSpec) -> tuple[pd.DataFrame, pd.Series]:
    columns = feature_columns(frame, spec)
    target = frame[spec.data.target]
    if target.isna().any():
        raise DataError(
            f"pipeline {spec.name}: target column {spec.data.target!r} has {int(target.isna().sum())} nulls"
        )
    return frame[columns], target


def train(
    spec: PipelineSpec, *, lineage: dict[str, str] | None = None, tracking_uri: str | None = None
) -> TrainResult:
    """Fit on every published dataset, evaluate on the holdout, log and register the model."""
    import mlflow
    from mlflow.models import infer_signature

    client = tracking.client(tracking_uri)
    with tracking.service_errors(tracking_uri):
        existing = _version_of_run(client, spec.model_name, lineage)
    if existing is not None:
        log.info(
            "This Airflow run already registered %s v%s; not training twice",
            spec.model_name,
            existing.version,
        )
        with tracking.service_errors(tracking_uri):
            run = client.get_run(existing.run_id)
        return TrainResult(
            run_id=existing.run_id,
            experiment_id=run.info.experiment_id,
            version=str(existing.version),
            model_uri=f"models:/{spec.model_name}/{existing.version}",
            metrics=dict(run.data.metrics),
            training_rows=int(existing.tags.get("mlops.training_rows", 0)),
            holdout_rows=int(existing.tags.get("mlops.holdout_rows", 0)),
        )
    frame, manifests = load_training_frame(spec)
    mask = holdout_mask(frame, spec)
    train_frame, holdout = frame[~mask].reset_index(drop=True), frame[mask].reset_index(drop=True)
    if len(train_frame) < 10 or len(holdout) < 5:
        raise DataError(
            f"pipeline {spec.name}: too few rows to train ({len(train_frame)}) and evaluate ({len(holdout)})"
        )
    x_train, y_train = _prepare(train_frame, spec)
    x_holdout, y_holdout = _prepare(holdout, spec)
    if spec.data.task == "classification" and y_train.nunique() < 2:
        raise DataError(
            f"pipeline {spec.name}: target {spec.data.target!r} has a single class in the training data"
        )

    with tracking.service_errors(tracking_uri):
        experiment_id = tracking.ensure_experiment(spec.experiment_name)
    model = build_model(spec, x_train)
    log.info("Fitting %s on %d rows (%d held out)", spec.training.estimator, len(x_train), len(x_holdout))
    model.fit(x_train, y_train)
    scores = metrics.compute(spec.data.task, model, x_holdout, y_holdout)
    log.info("Holdout metrics: %s", scores)

    tags = {
        "mlops.pipeline": spec.name,
        "mlops.dataset_uris": ",".join(m["uri"] for m in manifests),
        "mlops.dataset_sha256": ",".join(m["sha256"][:16] for m in manifests),
        "mlops.validation": "passed",
        "mlops.code_version": tracking.code_version(),
        "mlops.estimator": spec.training.estimator,
        "mlops.training_rows": str(len(x_train)),
        "mlops.holdout_rows": str(len(x_holdout)),
        **(lineage or {}),
    }
    with (
        tracking.service_errors(tracking_uri),
        mlflow.start_run(experiment_id=experiment_id, tags=tags) as run,
    ):
        mlflow.log_params(
            {
                "estimator": spec.training.estimator,
                **spec.training.params,
                "holdout_fraction": spec.training.holdout_fraction,
                "seed": spec.training.seed,
            }
        )
        mlflow.log_metrics(scores)
        with tempfile.TemporaryDirectory() as tmp:
            holdout.to_parquet(Path(tmp) / "holdout.parquet", index=False)
            reference = x_train.sample(
                min(len(x_train), spec.training.reference_rows), random_state=spec.training.seed
            )
            reference.to_parquet(Path(tmp) / "reference.parquet", index=False)
            write_reference(Path(tmp), model, x_train, reference, seed=spec.training.seed)
            for name in (
                "holdout.parquet",
                "reference.parquet",
                "reference_profile.json",
                "reference_predictions.parquet",
            ):
                mlflow.log_artifact(str(Path(tmp) / name), "data")
        # Integer columns are declared as doubles: a scoring batch with a missing value in one of them
        # arrives as floats and must still match the signature.
        example = x_train.head(100).astype(
            {c: "float64" for c in x_train.columns if pd.api.types.is_integer_dtype(x_train[c])}
        )
        signature = infer_signature(example, model.predict(x_train.head(100)))
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=signature,
            input_example=example.head(5),
            skops_trusted_types=own_types(model),
        )
        version = mlflow.register_model(info.model_uri, spec.model_name, tags=tags)
        client.set_registered_model_alias(spec.model_name, "challenger", version.version)
    log.info("Registered %s version %s (alias challenger)", spec.model_name, version.version)
    return TrainResult(
        run_id=run.info.run_id,
        experiment_id=experiment_id,
        version=str(version.version),
        model_uri=f"models:/{spec.model_name}/{version.version}",
        metrics=scores,
        training_rows=len(x_train),
        holdout_rows=len(x_holdout),
    )


def _version_of_run(client: Any, model: str, lineage: dict[str, str] | None) -> Any:
    """The version an Airflow run already registered (a cleared and re-run task must not add another)."""
    if not lineage or not lineage.get("airflow.run_id"):
        return None
    for version in tracking.model_versions(client, model):
        tags = version.tags or {}
        if tags.get("airflow.run_id") == lineage["airflow.run_id"] and tags.get(
            "airflow.dag_id"
        ) == lineage.get("airflow.dag_id"):
            return version
    return None


def own_types(model: Any) -> list[str]:
    """Types skops does not trust by default, in a model this process has just fitted itself.

    Trusting them is safe here because the file is ours; loading a file of unknown origin still
    goes through skops' checks with exactly this list, not with "trust everything".
    """
    import skops.io

    return skops.io.get_untrusted_types(data=skops.io.dumps(model))
