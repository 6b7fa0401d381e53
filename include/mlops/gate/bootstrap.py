"""Paired bootstrap of a metric's difference (candidate minus champion) on one holdout.

Both models are judged on the *same* resamples, so the interval reflects the uncertainty of the
difference, not of each metric alone. Seeded, so a decision can be reproduced.

Resampling ``n`` rows with replacement is a multinomial draw over the rows; when the metric only
depends on a few values per row, rows that agree on those values are pooled into cells and the
multinomial is drawn over the cells instead, which is exact and far cheaper:

* accuracy, precision, recall, f1: cells of (candidate prediction, champion prediction, label): exact;
* binary ROC AUC: cells of (candidate score bin, champion score bin, label) with 32 quantile bins
  per model; ties inside a bin count one half, so each resample's AUC is computed on binned scores
  and the distribution is shifted by the (exact - binned) difference of the full holdout;
* log loss, RMSE, MAE, R2 and multiclass AUC: per-row resampling counts (exact, slower).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from include.mlops.metrics import Scored, from_scored, improvement

BINS = 32  # interval within 3% of 64 bins and of naive resampling at 200k rows, 3.5x fewer cells
CHUNK_CELLS = 20_000_000  # resamples x cells per chunk, bounds memory


def _quantile_bins(scored: Scored) -> np.ndarray:
    """Bin of each row's positive-class score among BINS quantile bins (``np.quantile``'s linear
    interpolation, read off the scores already sorted for the AUC instead of sorting again)."""
    values = scored.probabilities()[:, 1]
    order, _ = scored.ranking
    ascending = values[order[::-1]]
    position = np.linspace(0, 1, BINS + 1)[1:-1] * (len(ascending) - 1)
    low = np.floor(position).astype(np.int64)
    high = np.minimum(low + 1, len(ascending) - 1)
    edges = ascending[low] + (position - low) * (ascending[high] - ascending[low])
    return np.searchsorted(np.unique(edges), values, side="right")


def _auc_from_bins(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """AUC per resample from positive/negative counts per score bin, shape (resamples, bins)."""
    below = np.cumsum(neg, axis=1) - neg
    num = (pos * (below + 0.5 * neg)).sum(axis=1)
    return num / (pos.sum(axis=1) * neg.sum(axis=1))


def _cells(*columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Occupied combinations of small non-negative integer columns (as rows) and their counts."""
    sizes = [int(c.max()) + 1 for c in columns]
    code = np.zeros(len(columns[0]), dtype=np.int64)
    for column, size in zip(columns, sizes, strict=True):
        code = code * size + column
    counts = np.bincount(code, minlength=int(np.prod(sizes)))
    occupied = np.flatnonzero(counts)
    cells = np.stack(np.unravel_index(occupied, sizes), axis=1)
    return cells, counts[occupied]


def _draws(rng: np.random.Generator, n: int, counts: np.ndarray, resamples: int):
    """Yield multinomial resample counts over the cells, in chunks bounded by CHUNK_CELLS."""
    p = counts / counts.sum()
    chunk = max(1, CHUNK_CELLS // max(len(counts), 1))
    done = 0
    while done < resamples:
        size = min(chunk, resamples - done)
        yield rng.multinomial(n, p, size=size).astype(np.float64)
        done += size


def _label_metric(
    metric: str, positive: Any, labels: list[Any], pred: np.ndarray, y: np.ndarray, w: np.ndarray
):
    """accuracy / precision / recall / f1 per resample from cell weights (resamples, cells)."""
    if metric == "accuracy":
        return (w * (pred == y)).sum(axis=1) / w.sum(axis=1)
    classes = [positive] if positive is not None else labels
    values = []
    for cls in classes:
        tp = (w * ((pred == cls) & (y == cls))).sum(axis=1)
        fp = (w * ((pred == cls) & (y != cls))).sum(axis=1)
        fn = (w * ((pred != cls) & (y == cls))).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
            recall = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
            f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
        values.append({"precision": precision, "recall": recall, "f1": f1}[metric])
    return np.mean(values, axis=0)


def _row_counts(rng: np.random.Generator, n: int, resamples: int):
    chunk = max(1, CHUNK_CELLS // n)
    done = 0
    while done < resamples:
        size = min(chunk, resamples - done)
        idx = rng.integers(0, n, size=(size, n)) + (np.arange(size)[:, None] * n)
        yield np.bincount(idx.ravel(), minlength=size * n).reshape(size, n).astype(np.float64)
        done += size


def _weighted_metric(task: str, metric: str, y: np.ndarray, scored: Scored, w: np.ndarray) -> np.ndarray:
    total = w.sum(axis=1)
    if metric in {"rmse", "mae", "r2"}:
        err = scored.predicted.astype(np.float64) - y.astype(np.float64)
        if metric == "rmse":
            return np.sqrt((w @ (err**2)) / total)
        if metric == "mae":
            return (w @ np.abs(err)) / total
        mean = (w @ y) / total
        sst = w @ (y.astype(np.float64) ** 2) - total * mean**2
        return 1 - (w @ (err**2)) / sst
    if metric == "log_loss":
        index = {label: i for i, label in enumerate(scored.labels)}
        p = scored.probabilities()[np.arange(len(y)), [index[v] for v in y]]
        return (w @ -np.log(np.clip(p, 1e-15, 1))) / total
    # Multiclass ROC AUC: no cheap form; sklearn with sample weights per resample.
    from sklearn.metrics import roc_auc_score

    return np.array(
        [
            roc_auc_score(y, scored.proba, multi_class="ovr", labels=scored.labels, sample_weight=row)
            for row in w
        ]
    )


def paired(
    task: str,
    metric: str,
    target: np.ndarray,
    candidate: Scored,
    champion: Scored,
    *,
    resamples: int,
    confidence: float,
    seed: int,
    exact: float | None = None,
) -> dict[str, Any]:
    """Percentile interval of the oriented improvement (positive = candidate better).

    ``exact`` is the improvement on the full holdout when the caller has already computed it.
    """
    y = np.asarray(target)
    n = len(y)
    rng = np.random.default_rng(seed)
    if exact is None:
        exact = improvement(
            metric, from_scored(task, y, candidate)[metric], from_scored(task, y, champion)[metric]
        )
    diffs: list[np.ndarray] = []
    if metric in {"accuracy", "precision", "recall", "f1"}:
        import pandas as pd

        def encode(values: np.ndarray) -> np.ndarray:  # unknown labels get the extra code len(labels)
            codes = pd.Categorical(values, categories=candidate.labels).codes.astype(np.int64)
            return np.where(codes < 0, len(candidate.labels), codes)

        cells, counts = _cells(encode(candidate.predicted), encode(champion.predicted), encode(y))
        positive = 1 if candidate.binary else None
        labels = list(range(len(candidate.labels)))
        for w in _draws(rng, n, counts, resamples):
            a = _label_metric(metric, positive, labels, cells[:, 0], cells[:, 2], w)
            b = _label_metric(metric, positive, labels, cells[:, 1], cells[:, 2], w)
            diffs.append(a - b)
    elif metric == "roc_auc" and candidate.binary:
        is_pos = (y == candidate.labels[1]).astype(np.int64)
        cells, counts = _cells(_quantile_bins(candidate), _quantile_bins(champion), is_pos)
        width = int(cells[:, :2].max()) + 1
        # (cells x 2*bins) one-hot maps of each cell to (score bin, label) for each model.
        maps = []
        for column in (0, 1):
            onehot = np.zeros((len(cells), 2 * width))
            onehot[np.arange(len(cells)), cells[:, column] * 2 + cells[:, 2]] = 1.0
            maps.append(onehot)

        def auc(w: np.ndarray, column: int) -> np.ndarray:
            binned = w @ maps[column]
            return _auc_from_bins(binned[:, 1::2], binned[:, 0::2])

        full = counts[None, :].astype(np.float64)
        shift = exact - float(auc(full, 0)[0] - auc(full, 1)[0])
        for w in _draws(rng, n, counts, resamples):
            diffs.append(auc(w, 0) - auc(w, 1) + shift)
    else:
        for w in _row_counts(rng, n, resamples):
            a = _weighted_metric(task, metric, y, candidate, w)
            b = _weighted_metric(task, metric, y, champion, w)
            diffs.append(a - b if metric not in {"rmse", "mae", "log_loss"} else b - a)
    distribution = np.concatenate(diffs)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(distribution, [alpha, 1 - alpha])
    return {
        "metric": metric,
        "improvement": float(exact),
        "lower": float(low),
        "upper": float(high),
        "confidence": confidence,
        "resamples": resamples,
        "seed": seed,
        "distribution": distribution,
    }
