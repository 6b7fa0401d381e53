"""Model metrics by task type, oriented so that "higher is better" comparisons are easy."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from include.mlops.spec import LOWER_IS_BETTER


def compute(task: str, model: Any, features: pd.DataFrame, target: pd.Series) -> dict[str, float]:
    from sklearn import metrics as m

    predicted = model.predict(features)
    if task == "regression":
        return {
            "rmse": float(np.sqrt(m.mean_squared_error(target, predicted))),
            "mae": float(m.mean_absolute_error(target, predicted)),
            "r2": float(m.r2_score(target, predicted)),
        }
    labels = list(getattr(model, "classes_", sorted(target.unique())))
    binary = len(labels) == 2
    # Binary metrics are about the model's second class (1, True, "yes" ...), whatever the label type.
    options = {"average": "binary", "pos_label": labels[1]} if binary else {"average": "macro"}
    result = {
        "accuracy": float(m.accuracy_score(target, predicted)),
        "f1": float(m.f1_score(target, predicted, zero_division=0, **options)),
        "precision": float(m.precision_score(target, predicted, zero_division=0, **options)),
        "recall": float(m.recall_score(target, predicted, zero_division=0, **options)),
    }
    if hasattr(model, "predict_proba"):
        proba = model.predict_proba(features)
        try:
            if binary and proba.shape[1] == 2:
                result["roc_auc"] = float(m.roc_auc_score(target == labels[1], proba[:, 1]))
            else:
                result["roc_auc"] = float(m.roc_auc_score(target, proba, multi_class="ovr", labels=labels))
            result["log_loss"] = float(m.log_loss(target, proba, labels=labels))
        except ValueError:  # a holdout with a single class: AUC is undefined
            pass
    return result


def improvement(metric: str, candidate: float, reference: float) -> float:
    """Positive when the candidate is better, whichever direction the metric runs."""
    return reference - candidate if metric in LOWER_IS_BETTER else candidate - reference
