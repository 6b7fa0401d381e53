"""Input columns against the model signature: which kinds of column score correctly against which type.

Checked before anything is written (from the Parquet footer, or per chunk for CSV), so a mismatch
names every missing and every mistyped column at once instead of failing deep inside the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from include.mlops.errors import DataError, listed

# MLflow signature type -> kinds of input column that score correctly against it. Integers are
# fine for a double column (training declares integer columns as doubles); an all-null column is
# fine for any type (it reads as float or null whatever it should hold).
ACCEPTED = {
    "double": {"integer", "float"},
    "float": {"integer", "float"},
    "long": {"integer"},
    "integer": {"integer"},
    "boolean": {"boolean"},
    "string": {"string"},
    "binary": {"binary"},
    "datetime": {"datetime"},
}

# A column as found in an input: name -> (kind, type as written); a kind of None is not known yet.
Found = dict[str, tuple[str | None, str]]


@dataclass(frozen=True)
class InputColumn:
    """One column the model reads, with its signature type (None when the model has no signature)."""

    name: str
    type: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        """The column as the pinned champion's JSON holds it."""
        return {"name": self.name, "type": self.type}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> InputColumn:
        """Read a column back from the pinned champion's JSON."""
        return cls(name=str(raw["name"]), type=raw.get("type"))


def arrow_kind(arrow_type: Any) -> str:
    """The kind of an Arrow column type (dictionary columns by their values)."""
    import pyarrow as pa

    t = arrow_type.value_type if pa.types.is_dictionary(arrow_type) else arrow_type
    checks = (
        ("null", pa.types.is_null),
        ("boolean", pa.types.is_boolean),
        ("integer", pa.types.is_integer),
        ("float", lambda x: pa.types.is_floating(x) or pa.types.is_decimal(x)),
        (
            "string",
            lambda x: pa.types.is_string(x) or pa.types.is_large_string(x) or pa.types.is_string_view(x),
        ),
        (
            "binary",
            lambda x: (
                pa.types.is_binary(x) or pa.types.is_large_binary(x) or pa.types.is_fixed_size_binary(x)
            ),
        ),
        ("datetime", lambda x: pa.types.is_timestamp(x) or pa.types.is_date(x)),
    )
    return next((kind for kind, check in checks if check(t)), "other")


def pandas_kind(series: Any) -> str:
    """The kind of a pandas column (categoricals count as strings)."""
    import pandas as pd

    api = pd.api.types
    if api.is_bool_dtype(series.dtype):
        kind = "boolean"
    elif api.is_integer_dtype(series.dtype):
        kind = "integer"
    elif api.is_float_dtype(series.dtype):
        kind = "float"
    elif api.is_datetime64_any_dtype(series.dtype):
        kind = "datetime"
    elif _nullable_bools(series):
        kind = "boolean"
    elif api.is_string_dtype(series.dtype) or isinstance(series.dtype, pd.CategoricalDtype):
        kind = "string"
    else:
        kind = "other"
    return kind


def _nullable_bools(series: Any) -> bool:
    """True/False with gaps: pandas reads them (a CSV column, or Arrow booleans with nulls) as
    ``object``; MLflow's signature calls them boolean, so scoring must too (issue 10)."""
    if series.dtype != object:
        return False
    present = series.dropna()
    return bool(len(present)) and bool(present.map(lambda v: isinstance(v, bool)).all())


def signature_problems(
    found: Found, columns: list[InputColumn], id_column: str | None
) -> tuple[list[str], list[str]]:
    """(missing, mistyped) columns; ``found`` maps a column name to (kind, type as written); a kind
    of None is not known yet (a CSV header) and not checked."""
    missing = [c.name for c in columns if c.name not in found]
    if id_column and id_column not in found:
        missing.append(f"{id_column} (the id column)")
    mistyped = []
    for column in columns:
        accepted = ACCEPTED.get(column.type or "")
        if accepted is None or column.name not in found:
            continue
        kind, written = found[column.name]
        if kind is not None and kind not in accepted and kind != "null":
            mistyped.append(f"{column.name} is {written} (the model expects {column.type})")
    return missing, mistyped


def check_columns(
    label: str, model: str, found: Found, columns: list[InputColumn], id_column: str | None
) -> None:
    """Raise one DataError naming every missing and mistyped column of ``label`` for ``model``."""
    missing, mistyped = signature_problems(found, columns, id_column)
    if not missing and not mistyped:
        return
    parts = []
    if missing:
        parts.append(f"missing column(s): {listed(missing)}")
    if mistyped:
        parts.append(f"mistyped column(s): {listed(mistyped)}")
    raise DataError(f"{label} does not match the signature of {model}: {'; '.join(parts)}")
