"""Which MLflow failures are retried: decided by exception type and error code, never by message text."""

from __future__ import annotations

import json
import socket
import sqlite3
import struct
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sqlalchemy
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


# Database errors: only a connection or lock problem is retried -----------------------------------

SSL_REQUEST, GSS_REQUEST = 80877103, 80877104
DRIVERS = ["psycopg2", "psycopg"]


def fatal(code: str, message: str) -> bytes:
    """A Postgres ErrorResponse at FATAL severity, as the server sends it before closing."""
    fields = b"SFATAL\0VFATAL\0C" + code.encode() + b"\0M" + message.encode() + b"\0\0"
    return b"E" + struct.pack("!i", len(fields) + 4) + fields


def wrong_password(conn: socket.socket) -> None:
    """Ask for a cleartext password, read it, refuse it the way Postgres does (28P01)."""
    conn.sendall(b"R" + struct.pack("!ii", 8, 3))
    conn.recv(1)
    (length,) = struct.unpack("!i", conn.recv(4, socket.MSG_WAITALL))
    conn.recv(length - 4, socket.MSG_WAITALL)
    conn.sendall(fatal("28P01", 'password authentication failed for user "mlflow"'))


def starting_up(conn: socket.socket) -> None:
    conn.sendall(fatal("57P03", "the database system is starting up"))


def no_database(conn: socket.socket) -> None:
    conn.sendall(fatal("3D000", 'database "mlflow" does not exist'))


def hang_up(conn: socket.socket) -> None:
    """Close the connection without a word (a server that crashed mid-handshake)."""


@pytest.fixture
def postgres_wire() -> Iterator:
    """A listener on 127.0.0.1 speaking Postgres' startup protocol: it answers libpq's startup (and
    SSL/GSS requests) with a scripted reply, so psycopg2 and psycopg raise their real errors."""
    listeners: list[socket.socket] = []

    def handle(conn: socket.socket, script) -> None:
        with conn:
            while True:
                head = conn.recv(8, socket.MSG_WAITALL)
                if len(head) < 8:
                    return
                length, code = struct.unpack("!ii", head)
                conn.recv(max(length - 8, 0), socket.MSG_WAITALL)
                if code not in (SSL_REQUEST, GSS_REQUEST):
                    break
                conn.sendall(b"N")  # no encryption: the startup message comes next
            script(conn)

    def accept(listener: socket.socket, script) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn, script), daemon=True).start()

    def start(script) -> int:
        listener = socket.create_server(("127.0.0.1", 0))
        listeners.append(listener)
        threading.Thread(target=accept, args=(listener, script), daemon=True).start()
        return listener.getsockname()[1]

    yield start
    for listener in listeners:
        listener.close()


@pytest.fixture
def one_mlflow_connect(monkeypatch):
    """MLflow's SQL store tries to connect 15 times with backoff; once is enough here."""
    from mlflow.store.db import utils

    monkeypatch.setattr(utils, "MAX_RETRY_COUNT", 1)


def store_uri(driver: str, port: int) -> str:
    return f"postgresql+{driver}://mlflow:wrong@127.0.0.1:{port}/mlflow?connect_timeout=2"


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("script", [wrong_password, no_database], ids=["wrong-password", "no-database"])
def test_a_postgres_store_refusing_the_login_is_not_retried(
    postgres_wire, one_mlflow_connect, driver, script
):
    """A wrong password or database name fails the same way on every retry: it is not retried."""
    uri = store_uri(driver, postgres_wire(script))
    with pytest.raises(sqlalchemy.exc.OperationalError) as raised:
        call(uri)
    assert not isinstance(raised.value, ServiceUnavailable)
    assert tracking.transient_kind(raised.value) is None
    # MLflow's store wraps any OperationalError as TEMPORARILY_UNAVAILABLE: the driver's error decides.
    wrapped = MlflowException(str(raised.value), error_code="TEMPORARILY_UNAVAILABLE")
    wrapped.__cause__ = raised.value
    assert tracking.transient_kind(wrapped) is None


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("script", [starting_up, hang_up, None], ids=["starting-up", "hung-up", "refused"])
def test_a_postgres_store_that_cannot_be_reached_is_retried(
    postgres_wire, one_mlflow_connect, driver, script
):
    """Nothing listening, a server starting up or one that hangs up is a service down, retried."""
    port = free_port() if script is None else postgres_wire(script)
    uri = store_uri(driver, port)
    with pytest.raises(ServiceUnavailable, match="is not reachable") as err:
        call(uri)
    assert not err.value.deterministic
    assert isinstance(err.value.__cause__, sqlalchemy.exc.OperationalError)


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_postgres_connect_timeout_is_retried(postgres_wire, driver):
    """A server that accepts and never answers: libpq's connect_timeout (2 s, its minimum) expires."""
    silent = threading.Event()
    port = postgres_wire(lambda conn: silent.wait(10))
    engine = sqlalchemy.create_engine(store_uri(driver, port))
    try:
        with pytest.raises(sqlalchemy.exc.OperationalError) as raised:
            engine.connect()
    finally:
        silent.set()
        engine.dispose()
    assert tracking.transient_kind(raised.value) == "unreachable"


@pytest.mark.parametrize(
    "sqlstate, kind",
    [
        ("57P01", "unreachable"),  # admin_shutdown
        ("08006", "unreachable"),  # connection_failure
        ("53300", "unreachable"),  # too_many_connections
        ("40P01", "busy"),  # deadlock_detected
        ("40001", "busy"),  # serialization_failure
        ("28P01", None),  # invalid_password
        ("28000", None),  # invalid_authorization_specification
        ("57014", None),  # query_canceled: the same statement times out again
        ("57P04", None),  # database_dropped
    ],
)
def test_a_postgres_error_during_a_query_is_judged_by_its_sqlstate(sqlstate, kind):
    """psycopg's error classes carry their SQLSTATE; only a lost connection or a lock is retried."""
    import psycopg

    orig = psycopg.errors.lookup(sqlstate)("terminating connection: could not connect, timeout expired")
    wrapped = sqlalchemy.exc.OperationalError("SELECT 1", {}, orig)
    assert tracking.transient_kind(wrapped) == kind
    assert tracking.transient_kind(orig) == kind


def test_an_error_of_an_unknown_driver_is_not_retried():
    """An OperationalError of a driver we cannot read (MySQL, ...) is not retried forever."""

    class DriverError(Exception):
        """Stands for a DBAPI error of a driver the classification does not know."""

    wrapped = sqlalchemy.exc.OperationalError("SELECT 1", {}, DriverError(1045, "Access denied"))
    assert tracking.transient_kind(wrapped) is None


def test_a_connection_sqlalchemy_saw_drop_is_retried():
    """SQLAlchemy's dialect judges a closed connection a disconnect: retried, whatever the class."""
    engine = sqlalchemy.create_engine("sqlite://")
    with engine.connect() as conn:
        conn.connection.dbapi_connection.close()  # type: ignore[union-attr]
        with pytest.raises(sqlalchemy.exc.DBAPIError) as raised:
            conn.exec_driver_sql("SELECT 1")
    assert raised.value.connection_invalidated
    assert not isinstance(raised.value, sqlalchemy.exc.OperationalError)
    assert tracking.transient_kind(raised.value) == "unreachable"
