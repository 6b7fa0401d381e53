"""Shared fixtures: every test gets its own state folder, so nothing touches ./state."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# No instance metadata service here: boto would wait for 169.254.169.254 whenever it looks for
# credentials it was not given (e.g. an undefined connection), seconds per listing.
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated state folder (data root + embedded MLflow store) for one test."""
    monkeypatch.setenv("MLOPS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("MLOPS_DATA_ROOT", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLOPS_COORDINATION_URL", raising=False)  # the store in the state folder
    return tmp_path / "state"


@pytest.fixture
def pipelines_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the example specs that a test may add broken specs to."""
    folder = tmp_path / "pipelines"
    shutil.copytree(ROOT / "include" / "pipelines", folder)
    monkeypatch.setenv("MLOPS_PIPELINES_DIR", str(folder))
    return folder


def _forget_object_store_clients() -> None:
    """Drop fsspec's cached ``s3://`` / ``gs://`` file systems: they keep the endpoint (a module's moto
    or GCS emulator, read from the environment when first made) after that server is gone, and the
    cache key does not see the environment change."""
    for module, name in (("s3fs", "S3FileSystem"), ("gcsfs", "GCSFileSystem")):
        loaded = sys.modules.get(module)
        if loaded is not None:
            getattr(loaded, name).clear_instance_cache()


@contextmanager
def _mlflow_uris_kept() -> Iterator[None]:
    """Put MLflow's process-wide tracking and registry URIs (and the variables it mirrors them to)
    back as they were, and forget cached object-store clients (``_forget_object_store_clients``): ``tracking.client`` sets them, as it should in a task's own process, but in
    pytest a module's dead server would otherwise stay the registry of every later module."""
    tracking = sys.modules.get("mlflow.tracking._tracking_service.utils")
    registry = sys.modules.get("mlflow.tracking._model_registry.utils")
    saved = (
        getattr(tracking, "_tracking_uri", None),
        getattr(registry, "_registry_uri", None),
        {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")},
    )
    _forget_object_store_clients()
    yield
    _forget_object_store_clients()
    tracking = sys.modules.get("mlflow.tracking._tracking_service.utils")  # imported meanwhile?
    registry = sys.modules.get("mlflow.tracking._model_registry.utils")
    if tracking is not None:
        tracking._tracking_uri = saved[0]
    if registry is not None:
        registry._registry_uri = saved[1]
    for name, value in saved[2].items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(autouse=True, scope="module")
def _mlflow_uris_kept_per_module() -> Iterator[None]:
    """See ``_mlflow_uris_kept``: what a module's fixtures set ends with the module."""
    with _mlflow_uris_kept():
        yield


@pytest.fixture(autouse=True)
def _mlflow_uris_kept_per_test() -> Iterator[None]:
    """See ``_mlflow_uris_kept``: what a test sets ends with the test."""
    with _mlflow_uris_kept():
        yield


# Running in two processes (``make test``: pytest-xdist, ``-n 2``) --------------------------------
# The production stack's tests take about 13 of the suite's 30 serial minutes, mostly waiting on
# the stack (outages, heartbeats, runs); they go first and stay together in one worker, so that one
# stack serves them all (a session fixture is per worker) while the other worker runs the rest. Any
# other module is a unit of its own: module-scoped fixtures (servers, stacks) start once.
STACK_TESTS = "tests/production/"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The production stack's tests first (the longest unit of work starts first), in file order."""
    items.sort(key=lambda item: not item.nodeid.startswith(STACK_TESTS))


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """Whole modules to a worker, and all of ``tests/production`` to one (see ``STACK_TESTS``)."""
    from xdist.scheduler import LoadScopeScheduling

    class ModulesAndTheStack(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return STACK_TESTS if path.startswith(STACK_TESTS) else path

    config.option.loadscopereorder = False  # keep the order above, not "most tests first"
    return ModulesAndTheStack(config, log)
