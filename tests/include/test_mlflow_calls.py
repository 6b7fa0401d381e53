"""How many MLflow calls a task makes: every call is a round trip to the tracking server in production.

A counting wrapper sits on the two MLflow stores (tracking and model registry): the layer every
client and fluent call ends in, one call there is one request to a tracking server. Only outermost
calls count (a store method calling another is one request). The budgets are the counts measured
once the repeated calls were cut (issue 11); a change that adds calls must raise them on purpose.
"""

from __future__ import annotations

import collections
import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from include.mlops import tracking
from include.mlops.gate import evaluation
from include.mlops.model import registry, training

pytestmark = pytest.mark.slow

LINEAGE = {"airflow.dag_id": "churn__train", "airflow.run_id": "manual__1", "airflow.task_id": "train"}
PROMOTE = {"airflow.dag_id": "churn__promote", "airflow.run_id": "manual__1", "airflow.task_id": "promote"}
# Calls per task after issue 11's cuts (before them: train 28, promote 21; see docs/architecture.md).
BUDGET = {"train": 21, "promote": 18}


@contextmanager
def counted() -> Iterator[collections.Counter[str]]:
    """Count the outermost calls on MLflow's SQL tracking and registry stores while in the block."""
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingStore

    calls: collections.Counter[str] = collections.Counter()
    depth = threading.local()
    saved: list[tuple[type, str, Any]] = []

    def wrap(cls: type, name: str, fn: Any) -> Any:
        @functools.wraps(fn)
        def counting(*args: Any, **kwargs: Any) -> Any:
            level = getattr(depth, "level", 0)
            if level == 0:
                calls[f"{'registry' if cls is RegistryStore else 'tracking'}.{name}"] += 1
            depth.level = level + 1
            try:
                return fn(*args, **kwargs)
            finally:
                depth.level = level

        return counting

    for cls in (TrackingStore, RegistryStore):
        for name, fn in list(vars(cls).items()):
            if callable(fn) and not name.startswith("_") and not isinstance(fn, (staticmethod, classmethod)):
                saved.append((cls, name, fn))
                setattr(cls, name, wrap(cls, name, fn))
    try:
        yield calls
    finally:
        for cls, name, fn in saved:
            setattr(cls, name, fn)


def _report(task: str, calls: collections.Counter[str]) -> int:
    total = sum(calls.values())
    print(f"\n{task}: {total} MLflow store calls: " + ", ".join(f"{k} x{v}" for k, v in calls.most_common()))
    return total


def test_train_and_promote_stay_within_their_mlflow_call_budget(churn_published):
    spec = churn_published
    tracking.client()  # the store is created (and migrated) once, as the stack's first task does
    with counted() as calls:
        version = training.train(spec, lineage=LINEAGE).version
    assert _report("train", calls) <= BUDGET["train"]
    evaluation.evaluate(spec, version=version)
    with counted() as calls:
        registry.promote(spec, version=version, expected_champion=None, lineage=PROMOTE)
    assert _report("promote", calls) <= BUDGET["promote"]
