"""Model metrics by task type, computed from one scoring pass.

A model is scored once (``score``) and every metric, bootstrap resample and slice is computed from
those predictions, so the gate pays for prediction once per model.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
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
        """Two classes: the probability-of-positive metrics and curves apply."""
        return len(self.labels) == 2

    @cached_property
    def ranking(self) -> tuple[np.ndarray, np.ndarray]:
        """Binary: rows by descending positive-class score, and where each distinct score ends.

        One sort serves the ROC AUC, the ROC curve and the precision-recall curve.
        """
        positive = self.probabilities()[:, 1]
        order = np.argsort(positive)[::-1]
        ranked = positive[order]
        return order, np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]

    def probabilities(self) -> np.ndarray:
        """``proba``, for the metrics that cannot exist without it (AUC, log loss)."""
        if self.proba is None:
            raise ValueError("this model has no predict_proba: no probability-based metric")
        return self.proba

    def subset(self, mask: np.ndarray) -> Scored:
        """The rows under ``mask`` (one slice of the holdout)."""
        proba = self.proba[mask] if self.proba is not None else None
        return Scored(self.predicted[mask], proba, self.labels)


PREDICT_CHECK_ROWS = 2_000


def score(task: str, model: Any, features: pd.DataFrame) -> Scored:
    """Predict once. A classifier with ``predict_proba`` is run once: labels are the argmax of the
    probabilities, as ``predict`` does for the usual estimators; this is verified against
    ``predict`` on the first rows and, for a model where it does not hold (e.g. an SVC), ``predict``
    runs on the whole frame."""
    started = time.perf_counter()
    if task != "classification" or not hasattr(model, "predict_proba"):
        predicted = np.asarray(model.predict(features))
        labels = (
            list(getattr(model, "classes_", sorted(pd.unique(predicted)))) if task == "classification" else []
        )
        return Scored(predicted, None, labels, time.perf_counter() - started)
    proba = np.asarray(model.predict_proba(features))
    classes = np.asarray(model.classes_)
    predicted = classes[np.argmax(proba, axis=1)]
    head = features.iloc[:PREDICT_CHECK_ROWS]
    if not np.array_equal(np.asarray(model.predict(head)), predicted[: len(head)]):
        predicted = np.asarray(model.predict(features))
    return Scored(predicted, proba, list(classes), time.perf_counter() - started)


def label_metrics(y: np.ndarray, predicted: np.ndarray, labels: list[Any]) -> dict[str, float] | None:
    """accuracy, precision, recall, f1 from one confusion matrix, as sklearn computes them with
    ``zero_division=0`` (binary: about ``labels[1]``; otherwise macro over ``labels``). None when the
    holdout holds a label the model does not know (sklearn's own handling then applies)."""
    index = pd.Index(labels)
    truth, pred = index.get_indexer(y), index.get_indexer(predicted)
    if (truth < 0).any() or (pred < 0).any():
        return None
    k = len(labels)
    cm = np.bincount(truth * k + pred, minlength=k * k).reshape(k, k).astype(np.float64)
    tp = np.diag(cm)
    predicted_pos, actual_pos = cm.sum(axis=0), cm.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted_pos > 0, tp / predicted_pos, 0.0)
        recall = np.where(actual_pos > 0, tp / actual_pos, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    if k == 2:
        chosen = {"precision": precision[1], "recall": recall[1], "f1": f1[1]}
    else:  # macro over the labels present in truth or predictions, as sklearn does
        present = (predicted_pos + actual_pos) > 0
        chosen = {
            "precision": precision[present].mean(),
            "recall": recall[present].mean(),
            "f1": f1[present].mean(),
        }
    return {"accuracy": float(tp.sum() / cm.sum()), **{k_: float(v) for k_, v in chosen.items()}}


def binary_curve(scored: Scored, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positives, true positives) counted at each distinct score, highest first."""
    order, ends = scored.ranking
    tps = np.cumsum(np.asarray(y)[order] == scored.labels[1])[ends]
    return 1 + ends - tps, tps


def roc_auc(scored: Scored, y: np.ndarray) -> float:
    """Binary ROC AUC by the trapezoidal rule over the ROC curve, as ``roc_auc_score`` computes it."""
    fps, tps = binary_curve(scored, y)
    if fps[-1] == 0 or tps[-1] == 0:
        raise ValueError("only one class present in y_true: ROC AUC is not defined")
    return float(np.trapezoid(np.r_[0.0, tps / tps[-1]], np.r_[0.0, fps / fps[-1]]))


def log_loss(y: np.ndarray, proba: np.ndarray, labels: list[Any]) -> float:
    """Mean negative log-probability of the true label, clipped as ``sklearn.metrics.log_loss`` does
    (columns of ``proba`` follow ``labels``, the model's sorted classes)."""
    codes = pd.Index(labels).get_indexer(y)
    if (codes < 0).any():
        from sklearn.metrics import log_loss as sklearn_log_loss

        return float(sklearn_log_loss(y, proba, labels=labels))
    eps = np.finfo(proba.dtype).eps
    return float(-np.log(np.clip(proba[np.arange(len(y)), codes], eps, 1 - eps)).mean())


Wanted = Callable[..., bool]  # from_scored's filter: is any of these metric names wanted?


def from_scored(
    task: str, target: pd.Series | np.ndarray, scored: Scored, only: set[str] | None = None
) -> dict[str, float]:
    """Every metric of the task (or just those in ``only``) from one scoring pass."""

    def wanted(*names: str) -> bool:
        return only is None or any(name in only for name in names)

    y = np.asarray(target)
    if task == "regression":
        return _regression_metrics(y, scored.predicted, wanted)
    result: dict[str, float] = {}
    if wanted("accuracy", "f1", "precision", "recall"):
        result.update(_label_based_metrics(y, scored, wanted))
    if scored.proba is not None and wanted("roc_auc", "log_loss"):
        result.update(_probability_metrics(y, scored, scored.proba, wanted))
    return result


def _regression_metrics(y: np.ndarray, predicted: np.ndarray, wanted: Wanted) -> dict[str, float]:
    """rmse, mae, r2 (those wanted), as sklearn computes them."""
    from sklearn import metrics as m

    result = {}
    if wanted("rmse"):
        result["rmse"] = float(np.sqrt(m.mean_squared_error(y, predicted)))
    if wanted("mae"):
        result["mae"] = float(m.mean_absolute_error(y, predicted))
    if wanted("r2"):
        result["r2"] = float(m.r2_score(y, predicted))
    return result


def _label_based_metrics(y: np.ndarray, scored: Scored, wanted: Wanted) -> dict[str, float]:
    """accuracy, f1, precision, recall: from one confusion matrix, else by sklearn (an unknown label)."""
    from sklearn import metrics as m

    labels, predicted = scored.labels, scored.predicted
    fast = label_metrics(y, predicted, labels)
    if fast is None:
        # Binary metrics are about the model's second class (1, True, "yes" ...), whatever the label type.
        options = {"average": "binary", "pos_label": labels[1]} if scored.binary else {"average": "macro"}
        fast = {
            "accuracy": float(m.accuracy_score(y, predicted)),
            "f1": float(m.f1_score(y, predicted, zero_division=0, **options)),
            "precision": float(m.precision_score(y, predicted, zero_division=0, **options)),
            "recall": float(m.recall_score(y, predicted, zero_division=0, **options)),
        }
    return {k: v for k, v in fast.items() if wanted(k)}


def _probability_metrics(
    y: np.ndarray, scored: Scored, proba: np.ndarray, wanted: Wanted
) -> dict[str, float]:
    """roc_auc, log_loss: those computed before a ValueError (AUC undefined on a single class) stand."""
    from sklearn import metrics as m

    result = {}
    try:
        if wanted("roc_auc"):
            if scored.binary:
                result["roc_auc"] = roc_auc(scored, y)
            else:
                result["roc_auc"] = float(m.roc_auc_score(y, proba, multi_class="ovr", labels=scored.labels))
        if wanted("log_loss"):
            result["log_loss"] = log_loss(y, proba, scored.labels)
    except ValueError:  # a holdout with a single class: AUC is undefined
        pass
    return result


def compute(task: str, model: Any, features: pd.DataFrame, target: pd.Series) -> dict[str, float]:
    """Score and compute every metric in one go (training logs these for its holdout)."""
    return from_scored(task, target, score(task, model, features))


def improvement(metric: str, candidate: float, reference: float) -> float:
    """Positive when the candidate is better, whichever direction the metric runs."""
    return reference - candidate if metric in LOWER_IS_BETTER else candidate - reference
