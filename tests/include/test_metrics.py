"""The gate's one-pass metrics agree with scikit-learn's own functions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as m
from sklearn.linear_model import LogisticRegression

from include.mlops import metrics
from include.mlops.metrics import label_metrics


@pytest.mark.parametrize("labels", [[0, 1], ["no", "yes"], [0, 1, 2, 3]])
def test_label_metrics_match_sklearn(labels):
    rng = np.random.default_rng(0)
    pool = np.array(labels, dtype=object)
    for _ in range(60):
        n = int(rng.integers(1, 300))
        # Each side draws from a random subset of the labels, so absent classes are covered too.
        y = rng.choice(pool[rng.permutation(len(labels))[: rng.integers(1, len(labels) + 1)]], n)
        p = rng.choice(pool[rng.permutation(len(labels))[: rng.integers(1, len(labels) + 1)]], n)
        if isinstance(labels[0], int):
            y, p = y.astype(int), p.astype(int)
        options = {"average": "binary", "pos_label": labels[1]} if len(labels) == 2 else {"average": "macro"}
        expected = {
            "accuracy": m.accuracy_score(y, p),
            "f1": m.f1_score(y, p, zero_division=0, **options),
            "precision": m.precision_score(y, p, zero_division=0, **options),
            "recall": m.recall_score(y, p, zero_division=0, **options),
        }
        got = label_metrics(y, p, labels)
        assert got == pytest.approx(expected, abs=1e-12), (y, p)


def test_unknown_label_falls_back_to_sklearn():
    predicted, labels = np.array([0, 1, 2, 2]), [0, 1, 2]
    assert label_metrics(np.array([0, 1, 3, 2]), predicted, labels) is None
    scored = metrics.Scored(predicted, None, labels)
    result = metrics.from_scored("classification", np.array([0, 1, 3, 2]), scored)
    assert result["accuracy"] == pytest.approx(m.accuracy_score([0, 1, 3, 2], predicted))
    assert result["f1"] == pytest.approx(m.f1_score([0, 1, 3, 2], predicted, average="macro"))


def _frame(n: int = 600) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(1)
    x = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    y = (x["a"] + 0.5 * rng.normal(size=n) > 0).astype(int).to_numpy()
    return x, y


def test_score_runs_one_probability_pass_and_matches_predict():
    x, y = _frame()
    model = LogisticRegression().fit(x, y)
    scored = metrics.score("classification", model, x)
    assert np.array_equal(scored.predicted, model.predict(x))
    assert scored.proba.shape == (len(x), 2)
    assert metrics.from_scored("classification", y, scored, only={"f1"}).keys() == {"f1"}


class _LowThreshold(LogisticRegression):
    """Predicts the positive class from probability 0.3 on: predict is not the argmax."""

    def predict(self, X):
        return self.classes_[(self.predict_proba(X)[:, 1] >= 0.3).astype(int)]


def test_score_falls_back_to_predict_when_argmax_disagrees():
    x, y = _frame()
    model = _LowThreshold().fit(x, y)
    argmax = model.classes_[np.argmax(model.predict_proba(x), axis=1)]
    assert not np.array_equal(argmax, model.predict(x))
    assert np.array_equal(metrics.score("classification", model, x).predicted, model.predict(x))


@pytest.mark.parametrize("labels", [[0, 1], ["a", "b", "c"]])
def test_log_loss_matches_sklearn(labels):
    rng = np.random.default_rng(2)
    proba = rng.dirichlet(np.ones(len(labels)), 500)
    proba[0] = [1.0] + [0.0] * (len(labels) - 1)  # a certain, wrong prediction is clipped, not inf
    y = np.array(labels, dtype=object)[rng.integers(0, len(labels), 500)]
    y[0] = labels[1]
    if isinstance(labels[0], int):
        y = y.astype(int)
    assert metrics.log_loss(y, proba, labels) == pytest.approx(m.log_loss(y, proba, labels=labels), rel=1e-12)


def test_roc_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 2000)
    p = np.round(np.clip(0.3 * y + rng.normal(0.4, 0.2, 2000), 0, 1), 2)  # many tied scores
    scored = metrics.Scored((p > 0.5).astype(int), np.stack([1 - p, p], axis=1), [0, 1])
    assert metrics.roc_auc(scored, y) == pytest.approx(m.roc_auc_score(y, p), abs=1e-12)
    assert "roc_auc" not in metrics.from_scored("classification", np.zeros(2000, dtype=int), scored)
