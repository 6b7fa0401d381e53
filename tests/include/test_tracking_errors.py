"""Which MLflow failures are retried: decided by exception type and error code, never by message text."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sqlalchemy.exc
from mlflow.exceptions import MlflowException, RestException

from include.mlops import tracking
from include.mlops.errors import ServiceUnavailable
from tools.stack import free_port


@pytest.fixture(autouse=True)
def fail_fast(monkeypatch):
    """MLflow's own retry loop off: Airflow's task retries do the waiting."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")


def answering(status: int, body: dict | str) -> type[BaseHTTPRequestHandler]:
    """A request handler that answers every request with ``status`` and ``body``."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            payload = (json.dumps(body) if isinstance(body, dict) else body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json" if isinstance(body, dict) else "text/html")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PATCH = do_DELETE = _answer

        def log_message(self, *args) -> None:  # keep the test output clean
            pass

    return Handler


@pytest.fixture
def http_server() -> Iterator:
    """Start a tiny HTTP server on 127.0.0.1 standing in for the tracking server; yields a starter."""
    servers: list[ThreadingHTTPServer] = []

    def start(status: int, body: dict | str) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), answering(status, body))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def call(uri: str):
    """One registry read through MLflow's client, the way the core calls it."""
    client = tracking.client(uri)
    with tracking.service_errors(uri):
        return client.search_registered_models()


# Deterministic failures whose words look transient stay what they are ------------------------------


@pytest.mark.parametrize(
    "error",
    [
        ValueError("upstream answered 503: the request timed out"),
        KeyError("Connection refused"),
        MlflowException("Registered model 'm503' timed out: not found", error_code="RESOURCE_DOES_NOT_EXIST"),
        MlflowException("model flavor failed: 503 timed out"),  # local INTERNAL_ERROR: a bug, not the server
        RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "alias '503' timed out"}),
        sqlite3.OperationalError("no such table: runs_503 (timed out)"),
    ],
    ids=[
        "value-error",
        "key-error",
        "mlflow-not-found",
        "mlflow-local-internal",
        "rest-400",
        "sqlite-schema",
    ],
)
def test_a_deterministic_error_with_transient_words_is_not_retried(error):
    """Words such as 503 or timed out in a message never make an error retryable."""
    with pytest.raises(type(error)) as raised, tracking.service_errors("http://127.0.0.1:1"):
        raise error
    assert raised.value is error
    assert tracking.transient_kind(error) is None


def test_a_deterministic_http_answer_is_not_retried(http_server):
    """A 4xx answer from the server fails for good, whatever its message says."""
    uri = http_server(400, {"error_code": "INVALID_PARAMETER_VALUE", "message": "503 timed out"})
    with pytest.raises(MlflowException) as raised:
        call(uri)
    assert not isinstance(raised.value, ServiceUnavailable)


def test_an_sqlalchemy_error_other_than_a_lock_is_not_retried():
    """MLflow calls any OperationalError temporary; a missing table is not."""
    orig = sqlite3.OperationalError("no such table: experiments")
    wrapped = sqlalchemy.exc.OperationalError("SELECT 1", {}, orig)
    assert tracking.transient_kind(wrapped) is None


# Real transient failures are retried -----------------------------------------------------------------


def test_connection_refused_by_a_closed_port_is_retryable():
    """Nothing listening on the tracking URI is a service down, retried by Airflow."""
    uri = f"http://127.0.0.1:{free_port()}"  # bound and released: nothing listens there
    with pytest.raises(ServiceUnavailable, match=f"MLflow tracking server at {uri} is not reachable") as err:
        call(uri)
    assert not err.value.deterministic


@pytest.mark.parametrize(
    "status, body",
    [
        (503, "<html><body>503 Service Unavailable</body></html>"),
        (503, {"error_code": "TEMPORARILY_UNAVAILABLE", "message": "try later"}),
        (502, "<html>Bad Gateway</html>"),
        (500, {"error_code": "INTERNAL_ERROR", "message": "the server failed"}),
    ],
    ids=["503-page", "503-json", "502-proxy", "500-json"],
)
def test_a_5xx_from_the_tracking_server_is_retryable(http_server, status, body):
    """MLflow's exhausted retries on a 5xx (a RetryError it wraps) are retried by Airflow."""
    uri = http_server(status, body)
    with pytest.raises(ServiceUnavailable, match=f"MLflow tracking server at {uri} is not reachable"):
        call(uri)


def test_a_5xx_answer_itself_is_retryable(http_server, monkeypatch):
    """With no status retried by MLflow, the 5xx answer itself (not a RetryError) is classified."""
    from mlflow.utils import rest_utils

    real = rest_utils._get_http_response_with_retries

    def no_status_retries(method, url, max_retries, backoff_factor, backoff_jitter, retry_codes, *a, **k):
        return real(method, url, max_retries, backoff_factor, backoff_jitter, frozenset(), *a, **k)

    monkeypatch.setattr(rest_utils, "_get_http_response_with_retries", no_status_retries)
    for status, body in [(503, "<html>down</html>"), (502, "<html>Bad Gateway</html>")]:
        uri = http_server(status, body)
        with pytest.raises(ServiceUnavailable) as err:
            call(uri)
        cause = err.value.__cause__
        assert isinstance(cause, MlflowException) and cause.__context__ is None, repr(cause)


@pytest.mark.slow
def test_a_locked_sqlite_store_is_retryable(tmp_path):
    """Another writer holding the embedded store's lock is a busy store, retried."""
    uri, _ = tracking.embedded_store(tmp_path)
    client = tracking.client(uri)
    client.search_experiments()  # the store and its tables exist
    holder = sqlite3.connect(tmp_path / "mlflow" / "mlflow.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another writer holds the lock
    try:
        with (
            pytest.raises(ServiceUnavailable, match="is busy \\(another writer holds its lock\\)") as err,
            tracking.service_errors(uri),
        ):
            client.create_experiment("locked-out")
        assert not err.value.deterministic
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_wrapped_lock_error_is_busy():
    """The lock is found through MLflow's and SQLAlchemy's wrappers."""
    locked = sqlite3.OperationalError("database is locked")
    wrapped = sqlalchemy.exc.OperationalError("INSERT", {}, locked)
    try:
        raise MlflowException(str(wrapped), error_code="TEMPORARILY_UNAVAILABLE") from wrapped
    except MlflowException as exc:
        assert tracking.transient_kind(exc) == "busy"
