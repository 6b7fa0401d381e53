"""Model metrics by task type, computed from one scoring pass.

A model is scored once (``score``) and every metric, bootstrap resample and slice is computed from
those predictions, so the gate pays for prediction once per model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from include.mlops.spec import LOWER_IS_BETTER


@dataclass
class Scored:
    """One model's predictions on a holdout."""

    predicted: np.ndarray
    proba: np.ndarray | None  # (n, classes) when the model has predict_proba
    labels: list[Any]  # the model's classes (classification) or []
    seconds: float = 0.0

    @property
    def binary(self) -> bool:
        return len(self.labels) == 2

    def subset(self, mask: np.ndarray) -> Scored:
        proba = self.proba[mask] if self.proba is not None else None
        return Scored(self.predicted[mask], proba, self.labels)


def score(task: str, model: Any, features: pd.DataFrame) -> Scored:
    started = time.perf_counter()
    predicted = np.asarray(model.predict(features))
    proba = None
    labels: list[Any] = []
    if task == "classification":
        labels = list(getattr(model, "classes_", sorted(pd.unique(predicted))))
        if hasattr(model, "predict_proba"):
            proba = np.asarray(model.predict_proba(features))
    return Scored(predicted, proba, labels, time.perf_counter() - started)


def from_scored(task: str, target: pd.Series | np.ndarray, scored: Scored) -> dict[str, float]:
    from sklearn import metrics as m

    y = np.asarray(target)
    predicted = scored.predicted
    if task == "regression":
        return {
            "rmse": float(np.sqrt(m.mean_squared_error(y, predicted))),
            "mae": float(m.mean_absolute_error(y, predicted)),
            "r2": float(m.r2_score(y, predicted)),
        }
    labels = scored.labels
    # Binary metrics are about the model's second class (1, True, "yes" ...), whatever the label type.
    options = {"average": "binary", "pos_label": labels[1]} if scored.binary else {"average": "macro"}
    result = {
        "accuracy": float(m.accuracy_score(y, predicted)),
        "f1": float(m.f1_score(y, predicted, zero_division=0, **options)),
        "precision": float(m.precision_score(y, predicted, zero_division=0, **options)),
        "recall": float(m.recall_score(y, predicted, zero_division=0, **options)),
    }
    if scored.proba is not None:
        try:
            if scored.binary:
                result["roc_auc"] = float(m.roc_auc_score(y == labels[1], scored.proba[:, 1]))
            else:
                result["roc_auc"] = float(m.roc_auc_score(y, scored.proba, multi_class="ovr", labels=labels))
            result["log_loss"] = float(m.log_loss(y, scored.proba, labels=labels))
        except ValueError:  # a holdout with a single class: AUC is undefined
            pass
    return result


def compute(task: str, model: Any, features: pd.DataFrame, target: pd.Series) -> dict[str, float]:
    return from_scored(task, target, score(task, model, features))


def improvement(metric: str, candidate: float, reference: float) -> float:
    """Positive when the candidate is better, whichever direction the metric runs."""
    return reference - candidate if metric in LOWER_IS_BETTER else candidate - reference
