"""MLflow connection: tracking URI, experiments, and turning "server down" into a retryable error."""

from __future__ import annotations

import os
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.mlops.errors import PromotionRefused, ServiceUnavailable
from include.mlops.paths import PROJECT_ROOT, state_dir

if TYPE_CHECKING:
    from mlflow import MlflowClient

ALIASES = ("champion", "challenger", "previous_champion")


def embedded_store(state: Path) -> tuple[str, str]:
    """The embedded MLflow backend store URI and artifact root inside a state folder."""
    return f"sqlite:///{state / 'mlflow' / 'mlflow.db'}", (state / "mlflow" / "artifacts").as_uri()


def default_tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else the embedded SQLite store in the state folder."""
    return os.environ.get("MLFLOW_TRACKING_URI") or embedded_store(state_dir())[0]


def artifact_root() -> str:
    return os.environ.get("MLOPS_MLFLOW_ARTIFACT_ROOT") or embedded_store(state_dir())[1]


def client(tracking_uri: str | None = None) -> MlflowClient:
    """Point MLflow (fluent API and client) at the tracking URI and return a client."""
    import mlflow

    uri = tracking_uri or default_tracking_uri()
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(name: str) -> str:
    """Experiment id for ``name``, created with an explicit artifact location (not ./mlruns)."""
    import mlflow

    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if mlflow.get_tracking_uri().startswith("sqlite:"):
        location = f"{artifact_root()}/{name.replace('/', '_')}"
    return mlflow.create_experiment(name, artifact_location=location)


def model_versions(client: MlflowClient, model: str) -> list:
    """Every version of a registered model; none when the model is not registered yet."""
    from mlflow.exceptions import MlflowException

    try:
        return list(client.search_model_versions(f"name = '{model}'"))
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return []
        raise


@contextmanager
def service_errors(uri: str | None = None) -> Iterator[None]:
    """Connection failures to the tracking server (and a locked embedded SQLite store) become
    ServiceUnavailable (retryable)."""
    try:
        yield
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}"
        transient = (
            "Connection refused",
            "Max retries exceeded",
            "ConnectionError",
            "timed out",
            "503",
            "502",
            "database is locked",  # the embedded SQLite store under concurrent writers
        )
        if any(marker in text for marker in transient):
            where = uri or default_tracking_uri()
            what = (
                f"the MLflow store at {where} is busy (another writer holds its lock); it will be retried"
                if "database is locked" in text
                else f"MLflow tracking server at {where} is not reachable"
            )
            raise ServiceUnavailable(f"{what}: {text.splitlines()[0][:300]}") from exc
        raise


def code_version() -> str:
    """Git commit of the project when known (set MLOPS_CODE_VERSION in images without .git)."""
    if version := os.environ.get("MLOPS_CODE_VERSION"):
        return version
    try:
        out = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


NOT_FOUND = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}


def alias_version(client: Any, model: str, alias: str) -> str | None:
    """The version an alias points at; None when the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(model, alias).version)
    except MlflowException as exc:
        if exc.error_code in NOT_FOUND:  # no such model or alias; anything else (server down) propagates
            return None
        raise


def get_version(client: Any, model: str, version: str) -> Any:
    """The model version, or a deterministic error naming it (a typo in a UI param must not retry)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(model, version)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
            raise PromotionRefused(f"registered model {model!r} has no version {version!r}") from None
        raise


def model_dir(client: Any, model: str, version: str, download_to: str) -> Path:
    """A version's model folder: read in place when the artifact store is a local folder (nothing is
    copied or written there), else downloaded to ``download_to``."""
    import mlflow

    uri = client.get_model_version_download_uri(model, version)
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "file":
        folder = Path(urllib.request.url2pathname(parsed.path))
        if folder.is_dir():
            return folder
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=download_to))
