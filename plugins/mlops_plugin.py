"""Registers airflow-mlops with Airflow's plugin manager (listed under Admin > Plugins).

The operator extra links are registered here so that the API server can show them for our tasks.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from mlops_airflow.links.mlflow_ui import MlflowModelVersionLink, MlflowRunLink
from mlops_airflow.links.reports import ALL as REPORT_LINKS


class MlopsPlugin(AirflowPlugin):
    """Registers the extra links, so the API server can render them for our tasks."""

    name = "airflow_mlops"
    operator_extra_links = [
        MlflowModelVersionLink(),
        MlflowRunLink(),
        *REPORT_LINKS,
    ]
