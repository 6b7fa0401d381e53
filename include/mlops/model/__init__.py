"""The model: the estimator pipeline, training, and the registry (promotion, rollback, history)."""
