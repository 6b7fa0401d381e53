"""Operator extra links: from a task to what it produced (MLflow runs and versions, reports)."""
