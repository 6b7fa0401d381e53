"""The modules DAG parsing must never import, read from the one list in ``pyproject.toml``.

Ruff's TID253 (``banned-module-level-imports``) enforces the list in the source; the DAG integrity
test and ``bench/parse.py`` check the same list at run time, so the two cannot disagree.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def heavy_modules() -> tuple[str, ...]:
    """The banned module names, in the order pyproject.toml lists them."""
    config = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    return tuple(config["tool"]["ruff"]["lint"]["flake8-tidy-imports"]["banned-module-level-imports"])


def loaded(name: str, modules: dict[str, object] | None = None) -> bool:
    """Whether ``name`` (or, for a namespace package such as ``google.cloud``, a real submodule) is imported."""
    modules = sys.modules if modules is None else modules
    if name == "google.cloud":  # a .pth file pre-creates the empty namespace package; count real modules
        return any(m.startswith("google.cloud.") for m in modules)
    return name in modules
