"""MLflow connection: tracking URI, experiments, and turning "server down" into a retryable error."""

from __future__ import annotations

import errno
import os
import socket
import sqlite3
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from include.mlops.errors import MlopsError, PromotionRefused, ServiceUnavailable
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
    """Where the embedded store keeps artifacts, so runs never land in ./mlruns."""
    return os.environ.get("MLOPS_MLFLOW_ARTIFACT_ROOT") or embedded_store(state_dir())[1]


# MLflow draws tqdm progress bars on stderr when it downloads artifacts; in a task log every redraw
# is an error-level line that hides real errors (issue 10). Off unless the user set it themselves.
PROGRESS_BAR_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


def client(tracking_uri: str | None = None) -> MlflowClient:
    """Point MLflow (fluent API and client) at the tracking URI and return a client.

    Also turns MLflow's artifact progress bars off (they are noise in task logs), unless the
    environment already says otherwise. A SQL store is opened here (MLflow connects at once), so a
    database that cannot be reached raises ``ServiceUnavailable`` already (see ``service_errors``).
    """
    import mlflow

    os.environ.setdefault(PROGRESS_BAR_ENV, "false")
    uri = tracking_uri or default_tracking_uri()
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    with service_errors(uri):
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


def model_versions(client: MlflowClient, model: str, where: str | None = None) -> list:
    """Every version of a registered model (those matching ``where`` too, an MLflow filter such as
    ``tags.`key` = 'value'``, when given); none when the model is not registered yet."""
    from mlflow.exceptions import MlflowException

    try:
        query = f"name = '{model}'" + (f" AND {where}" if where else "")
        return list(client.search_model_versions(query))
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return []
        raise


@contextmanager
def service_errors(uri: str | None = None) -> Iterator[None]:
    """Turn a failure worth retrying into ServiceUnavailable, so Airflow retries it with backoff.

    Only failures classified as transient by ``transient_kind`` (by exception type and MLflow error
    code, never by message text) are turned; everything else propagates as it is and fails for good.
    """
    try:
        yield
    except Exception as exc:
        kind = transient_kind(exc)
        if kind is None:
            raise
        where = uri or default_tracking_uri()
        what = (
            f"the MLflow store at {where} is busy (another writer holds its lock); it will be retried"
            if kind == "busy"
            else f"MLflow tracking server at {where} is not reachable"
        )
        text = f"{type(exc).__name__}: {exc}"
        raise ServiceUnavailable(f"{what}: {text.splitlines()[0][:300]}") from exc


Transient = Literal["busy", "unreachable"]
_DETERMINISTIC: Final = "deterministic"
_Verdict = Literal["busy", "unreachable", "deterministic"] | None

# MLflow error codes that say "try again later" whoever raised them (503, 504, 429).
RETRY_LATER_CODES = frozenset(
    {"TEMPORARILY_UNAVAILABLE", "DEADLINE_EXCEEDED", "REQUEST_LIMIT_EXCEEDED", "RESOURCE_EXHAUSTED"}
)
# The server's own "internal error" (HTTP 500, or a 5xx from a proxy in front of it) is retried only
# when it came back over HTTP: raised locally, INTERNAL_ERROR is MLflow's default code for any bug.
SERVER_ERROR_CODES = frozenset({"INTERNAL_ERROR"})
NETWORK_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.ETIMEDOUT,
        errno.EHOSTUNREACH,
        errno.EHOSTDOWN,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.ENETRESET,
        errno.EPIPE,
    }
)
SQLITE_BUSY, SQLITE_LOCKED = 5, 6
# Postgres SQLSTATEs worth retrying; every other one (a wrong password 28P01/28000, a missing
# database 3D000, a cancelled statement 57014, a full disk 53100, ...) fails the same way again.
POSTGRES_DRIVERS = (("psycopg2", "Error"), ("psycopg", "Error"))  # their errors' base classes
POSTGRES_UNREACHABLE_CLASSES = ("08",)  # connection exception: not established, lost, refused
POSTGRES_UNREACHABLE_CODES = frozenset(
    {
        "57P01",  # admin_shutdown: the server is shutting down
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now: the server is starting up or in recovery
        "57P05",  # idle_session_timeout: the session was closed, a new one is fine
        "53300",  # too_many_connections
    }
)
POSTGRES_BUSY_CODES = frozenset({"40001", "40P01", "55P03"})  # serialization, deadlock, lock not available
# A connection that libpq could not open has no SQLSTATE (neither psycopg2 nor psycopg 3 gives the
# server's code for a FATAL at connect), so libpq's own words are all there is. Read only for a
# psycopg OperationalError without a SQLSTATE; a refusal wins over an outage in the same message (a
# multi-host URI lists every host's failure), and anything else (a localised message too) is for good.
POSTGRES_REFUSALS = (
    "authentication failed",  # password, ident, peer, SCRAM: 28P01 / 28000 on the server
    "no pg_hba.conf entry",
    "no password supplied",
    "does not exist",  # role or database (28000 / 3D000)
)
POSTGRES_UNREACHABLE_WORDS = (
    "could not connect",  # libpq < 14
    "connection refused",
    "server closed the connection",
    "timeout expired",
    "connection timed out",
    "no route to host",
    "network is unreachable",
    "could not receive data from server",
    "could not send data to server",
    "temporary failure in name resolution",
    "the database system is starting up",  # 57P03, sent as a FATAL at connect
    "the database system is shutting down",  # 57P01
    "the database system is in recovery mode",
    "too many clients already",  # 53300
    "terminating connection due to administrator command",
)


def transient_kind(exc: BaseException) -> Transient | None:
    """Why ``exc`` is worth retrying ("busy": a locked store, "unreachable": a service down), or None.

    Decided by the exception's type, an MLflow error code and the exceptions it wraps (MLflow's REST
    client raises ``MlflowException`` while handling the ``requests`` error, so the cause is in
    ``__context__``). A database error counts only when the driver's error really is a connection or
    lock problem: SQLite busy/locked, a Postgres SQLSTATE of a lost connection, a server going down or
    a lock (``POSTGRES_*_CODES``), or a connection SQLAlchemy's dialect saw drop; any other database
    error (a wrong password, a MySQL or unknown driver's error) fails for good. The message text is
    never read, except SQLite's own "locked" message when the driver lacks error codes and libpq's
    words for a connection it could not open, which carry no SQLSTATE (``POSTGRES_UNREACHABLE_WORDS``).
    """
    verdict = _verdict(exc, depth=0)
    return None if verdict in (None, _DETERMINISTIC) else verdict  # type: ignore[return-value]


def _loaded(module: str, name: str) -> type | None:
    """A class of a library only if that library is already imported: an exception of a module never
    imported cannot be raised, and the check must not import SQLAlchemy or requests for nothing."""
    found = getattr(sys.modules.get(module), name, None)
    return found if isinstance(found, type) else None


def _isinstance(exc: BaseException, *classes: tuple[str, str]) -> bool:
    return any((cls := _loaded(m, n)) is not None and isinstance(exc, cls) for m, n in classes)


def _verdict(exc: BaseException | None, *, depth: int) -> _Verdict:
    """One exception's verdict, looking through the exceptions it wraps where its type says little."""
    if exc is None or depth > 10:
        return None
    if isinstance(exc, MlopsError):
        return None  # already says whether to retry, in its own words: passed on as it is
    if _isinstance(exc, ("mlflow.exceptions", "MlflowException")):
        inner = _verdict(exc.__cause__ or exc.__context__, depth=depth + 1)
        return inner if inner is not None else _mlflow_verdict(exc)
    if isinstance(exc, sqlite3.Error):
        return _sqlite_verdict(exc)
    if _isinstance(exc, ("sqlalchemy.exc", "DBAPIError")):
        return _driver_verdict(exc)
    if _isinstance(exc, *POSTGRES_DRIVERS):
        return _postgres_verdict(exc)
    own = _network_verdict(exc)
    return own if own is not None else _verdict(exc.__cause__, depth=depth + 1)


def _mlflow_verdict(exc: BaseException) -> _Verdict:
    """An MLflow error by its code: retry-later codes always, a server error only when it came over HTTP."""
    code = getattr(exc, "error_code", None)
    if code in RETRY_LATER_CODES:
        return "unreachable"
    # RestException carries the server's JSON answer; a non-JSON 5xx (a proxy's page) gets a
    # control-plane ("CP_") error class from MLflow's REST client instead of a client one.
    over_http = _isinstance(exc, ("mlflow.exceptions", "RestException")) or str(
        getattr(exc, "error_class", "") or ""
    ).startswith("CP_")
    if code in SERVER_ERROR_CODES and over_http:
        return "unreachable"
    return _DETERMINISTIC


def _sqlite_verdict(exc: sqlite3.Error) -> _Verdict:
    """A locked SQLite database (another writer) is busy; any other SQLite error is for good."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return "busy" if code & 0xFF in (SQLITE_BUSY, SQLITE_LOCKED) else _DETERMINISTIC
    locked = isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)  # Python < 3.11
    return "busy" if locked else _DETERMINISTIC


def _driver_verdict(exc: BaseException) -> _Verdict:
    """SQLAlchemy's error by the driver's error it wraps (``orig``).

    An ``OperationalError`` gets a verdict either way (MLflow wraps it as TEMPORARILY_UNAVAILABLE,
    which must not decide); another ``DBAPIError`` (an integrity error, ...) is left to MLflow's code
    unless SQLAlchemy saw the connection drop (``connection_invalidated``: the dialect's own test).
    """
    orig = getattr(exc, "orig", None)
    if not _isinstance(exc, ("sqlalchemy.exc", "OperationalError")):
        return "unreachable" if getattr(exc, "connection_invalidated", False) else None
    if isinstance(orig, sqlite3.Error):
        return _sqlite_verdict(orig)
    verdict = _postgres_verdict(orig) if orig is not None and _isinstance(orig, *POSTGRES_DRIVERS) else None
    if verdict in (None, _DETERMINISTIC) and getattr(exc, "connection_invalidated", False):
        return "unreachable"
    return verdict or _DETERMINISTIC  # MySQL, an unknown driver: no way to tell, so no endless retry


def _postgres_verdict(err: BaseException) -> _Verdict:
    """A psycopg2 / psycopg 3 error by its SQLSTATE, else (a connection never opened) by libpq's words."""
    code = getattr(err, "pgcode", None) or getattr(err, "sqlstate", None)
    if code:
        code = str(code)
        if code in POSTGRES_BUSY_CODES:
            return "busy"
        unreachable = code.startswith(POSTGRES_UNREACHABLE_CLASSES) or code in POSTGRES_UNREACHABLE_CODES
        return "unreachable" if unreachable else _DETERMINISTIC
    if _isinstance(err, ("psycopg.errors", "ConnectionTimeout")):
        return "unreachable"
    if not _isinstance(err, ("psycopg2", "OperationalError"), ("psycopg", "OperationalError")):
        return _DETERMINISTIC
    text = str(err).lower()
    if any(words in text for words in POSTGRES_REFUSALS):
        return _DETERMINISTIC
    return "unreachable" if any(words in text for words in POSTGRES_UNREACHABLE_WORDS) else _DETERMINISTIC


def _network_verdict(exc: BaseException) -> _Verdict:
    """Connection failures and timeouts of requests, urllib3 and the standard library."""
    if _isinstance(exc, ("requests.exceptions", "SSLError"), ("urllib3.exceptions", "SSLError")):
        return _DETERMINISTIC  # a certificate problem does not heal by waiting
    if _isinstance(
        exc,
        ("requests.exceptions", "ConnectionError"),
        ("requests.exceptions", "Timeout"),
        ("requests.exceptions", "RetryError"),  # retries on 5xx answers exhausted
        ("requests.exceptions", "ChunkedEncodingError"),
        ("urllib3.exceptions", "MaxRetryError"),
        ("urllib3.exceptions", "TimeoutError"),
        ("urllib3.exceptions", "ProtocolError"),
    ):
        return "unreachable"
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return "unreachable"
    if isinstance(exc, socket.gaierror):
        return "unreachable" if exc.errno == socket.EAI_AGAIN else None
    if isinstance(exc, OSError) and exc.errno in NETWORK_ERRNOS:
        return "unreachable"
    return None


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
