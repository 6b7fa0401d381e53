"""The drift report: Evidently's ``DataDriftPreset`` drawn on row samples, with full-data verdicts.

A module of its own because drawing the report is a different job from deciding drift: the verdicts
are computed on the whole window by ``drift`` (streamed, in bounded memory) and this module only makes
Evidently's report show them, through a stand-in ``StatTest`` (``full_data_test``) that returns the
verdict already decided for each column instead of testing the samples again.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Any

import pandas as pd

from include.mlops.monitoring.drift_stats import Decision

log = logging.getLogger(__name__)

FULL_DATA_SUFFIX = " (full data)"
REPORT_COLUMNS = 100  # feature columns drawn in the HTML report at most (see _drawn)

# Verdicts computed on the full data, looked up by the report's stand-in tests (see full_data_test).
_FULL_DATA_DECISIONS: ContextVar[dict[str, Decision]] = ContextVar("mlops_full_data_decisions")


def full_data_test(base: Any) -> Any:
    """An Evidently StatTest that reports the verdict already computed on the full data.

    The report is drawn on row samples; this stand-in, registered once per base test, makes its
    values, verdicts and drift share the full-data ones. Its name keeps Evidently's display name
    (with "p_value" for p-value tests), so the snapshot reads like one of Evidently's own.
    """
    from evidently.legacy.calculations.stattests import StatTest, register_stattest
    from evidently.legacy.calculations.stattests.registry import (
        StatTestNotFoundError,
        get_registered_stattest,
    )
    from evidently.legacy.core import ColumnType

    name = base.display_name + FULL_DATA_SUFFIX
    try:
        return get_registered_stattest(name, base.allowed_feature_types[0])
    except StatTestNotFoundError:
        pass

    def full_data_verdict(reference: pd.Series, current: pd.Series, *_: Any) -> tuple[float, bool]:
        decision = _FULL_DATA_DECISIONS.get()[str(current.name)]
        return decision.value, decision.drifted

    # The stand-in only looks a verdict up, so it accepts both column types: the type of each column
    # is our own decision, passed to Evidently in the DataDefinition, and must not be re-judged by
    # the base test's list (Evidently's default gives numeric columns with at most 5 values the
    # chi-square or z-test, which are registered for categorical columns only).
    test = StatTest(
        name=name,
        display_name=name,
        allowed_feature_types=[ColumnType.Numerical, ColumnType.Categorical],
        default_threshold=base.default_threshold,
    )
    register_stattest(test, default_impl=full_data_verdict)
    return test


def _drawn(every: dict[str, Decision], drawable: list[str], predictions: dict[str, Decision]) -> list[str]:
    """The columns the report draws: at most ``REPORT_COLUMNS`` features (drifted ones first), and
    the predictions. Why: Evidently draws each column's plots in about a tenth of a second, so a
    1,000-column table took minutes for a page no one reads whole; every verdict stays in the summary."""
    features = [c for c in drawable if c not in predictions]
    if len(features) <= REPORT_COLUMNS:
        return drawable
    ranked = sorted(features, key=lambda c: not every[c].drifted)[:REPORT_COLUMNS]
    log.warning(
        "The drift report draws %d of %d columns (drifted ones first); every verdict is in summary.json",
        REPORT_COLUMNS,
        len(features),
    )
    return [c for c in drawable if c in ranked or c in predictions]


def render_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    decisions: dict[str, Decision],
    prediction_decisions: dict[str, Decision],
    *,
    drift_share: float,
) -> tuple[str, str, list[str]]:
    """Evidently's DataDriftPreset (plus prediction drift) on samples, with full-data verdicts.

    Returns the HTML, the JSON and the columns left out of the report (a sample has no value in
    them, or beyond REPORT_COLUMNS); their verdicts are still in the summary.
    """
    from evidently import DataDefinition, Dataset, Report

    every = {**decisions, **prediction_decisions}

    def drawable(column: str) -> bool:
        return all(column in f.columns and f[column].notna().any() for f in (reference, current))

    shown = _drawn(every, [c for c in every if drawable(c)], prediction_decisions)
    left_out = [c for c in every if c not in shown]
    # Our type decision, explicit: Evidently never infers a column's type again (issue 10).
    definition = DataDefinition(
        numerical_columns=[c for c in shown if every[c].column_type == "num"],
        categorical_columns=[c for c in shown if every[c].column_type == "cat"],
    )
    metrics = _metrics(decisions, prediction_decisions, shown, drift_share)
    if not metrics:
        log.warning("No column has values in both report samples; the report is empty")
        return "<html><body>No column has values in both samples.</body></html>", "{}", left_out
    token = _FULL_DATA_DECISIONS.set(every)
    try:
        snapshot = Report(metrics).run(
            current_data=Dataset.from_pandas(
                current[shown].reset_index(drop=True), data_definition=definition
            ),
            reference_data=Dataset.from_pandas(
                reference[shown].reset_index(drop=True), data_definition=definition
            ),
        )
        return snapshot.get_html_str(as_iframe=False), snapshot.json(), left_out
    finally:
        _FULL_DATA_DECISIONS.reset(token)


def _metrics(
    decisions: dict[str, Decision],
    prediction_decisions: dict[str, Decision],
    shown: list[str],
    drift_share: float,
) -> list[Any]:
    """The report's metrics: the preset over the drawn features, a ValueDrift per prediction column,
    each with the stand-in test that shows the full-data verdict."""
    from evidently.legacy.calculations import stattests
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    by_name = {t.name: t for t in vars(stattests).values() if isinstance(t, stattests.StatTest)}
    every = {**decisions, **prediction_decisions}
    methods = {c: full_data_test(by_name[every[c].stattest]).name for c in shown}
    features = [c for c in decisions if c in shown]
    metrics: list[Any] = []
    if features:
        metrics.append(
            DataDriftPreset(
                columns=features,
                drift_share=drift_share,
                per_column_method={c: methods[c] for c in features},
                per_column_threshold={c: decisions[c].threshold for c in features},
            )
        )
    metrics += [
        ValueDrift(column=c, method=methods[c], threshold=d.threshold)
        for c, d in prediction_decisions.items()
        if c in shown
    ]
    return metrics


def column_decisions(snapshot: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per-column verdicts from an Evidently snapshot (p-value tests drift below, distances at/above)."""
    decisions = {}
    for metric in snapshot["metrics"]:
        config = metric.get("config", {})
        if not config.get("type", "").endswith("ValueDrift"):
            continue
        method, threshold, value = config["method"], config["threshold"], float(metric["value"])
        drifted = value < threshold if "p_value" in method else value >= threshold
        decisions[config["column"]] = {
            "method": method,
            "threshold": threshold,
            "value": value,
            "drifted": drifted,
        }
    return decisions
