"""Which columns a pipeline needs in a file, and which of them the model uses as features."""

from __future__ import annotations

import pandas as pd

from include.mlops.errors import DataError, listed
from include.mlops.spec import PipelineSpec


def check_columns(frame: pd.DataFrame, spec: PipelineSpec, *, name: str, with_target: bool = True) -> None:
    """The structural contract: the columns the spec relies on must be there."""
    required = [spec.data.id_column, spec.data.timestamp_column, *(spec.data.features or [])]
    if with_target:
        required.append(spec.data.target)
    missing = [c for c in required if c and c not in frame.columns]
    if missing:
        raise DataError(
            f"{name}: missing required column(s) {listed(missing)}; found {len(frame.columns):,} column(s): "
            f"{listed(frame.columns)}"
        )


def feature_columns(frame: pd.DataFrame, spec: PipelineSpec) -> list[str]:
    """The model's input columns: declared ones, else every column but target, id and timestamp."""
    if spec.data.features:
        return list(spec.data.features)
    skip = {spec.data.target, spec.data.id_column, spec.data.timestamp_column}
    # Raw timestamps make poor features (one-hot over instants); list them in data.features to keep them.
    return [c for c in frame.columns if c not in skip and not pd.api.types.is_datetime64_any_dtype(frame[c])]
