"""The paired bootstrap against a naive resampling loop, and its reproducibility."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, mean_squared_error, roc_auc_score

from include.mlops.gate import bootstrap
from include.mlops.metrics import Scored


@pytest.fixture(scope="module")
def binary():
    rng = np.random.default_rng(0)
    n = 4000
    y = rng.integers(0, 2, n)
    a = np.clip(y * 0.3 + rng.normal(0.35, 0.25, n), 0, 1)
    b = np.clip(y * 0.2 + rng.normal(0.40, 0.25, n), 0, 1)
    scored = [Scored((p > 0.5).astype(int), np.stack([1 - p, p], axis=1), [0, 1]) for p in (a, b)]
    return y, scored


def naive(y, fn, a, b, resamples=1000, seed=3):
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(resamples):
        i = rng.integers(0, len(y), len(y))
        diffs.append(fn(y[i], a[i]) - fn(y[i], b[i]))
    return np.quantile(diffs, [0.025, 0.975])


@pytest.mark.parametrize("metric", ["roc_auc", "f1"])
def test_interval_matches_naive_resampling(binary, metric):
    y, (a, b) = binary
    result = bootstrap.paired("classification", metric, y, a, b, resamples=1000, confidence=0.95, seed=1)
    if metric == "roc_auc":
        low, high = naive(y, roc_auc_score, a.proba[:, 1], b.proba[:, 1])
    else:
        low, high = naive(y, f1_score, a.predicted, b.predicted)
    width = high - low
    assert abs(result["lower"] - low) < 0.1 * width
    assert abs(result["upper"] - high) < 0.1 * width


def test_regression_metric_is_oriented(binary):
    rng = np.random.default_rng(5)
    y = rng.normal(100, 20, 3000)
    good, bad = Scored(y + rng.normal(0, 5, 3000), None, []), Scored(y + rng.normal(0, 8, 3000), None, [])
    result = bootstrap.paired("regression", "rmse", y, good, bad, resamples=300, confidence=0.95, seed=1)
    exact = np.sqrt(mean_squared_error(y, bad.predicted)) - np.sqrt(mean_squared_error(y, good.predicted))
    assert result["improvement"] == pytest.approx(exact)
    assert 0 < result["lower"] < exact < result["upper"]


def test_seeded_and_paired(binary):
    y, (a, _) = binary
    first = bootstrap.paired("classification", "roc_auc", y, a, a, resamples=200, confidence=0.9, seed=4)
    assert first["lower"] == first["upper"] == 0.0  # a model against itself: no uncertainty at all
    y, (a, b) = binary
    one = bootstrap.paired("classification", "accuracy", y, a, b, resamples=200, confidence=0.9, seed=4)
    two = bootstrap.paired("classification", "accuracy", y, a, b, resamples=200, confidence=0.9, seed=4)
    assert (one["lower"], one["upper"]) == (two["lower"], two["upper"])


@pytest.mark.parametrize("n", [1, 2, 5, 1000, 20001])
def test_quantile_bins_read_off_the_sorted_scores_match_numpy(n):
    p = np.round(np.random.default_rng(n).random(n), 3)  # ties included
    scored = Scored((p > 0.5).astype(int), np.stack([1 - p, p], axis=1), [0, 1])
    edges = np.unique(np.quantile(p, np.linspace(0, 1, bootstrap.BINS + 1)[1:-1]))
    assert np.array_equal(bootstrap._quantile_bins(scored), np.searchsorted(edges, p, side="right"))
