"""``check-data``: what a dataset cannot support, said before training rather than found out later.

Why: a spec and a file can each be valid and still not fit together: a float target under
``task: classification``, a class too rare to reach the holdout, a free-text column one-hot encoded
into thousands of columns, a slice on a column the file lacks. Training, the gate or the drift check
would fail on them later, far from the cause. This check reads a sample of the file (cheap), applies
the same column rules as training (``columns.feature_columns``, ``estimators.build_model``'s split
into numeric and one-hot columns) and lists findings with a severity: ``error`` (a stage will fail or
the result is meaningless) or ``warning`` (it runs, but probably not as meant).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from include.mlops import storage
from include.mlops.data.columns import feature_columns
from include.mlops.data.reading import detect_format, iter_frames
from include.mlops.errors import listed
from include.mlops.spec import PipelineSpec

SAMPLE_ROWS = 20_000
MANY_CLASSES = 50  # a classification target with more distinct values than this looks continuous
ONE_HOT_LIMIT = 100  # distinct strings one-hot encoded into more columns than this: a warning
TEXT_MEAN_CHARS = 25  # mostly unique strings this long on average (with spaces): free text


@dataclass
class Finding:
    """One problem: ``error`` (a stage will fail or mislead) or ``warning`` (probably not meant)."""

    severity: str
    subject: str  # the column or setting concerned
    message: str

    def line(self) -> str:
        """The finding as one readable line."""
        return f"{self.severity.upper():7} {self.subject}: {self.message}"


def read_sample(uri: str, fmt: str, rows: int = SAMPLE_ROWS) -> pd.DataFrame:
    """The first ``rows`` rows (about: CSV chunks are whole parser blocks) of the file."""
    for frame in iter_frames(uri, fmt, rows=rows):
        return frame.head(rows)
    return pd.DataFrame()


def check_frame(spec: PipelineSpec, frame: pd.DataFrame) -> list[Finding]:
    """Every finding of the spec against a sample of its data."""
    findings = _keys(spec, frame)
    findings += _target(spec, frame)
    findings += _features(spec, frame)
    findings += [
        Finding("error", f"evaluation.slices[{i}]", f"column {s.column!r} is not in the data")
        for i, s in enumerate(spec.evaluation.slices)
        if s.column not in frame.columns
    ]
    return findings


def _keys(spec: PipelineSpec, frame: pd.DataFrame) -> list[Finding]:
    """The id and timestamp columns: present; the id unique and never null."""
    found: list[Finding] = []
    data = spec.data
    for setting, column in (
        ("data.id_column", data.id_column),
        ("data.timestamp_column", data.timestamp_column),
    ):
        if column and column not in frame.columns:
            found.append(Finding("error", setting, f"column {column!r} is not in the data"))
    id_column = data.id_column or ""
    ids = frame[id_column] if id_column in frame.columns else None
    if ids is not None:
        if ids.isna().any():
            found.append(Finding("error", id_column, f"{int(ids.isna().sum()):,} row(s) have no id"))
        repeated = ids[ids.duplicated()].dropna()
        if len(repeated):
            found.append(
                Finding("error", id_column, f"ids are not unique: {listed(repeated.unique()[:20], 5)} repeat")
            )
        if pd.api.types.is_float_dtype(ids) and (ids.dropna() % 1 == 0).all():
            found.append(
                Finding("warning", id_column, "integer ids stored as floats (1.0): write them as integers")
            )
    return found


def _target(spec: PipelineSpec, frame: pd.DataFrame) -> list[Finding]:
    """The target fits the task, has no nulls, and (classification) every class can reach both sides."""
    target, task = spec.data.target, spec.data.task
    if target not in frame.columns:
        return [Finding("error", "data.target", f"column {target!r} is not in the data")]
    values = frame[target]
    found = []
    if values.isna().any():
        found.append(Finding("error", target, f"the target is null in {int(values.isna().sum()):,} row(s)"))
    present = values.dropna()
    numeric = pd.api.types.is_numeric_dtype(present) and not pd.api.types.is_bool_dtype(present)
    if task == "regression":
        if not numeric:
            found.append(
                Finding(
                    "error", target, f"a {present.dtype} target under task: regression; use classification"
                )
            )
        elif present.nunique() <= 2:
            found.append(Finding("warning", target, "only two values: is this a classification target?"))
        return found
    fractional = numeric and pd.api.types.is_float_dtype(present) and not (present % 1 == 0).all()
    if fractional or (numeric and present.nunique() > MANY_CLASSES):
        found.append(
            Finding(
                "error",
                target,
                f"{present.nunique():,} distinct numeric values under task: classification; use regression",
            )
        )
        return found
    return found + _classes(spec, present)


def _classes(spec: PipelineSpec, values: pd.Series) -> list[Finding]:
    """Each class needs rows on both sides of the holdout split (``training.holdout_fraction``)."""
    counts = values.value_counts()
    if len(counts) < 2:
        return [
            Finding("error", spec.data.target, f"one class only ({listed(counts.index)}): nothing to learn")
        ]
    fraction = spec.training.holdout_fraction
    rare = [f"{label!r} ({n})" for label, n in counts.items() if n * min(fraction, 1 - fraction) < 1]
    if not rare:
        return []
    return [
        Finding(
            "warning",
            spec.data.target,
            f"class(es) {listed(rare, 5)} have too few rows to appear in both the training set and the "
            f"holdout (training.holdout_fraction {fraction}); gather more rows or merge classes",
        )
    ]


def _features(spec: PipelineSpec, frame: pd.DataFrame) -> list[Finding]:
    """Columns the model would get that it cannot use: missing, empty, constant, dates, free text."""
    declared = spec.data.features or []
    missing = [c for c in declared if c not in frame.columns]
    found = (
        [Finding("error", "data.features", f"column(s) {listed(missing)} not in the data")] if missing else []
    )
    present = frame[[c for c in feature_columns(frame, spec) if c in frame.columns]]
    if present.shape[1] == 0:
        return [*found, Finding("error", "data.features", "no feature column left")]
    for column in present.columns:
        finding = _feature(str(column), present[column], listed_feature=column in declared)
        if finding is not None:
            found.append(finding)
    return found


def _feature(column: str, values: pd.Series, *, listed_feature: bool) -> Finding | None:
    """The first problem of one feature column, if any."""
    present = values.dropna()
    if present.empty:
        return Finding("warning", column, "all values are null: the model ignores it")
    if pd.api.types.is_datetime64_any_dtype(values) and listed_feature:
        return Finding(
            "error",
            column,
            "a date/time listed in data.features: it would be one-hot encoded instant by instant; "
            "derive numbers from it (e.g. day of week) or drop it from data.features",
        )
    if present.nunique() == 1:
        return Finding("warning", column, "one value only: it carries no information")
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return None
    kinds = {type(v).__name__ for v in present.head(1000)}
    if kinds == {"str"} and _looks_like_dates(present):
        return Finding(
            "warning",
            column,
            "dates or times written as text: the model one-hot encodes them value by value; derive "
            "numbers from them or leave the column out (data.features)",
        )
    if len(kinds) > 1:
        return Finding("warning", column, f"mixed value types ({listed(sorted(kinds))}): all treated as text")
    distinct = present.nunique()
    text = present.astype(str)
    if (
        distinct > 0.5 * len(present)
        and text.str.len().mean() >= TEXT_MEAN_CHARS
        and text.str.contains(" ").mean() > 0.5
    ):
        return Finding(
            "error",
            column,
            "free text: the model one-hot encodes strings and has no text encoder; drop it from the "
            "features (data.features) or derive numbers from it",
        )
    if distinct > ONE_HOT_LIMIT:
        return Finding(
            "warning",
            column,
            f"{distinct:,} distinct strings in the sample: one-hot encoding makes a column per value and "
            "values unseen in training are ignored; consider grouping or dropping it",
        )
    return None


def _looks_like_dates(values: pd.Series) -> bool:
    """Whether the first strings all parse as dates or times (ISO-like; numbers alone do not count)."""
    head = values.head(50).astype(str)
    if not head.str.contains(r"\d{4}-\d{2}-\d{2}|\d{1,2}/\d{1,2}/\d{2,4}", regex=True).all():
        return False
    parsed = pd.to_datetime(head, errors="coerce", format="mixed", utc=True)
    return bool(parsed.notna().all())


def check_data(spec: PipelineSpec, path: str, *, rows: int = SAMPLE_ROWS) -> dict[str, Any]:
    """Check a CSV or Parquet file (a path or URI) against the pipeline's spec; the findings as JSON."""
    uri = path if "://" in path else "file://" + os.path.abspath(path)
    fmt = detect_format(uri, spec.data.format)
    frame = read_sample(uri, fmt, rows)
    findings = check_frame(spec, frame)
    return {
        "pipeline": spec.name,
        "file": storage.basename(uri),
        "rows_sampled": len(frame),
        "columns": len(frame.columns),
        "errors": sum(f.severity == "error" for f in findings),
        "warnings": sum(f.severity == "warning" for f in findings),
        "findings": [asdict(f) for f in findings],
    }


def format_report(result: dict[str, Any]) -> str:
    """The findings as a readable list, one line each, errors first."""
    head = (
        f"{result['pipeline']}: {result['file']} ({result['rows_sampled']:,} rows sampled, "
        f"{result['columns']:,} columns): {result['errors']} error(s), {result['warnings']} warning(s)"
    )
    order = sorted(result["findings"], key=lambda f: f["severity"] != "error")
    return "\n".join([head, *(Finding(**f).line() for f in order)])
