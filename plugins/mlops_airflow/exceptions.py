"""The exceptions our tasks raise, so Airflow's retry decision follows the core's error kinds.

A tiny hierarchy (as in astronomer-cosmos): catching ``MlopsTaskError`` catches every failure raised
on purpose by this project's operators, sensors and hooks. ``PipelineFailed`` is an
``AirflowFailException``: the task fails at once, without retries (bad data, failed gate, bad spec,
missing connection), because a retry would fail the same way. ``PipelineRetryable`` is a plain
``AirflowException``: the task's retry policy applies (a service down, a listing that failed).
"""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowException, AirflowFailException


class MlopsTaskError(AirflowException):
    """Base of every failure this project's Airflow adapters raise on purpose."""


class PipelineFailed(AirflowFailException, MlopsTaskError):
    """A deterministic failure: the same inputs would fail again, so the task is not retried."""


class PipelineRetryable(MlopsTaskError):
    """A transient failure: the task is retried with its backoff (``retries`` of the DAG's defaults)."""
