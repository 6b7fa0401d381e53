"""Where things live: project root, state folder, data root, and ``{VAR}`` expansion in spec URIs.

Cheap to import (standard library only): DAG files use it at parse time.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from include.mlops.errors import SpecError

PROJECT_ROOT = Path(os.environ.get("MLOPS_PROJECT_ROOT") or Path(__file__).resolve().parents[2])

_VAR = re.compile(r"\{([A-Z][A-Z0-9_]*)\}")


def state_dir() -> Path:
    """Git-ignored folder holding the embedded default's Airflow home, MLflow store and data."""
    return Path(os.environ.get("MLOPS_STATE_DIR") or PROJECT_ROOT / "state")


def data_root() -> str:
    """Root URI of all pipeline data; a bare path means the local file system."""
    return to_uri(os.environ.get("MLOPS_DATA_ROOT") or str(state_dir() / "data"))


def pipelines_dir() -> Path:
    """Folder of pipeline spec files (``MLOPS_PIPELINES_DIR`` overrides ``include/pipelines``)."""
    return Path(os.environ.get("MLOPS_PIPELINES_DIR") or PROJECT_ROOT / "include" / "pipelines")


def to_uri(path_or_uri: str) -> str:
    """Turn a bare local path (relative ones: to the project root) into a ``file://`` URI."""
    if "://" in path_or_uri:
        return path_or_uri.rstrip("/")
    path = Path(path_or_uri).expanduser()
    return "file://" + str((path if path.is_absolute() else PROJECT_ROOT / path).resolve())


def expand(template: str) -> str:
    """Replace ``{VAR}`` placeholders with environment values (``MLOPS_DATA_ROOT`` has a default)."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "MLOPS_DATA_ROOT":
            return data_root()
        if name not in os.environ:
            raise SpecError(f"{template!r} uses {{{name}}} but the environment variable {name} is not set")
        return os.environ[name]

    expanded = _VAR.sub(value, template)
    # "file://" + "file:///x" happens when a spec writes file://{MLOPS_DATA_ROOT}; keep it working.
    expanded = re.sub(r"^file://(?=[a-z0-9]+://)", "", expanded)
    return to_uri(expanded)


def resolve_project_path(path: str) -> Path:
    """Spec paths such as ``include/expectations/churn.json`` are relative to the project root."""
    p = Path(path)
    return p if p.is_absolute() else PROJECT_ROOT / p
