"""The libraries a task process inherits instead of importing: imported once in the worker's parent.

Why: every Airflow task is a process forked by a long-lived worker (the task SDK's ``supervise``
forks it), and each of ours used to import pandas, scikit-learn, MLflow, Great Expectations and
Evidently again: about 12 s of CPU per task on a small machine, more than most stages' work. Imported
once in the process the tasks are forked from, they are shared copy-on-write.

* Embedded default (``tools/stack.py``): ``mlops_airflow.executors.local.PreloadingLocalExecutor``
  imports them in the scheduler before LocalExecutor forks its workers (``[scheduler]
  mp_start_method = fork``), with the garbage collector frozen around the fork as LocalExecutor does.
* Production (``docker-compose.yaml``): ``[celery] celery_config_options`` points at
  ``CELERY_CONFIG`` below, Airflow's default Celery config plus Celery's ``imports``: the worker's
  main process imports them at start, before it forks its pool.

Only third-party (and Airflow's own) modules are listed, never the project's (``include``,
``mlops_airflow``, ``dags``): a preloaded module would keep the code it had when the worker started,
and tasks must run the code as it is now. ``preload_modules`` refuses such a name. This module
itself stays cheap to import: Airflow's plugin manager imports every file under ``plugins/``.
"""

from __future__ import annotations

from typing import Any

# What the stages import (see the heavy modules in include/mlops), submodules included: importing
# ``sklearn`` alone does not import ``sklearn.ensemble``. A module that is not installed is skipped
# by the executor with a warning; Celery's ``imports`` would fail on it: list locked dependencies only.
HEAVY_MODULES: tuple[str, ...] = (
    "numpy",
    "pandas",
    "pyarrow",
    "pyarrow.parquet",
    "pyarrow.compute",
    "fsspec",
    "scipy.stats",
    "sklearn",
    "sklearn.compose",
    "sklearn.ensemble",
    "sklearn.impute",
    "sklearn.linear_model",
    "sklearn.metrics",
    "sklearn.pipeline",
    "sklearn.preprocessing",
    "skops.io",
    "mlflow",
    "mlflow.sklearn",
    "mlflow.models",
    "mlflow.tracking",
    "great_expectations",
    "great_expectations.validator.validator",
    "great_expectations.render.renderer",
    "evidently",
    "evidently.presets",
    "evidently.metrics",
    "evidently.legacy.calculations.stattests",
)
PROJECT_PACKAGES: tuple[str, ...] = ("include", "mlops_airflow", "dags")


def is_project_module(name: str) -> bool:
    """Whether ``name`` is one of the project's own modules (which must never be preloaded)."""
    return name.split(".", 1)[0] in PROJECT_PACKAGES


def preload_modules(modules: tuple[str, ...] = HEAVY_MODULES) -> tuple[str, ...]:
    """The modules to import before forking; ``ValueError`` if one is the project's own (see above)."""
    own = [m for m in modules if is_project_module(m)]
    if own:
        raise ValueError(f"project modules must follow code changes and are never preloaded: {own}")
    return modules


def __getattr__(name: str) -> Any:
    """``CELERY_CONFIG``, built on first use (it reads Airflow's config and the Celery provider)."""
    if name != "CELERY_CONFIG":
        raise AttributeError(name)
    from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

    return {**DEFAULT_CELERY_CONFIG, "imports": preload_modules()}
