"""Triggers run by the Airflow triggerer (imported by classpath, so keep them cheap to import)."""
