"""Operators: one per pipeline stage step, each a thin call on the core (``include.mlops``)."""
