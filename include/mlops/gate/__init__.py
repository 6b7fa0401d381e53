"""The evaluation gate: metrics checks, champion comparison, bootstrap, and the decision report."""
