"""Reading input files into DataFrames, with errors a person can act on."""

from __future__ import annotations

import io
import posixpath

import pandas as pd

from include.mlops import storage
from include.mlops.errors import DataError
from include.mlops.spec import PipelineSpec


def detect_format(uri: str, declared: str) -> str:
    ext = posixpath.splitext(uri)[1].lower().lstrip(".")
    return ext if ext in {"csv", "parquet"} else declared


def read_frame(uri: str, fmt: str) -> pd.DataFrame:
    """Read one whole file; any parse problem becomes a one-line DataError."""
    name = storage.basename(uri)
    try:
        data = storage.read_bytes(uri)
    except FileNotFoundError:
        raise DataError(f"{name}: file not found at {uri}") from None
    if not data:
        raise DataError(f"{name}: the file is empty (0 bytes)")
    try:
        if fmt == "parquet":
            frame = pd.read_parquet(io.BytesIO(data))
        else:
            frame = pd.read_csv(io.BytesIO(data))
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{name}: cannot be read as {fmt}: {reason}") from None
    if frame.empty:
        raise DataError(f"{name}: the file has no data rows")
    return frame


def check_columns(frame: pd.DataFrame, spec: PipelineSpec, *, name: str, with_target: bool = True) -> None:
    """The structural contract: the columns the spec relies on must be there."""
    required = [spec.data.id_column, spec.data.timestamp_column, *(spec.data.features or [])]
    if with_target:
        required.append(spec.data.target)
    missing = [c for c in required if c and c not in frame.columns]
    if missing:
        raise DataError(
            f"{name}: missing required column(s) {', '.join(missing)}; found {', '.join(map(str, frame.columns))}"
        )


def feature_columns(frame: pd.DataFrame, spec: PipelineSpec) -> list[str]:
    if spec.data.features:
        return list(spec.data.features)
    skip = {spec.data.target, spec.data.id_column, spec.data.timestamp_column}
    # Raw timestamps make poor features (one-hot over instants); list them in data.features to keep them.
    return [c for c in frame.columns if c not in skip and not pd.api.types.is_datetime64_any_dtype(frame[c])]
