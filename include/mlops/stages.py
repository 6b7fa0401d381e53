"""The seam between a stage and the libraries it calls: a library's failure becomes our own error.

Why: an exception raised inside scikit-learn, Evidently, Great Expectations, pandas, pyarrow, numpy
or scipy is not a service that is down; the same inputs fail the same way on every retry. Left as it
is, Airflow retries it and shows the library's traceback. ``stage`` turns it into ``StageFailed``
(deterministic: no retry), one line naming the stage, the pipeline and the library's message; a
failure ``tracking.transient_kind`` knows as transient becomes ``ServiceUnavailable`` (retried).
Every other exception (a bug of ours, an ``MlopsError`` already in our words) passes unchanged:
nothing is swallowed. Used by each stage's entry point in the core, so the CLI and the Airflow tasks
classify failures the same way.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Concatenate, ParamSpec, TypeVar

from include.mlops.errors import MlopsError, ServiceUnavailable, StageFailed, one_line
from include.mlops.tracking import transient_kind

if TYPE_CHECKING:
    from include.mlops.spec import PipelineSpec

P = ParamSpec("P")
T = TypeVar("T")

# Top-level packages whose exceptions are data or configuration problems, not outages.
LIBRARIES = frozenset({"sklearn", "evidently", "great_expectations", "pandas", "pyarrow", "numpy", "scipy"})
# Kinds of failure that another attempt (or a bigger worker) may not repeat, whoever raised them.
NEVER_TRANSLATED = (MemoryError, RecursionError, OSError)


def library_of(exc: BaseException) -> str | None:
    """The library that raised ``exc``: its exception class's package, else the package of the
    innermost frame of its traceback (``ValueError`` raised by scikit-learn's own code); None when
    our code (or any other) raised it."""
    root = type(exc).__module__.split(".", 1)[0]
    if root in LIBRARIES:
        return root
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return None
    root = str(tb.tb_frame.f_globals.get("__name__", "")).split(".", 1)[0]
    return root if root in LIBRARIES else None


def translate(exc: Exception, name: str, pipeline: str) -> MlopsError | None:
    """Our error for a library's exception raised in stage ``name``; None to let ``exc`` pass."""
    if isinstance(exc, MlopsError):
        return None
    kind = transient_kind(exc)
    text = one_line(f"{type(exc).__name__}: {exc}", 300)
    if kind is not None:
        return ServiceUnavailable(f"pipeline {pipeline}: {name}: a service did not answer ({text})")
    library = library_of(exc)
    if library is None or isinstance(exc, NEVER_TRANSLATED):
        return None
    return StageFailed(
        f"pipeline {pipeline}: {name} stage failed in {library}: {text}", stage=name, library=library
    )


@contextmanager
def stage(name: str, pipeline: str) -> Iterator[None]:
    """Run one stage's work with library failures translated (see the module's docstring)."""
    try:
        yield
    except Exception as exc:
        translated = translate(exc, name, pipeline)
        if translated is None:
            raise
        raise translated from exc


def staged(
    name: str,
) -> Callable[[Callable[Concatenate[PipelineSpec, P], T]], Callable[Concatenate[PipelineSpec, P], T]]:
    """Decorate a stage entry point taking the spec first, so it runs inside ``stage(name, spec.name)``."""

    def decorate(fn: Callable[Concatenate[PipelineSpec, P], T]) -> Callable[Concatenate[PipelineSpec, P], T]:
        @functools.wraps(fn)
        def run(spec: PipelineSpec, *args: P.args, **kwargs: P.kwargs) -> T:
            with stage(name, spec.name):
                return fn(spec, *args, **kwargs)

        return run

    return decorate
