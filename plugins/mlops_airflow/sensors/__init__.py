"""Sensors: wait for something outside Airflow, deferring to the triggerer while they wait."""
