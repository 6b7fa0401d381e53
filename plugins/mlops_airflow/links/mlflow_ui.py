"""Operator extra links from a task to the MLflow run and model version it produced or judged."""

from __future__ import annotations

import os
from typing import Any

from airflow.sdk import BaseOperatorLink


def mlflow_ui_base(tracking_uri: str) -> str:
    """MLOPS_MLFLOW_UI_URL when set (the address a browser uses, e.g. outside a compose network), else
    the tracking server itself, else the local default."""
    if configured := os.environ.get("MLOPS_MLFLOW_UI_URL"):
        return configured.rstrip("/")
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return "http://127.0.0.1:5000"


def remember(
    operator: Any,
    *,
    tracking_uri: str,
    model: str,
    version: str | None,
    run_id: str | None = None,
    experiment_id: str | None = None,
) -> None:
    """Store the URLs on the running operator; the task runner asks the links for them when it ends."""
    base = mlflow_ui_base(tracking_uri)
    links: dict[str, str] = {}
    if version:
        links["version"] = f"{base}/#/models/{model}/versions/{version}"
    if run_id and experiment_id:
        links["run"] = f"{base}/#/experiments/{experiment_id}/runs/{run_id}"
    operator.mlflow_links = links


class MlflowModelVersionLink(BaseOperatorLink):
    """The model version the task registered, judged or promoted."""

    name = "MLflow model version"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        """The URL ``remember`` stored, or nothing (no link rather than a broken page)."""
        return getattr(operator, "mlflow_links", {}).get("version", "")


class MlflowRunLink(BaseOperatorLink):
    """The MLflow run the task created (training, the gate's evaluation)."""

    name = "MLflow run"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        """The URL ``remember`` stored, or nothing (no link rather than a broken page)."""
        return getattr(operator, "mlflow_links", {}).get("run", "")


LINKS = (MlflowModelVersionLink(), MlflowRunLink())
