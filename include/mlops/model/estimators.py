"""The model a spec asks for: its scikit-learn estimator behind imputation, scaling and one-hot encoding."""

from __future__ import annotations

import importlib
from typing import Any

import pandas as pd

from include.mlops.errors import SpecError
from include.mlops.spec import PipelineSpec


def load_estimator(spec: PipelineSpec) -> Any:
    """Instantiate the estimator named in the spec and check it fits the task."""
    from sklearn.base import is_classifier, is_regressor

    module_name, _, class_name = spec.training.estimator.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError):
        raise SpecError(
            f"{spec.source}: training.estimator: cannot import {spec.training.estimator}"
        ) from None
    try:
        estimator = cls(**spec.training.params)
    except TypeError as exc:
        raise SpecError(f"{spec.source}: training.params: {exc}") from None
    fits = is_classifier(estimator) if spec.data.task == "classification" else is_regressor(estimator)
    if not fits:
        raise SpecError(
            f"{spec.source}: training.estimator: {spec.training.estimator} is not a {spec.data.task} estimator"
        )
    if "random_state" in estimator.get_params() and "random_state" not in spec.training.params:
        estimator.set_params(random_state=spec.training.seed)
    return estimator


def build_model(spec: PipelineSpec, features: pd.DataFrame) -> Any:
    """Preprocessing (impute, scale, one-hot) + estimator, as one picklable sklearn Pipeline."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [c for c in features.columns if pd.api.types.is_numeric_dtype(features[c])]
    categorical = [c for c in features.columns if c not in numeric]
    preprocess = ColumnTransformer(
        [
            ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
            (
                "categorical",
                make_pipeline(
                    SimpleImputer(strategy="most_frequent"),
                    OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                ),
                categorical,
            ),
        ]
    )
    return Pipeline([("preprocess", preprocess), ("estimator", load_estimator(spec))])
