"""Thin Airflow adapters over the framework-free core in ``include/mlops``."""
