"""Content rules a Great Expectations suite cannot express: closed schema, numeric columns, timestamps, two classes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from include.mlops.errors import DataError, listed
from include.mlops.spec import PipelineSpec

FUTURE_TOLERANCE = pd.Timedelta(days=1)  # clock skew between the source system and us


def suite_columns(suite: dict[str, Any]) -> dict[str, set[str]]:
    """Column name -> the kinds of rule the suite applies to it ("numeric", "set", "any")."""
    kinds: dict[str, set[str]] = {}
    for expectation in suite.get("expectations", []):
        kwargs = expectation.get("kwargs") or {}
        column = kwargs.get("column")
        if not isinstance(column, str):
            continue
        bounds = [kwargs.get("min_value"), kwargs.get("max_value")]
        numeric = expectation.get("type") == "expect_column_values_to_be_between" and any(
            isinstance(b, int | float) and not isinstance(b, bool) for b in bounds
        )
        kinds.setdefault(column, set()).add("numeric" if numeric else "any")
    return kinds


def check_content(frame: pd.DataFrame, spec: PipelineSpec, suite: dict[str, Any], *, name: str) -> None:
    """Structural rules a Great Expectations suite cannot express, derived from the spec and the suite.

    The columns must be exactly those the spec and suite name (an extra or renamed column is a
    changed export, not noise); columns the suite bounds numerically must hold numbers; the
    timestamp column must parse and not lie in the future; a classification target needs two classes.
    Large files get the same rules, chunk by chunk, through ``ContentCheck``.
    """
    check = ContentCheck(list(map(str, frame.columns)), spec, suite, name=name)
    check.update(frame)
    check.finish()


class ContentCheck:
    """``check_content`` fed one chunk at a time, reaching the same verdict and the same message.

    The column rules are checked on the header when it is created; ``update`` tallies each chunk
    (counts of bad values, the first example in file order, the latest timestamp, up to two target
    classes: memory does not grow with the file) and ``finish`` raises the DataError that
    ``check_content`` raises on the whole file. ``restart`` forgets the tallies, for a second pass.
    """

    def __init__(self, columns: list[str], spec: PipelineSpec, suite: dict[str, Any], *, name: str) -> None:
        self.name = name
        data = spec.data
        named = suite_columns(suite)
        known = set(named) | {c for c in (data.id_column, data.timestamp_column, data.target) if c}
        known |= set(data.features or [])
        keys = {data.id_column, data.timestamp_column, data.target}
        # The schema is closed when the spec lists the features or the suite describes columns beyond
        # the keys; a suite that only checks ids and labels says nothing about which other columns may come.
        closed = bool(data.features) or any(c not in keys for c in named)
        extra = [c for c in columns if c not in known] if closed else []
        missing = sorted(c for c in named if c not in columns)
        if missing and extra:
            raise DataError(
                f"{name}: column(s) {listed(missing)} missing and unexpected column(s) {listed(extra)} "
                "found (renamed?); rename them back or update the spec and suite"
            )
        if missing:
            raise DataError(f"{name}: missing column(s) {listed(missing)} that the validation suite checks")
        if extra:
            raise DataError(
                f"{name}: unexpected extra column(s) {listed(extra)}; add them to the spec's features and "
                "the suite, or drop them from the export"
            )
        self.numeric = [
            c
            for c in columns
            if "numeric" in named.get(c, set()) or (c == data.target and data.task == "regression")
        ]
        self.timestamp = data.timestamp_column if data.timestamp_column in columns else None
        self.target = data.target if data.task == "classification" and data.target in columns else None
        self.restart()

    def restart(self) -> None:
        """Forget the tallies, so a second pass over the same file starts clean."""
        self.rows = 0
        self._numbers = {column: _NumberTally() for column in self.numeric}
        self._times = _TimeTally()
        self._classes: list[Any] = []

    def update(self, frame: pd.DataFrame) -> None:
        """Tally one chunk, so the verdict matches the whole-file check without holding the file."""
        self.rows += len(frame)
        for column, tally in self._numbers.items():
            tally.update(frame[column])
        if self.timestamp:
            self._times.update(frame[self.timestamp])
        if self.target and len(self._classes) < 2:
            for value in frame[self.target].dropna().unique():
                if not any(value == known for known in self._classes):
                    self._classes.append(value)
                    if len(self._classes) == 2:
                        break

    def finish(self) -> None:
        """Raise the first problem found, in ``check_content``'s order: numbers, timestamps, classes."""
        name = self.name
        for column, tally in self._numbers.items():
            tally.raise_problem(column, self.rows, name=name)
        if self.timestamp:
            self._times.raise_problem(self.timestamp, name=name)
        if self.target and len(self._classes) == 1:
            raise DataError(
                f"{name}: target {self.target} holds a single class ({self._classes[0]!r}) in all "
                f"{self.rows} rows; a classifier cannot learn from it - check the export's filter"
            )


class _NumberTally:
    """A column that should hold numbers, over chunks: bad values, overflow, text storage."""

    def __init__(self) -> None:
        self.bad = 0
        self.example: str | None = None
        self.overflow = False
        self.text_dtype: Any = None  # the dtype of the first chunk not stored as numbers
        self.numeric_overflow = False  # a chunk stored as numbers holds |x| >= 2**63

    def update(self, values: pd.Series) -> None:
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            # whole-file read: this chunk's numbers share a text column with other chunks' values
            # only when some chunk is not numeric; remember whether they would overflow there
            if not self.numeric_overflow and len(values):
                largest = np.nanmax(np.abs(values.to_numpy(dtype="float64", na_value=np.nan)), initial=0.0)
                self.numeric_overflow = bool(largest >= 2**63)
            return
        if self.text_dtype is None:
            self.text_dtype = values.dtype
        present = values.dropna()
        coerced = pd.to_numeric(present.astype(str), errors="coerce")
        bad = present[coerced.isna()]
        if len(bad) and self.example is None:
            self.example = str(bad.iloc[0])[:40]
        self.bad += len(bad)
        self.overflow = self.overflow or bool((coerced.abs() >= 2**63).any())

    def raise_problem(self, column: str, rows: int, *, name: str) -> None:
        if self.text_dtype is None:
            return  # stored as numbers throughout
        if self.bad:
            raise DataError(
                f"{name}: column {column} should hold numbers but {self.bad} of {rows} value(s) are not, "
                f"e.g. {self.example!r}"
            )
        if self.overflow or self.numeric_overflow:
            raise DataError(
                f"{name}: column {column} holds value(s) too large for a 64-bit number (overflow)"
            )
        raise DataError(
            f"{name}: column {column} is stored as {self.text_dtype} text; it should hold numbers"
        )


class _TimeTally:
    """The timestamp column over chunks: unparseable values and the latest instant."""

    def __init__(self) -> None:
        self.bad = 0
        self.example: str | None = None
        self.latest: pd.Timestamp | None = None

    def update(self, values: pd.Series) -> None:
        if pd.api.types.is_datetime64_any_dtype(values):
            parsed = values if values.dt.tz is not None else values.dt.tz_localize("UTC")
        else:
            present = values.dropna()
            parsed = pd.to_datetime(present.astype(str), errors="coerce", utc=True, format="ISO8601")
            bad = present[parsed.isna()]
            if len(bad) and self.example is None:
                self.example = str(bad.iloc[0])[:40]
            self.bad += len(bad)
        latest = parsed.max()
        if pd.notna(latest) and (self.latest is None or latest > self.latest):
            self.latest = latest

    def raise_problem(self, column: str, *, name: str) -> None:
        if self.bad:
            raise DataError(
                f"{name}: column {column} has {self.bad} unparseable timestamp(s), e.g. {self.example!r}; "
                "use ISO 8601"
            )
        if self.latest is not None and self.latest > pd.Timestamp.now(tz="UTC") + FUTURE_TOLERANCE:
            raise DataError(
                f"{name}: column {column} has timestamp(s) in the future (latest {self.latest.isoformat()}); "
                "check the source system's clock or time zone"
            )
