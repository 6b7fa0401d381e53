"""Registers airflow-mlops with Airflow's plugin manager (listed under Admin > Plugins)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin


class MlopsPlugin(AirflowPlugin):
    name = "airflow_mlops"
