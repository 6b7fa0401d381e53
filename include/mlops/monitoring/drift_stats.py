"""Per-column drift statistics that let Evidently's own tests run on bounded inputs.

Why: Evidently's ``DataDriftPreset`` holds both frames in memory and computes each column's test
several times over; on a million rows a side it takes minutes and gigabytes. The tests it picks
for big data only need small summaries of each column:

* numeric columns with more than 5 distinct values: the normed Wasserstein distance, which is the
  area between the two quantile functions. Each side is summarised by ``CELLS`` equal-mass cell
  means (a "quantile proxy"); the distance between the two proxies equals the full-data distance
  except inside the few cells where the quantile functions cross, and the proxy keeps the mean;
* categorical columns, and numeric ones with at most 5 values: the Jensen-Shannon distance of the
  value frequencies, for which the exact value counts suffice.

How: at training time ``profile_frame`` summarises the full training features exactly (sorted
values, value counts, quantile edges). At check time ``WindowSketch`` streams the current window
as Arrow record batches and keeps per column the exact value counts (up to ``DISTINCT_CAP``
distinct values) and, for numeric columns, a histogram on the reference's quantile edges with each
bin's count and sum, values equal to an edge kept apart from the open interval between two edges.
Memory depends on the number of columns and ``CELLS``, not on the number of rows. ``compare`` then
infers each column's type and picks its test exactly as Evidently does for the full frames, and
calls Evidently's own ``StatTest`` on proxies rebuilt from the summaries. Small data (a side with
at most ``CELLS`` values) is kept raw, so there the result is Evidently's on the data itself.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

log = logging.getLogger(__name__)

PROFILE_FORMAT = 1
CELLS = 16_384  # quantile resolution of a numeric summary (and the raw-value limit)
DISTINCT_CAP = 10_000  # distinct values counted exactly per column; beyond that, counts are dropped
JS_PROXY_ROWS = 1 << 18  # size of the rebuilt frequency sample for Jensen-Shannon (exact up to it)
# Evidently (evidently.legacy.calculations.stattests.registry._get_default_stattest) switches from
# p-value tests to distances above this many reference rows (``default_stattest`` asks Evidently
# itself for the test); the type rules are in evidently.core.datasets.
SMALL_REFERENCE_ROWS = 1000
TEXT_UNIQUE_SHARE = 0.5

NUMERIC_KINDS = ("float", "int")
CATEGORY_KINDS = ("string", "bool", "category")


# ---------------------------------------------------------------------------------------------
# Column kinds: the pandas dtype a column would have in a frame read the usual way
# ---------------------------------------------------------------------------------------------


def pandas_kind(series: pd.Series) -> str:
    """float | int | bool | string | category | datetime | other, like Evidently reads the dtype."""
    name = series.dtype.name
    if name.startswith("float"):
        return "float"
    if name.startswith("int"):  # not "uint": Evidently's type inference leaves those out
        return "int"
    if name == "bool":
        return "bool"
    if name == "category":
        return "category"
    if name.startswith("datetime"):
        return "datetime"
    if name in ("string", "str"):
        return "string"
    if name == "object":
        values = series.dropna()
        if len(values) and isinstance(values.iloc[0], str) and isinstance(values.iloc[-1], str):
            return "string"
    return "other"


def arrow_kind(array: pa.Array | pa.ChunkedArray) -> str:
    """The kind pandas would give this Arrow column (integers or booleans with nulls change type)."""
    kind = array.type
    if pa.types.is_floating(kind):
        return "float"
    if pa.types.is_integer(kind):  # pandas reads integers with nulls as floats
        if array.null_count:
            return "float"
        return "other" if pa.types.is_unsigned_integer(kind) else "int"
    if pa.types.is_boolean(kind):
        return "other" if array.null_count else "bool"  # object dtype: Evidently's "unknown"
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "string"
    if pa.types.is_dictionary(kind):
        return "category"
    if pa.types.is_temporal(kind):
        return "datetime"
    return "other"


def merge_kinds(kinds: Iterable[str]) -> str:
    """The dtype kind of the concatenation of several frames (ints and floats make floats)."""
    found = set(kinds)
    if len(found) == 1:
        return found.pop()
    if found == {"int", "float"}:
        return "float"
    return "other"


def evidently_type(kind: str, distinct: int | None, rows: int) -> str | None:
    """num | cat | text | None: what ``evidently.core.datasets.infer_column_type`` would say."""
    from evidently.core.datasets import INTEGER_CARDINALITY_LIMIT

    if kind == "float":
        return "num"
    if kind == "int":
        return "cat" if distinct is not None and distinct <= INTEGER_CARDINALITY_LIMIT else "num"
    if kind == "string":
        if distinct is None:
            return "text" if rows * TEXT_UNIQUE_SHARE <= DISTINCT_CAP else None
        return "text" if distinct > rows * TEXT_UNIQUE_SHARE else "cat"
    if kind in ("bool", "category"):
        return "cat"
    return None


# ---------------------------------------------------------------------------------------------
# Summaries
# ---------------------------------------------------------------------------------------------


@dataclass
class ColumnSummary:
    """What the tests need from one side of one column (non-finite and null values excluded)."""

    kind: str
    rows: int = 0
    nulls: int = 0
    counts: dict[Any, int] | None = field(default_factory=dict)  # None once over DISTINCT_CAP
    raw: np.ndarray | None = None  # every value, when there are at most CELLS of them
    cells: np.ndarray | None = None  # CELLS equal-mass cell means (reference side)
    points: tuple[np.ndarray, np.ndarray] | None = None  # sorted values and weights (current side)
    mean: float | None = None
    std: float | None = None
    edges: np.ndarray | None = None  # histogram edges for the other side (reference side)

    @property
    def distinct(self) -> int | None:
        """The number of distinct values, when they were counted (categorical columns)."""
        return None if self.counts is None else len(self.counts)

    def quantile_proxy(self) -> np.ndarray:
        """The equal-weight sample whose Wasserstein geometry matches the column's distribution."""
        if self.raw is not None:
            return self.raw
        if self.cells is not None:
            return self.cells
        if self.counts is not None:
            values, weights = _sorted_counts(self.counts)
            return cell_means(values, weights, CELLS)
        if self.points is None:
            raise ValueError("summary has no values")
        return cell_means(*self.points, CELLS)

    def full_values(self) -> np.ndarray:
        """Every value (for p-value tests, whose result depends on the row count)."""
        if self.raw is not None:
            return self.raw
        if self.counts is not None:
            values, weights = _sorted_counts(self.counts)
        elif self.points is not None:
            values, weights = self.points
        else:
            raise ValueError("a quantile summary cannot be expanded back into rows")
        return np.repeat(values, weights.astype(np.int64))


def _sorted_counts(counts: dict[Any, int]) -> tuple[np.ndarray, np.ndarray]:
    values = np.fromiter(counts.keys(), dtype=np.float64, count=len(counts))
    weights = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
    order = np.argsort(values, kind="stable")
    return values[order], weights[order]


def cell_means(values: np.ndarray, weights: np.ndarray, cells: int) -> np.ndarray:
    """Means of ``cells`` equal-mass slices of a distribution given as sorted weighted points.

    A point whose weight straddles a slice boundary is split between the two slices, so the mean
    of the result is exactly the mean of the distribution.
    """
    shift = float(values[len(values) // 2])  # keeps the cumulative sums well conditioned
    centred = values - shift
    cum_w = np.concatenate(([0.0], np.cumsum(weights)))
    cum_s = np.concatenate(([0.0], np.cumsum(centred * weights)))
    total = cum_w[-1]
    ranks = np.linspace(0.0, total, cells + 1)
    j = np.clip(np.searchsorted(cum_w, ranks, side="right") - 1, 0, len(values) - 1)
    partial = cum_s[j] + (ranks - cum_w[j]) * centred[j]
    return np.diff(partial) / (total / cells) + shift


def _counts_of(values: pd.Series | np.ndarray) -> dict[Any, int] | None:
    """Exact value counts, or None when there are more than DISTINCT_CAP distinct values."""
    array = np.asarray(values)
    probe = array[: 2 * DISTINCT_CAP + 1]
    if len(pd.unique(probe)) > DISTINCT_CAP:
        return None
    counted = pd.Series(array).value_counts(sort=False, dropna=True)
    if len(counted) > DISTINCT_CAP:
        return None
    return {_plain(k): int(v) for k, v in counted.items()}


def _plain(value: Any) -> Any:
    """A JSON-friendly Python scalar (numpy scalars become int/float/bool)."""
    return value.item() if isinstance(value, np.generic) else value


def _merge_counts(total: dict[Any, int] | None, part: dict[Any, int] | None) -> dict[Any, int] | None:
    if total is None or part is None:
        return None
    for key, count in part.items():
        total[key] = total.get(key, 0) + count
    return total if len(total) <= DISTINCT_CAP else None


def profile_column(series: pd.Series) -> ColumnSummary:
    """Exact summary of one in-memory column (the training reference)."""
    kind = pandas_kind(series)
    summary = ColumnSummary(kind=kind)
    if kind in NUMERIC_KINDS:
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        finite = values[np.isfinite(values)]
        summary.nulls = len(values) - len(finite)
        summary.rows = len(finite)
        summary.counts = _counts_of(finite)
        if len(finite):
            ordered = np.sort(finite)
            summary.mean, summary.std = float(ordered.mean()), float(ordered.std())
            if len(ordered) <= CELLS:
                summary.raw = ordered
            else:
                summary.cells = cell_means(ordered, np.ones(len(ordered)), CELLS)
            picks = np.floor(np.linspace(0, len(ordered) - 1, CELLS + 1)).astype(np.int64)
            edges = ordered[picks]
            if summary.counts is not None:  # discrete: every value is an edge, so counts are exact
                edges = np.concatenate([edges, np.fromiter(summary.counts, dtype=np.float64)])
            summary.edges = np.unique(edges)
    elif kind in CATEGORY_KINDS:
        present = series.dropna()
        summary.nulls = len(series) - len(present)
        summary.rows = len(present)
        summary.counts = _counts_of(present.astype(object) if kind == "category" else present)
    else:
        summary.nulls = int(series.isna().sum())
        summary.rows = len(series) - summary.nulls
        summary.counts = None
    return summary


def profile_frame(frame: pd.DataFrame) -> dict[str, ColumnSummary]:
    """Summaries of every column of an in-memory frame (the training reference)."""
    return {str(column): profile_column(frame[column]) for column in frame.columns}


# ---------------------------------------------------------------------------------------------
# Streaming the current window
# ---------------------------------------------------------------------------------------------


class ColumnSketch:
    """Bounded streaming summary of one current column, on the reference's histogram edges."""

    def __init__(self, edges: np.ndarray | None) -> None:
        self.kinds: set[str] = set()
        self.rows = 0
        self.nulls = 0
        self.counts: dict[Any, int] | None = {}
        self.raw: list[np.ndarray] | None = []
        self.edges = edges
        if edges is not None:
            self._shift = float(edges[len(edges) // 2])
            bins = 2 * len(edges) + 1  # open interval, edge, open interval, ..., edge, open interval
            self.bin_rows = np.zeros(bins, dtype=np.int64)
            self.bin_sums = np.zeros(bins, dtype=np.float64)

    def add_nulls(self, rows: int) -> None:
        """Count rows where the column is absent from a file, as missing values."""
        self.nulls += rows

    def update(self, array: pa.Array | pa.ChunkedArray) -> None:
        """Fold one Arrow array of the column into the summary, in bounded memory."""
        kind = arrow_kind(array)
        self.kinds.add(kind)
        if kind in NUMERIC_KINDS:
            self._update_numeric(array)
        elif kind in CATEGORY_KINDS:
            self._update_categorical(array)
        else:
            self.nulls += array.null_count
            self.rows += len(array) - array.null_count
            self.counts, self.raw = None, None

    def _update_numeric(self, array: pa.Array | pa.ChunkedArray) -> None:
        values = np.asarray(array.to_numpy(zero_copy_only=False), dtype=np.float64)
        finite = np.isfinite(values)
        if not finite.all():
            values = values[finite]
        self.nulls += len(finite) - len(values)
        self.rows += len(values)
        if self.raw is not None:
            self.raw.append(values)
            if self.rows > CELLS:
                self.raw = None
        if not len(values):
            return
        # One sort of the batch gives both the distinct values (runs) and the histogram (by
        # locating the edges in the batch, which is much faster than locating each value).
        ordered = np.sort(values)
        if self.counts is not None:
            starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
            if len(starts) > DISTINCT_CAP:
                self.counts = None
            else:
                runs = np.diff(np.append(starts, len(ordered)))
                part = dict(zip(ordered[starts].tolist(), runs.tolist(), strict=True))
                self.counts = _merge_counts(self.counts, part)
        if self.edges is not None:
            below = np.searchsorted(ordered, self.edges, side="left")  # values < edge
            upto = np.searchsorted(ordered, self.edges, side="right")  # values <= edge
            starts = np.concatenate(([0], upto))  # open interval j runs from edge j-1 to edge j
            ends = np.append(below, len(ordered))
            cum = np.concatenate(([0.0], np.cumsum(ordered - self._shift)))
            self.bin_rows[0::2] += ends - starts
            self.bin_sums[0::2] += cum[ends] - cum[starts]
            self.bin_rows[1::2] += upto - below
            self.bin_sums[1::2] += (upto - below) * (self.edges - self._shift)

    def _update_categorical(self, array: pa.Array | pa.ChunkedArray) -> None:
        self.raw = None
        present = len(array) - array.null_count
        self.nulls += array.null_count
        self.rows += present
        if self.counts is None or not present:
            return
        if pa.types.is_dictionary(array.type):
            array = array.cast(array.type.value_type)
        counted = pc.value_counts(array)
        values, counts = counted.field("values"), counted.field("counts")
        if len(values) > DISTINCT_CAP + 1:
            self.counts = None
            return
        part = {
            v: int(c) for v, c in zip(values.to_pylist(), counts.to_pylist(), strict=True) if v is not None
        }
        self.counts = _merge_counts(self.counts, part)

    def summary(self) -> ColumnSummary:
        """The column's summary so far, in the form the tests compare with the reference."""
        kind = merge_kinds(self.kinds) if self.kinds else "other"
        result = ColumnSummary(kind=kind, rows=self.rows, nulls=self.nulls, counts=self.counts)
        if kind in NUMERIC_KINDS:
            if self.raw is not None:
                result.raw = np.sort(np.concatenate(self.raw)) if self.raw else np.empty(0)
            elif self.edges is not None:
                keep = self.bin_rows > 0
                weights = self.bin_rows[keep].astype(np.float64)
                result.points = (self.bin_sums[keep] / weights + self._shift, weights)
        elif kind not in CATEGORY_KINDS:
            result.counts = None
        return result


class RowSample:
    """A uniform, seeded sample of at most ``size`` rows of a stream, in bounded memory.

    Each row's key is a hash of its position in the window, and the rows with the smallest keys are
    kept ("bottom-k"), so streams of the same length (inputs and their predictions) select the same
    rows whatever their batch sizes.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.seed = np.uint64(seed & 0xFFFFFFFFFFFFFFFF)
        self.keys = np.empty(0, dtype=np.uint64)
        self.table: pa.Table | None = None

    def update(self, table: pa.Table, offset: int) -> None:
        """Fold one Arrow batch into the sample."""
        keys = _mix64(np.arange(offset, offset + table.num_rows, dtype=np.uint64) ^ self.seed)
        if len(self.keys) >= self.size:
            wanted = np.flatnonzero(keys < self.keys.max())
            if not len(wanted):
                return
            keys, table = keys[wanted], table.take(pa.array(wanted))
        merged = (
            table
            if self.table is None
            else pa.concat_tables([self.table, table], promote_options="permissive")
        )
        all_keys = np.concatenate([self.keys, keys])
        if len(all_keys) > self.size:
            keep = np.sort(np.argpartition(all_keys, self.size - 1)[: self.size])
            merged, all_keys = merged.take(pa.array(keep)), all_keys[keep]
        self.table, self.keys = merged, all_keys

    def frame(self) -> pd.DataFrame:
        """The sampled rows in a stable order, so the same seed gives the same report."""
        if self.table is None:
            return pd.DataFrame()
        return self.table.take(pa.array(np.argsort(self.keys, kind="stable"))).to_pandas()


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a fast, well-mixed 64-bit hash of each element."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


class WindowSketch:
    """Streaming summaries of the current window's columns, plus a bounded row sample."""

    def __init__(
        self, reference: dict[str, ColumnSummary], *, sample_rows: int, seed: int, columns: Iterable[str]
    ) -> None:
        self.columns = list(columns)
        self.sketches = {
            c: ColumnSketch(reference[c].edges if c in reference else None) for c in self.columns
        }
        self.sample = RowSample(sample_rows, seed)
        self.rows = 0

    def update(self, table: pa.Table) -> None:
        """Fold one table of the window into every column's sketch."""
        for column in self.columns:
            if column in table.column_names:
                self.sketches[column].update(table.column(column))
            else:
                self.sketches[column].add_nulls(table.num_rows)
        present = [c for c in self.columns if c in table.column_names]
        if present:
            self.sample.update(table.select(present), self.rows)
        self.rows += table.num_rows

    def summaries(self) -> dict[str, ColumnSummary]:
        """Every column's summary, for ``compare``."""
        return {c: s.summary() for c, s in self.sketches.items()}


# ---------------------------------------------------------------------------------------------
# Comparing with Evidently's tests
# ---------------------------------------------------------------------------------------------


def default_stattest(column_type: str, reference_rows: int, values: int) -> Any:
    """Evidently's default test for one column, chosen by Evidently's own ``get_stattest``.

    Why: the test must be the one Evidently would pick on the full data, by construction rather than
    by a copy of its rules. Its choice depends only on the column type, the number of reference rows
    (at most or above ``SMALL_REFERENCE_ROWS``) and the number of distinct values on both sides, so
    it is asked on two tiny series with those properties.
    """
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType

    kinds = {"num": ColumnType.Numerical, "cat": ColumnType.Categorical, "text": ColumnType.Text}
    distinct = max(int(values), 1)
    reference = pd.Series(np.arange(min(reference_rows, SMALL_REFERENCE_ROWS + 1)) % distinct)
    current = pd.Series(np.arange(distinct))  # both sides together have ``values`` distinct values
    return get_stattest(reference, current, kinds[column_type], None)


def _allocate(weights: np.ndarray, size: int) -> np.ndarray:
    """Integer counts summing to at most ``size`` in the same proportions (largest remainders)."""
    total = weights.sum()
    if total <= size:
        return weights.astype(np.int64)
    scaled = weights * (size / total)
    counts = np.floor(scaled).astype(np.int64)
    short = size - counts.sum()
    if short > 0:
        counts[np.argsort(counts - scaled, kind="stable")[:short]] += 1
    return np.maximum(counts, (weights > 0).astype(np.int64))  # a seen value never disappears


def _frequency_proxies(
    reference: dict[Any, int], current: dict[Any, int], *, exact: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes whose value counts are the two columns' (rescaled unless ``exact``)."""
    keys = list(dict.fromkeys([*reference, *current]))
    ref = np.array([reference.get(k, 0) for k in keys], dtype=np.float64)
    cur = np.array([current.get(k, 0) for k in keys], dtype=np.float64)
    codes = np.arange(len(keys), dtype=np.int32)
    limit = np.iinfo(np.int64).max if exact else JS_PROXY_ROWS
    return np.repeat(codes, _allocate(ref, limit)), np.repeat(codes, _allocate(cur, limit))


@dataclass
class Decision:
    """One column's drift verdict on the full data, as Evidently would give it."""

    column: str
    column_type: str
    stattest: str
    method: str
    threshold: float
    value: float
    drifted: bool
    reference_rows: int
    current_rows: int
    exact: bool

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy for the summary file, with the margin to the threshold."""
        margin = (self.value - self.threshold) / self.threshold if self.threshold else math.inf
        return {
            "method": self.method,
            "stattest": self.stattest,
            "type": self.column_type,
            "threshold": self.threshold,
            "value": self.value,
            "drifted": self.drifted,
            "margin": round(margin, 6),
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "exact": self.exact,
        }


def compare_column(name: str, reference: ColumnSummary, current: ColumnSummary) -> Decision | str:
    """Run Evidently's test for one column on the summaries; a string says why it was skipped."""
    from evidently.legacy.core import ColumnType

    column_type = evidently_type(current.kind, current.distinct, current.rows)
    if column_type is None:
        return f"unsupported type {current.kind!r} (or more than {DISTINCT_CAP} distinct values)"
    if column_type == "text":
        return "free text (Evidently's text drift is a model-based test, not summarised here)"
    if not reference.rows or not current.rows:
        return "no values on the " + ("reference" if not reference.rows else "current") + " side"
    if column_type == "num" and not (reference.kind in NUMERIC_KINDS and current.kind in NUMERIC_KINDS):
        return f"numeric in the current data but {reference.kind} in the reference"
    if reference.counts is not None and current.counts is not None:
        values = len(set(reference.counts) | set(current.counts))
    else:
        values = DISTINCT_CAP + 1
    test = default_stattest(column_type, reference.rows, values)
    feature_type = ColumnType.Numerical if column_type == "num" else ColumnType.Categorical
    if test.name == "wasserstein":
        ref_data, cur_data = reference.quantile_proxy(), current.quantile_proxy()
        exact = reference.raw is not None and current.raw is not None
        if reference.std and not exact:  # the test norms by the proxy's spread, a bit below the data's
            spread = float(np.std(ref_data)) / reference.std - 1
            if abs(spread) > 0.01:
                log.warning(
                    "Column %s: the reference summary's spread is %.1f%% off the data's (very heavy "
                    "tails), so the normed Wasserstein distance is approximate",
                    name,
                    100 * spread,
                )
    elif test.name == "ks":
        ref_data, cur_data = reference.full_values(), current.full_values()
        exact = True
    else:
        if reference.counts is None or current.counts is None:
            return f"a count-based test ({test.display_name}) but more than {DISTINCT_CAP} distinct values"
        p_value = test.name in ("chisquare", "z")
        ref_data, cur_data = _frequency_proxies(reference.counts, current.counts, exact=p_value)
        exact = p_value or max(reference.rows, current.rows) <= JS_PROXY_ROWS
    result = test(
        pd.Series(ref_data, name=name), pd.Series(cur_data, name=name), feature_type, threshold=None
    )
    return Decision(
        column=name,
        column_type=column_type,
        stattest=test.name,
        method=test.display_name,
        threshold=float(result.actual_threshold),
        value=float(result.drift_score),
        drifted=bool(result.drifted),
        reference_rows=reference.rows,
        current_rows=current.rows,
        exact=exact,
    )


def compare(
    reference: dict[str, ColumnSummary], current: dict[str, ColumnSummary], columns: Iterable[str]
) -> tuple[dict[str, Decision], dict[str, str]]:
    """Decisions for every comparable column, and the reason for each one that was skipped."""
    decisions: dict[str, Decision] = {}
    skipped: dict[str, str] = {}
    for column in columns:
        outcome = compare_column(column, reference[column], current[column])
        if isinstance(outcome, Decision):
            decisions[column] = outcome
        else:
            skipped[column] = outcome
            log.warning("Drift of column %s not checked: %s", column, outcome)
    return decisions, skipped


# ---------------------------------------------------------------------------------------------
# Serialisation of a reference profile (JSON, artifact of the training run)
# ---------------------------------------------------------------------------------------------


def _summary_to_json(summary: ColumnSummary) -> dict[str, Any]:
    def floats(array: np.ndarray | None) -> list[float] | None:
        return None if array is None else array.tolist()

    return {
        "kind": summary.kind,
        "rows": summary.rows,
        "nulls": summary.nulls,
        "counts": None if summary.counts is None else [[k, v] for k, v in summary.counts.items()],
        "raw": floats(summary.raw),
        "cells": floats(summary.cells),
        "edges": floats(summary.edges),
        "mean": summary.mean,
        "std": summary.std,
    }


def _summary_from_json(data: dict[str, Any]) -> ColumnSummary:
    def floats(values: list[float] | None) -> np.ndarray | None:
        return None if values is None else np.asarray(values, dtype=np.float64)

    return ColumnSummary(
        kind=data["kind"],
        rows=int(data["rows"]),
        nulls=int(data["nulls"]),
        counts=None if data["counts"] is None else {k: int(v) for k, v in data["counts"]},
        raw=floats(data["raw"]),
        cells=floats(data["cells"]),
        edges=floats(data["edges"]),
        mean=data.get("mean"),
        std=data.get("std"),
    )


def profile_to_json(
    features: dict[str, ColumnSummary], predictions: dict[str, ColumnSummary]
) -> dict[str, Any]:
    """The reference profile as saved with a model version (versioned format)."""
    return {
        "format": PROFILE_FORMAT,
        "cells": CELLS,
        "distinct_cap": DISTINCT_CAP,
        "features": {c: _summary_to_json(s) for c, s in features.items()},
        "predictions": {c: _summary_to_json(s) for c, s in predictions.items()},
    }


def profile_from_json(data: dict[str, Any]) -> tuple[dict[str, ColumnSummary], dict[str, ColumnSummary]]:
    """The reference profile back; an unknown format fails rather than comparing wrongly."""
    if data.get("format") != PROFILE_FORMAT:
        raise ValueError(f"unsupported reference profile format {data.get('format')!r}")
    return (
        {c: _summary_from_json(s) for c, s in data["features"].items()},
        {c: _summary_from_json(s) for c, s in data["predictions"].items()},
    )
