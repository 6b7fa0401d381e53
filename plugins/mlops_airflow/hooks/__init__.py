"""Hooks: how the tasks reach services (MLflow, the landing zone's stores) from an Airflow connection."""
