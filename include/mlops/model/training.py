"""Training: fit the spec's scikit-learn estimator, log everything to MLflow, register a version.

The same function runs in an Airflow worker or in a training container (``python -m include.mlops
train``). The holdout split is a hash of the id column, so a row stays on the same side of the
split across retrains and the gate compares models on data neither of them was fitted on.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from dataclasses import asdict, dataclass, fields
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
from include.mlops.stages import staged
from include.mlops.tags import (
    AIRFLOW_DAG_ID,
    AIRFLOW_RUN_ID,
    CODE_VERSION,
    DATASET_SHA256,
    DATASET_URIS,
    ESTIMATOR,
    HOLDOUT_ROWS,
    PIPELINE,
    TRAINING_ROWS,
    VALIDATION,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """What training registered; the train task returns ``to_dict()`` to XCom for the gate and links."""

    run_id: str
    experiment_id: str
    version: str
    model_uri: str
    metrics: dict[str, float]
    training_rows: int
    holdout_rows: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy, for XCom and the CLI."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainResult:
        """The record back from ``to_dict()`` (an XCom value), ignoring keys it does not know."""
        return cls(**{f.name: data[f.name] for f in fields(cls)})


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


@staged("train")
def train(
    spec: PipelineSpec, *, lineage: dict[str, str] | None = None, tracking_uri: str | None = None
) -> TrainResult:
    """Fit on every published dataset, evaluate on the holdout, log and register the model.

    A retried Airflow task finds the version its run already registered and returns it instead of
    training a second one.
    """
    client = tracking.client(tracking_uri)
    with tracking.service_errors(tracking_uri):
        existing = _version_of_run(client, spec.model_name, lineage)
    if existing is not None:
        return _already_trained(client, spec, existing, tracking_uri)
    data = _split(spec)
    with tracking.service_errors(tracking_uri):
        experiment_id = tracking.ensure_experiment(spec.experiment_name)
    model = build_model(spec, data.x_train)
    log.info(
        "Fitting %s on %d rows (%d held out)", spec.training.estimator, len(data.x_train), len(data.x_holdout)
    )
    model.fit(data.x_train, data.y_train)
    scores = metrics.compute(spec.data.task, model, data.x_holdout, data.y_holdout)
    log.info("Holdout metrics: %s", scores)
    run_tags = _lineage_tags(spec, data, lineage)
    with tracking.service_errors(tracking_uri):
        run_id, version = _log_and_register(client, spec, model, data, scores, experiment_id, run_tags)
    log.info("Registered %s version %s (alias challenger)", spec.model_name, version)
    return TrainResult(
        run_id=run_id,
        experiment_id=experiment_id,
        version=version,
        model_uri=f"models:/{spec.model_name}/{version}",
        metrics=scores,
        training_rows=len(data.x_train),
        holdout_rows=len(data.x_holdout),
    )


@dataclass(frozen=True)
class TrainingData:
    """The training set and the holdout, split and checked once, used by every training step."""

    holdout: pd.DataFrame  # whole rows (target included), logged for the gate
    x_train: pd.DataFrame
    y_train: pd.Series
    x_holdout: pd.DataFrame
    y_holdout: pd.Series
    manifests: list[dict[str, Any]]


def _already_trained(client: Any, spec: PipelineSpec, existing: Any, tracking_uri: str | None) -> TrainResult:
    """The result of the version this Airflow run registered before (the task is being retried)."""
    log.info(
        "This Airflow run already registered %s v%s; not training twice", spec.model_name, existing.version
    )
    with tracking.service_errors(tracking_uri):
        run = client.get_run(existing.run_id)
    return TrainResult(
        run_id=existing.run_id,
        experiment_id=run.info.experiment_id,
        version=str(existing.version),
        model_uri=f"models:/{spec.model_name}/{existing.version}",
        metrics=dict(run.data.metrics),
        training_rows=int(existing.tags.get(TRAINING_ROWS, 0)),
        holdout_rows=int(existing.tags.get(HOLDOUT_ROWS, 0)),
    )


def _split(spec: PipelineSpec) -> TrainingData:
    """Every published dataset, split by ``holdout_mask``; too little data fails here, before MLflow."""
    frame, manifests = load_training_frame(spec)
    mask = holdout_mask(frame, spec)
    train_frame, holdout = frame[~mask].reset_index(drop=True), frame[mask].reset_index(drop=True)
    if len(train_frame) < 10 or len(holdout) < 5:
        raise DataError(
            f"pipeline {spec.name}: too few rows to train ({len(train_frame)}) and evaluate ({len(holdout)}); "
            f"training needs at least 10 rows and the holdout (training.holdout_fraction "
            f"{spec.training.holdout_fraction}) at least 5: publish more data"
        )
    x_train, y_train = _prepare(train_frame, spec)
    x_holdout, y_holdout = _prepare(holdout, spec)
    if spec.data.task == "classification" and y_train.nunique() < 2:
        raise DataError(
            f"pipeline {spec.name}: target {spec.data.target!r} has a single class in the training data"
        )
    return TrainingData(holdout, x_train, y_train, x_holdout, y_holdout, manifests)


def _lineage_tags(spec: PipelineSpec, data: TrainingData, lineage: dict[str, str] | None) -> dict[str, str]:
    """The tags of the run and of its model version: where the data came from, and which Airflow run."""
    return {
        PIPELINE: spec.name,
        DATASET_URIS: ",".join(m["uri"] for m in data.manifests),
        DATASET_SHA256: ",".join(m["sha256"][:16] for m in data.manifests),
        VALIDATION: "passed",
        CODE_VERSION: tracking.code_version(),
        ESTIMATOR: spec.training.estimator,
        TRAINING_ROWS: str(len(data.x_train)),
        HOLDOUT_ROWS: str(len(data.x_holdout)),
        **(lineage or {}),
    }


def _log_and_register(
    client: Any,
    spec: PipelineSpec,
    model: Any,
    data: TrainingData,
    scores: dict[str, float],
    experiment_id: str,
    run_tags: dict[str, str],
) -> tuple[str, str]:
    """One MLflow run with params, metrics, data artifacts and the model; returns (run id, version)."""
    import mlflow

    with mlflow.start_run(experiment_id=experiment_id, tags=run_tags) as run:
        mlflow.log_params(
            {
                "estimator": spec.training.estimator,
                **spec.training.params,
                "holdout_fraction": spec.training.holdout_fraction,
                "seed": spec.training.seed,
            }
        )
        _log_data(spec, model, data)
        logged = _log_model(model, data.x_train)
        # After the model and linked to it: metrics already on the run would make MLflow read each
        # one's history back and log it again to link it (two requests per metric; issue 11).
        mlflow.log_metrics(scores, model_id=logged.model_id)
        version = mlflow.register_model(logged.model_uri, spec.model_name, tags=run_tags)
        client.set_registered_model_alias(spec.model_name, "challenger", version.version)
    return run.info.run_id, str(version.version)


def _log_data(spec: PipelineSpec, model: Any, data: TrainingData) -> None:
    """The holdout (for the gate) and the drift reference (sample, profile, predictions) under ``data/``."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        data.holdout.to_parquet(Path(tmp) / "holdout.parquet", index=False)
        reference = data.x_train.sample(
            min(len(data.x_train), spec.training.reference_rows), random_state=spec.training.seed
        )
        reference.to_parquet(Path(tmp) / "reference.parquet", index=False)
        write_reference(Path(tmp), model, data.x_train, reference, seed=spec.training.seed)
        for name in (
            "holdout.parquet",
            "reference.parquet",
            "reference_profile.json",
            "reference_predictions.parquet",
        ):
            mlflow.log_artifact(str(Path(tmp) / name), "data")


def _log_model(model: Any, x_train: pd.DataFrame) -> Any:
    """Log the fitted model with its signature and an input example; returns MLflow's ``ModelInfo``."""
    import mlflow
    from mlflow.models import infer_signature

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
    return info


def _version_of_run(client: Any, model: str, lineage: dict[str, str] | None) -> Any:
    """The version an Airflow run already registered (a cleared and re-run task must not add another)."""
    if not lineage or not lineage.get(AIRFLOW_RUN_ID):
        return None
    run_id = lineage[AIRFLOW_RUN_ID]
    # Only this run's versions: a filter on the tag instead of listing every version of the model.
    query = None if "'" in run_id else f"tags.`{AIRFLOW_RUN_ID}` = '{run_id}'"
    for version in tracking.model_versions(client, model, query):
        version_tags = version.tags or {}
        if version_tags.get(AIRFLOW_RUN_ID) == lineage[AIRFLOW_RUN_ID] and version_tags.get(
            AIRFLOW_DAG_ID
        ) == lineage.get(AIRFLOW_DAG_ID):
            return version
    return None


def own_types(model: Any) -> list[str]:
    """Types skops does not trust by default, in a model this process has just fitted itself.

    Trusting them is safe here because the file is ours; loading a file of unknown origin still
    goes through skops' checks with exactly this list, not with "trust everything".
    """
    import skops.io

    return skops.io.get_untrusted_types(data=skops.io.dumps(model))
