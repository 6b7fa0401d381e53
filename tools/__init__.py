"""Tooling run beside Airflow (``python -m tools.<module>``) by make, tests and compose; never by DAGs."""
