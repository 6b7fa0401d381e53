"""Seeded, realistic tabular data for the demo and the tests, with a drift knob.

``drift`` in [0, 1] shifts numeric distributions and category mixes the way a changing customer
base or housing market would; the label-generating process stays the same, so a model trained on
drifted data can still be evaluated honestly.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from include.mlops import storage
from include.mlops.spec import PipelineSpec

START = pd.Timestamp("2026-01-01T00:00:00Z")


def churn(rows: int, *, seed: int, drift: float = 0.0, id_offset: int = 0) -> pd.DataFrame:
    """Telecom churn: binary target ``churned``."""
    rng = np.random.default_rng(seed)
    contract = rng.choice(
        ["month-to-month", "one_year", "two_year"],
        size=rows,
        p=_mix([0.55, 0.25, 0.20], [0.80, 0.12, 0.08], drift),
    )
    tenure = np.clip(rng.gamma(2.0, 14.0 * (1 - 0.5 * drift), rows), 0, 72).round().astype("int64")
    monthly = np.clip(rng.normal(65 + 30 * drift, 20, rows), 18, 150).round(2)
    internet = rng.choice(
        ["dsl", "fiber", "none"], size=rows, p=_mix([0.4, 0.45, 0.15], [0.2, 0.75, 0.05], drift)
    )
    payment = rng.choice(
        ["card", "bank_transfer", "electronic_check", "mailed_check"],
        size=rows,
        p=[0.25, 0.25, 0.35, 0.15],
    )
    support_calls = rng.poisson(1.2 + 2.0 * drift, rows).astype("int64")
    age = np.clip(rng.normal(45 - 10 * drift, 14, rows), 18, 90).round().astype("int64")
    logit = (
        -1.2
        + 1.4 * (contract == "month-to-month")
        - 0.9 * (contract == "two_year")
        - 0.045 * tenure
        + 0.02 * (monthly - 65)
        + 0.35 * support_calls
        + 0.5 * (internet == "fiber")
        + 0.4 * (payment == "electronic_check")
        - 0.01 * (age - 45)
    )
    churned = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype("int64")
    return pd.DataFrame(
        {
            "customer_id": np.arange(id_offset, id_offset + rows, dtype="int64"),
            "event_time": START + pd.to_timedelta(rng.integers(0, 90 * 86400, rows), unit="s"),
            "tenure_months": tenure,
            "monthly_charges": monthly,
            "total_charges": (monthly * np.maximum(tenure, 1)).round(2),
            "contract": contract,
            "internet_service": internet,
            "payment_method": payment,
            "support_calls": support_calls,
            "age": age,
            "churned": churned,
        }
    )


def housing(rows: int, *, seed: int, drift: float = 0.0, id_offset: int = 0) -> pd.DataFrame:
    """House sales: continuous target ``price`` (thousands)."""
    rng = np.random.default_rng(seed)
    neighborhood = rng.choice(
        ["riverside", "old_town", "hillcrest", "docklands", "suburbs"],
        size=rows,
        p=_mix([0.2, 0.2, 0.15, 0.15, 0.3], [0.1, 0.1, 0.1, 0.45, 0.25], drift),
    )
    sqft = np.clip(rng.lognormal(7.3 + 0.25 * drift, 0.35, rows), 300, 8000).round().astype("int64")
    bedrooms = np.clip(np.round(sqft / 550 + rng.normal(0, 0.7, rows)), 1, 8).astype("int64")
    bathrooms = np.clip(np.round(bedrooms * 0.6 + rng.normal(0, 0.5, rows)), 1, 6).astype("int64")
    age_years = np.clip(rng.gamma(2.5, 14 * (1 - 0.6 * drift), rows), 0, 150).round().astype("int64")
    distance = np.clip(rng.gamma(2.0, 4.0 + 4 * drift, rows), 0.2, 60).round(2)
    premium = pd.Series(neighborhood).map(
        {"riverside": 120, "old_town": 90, "hillcrest": 60, "docklands": 30, "suburbs": 0}
    )
    price = (
        50
        + 0.16 * sqft
        + 12 * bathrooms
        + premium.to_numpy()
        - 0.8 * age_years
        - 3.5 * distance
        + rng.normal(0, 25, rows)
    )
    return pd.DataFrame(
        {
            "house_id": np.arange(id_offset, id_offset + rows, dtype="int64"),
            "listed_at": START + pd.to_timedelta(rng.integers(0, 90 * 86400, rows), unit="s"),
            "sqft": sqft,
            "bedrooms": bedrooms,
            "bathrooms": bathrooms,
            "age_years": age_years,
            "distance_km": distance,
            "neighborhood": neighborhood,
            "price": np.maximum(price, 20).round(1),
        }
    )


GENERATORS: dict[str, Callable[..., pd.DataFrame]] = {"churn": churn, "housing": housing}


def malformed(frame: pd.DataFrame, *, seed: int, id_column: str) -> pd.DataFrame:
    """A batch that reads fine but breaks its contract: null ids, duplicate ids, out-of-range values."""
    rng = np.random.default_rng(seed)
    bad = frame.copy()
    bad[id_column] = bad[id_column].astype("float64")
    bad.loc[bad.sample(frac=0.2, random_state=seed).index, id_column] = np.nan
    bad.iloc[: len(bad) // 10, bad.columns.get_loc(id_column)] = 7.0
    numeric = [c for c in bad.columns if c != id_column and pd.api.types.is_numeric_dtype(bad[c])]
    column = numeric[int(rng.integers(0, len(numeric)))]
    bad[column] = bad[column] * -1000
    return bad


def _mix(base: list[float], drifted: list[float], drift: float) -> list[float]:
    weights = np.array(base) * (1 - drift) + np.array(drifted) * drift
    return list(weights / weights.sum())


def write_batch(
    spec: PipelineSpec,
    name: str,
    *,
    rows: int,
    seed: int,
    drift: float = 0.0,
    id_offset: int = 0,
    scoring: bool = False,
    malformed_batch: bool = False,
    dataset: str | None = None,
) -> str:
    """Write a generated batch into the pipeline's landing zone (or scoring input) atomically."""
    frame = GENERATORS[dataset or spec.name](rows, seed=seed, drift=drift, id_offset=id_offset)
    if malformed_batch:
        frame = malformed(frame, seed=seed, id_column=spec.data.id_column or frame.columns[0])
    if scoring:
        frame = frame.drop(columns=[spec.data.target])
    fmt = spec.inference.format if scoring else spec.data.format
    return _write(frame, storage.join(spec.uri("scoring" if scoring else "landing"), f"{name}.{fmt}"), fmt)


def _write(frame: pd.DataFrame, uri: str, fmt: str) -> str:
    """Write atomically: a watcher of the folder never sees half a file."""
    with storage.atomic_path(uri) as tmp:
        fs, path = storage.fs_for(tmp)
        with fs.open(path, "wb") as handle:
            if fmt == "parquet":
                frame.to_parquet(handle, index=False)
            else:
                frame.to_csv(handle, index=False)
    return uri


def write_labels(
    spec: PipelineSpec,
    name: str,
    *,
    rows: int,
    seed: int,
    drift: float = 0.0,
    id_offset: int = 0,
    flip: float = 0.0,
    fraction: float = 1.0,
    dataset: str | None = None,
) -> str:
    """Ground truth arriving late for a batch written with the same arguments by ``write_batch``.

    ``fraction`` of its ids get a label; ``flip`` of those get the opposite class (a changed world
    the model has not seen: its performance on labelled data drops while its inputs look the same).
    """
    if spec.monitoring.labels is None or not spec.data.id_column:
        raise ValueError(f"pipeline {spec.name} declares no monitoring.labels")
    frame = GENERATORS[dataset or spec.name](rows, seed=seed, drift=drift, id_offset=id_offset)
    rng = np.random.default_rng(seed + 1)
    frame = frame.loc[rng.random(len(frame)) < fraction, [spec.data.id_column, spec.data.target]]
    flipped = rng.random(len(frame)) < flip
    target = frame[spec.data.target]
    if pd.api.types.is_bool_dtype(target):
        frame[spec.data.target] = target ^ flipped
    elif pd.api.types.is_numeric_dtype(target) and set(pd.unique(target)) <= {0, 1}:
        frame[spec.data.target] = np.where(flipped, 1 - target, target)
    else:
        raise ValueError("flip needs a binary target")
    fmt = spec.monitoring.labels.format
    return _write(frame, storage.join(spec.uri("labels"), f"{name}.{fmt}"), fmt)
