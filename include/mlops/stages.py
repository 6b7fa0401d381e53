"""The seam between a stage and the libraries it calls: a library's failure becomes our own error.

Why: an exception raised inside scikit-learn, Evidently, Great Expectations, pandas, pyarrow, numpy
or scipy is not a service that is down; the same inputs fail the same way on every retry. Left as it
is, Airflow retries it and shows the library's traceback. ``stage`` turns it into ``StageFailed``
(deterministic: no retry), one line naming the stage, the pipeline and the library's message; a
failure ``tracking.transient_kind`` knows as transient becomes ``ServiceUnavailable`` (retried).
A missing file, a folder where a file was expected or a file where a folder was expected
(``FileNotFoundError``, ``IsADirectoryError``, ``NotADirectoryError``, whoever raised them: pandas,
pyarrow, fsspec or our code) is ``StageFailed`` too, naming the path: the path is just as wrong on
the next try. Every other exception (a bug of ours, an ``MlopsError`` already in our words, any other
``OSError``) passes unchanged: nothing is swallowed. Used by each stage's entry point in the core, so
the CLI and the Airflow tasks classify failures the same way.

How a library is recognised (``library_of``): by the package of the exception's class (numpy's
``UFuncTypeError``, pyarrow's ``ArrowInvalid``, even when C code raised it on our own line), else by
the package of the innermost frame of its traceback (``ValueError`` raised by scikit-learn's Python
code, or by pandas' and pyarrow's Cython code, which leaves a frame), else through the exception it
comes from: its ``__cause__`` (``raise ... from``), or its ``__context__`` (raised while handling
another) unless suppressed. The chain is followed only from a built-in exception class (``ValueError``
and the like): a third-party error raised while handling a library's (an S3 throttling error while
quarantining an unreadable file) keeps its own verdict rather than take the library's.

Limit: a built-in exception raised by C code directly on our line, with nothing chained (numpy's
``operands could not be broadcast together`` or ``could not convert string to float`` from
``ndarray.astype``, a ``FloatingPointError`` under ``np.seterr``), leaves no frame and no trace of
the library: it cannot be told from a bug of ours and passes unchanged. Code that expects such an
error should catch it and raise ``DataError`` in its own words.
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
# ... except a path that is wrong: it is just as wrong on the next attempt.
PATH_ERRORS = (
    (FileNotFoundError, "no such file or folder"),
    (IsADirectoryError, "a folder where a file was expected"),
    (NotADirectoryError, "a file where a folder was expected"),
)
MAX_CHAIN = 10  # exceptions followed through __cause__ / __context__


def library_of(exc: BaseException) -> str | None:
    """The library that raised ``exc`` (see the module's docstring); None when our code (or any
    other) raised it."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < MAX_CHAIN:
        seen.add(id(current))
        found = _raised_by(current)
        if found is not None:
            return found
        if type(current).__module__ != "builtins":
            return None  # a third-party error speaks for itself, whatever it was handling
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return None


def _raised_by(exc: BaseException) -> str | None:
    """The library of one exception: its class's package, else its innermost frame's package."""
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


def _path_failure(exc: OSError, name: str, pipeline: str) -> StageFailed:
    """A missing or wrong-kind path, named (pyarrow and fsspec put the path in the message only)."""
    what = next(words for kind, words in PATH_ERRORS if isinstance(exc, kind))
    where = one_line(str(exc.filename) if exc.filename else str(exc), 300)
    return StageFailed(
        f"pipeline {pipeline}: {name} stage failed: {what}: {where}; check the path, or whether the "
        "file was moved or deleted",
        stage=name,
        library=library_of(exc) or "filesystem",
    )


def translate(exc: Exception, name: str, pipeline: str) -> MlopsError | None:
    """Our error for a library's exception raised in stage ``name``; None to let ``exc`` pass."""
    if isinstance(exc, MlopsError):
        return None
    kind = transient_kind(exc)
    text = one_line(f"{type(exc).__name__}: {exc}", 300)
    if kind is not None:
        return ServiceUnavailable(f"pipeline {pipeline}: {name}: a service did not answer ({text})")
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, NotADirectoryError)):  # PATH_ERRORS
        return _path_failure(exc, name, pipeline)
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
