"""Validation of large files in bounded memory, reaching the verdict of whole-file validation.

Why: ``validation.validate_frame`` needs the whole file as one DataFrame, and Great Expectations
copies that frame several times while it computes metrics, so a 10-million-row file needs many GB
of memory. Here memory is bounded by one chunk (plus, for a uniqueness check, 8 bytes per row of
that one column).

How: the file is streamed (``reading.iter_frames``: Parquet batches, CSV chunks aligned with
pandas' type inference, each chunk with the dtypes and index labels a whole-file read gives it).
For every chunk, Great Expectations computes the metrics each expectation of the real suite
depends on, on just the columns that expectation reads. The metrics are combined across chunks
exactly, and GE's own expectation logic (``Expectation.metrics_validate``) judges the combined
metrics, so ``mostly``, strict bounds and the result format behave exactly as on the whole file:

* row counts, null counts, unexpected and filtered-row counts of row-wise expectations: summed;
* the first N unexpected values and index labels: concatenated in row order and cut at N;
* column min / max: min / max over the chunks; column lists and dtypes: identical in every chunk;
* ``expect_column_values_to_be_unique``: one 64-bit key per non-null value of that column is kept
  across chunks, and keys that occur twice are found by sorting; string keys are hashes, so a
  repeated hash is confirmed against the strings themselves before it counts;
* anything else (means, quantiles, distinct values, compound uniqueness, monotonicity, z-scores,
  a metric that raised on some chunk, dtypes that differ between chunks) falls back: GE validates
  that expectation on just the column(s) it needs, read whole, which is bounded by those columns.

When a column's dtype differs between chunks (a CSV column that is int64 in one chunk and float64
in another), the file is validated again with every chunk cast to the whole-file dtype.
"""

from __future__ import annotations

import copy
import logging
import os
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from include.mlops import storage
from include.mlops.data import content_checks, reading
from include.mlops.data.validation import ValidationOutcome, gx_session
from include.mlops.errors import DataError, SpecError, listed

log = logging.getLogger(__name__)

CHUNK_ROWS_ENV = "MLOPS_VALIDATION_CHUNK_ROWS"
STREAM_BYTES_ENV = "MLOPS_VALIDATION_STREAM_BYTES"
# Chunks of 10M cells (500k rows of a 20-column table, ~150-250 MB as a DataFrame): large enough
# that GE's fixed cost per chunk stays small, small enough that a worker validates a file of any
# length in about 1 GB. Between 10k and 1M rows whatever the width.
CHUNK_CELLS = 10_000_000
MIN_CHUNK_ROWS, MAX_CHUNK_ROWS = 10_000, 1_000_000
# Files from 64 MiB on disk (Parquet expands 3-10x in memory) are streamed, and so is any Parquet
# file with more rows than one chunk.
DEFAULT_STREAM_BYTES = 64 * 2**20
RESULT_FORMAT = "SUMMARY"  # GE's default, which validate_frame's batch.validate uses too
NO_PROGRESS_BARS = 1 << 62  # min_graph_edges_pbar_enable: never draw a progress bar
METRICS_LOGGER = "great_expectations.validator.metrics_calculator"

# Map metrics whose condition looks at one row at a time, so per-chunk counts add up.
ROW_WISE_METRICS = frozenset(
    {
        "column_values.nonnull",
        "column_values.null",
        "column_values.between",
        "column_values.in_set",
        "column_values.not_in_set",
        "column_values.match_regex",
        "column_values.not_match_regex",
        "column_values.match_regex_list",
        "column_values.not_match_regex_list",
        "column_values.match_like_pattern",
        "column_values.not_match_like_pattern",
        "column_values.match_like_pattern_list",
        "column_values.not_match_like_pattern_list",
        "column_values.match_strftime_format",
        "column_values.dateutil_parseable",
        "column_values.json_parseable",
        "column_values.match_json_schema",
        "column_values.value_length.between",
        "column_values.value_length.equals",
        "column_values.of_type",
        "column_values.in_type_list",
        "column_pair_values.equal",
        "column_pair_values.a_greater_than_b",
        "column_pair_values.in_set",
        "multicolumn_sum.equal",
        "multicolumn_values.equal",
        "select_column_values.unique.within_record",
    }
)
MAP_SUFFIX_RULES = {
    "unexpected_count": "sum",
    "filtered_row_count": "sum",
    "unexpected_values": "list",
    "unexpected_index_list": "list",
    "unexpected_index_query": "query",
    "unexpected_rows": "rows",
}
TABLE_RULES = {
    "table.row_count": "sum",
    "table.columns": "same",
    "table.column_types": "same",
    "table.column_count": "same",
    "column.min": "min",
    "column.max": "max",
}
UNIQUE = "expect_column_values_to_be_unique"
UNIQUE_METRICS = frozenset(
    {
        "table.row_count",
        "column_values.nonnull.unexpected_count",
        "column_values.unique.unexpected_count",
        "column_values.unique.unexpected_values",
        "column_values.unique.unexpected_index_list",
        "column_values.unique.unexpected_index_query",
    }
)
ROW_COUNT_METRICS = frozenset({"table.row_count"})
SCHEMA_METRICS = frozenset({"table.columns", "table.column_types", "table.column_count"})
QUERY_HEAD, QUERY_TAIL = "df.filter(items=[", "], axis=0)"


def configured_chunk_rows(columns: int) -> int:
    """Rows per chunk for a table this wide: ``MLOPS_VALIDATION_CHUNK_ROWS``, else 10M cells' worth."""
    default = min(MAX_CHUNK_ROWS, max(MIN_CHUNK_ROWS, CHUNK_CELLS // max(columns, 1)))
    return _positive_int(CHUNK_ROWS_ENV, default)


def stream_threshold_bytes() -> int:
    """Files at least this large are validated in chunks: ``MLOPS_VALIDATION_STREAM_BYTES``, default 64 MiB."""
    return _positive_int(STREAM_BYTES_ENV, DEFAULT_STREAM_BYTES)


def should_stream(uri: str, fmt: str, *, chunk_rows: int | None = None) -> bool:
    """Whether a file is large enough to be validated in chunks rather than loaded whole.

    From ``MLOPS_VALIDATION_STREAM_BYTES`` on disk (default 64 MiB), or a Parquet file with more
    rows than one chunk. A file that cannot be sized or read goes the whole-file way, which
    reports the problem as it always has.
    """
    try:
        size = storage.size(uri)
        if size >= stream_threshold_bytes():
            return True
        if fmt == "parquet" and size > 0:
            limit = chunk_rows or configured_chunk_rows(len(reading.read_header(uri, fmt).columns))
            return reading.parquet_rows(uri) > limit
    except (OSError, DataError):
        return False
    return False


def copy_as_parquet(uri: str, fmt: str, dest: str) -> tuple[int, list[str]]:
    """Publish a large file as Parquet chunk by chunk (never loaded whole); returns (rows, columns)."""
    return reading.write_parquet(
        uri, fmt, dest, rows=configured_chunk_rows(len(reading.read_header(uri, fmt).columns))
    )


def validate_file(
    uri: str,
    fmt: str,
    suite: dict[str, Any],
    *,
    chunk_rows: int | None = None,
    content: content_checks.ContentCheck | None = None,
) -> ValidationOutcome:
    """Validate a CSV or Parquet file chunk by chunk; same verdict and result shape as validate_frame.

    Raises DataError when the file cannot be read (at any chunk) or has no data rows, as
    ``reading.read_frame`` does for the whole-file path. ``content`` (a ``content_checks.ContentCheck``)
    sees every chunk of the last pass, with the whole-file dtypes; the caller calls its ``finish``.
    """
    started = time.perf_counter()
    name = storage.basename(uri)
    header = reading.read_header(uri, fmt)
    rows = chunk_rows or configured_chunk_rows(len(header.columns))
    if fmt == "csv":
        rows = reading.aligned_chunk_rows(rows, reading.csv_block_rows(len(header.columns)))
    dtypes = reading.parquet_dtypes(uri) if fmt == "parquet" else {}
    run = _Run(suite, header, name=name)
    passes = 0
    while True:
        passes += 1
        seen = run.stream(uri, fmt, rows, dtypes, content=content)
        if run.rows == 0 or len(header.columns) == 0:
            raise DataError(f"{name}: the file has no data rows")
        mixed = {column: found for column, found in seen.items() if len({_dtype_key(d) for d in found}) > 1}
        if not mixed:
            break
        if passes > 1:  # every chunk was cast the second time: reaching this is a bug
            raise DataError(f"{name}: column types still differ between chunks ({listed(mixed)})")
        dtypes = {**dtypes, **{column: _common_dtype(found) for column, found in mixed.items()}}
        log.info(
            "%s: dtypes differ between chunks in %s; validating again with the whole-file dtypes",
            name,
            ", ".join(f"{column} ({', '.join(map(str, found))})" for column, found in mixed.items()),
        )
    run.finish(uri, fmt, rows, dtypes)
    seconds = time.perf_counter() - started
    result = run.result(
        {
            "chunks": run.chunks,
            "chunk_rows": rows,
            "rows": run.rows,
            "passes": passes,
            "seconds": round(seconds, 3),
        }
    )
    fallbacks = result["meta"]["chunked"]["fallbacks"]
    log.info(
        "Validated %s in %d chunk(s) of at most %d rows (%d rows, %d pass(es), %.1f s): %s; "
        "%d expectation(s) validated on whole columns",
        name,
        run.chunks,
        rows,
        run.rows,
        passes,
        seconds,
        "passed" if result["success"] else "FAILED",
        len(fallbacks),
    )
    return ValidationOutcome(success=bool(result["success"]), result=result)


# How an expectation is validated: its metrics combined over chunks, computed once on a column's
# distinct values (unique), GE run on the whole file as a fallback, or already decided (done).
PlanMode = Literal["combine", "unique", "fallback", "done"]
# The table-level metrics a plan reads: the full chunk, its row count only, or its schema.
View = Literal["full", "rows", "schema"]


@dataclass
class _Plan:
    """How one expectation is validated, and its combined metrics so far."""

    config: Any  # ExpectationConfiguration, with the batch id as graph_validate sets it
    expectation: Any = None
    columns: tuple[str, ...] | None = None  # the columns its metrics read; None: the whole table
    view: View = "full"  # table-level metrics: "rows" (row count only), "schema" (columns, dtypes)
    # metric name -> per-chunk configuration, per dtypes of the frame GE is given: GE derives some
    # expectations' metrics from the column's dtype (of_type: per value for object columns)
    needed: dict[tuple[str, ...], dict[str, Any]] = field(default_factory=dict)
    mode: PlanMode = "combine"
    planned: PlanMode = "combine"  # the mode each pass starts from
    reason: str = ""
    planned_reason: str = ""
    combined: dict[str, Any] = field(default_factory=dict)
    result: Any = None  # ExpectationValidationResult

    def fall_back(self, reason: str) -> None:
        if self.mode != "fallback":
            self.mode, self.reason, self.combined = "fallback", reason, {}

    def add(self, values: dict[str, Any], limit: int | None) -> None:
        """Fold one chunk's metric values into the combined ones."""
        for metric, value in values.items():
            rule = _rule(metric)
            if metric not in self.combined:
                self.combined[metric] = _first(rule, value, limit)
                continue
            current = self.combined[metric]
            try:
                if rule == "sum":
                    self.combined[metric] = current + value
                elif rule == "same":
                    if not _same(current, value):
                        self.fall_back(f"{metric} differs between chunks")
                        return
                elif rule in ("min", "max"):
                    self.combined[metric] = _extreme(current, value, min if rule == "min" else max)
                elif rule == "list":
                    if limit is None or len(current) < limit:
                        current.extend(value[: None if limit is None else limit - len(current)])
                elif rule == "query":
                    self.combined[metric] = _join_queries(current, value)
                elif rule == "rows":
                    rows = pd.concat([current, value])
                    self.combined[metric] = rows if limit is None else rows.head(limit)
            except (TypeError, ValueError) as exc:
                self.fall_back(f"{metric} cannot be combined across chunks: {exc}")
                return


def _note_dtypes(chunk: pd.DataFrame, seen: dict[str, list[Any]]) -> None:
    """Add each column's dtype in ``chunk`` to ``seen`` unless already there (chunks may disagree)."""
    for column, dtype in chunk.dtypes.items():
        found = seen.setdefault(str(column), [])
        if not any(dtype == known for known in found):
            found.append(dtype)


class _Run:
    """One chunked validation: the GE session, a plan per expectation, the chunk loop."""

    def __init__(self, suite: dict[str, Any], header: pd.DataFrame, *, name: str) -> None:
        self.name = name
        self.header = header
        self.context, self.gx_suite, self.batch_definition = gx_session(suite)
        self.runtime = {"result_format": RESULT_FORMAT}
        self.chunk_runtime = _chunk_runtime(self.runtime)
        self.limit = _partial_limit(self.runtime)
        self.rows = self.chunks = 0
        self.trackers: dict[str, _UniqueTracker] = {}
        self.schema = header
        validator = self._validator(header)
        self.engine = validator.execution_engine
        self.batch_id = validator.active_batch_id
        configs = validator.process_expectations_for_validation(self.gx_suite.expectation_configurations)
        self.plans = [self._plan(config) for config in configs]

    def _validator(self, frame: pd.DataFrame) -> Any:
        batch = self.batch_definition.get_batch(batch_parameters={"dataframe": frame})
        return self.context.get_validator_using_batch_list(expectation_suite=None, batch_list=[batch])

    def _plan(self, config: Any) -> _Plan:
        evaluated = copy.deepcopy(config)
        if self.batch_id:
            evaluated.kwargs.update({"batch_id": self.batch_id})
        plan = _Plan(evaluated, columns=_domain_columns(evaluated.kwargs))
        try:
            plan.expectation = evaluated.to_domain_obj()
            names = set(self._metric_configurations(plan))
        except Exception as exc:  # a bad configuration fails the same way on any data
            plan.mode, plan.result = "done", _error_result(evaluated, exc)
            return plan
        if plan.columns is None and not evaluated.kwargs.get("row_condition"):
            if names <= ROW_COUNT_METRICS:
                plan.view = "rows"
            elif names <= SCHEMA_METRICS:
                plan.view = "schema"
        if evaluated.type == UNIQUE and plan.columns and self._unique_trackable(evaluated, names):
            plan.mode = "unique"
        elif not all(_rule(metric) for metric in names):
            plan.fall_back(f"metrics {', '.join(sorted(m for m in names if not _rule(m)))} are not additive")
        plan.planned, plan.planned_reason = plan.mode, plan.reason
        return plan

    def _metric_configurations(self, plan: _Plan, runtime: dict[str, Any] | None = None) -> dict[str, Any]:
        dependencies = plan.expectation.get_validation_dependencies(
            execution_engine=self.engine, runtime_configuration=runtime or self.chunk_runtime
        )
        return dict(dependencies.metric_configurations)

    def _unique_trackable(self, config: Any, names: set[str]) -> bool:
        parsed = _parsed_format(self.runtime)
        return (
            not config.kwargs.get("row_condition")
            and names <= UNIQUE_METRICS
            and parsed["result_format"] != "COMPLETE"
            and not parsed.get("include_unexpected_rows")
            and not _wants_query(self.runtime)
        )

    def stream(
        self, uri: str, fmt: str, rows: int, dtypes: dict[str, Any], *, content: Any = None
    ) -> dict[str, list[Any]]:
        """One pass over the file; returns the dtypes seen per column. ``content`` tallies each chunk."""
        self._restart(content)
        seen: dict[str, list[Any]] = {}
        for chunk in reading.iter_frames(uri, fmt, rows=rows, dtypes=dtypes):
            self.chunks += 1
            self.rows += len(chunk)
            if self.chunks == 1:
                self.schema = chunk.iloc[:0].copy()  # the whole file's columns and dtypes
            _note_dtypes(chunk, seen)
            self._validate_chunk(chunk)
            if content is not None:
                content.update(chunk)
            log.debug("%s: chunk %d validated (%d rows so far)", self.name, self.chunks, self.rows)
            del chunk  # before the next one is read: one chunk in memory at a time
        return seen

    def _restart(self, content: Any) -> None:
        """Forget an earlier pass (redone with whole-file dtypes): plans reset, counts zero, new trackers."""
        if content is not None:
            content.restart()
        for plan in self.plans:
            if plan.mode != "done":
                plan.mode, plan.reason, plan.combined = plan.planned, plan.planned_reason, {}
                plan.needed = {}
        self.rows = self.chunks = 0
        self.trackers = {
            plan.columns[0]: _UniqueTracker(plan.columns[0])
            for plan in self.plans
            if plan.mode == "unique" and plan.columns
        }

    def _validate_chunk(self, chunk: pd.DataFrame) -> None:
        """Feed one chunk to the expectations still combined (one GE pass per view) and the trackers."""
        # Grouped afresh for every chunk: a plan that fell back on the previous chunk drops out.
        groups: dict[tuple[tuple[str, ...] | None, View], list[_Plan]] = {}
        for plan in self.plans:
            if plan.mode == "combine":
                groups.setdefault((plan.columns, plan.view), []).append(plan)
        for (columns, view), plans in groups.items():
            self._compute(_view(chunk, columns, view), plans)
        for tracker in self.trackers.values():
            tracker.update(chunk)

    def _compute(self, frame: pd.DataFrame, plans: list[_Plan]) -> None:
        """GE computes these expectations' metrics on (the columns they read of) one chunk."""
        validator = self._validator(frame)
        signature = tuple(map(str, frame.dtypes))
        wanted: list[tuple[_Plan, dict[str, Any]]] = []
        for plan in plans:
            try:
                if validator.active_batch_id != self.batch_id:  # metric ids carry the batch id
                    raise RuntimeError(f"batch id {validator.active_batch_id!r}, not {self.batch_id!r}")
                if signature not in plan.needed:  # computed on this frame, as GE does per batch
                    plan.needed[signature] = self._metric_configurations(plan)
                needed = plan.needed[signature]
            except Exception as exc:
                plan.fall_back(f"chunk {self.chunks}: {exc}")
                continue
            if not all(_rule(metric) for metric in needed):
                plan.fall_back(
                    f"metrics {', '.join(sorted(m for m in needed if not _rule(m)))} are not additive"
                )
                continue
            wanted.append((plan, needed))
        configurations = [mc for _, needed in wanted for mc in needed.values()]
        try:
            with _quiet(METRICS_LOGGER):  # a failing metric is reported by its fallback, once
                resolved, aborted = validator.compute_metrics(
                    configurations, self.chunk_runtime, min_graph_edges_pbar_enable=NO_PROGRESS_BARS
                )
        except Exception as exc:
            for plan, _ in wanted:
                plan.fall_back(f"metrics raised on chunk {self.chunks}: {exc}")
            return
        for plan, needed in wanted:
            missing = [metric for metric, mc in needed.items() if mc.id not in resolved]
            if missing:
                plan.fall_back(f"{missing[0]} raised on chunk {self.chunks}: {_aborted_message(aborted)}")
                continue
            plan.add({metric: resolved[mc.id] for metric, mc in needed.items()}, self.limit)

    def finish(self, uri: str, fmt: str, rows: int, dtypes: dict[str, Any]) -> None:
        """Judge every expectation: on combined metrics, or validated on its whole column(s)."""
        for plan in self.plans:
            if plan.mode == "unique":
                tracker = self.trackers[plan.columns[0]] if plan.columns else None
                reread = _column_reader(uri, fmt, rows, plan.columns[0] if plan.columns else "", dtypes)
                metrics = tracker.finish(reread, self.limit) if tracker else None
                if metrics is None:
                    plan.fall_back(tracker.failed if tracker else "no column")
                else:
                    plan.combined = metrics
                    plan.mode = "combine"
            if plan.mode == "combine":
                plan.result = self._judge(plan)
            elif plan.mode == "fallback":
                plan.result = self._fallback(plan, uri, fmt, dtypes)

    def _judge(self, plan: _Plan) -> Any:
        """GE's own verdict on the combined metrics (as graph_validate gives it on one batch)."""
        try:
            # the active batch is the file's schema (no rows), so dtype-dependent metrics match
            self._validator(_view(self.schema, plan.columns, plan.view))
            needed = self._metric_configurations(plan, self.runtime)
            metrics = {mc.id: plan.combined.get(metric) for metric, mc in needed.items()}
            return plan.expectation.metrics_validate(
                metrics=metrics,
                runtime_configuration=copy.deepcopy(self.runtime),
                execution_engine=self.engine,
            )
        except Exception as exc:
            return _error_result(plan.config, exc)

    def _fallback(self, plan: _Plan, uri: str, fmt: str, dtypes: dict[str, Any]) -> Any:
        """GE validates this expectation on just the columns it reads, loaded whole."""
        if plan.columns is None:
            columns = None
            log.warning(
                "%s: %s reads the whole table (%s); validating it on the whole file, which is not "
                "bounded by a column",
                self.name,
                plan.config.type,
                plan.reason,
            )
        else:
            columns = [c for c in dict.fromkeys(plan.columns) if c in self.header.columns]
            log.info(
                "%s: %s on %s validated on the whole column(s): %s",
                self.name,
                plan.config.type,
                listed(plan.columns),
                plan.reason,
            )
        if columns == []:  # no such column: GE reports it as on the whole file
            frame = pd.DataFrame(index=pd.RangeIndex(self.rows))
        else:
            frame = reading.read_columns(uri, fmt, columns, dtypes=dtypes)
        batch = self.batch_definition.get_batch(batch_parameters={"dataframe": frame})
        return batch.validate(plan.expectation, result_format=RESULT_FORMAT)

    def result(self, chunked: dict[str, Any]) -> dict[str, Any]:
        """A GE suite validation result, as validate_frame returns it, with ``meta.chunked``."""
        from great_expectations import __version__
        from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResult
        from great_expectations.validator.validator import calc_validation_statistics

        results = [plan.result for plan in self.plans]
        statistics = calc_validation_statistics(results)
        fallbacks = [
            {"expectation": plan.config.type, "columns": list(plan.columns or []), "reason": plan.reason}
            for plan in self.plans
            if plan.reason
        ]
        suite_result = ExpectationSuiteValidationResult(
            results=results,
            success=statistics.success,
            suite_name=self.gx_suite.name,
            statistics={
                "evaluated_expectations": statistics.evaluated_expectations,
                "successful_expectations": statistics.successful_expectations,
                "unsuccessful_expectations": statistics.unsuccessful_expectations,
                "success_percent": statistics.success_percent,
            },
            meta={"great_expectations_version": __version__, "chunked": {**chunked, "fallbacks": fallbacks}},
            batch_id=self.batch_id,
        )
        return suite_result.to_json_dict()


class _UniqueTracker:
    """Exact duplicate detection for one column across chunks, holding 8 bytes per non-null row.

    Numbers, booleans and datetimes are keyed by their exact 64-bit value (-0.0 as 0.0, as pandas'
    ``duplicated`` compares them); strings by a 64-bit hash, and a hash seen twice is confirmed
    against the strings in a second look at that column. Any other kind of value (mixed types,
    nullable extension arrays holding objects) makes the expectation fall back to whole-column GE.
    """

    def __init__(self, column: str) -> None:
        self.column = column
        self.keys: list[np.ndarray] = []
        self.rows = self.nulls = 0
        self.hashed: bool | None = None
        self.failed = ""

    def update(self, chunk: pd.DataFrame) -> None:
        self.rows += len(chunk)
        if self.failed:
            return
        if self.column not in chunk.columns:
            self._fail(f"column {self.column!r} is not in the file")
            return
        values = _non_null(chunk[self.column])
        self.nulls += len(chunk) - len(values)
        keys, hashed = _unique_keys(values)
        if keys is None or (self.hashed is not None and hashed != self.hashed):
            self._fail(f"column {self.column!r} holds {pd.api.types.infer_dtype(values)} values")
            return
        self.hashed = hashed
        self.keys.append(keys)

    def _fail(self, reason: str) -> None:
        self.failed, self.keys = reason, []

    def finish(self, reread: Callable[[], Iterator[pd.Series]], limit: int | None) -> dict[str, Any] | None:
        """The metrics GE's unique expectation reads, or None when this column cannot be tracked."""
        if self.failed:
            return None
        keys = np.empty(sum(len(part) for part in self.keys), dtype=np.int64)
        filled = 0
        while self.keys:  # each part is freed once copied: the column's keys are held once
            part = self.keys.pop(0)
            keys[filled : filled + len(part)] = part
            filled += len(part)
        keys.sort()
        repeated = keys[1:] == keys[:-1]
        duplicated = np.unique(keys[1:][repeated])
        unexpected = int(repeated.sum()) + len(duplicated)
        del keys, repeated
        strings: set[Any] | None = None
        if self.hashed and len(duplicated):
            counts = self._count_suspects(reread, duplicated)
            strings = {value for value, count in counts.items() if count > 1}
            unexpected = sum(count for count in counts.values() if count > 1)
        values: list[Any] = []
        labels: list[Any] = []
        if unexpected:
            values, labels = self._examples(reread, duplicated, strings, limit)
        return {
            "table.row_count": self.rows,
            "column_values.nonnull.unexpected_count": self.nulls,
            "column_values.unique.unexpected_count": unexpected,
            "column_values.unique.unexpected_values": values,
            "column_values.unique.unexpected_index_list": labels,
            "column_values.unique.unexpected_index_query": None,
        }

    def _count_suspects(
        self, reread: Callable[[], Iterator[pd.Series]], hashes: np.ndarray
    ) -> dict[Any, int]:
        """Exact counts of the strings behind the repeated hashes (one more read of the column)."""
        counts: dict[Any, int] = {}
        for series in reread():
            values = _non_null(series)
            keys, _ = _unique_keys(values)
            assert keys is not None  # the column was hashed in the first pass, so it hashes again
            suspects = values[np.isin(keys, hashes)]
            for value, count in suspects.value_counts(sort=False).items():
                counts[value] = counts.get(value, 0) + int(count)
        return counts

    def _examples(
        self,
        reread: Callable[[], Iterator[pd.Series]],
        duplicated: np.ndarray,
        strings: set[Any] | None,
        limit: int | None,
    ) -> tuple[list[Any], list[Any]]:
        """The first duplicated values and their index labels, in row order, as GE lists them."""
        values: list[Any] = []
        labels: list[Any] = []
        for series in reread():
            present = _non_null(series)
            keys, _ = _unique_keys(present)
            assert keys is not None  # the column was hashed in the first pass, so it hashes again
            hits = present[np.isin(keys, duplicated)]
            if strings is not None:
                hits = hits[hits.isin(strings)]
            room = None if limit is None else limit - len(values)
            values.extend(list(hits[:room]))
            labels.extend(hits.index[:room].tolist())
            if limit is not None and len(values) >= limit:
                break
        return values, labels


def _view(chunk: pd.DataFrame, columns: tuple[str, ...] | None, view: View) -> pd.DataFrame:
    """The part of a chunk GE needs: some columns, or for table-level metrics the index / schema.

    GE hashes every batch it is given, so handing it only what a group of metrics reads keeps the
    per-chunk cost at one pass over the columns the suite uses.
    """
    if columns is not None:
        return chunk[[c for c in dict.fromkeys(columns) if c in chunk.columns]]
    # copies, not views: GE keeps the last batch it was given, which must not pin the whole chunk
    if view == "rows":
        return chunk.iloc[:, :0].copy()
    if view == "schema":
        return chunk.iloc[:0].copy()
    return chunk


def _unique_keys(values: pd.Series) -> tuple[np.ndarray | None, bool]:
    """(int64 keys equal exactly when pandas' ``duplicated`` finds the values equal, hashed?)."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        values = values.dt.tz_convert("UTC").dt.tz_localize(None)
    array = values.to_numpy()
    kind = array.dtype.kind
    # Always a fresh array: to_numpy() may be a view into a 2-D block of every int (or float)
    # column of the chunk, which a kept view would keep alive.
    if kind == "f":
        return (array.astype(np.float64) + 0.0).view(np.int64), False
    if kind == "i":
        return array.astype(np.int64, copy=True), False
    if kind == "u":
        return array.astype(np.uint64, copy=True).view(np.int64), False
    if kind == "b":
        return array.astype(np.int64), False
    if kind in "mM":
        return array.view(np.int64).copy(), False
    if kind == "O" and pd.api.types.infer_dtype(array, skipna=False) in ("string", "empty"):
        try:
            return pd.util.hash_array(array, categorize=False).view(np.int64), True
        except (TypeError, UnicodeError):
            return None, True
    return None, False


def _non_null(series: pd.Series) -> pd.Series:
    missing = series.isna()  # GE's column_values.nonnull, and the null filter of every map metric
    return series[~missing] if missing.any() else series


def _column_reader(
    uri: str, fmt: str, rows: int, column: str, dtypes: dict[str, Any]
) -> Callable[[], Iterator[pd.Series]]:
    def read() -> Iterator[pd.Series]:
        for frame in reading.iter_frames(uri, fmt, rows=rows, columns=[column], dtypes=dtypes):
            yield frame[column]

    return read


def _rule(metric: str) -> str | None:
    """How one metric combines across chunks; None: it does not."""
    if metric in TABLE_RULES:
        return TABLE_RULES[metric]
    prefix, _, suffix = metric.rpartition(".")
    return MAP_SUFFIX_RULES.get(suffix) if prefix in ROW_WISE_METRICS else None


def _first(rule: str | None, value: Any, limit: int | None) -> Any:
    if rule == "list":
        return list(value)[:limit]
    if rule == "rows" and limit is not None:
        return value.head(limit)
    return value


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def _missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _extreme(current: Any, value: Any, pick: Callable[[Any, Any], Any]) -> Any:
    if _missing(value):
        return current
    if _missing(current):
        return value
    return pick(current, value)


def _join_queries(current: str | None, value: str | None) -> str | None:
    if current is None or value is None:
        return current if value is None else value
    if not all(q.startswith(QUERY_HEAD) and q.endswith(QUERY_TAIL) for q in (current, value)):
        raise ValueError(f"unknown unexpected_index_query form {value[:40]!r}")
    items = [q[len(QUERY_HEAD) : -len(QUERY_TAIL)] for q in (current, value)]
    return QUERY_HEAD + ", ".join(i for i in items if i) + QUERY_TAIL


def _domain_columns(kwargs: dict[str, Any]) -> tuple[str, ...] | None:
    """The columns an expectation's metrics read (None: the whole table, or unknown)."""
    if kwargs.get("row_condition"):
        return None  # the condition may read any column
    if isinstance(kwargs.get("column"), str):
        return (kwargs["column"],)
    if isinstance(kwargs.get("column_A"), str) and isinstance(kwargs.get("column_B"), str):
        return (kwargs["column_A"], kwargs["column_B"])
    if isinstance(kwargs.get("column_list"), list | tuple):
        return tuple(map(str, kwargs["column_list"]))
    return None


def _parsed_format(runtime: dict[str, Any]) -> dict[str, Any]:
    from great_expectations.core.result_format import ResultFormat
    from great_expectations.expectations.expectation import parse_result_format

    parsed = dict(parse_result_format(runtime["result_format"]))
    kind = parsed["result_format"]
    parsed["result_format"] = kind.value if isinstance(kind, ResultFormat) else str(kind)
    return parsed


def _wants_query(runtime: dict[str, Any]) -> bool:
    parsed = _parsed_format(runtime)
    flag = parsed.get("return_unexpected_index_query")
    return flag is True or (parsed["result_format"] == "COMPLETE" and flag is not False)


def _chunk_runtime(runtime: dict[str, Any]) -> dict[str, Any]:
    """The result format for per-chunk metrics: no index query (every unexpected index, as text)
    unless the report shows it."""
    if _wants_query(runtime):
        return copy.deepcopy(runtime)
    return {**runtime, "result_format": {**_parsed_format(runtime), "return_unexpected_index_query": False}}


def _partial_limit(runtime: dict[str, Any]) -> int | None:
    parsed = _parsed_format(runtime)
    return None if parsed["result_format"] == "COMPLETE" else int(parsed["partial_unexpected_count"])


def _aborted_message(aborted: dict[Any, Any]) -> str:
    for info in aborted.values():
        exception = info.get("exception_info") if isinstance(info, dict) else None
        message = getattr(exception, "exception_message", None)
        if message:
            return str(message).splitlines()[0]
    return "metric could not be computed"


def _error_result(config: Any, exc: Exception) -> Any:
    from great_expectations.core.expectation_validation_result import ExpectationValidationResult
    from great_expectations.validator.exception_info import ExceptionInfo

    return ExpectationValidationResult(
        success=False,
        exception_info=ExceptionInfo(exception_traceback=traceback.format_exc(), exception_message=str(exc)),
        expectation_config=config,
    )


def _dtype_key(dtype: Any) -> str:
    """Dtypes that count as the same across chunks (categoricals: whatever their categories)."""
    return "category" if isinstance(dtype, pd.CategoricalDtype) else str(dtype)


def _common_dtype(dtypes: list[Any]) -> Any:
    """The dtype pandas gives a column whose parts have these dtypes (as read_csv joins its blocks)."""
    parts = [
        pd.Series(np.zeros(1, dtype=d)) if isinstance(d, np.dtype) else pd.Series(pd.array([None], dtype=d))
        for d in dtypes
    ]
    return pd.concat(parts, ignore_index=True).dtype


@contextmanager
def _quiet(name: str) -> Iterator[None]:
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _positive_int(variable: str, default: int) -> int:
    raw = os.environ.get(variable, "").strip()
    if not raw:
        return default
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        value = 0
    if value <= 0:
        raise SpecError(f"{variable} must be a positive whole number, got {raw!r}")
    return value
