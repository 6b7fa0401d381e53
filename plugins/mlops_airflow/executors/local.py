"""``PreloadingLocalExecutor``: Airflow's LocalExecutor whose workers start with the heavy libraries loaded.

Why: a LocalExecutor worker is forked from the scheduler, and it forks every task it runs (the task
SDK's ``supervise``). A task that imports pandas, scikit-learn, MLflow, Great Expectations and
Evidently itself pays ~11 s of CPU on a small machine before doing any work. This executor imports
``mlops_airflow.preload.HEAVY_MODULES`` once in the scheduler, before LocalExecutor forks its workers
(under ``[scheduler] mp_start_method = fork``), so every worker and every task it forks inherits them
copy-on-write. LocalExecutor freezes the garbage collector around that fork, so the inherited
objects are in the permanent generation of the workers and their tasks: a task's collections never
walk them (unfrozen, a full collection in a task would take ~0.6 s and copy those pages).

Nothing else changes: same workers, same queues, same states. The project's own modules are never
imported here (``preload_modules`` refuses them), so tasks always run the code as it is on disk.

The class is built on first access (module ``__getattr__``): Airflow's plugin manager imports every
file under ``plugins/`` in every process, and ``airflow.executors.local_executor`` costs ~0.2 s there.
"""

from __future__ import annotations

import importlib
import logging
import time
from typing import Any

from mlops_airflow.preload import HEAVY_MODULES, preload_modules

log = logging.getLogger(__name__)


def preload(modules: tuple[str, ...] = HEAVY_MODULES) -> list[str]:
    """Import ``modules`` (a missing optional one is skipped with a warning); returns those that failed.

    A module that fails to import only costs its tasks the import they would have done anyway.
    """
    failed = []
    started = time.perf_counter()
    for name in preload_modules(modules):
        try:
            importlib.import_module(name)
        except Exception as exc:  # an optional extra missing, a broken install: the task will say
            failed.append(name)
            log.warning("Not preloading %s: %s", name, exc)
    log.info(
        "Preloaded %d modules for the task processes in %.1f s",
        len(modules) - len(failed),
        time.perf_counter() - started,
    )
    return failed


def _build() -> type:
    from airflow.executors.local_executor import LocalExecutor

    class PreloadingLocalExecutor(LocalExecutor):
        """LocalExecutor that imports the heavy libraries before it forks its workers (module docstring)."""

        def start(self) -> None:
            """Preload, then start as LocalExecutor does (its workers are forked with the GC frozen)."""
            if self.is_mp_using_fork:
                preload()
            else:  # spawned or fork-server workers would not inherit anything from this process
                log.warning("mp_start_method is not fork: the task processes will not inherit the preload")
            super().start()

    PreloadingLocalExecutor.__module__ = __name__
    return PreloadingLocalExecutor


def __getattr__(name: str) -> Any:
    """``PreloadingLocalExecutor``, defined on first use (see the module docstring)."""
    if name != "PreloadingLocalExecutor":
        raise AttributeError(name)
    cls = _build()
    globals()[name] = cls
    return cls
