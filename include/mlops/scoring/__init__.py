"""Batch inference: the pinned champion scores the scoring inputs partition by partition."""
