"""Shared fixtures: every test gets its own state folder, so nothing touches ./state."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated state folder (data root + embedded MLflow store) for one test."""
    monkeypatch.setenv("MLOPS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("MLOPS_DATA_ROOT", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "state"


@pytest.fixture
def pipelines_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the example specs that a test may add broken specs to."""
    folder = tmp_path / "pipelines"
    shutil.copytree(ROOT / "include" / "pipelines", folder)
    monkeypatch.setenv("MLOPS_PIPELINES_DIR", str(folder))
    return folder
