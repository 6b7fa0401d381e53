"""A real ``mlflow server`` on 127.0.0.1 as a child process, for tests and the local stacks.

One implementation for every test that needs a tracking server (the backend tests, the tracking
tests, the production stack): a SQLite store with proxied artifacts under one folder by default,
or any backend store and artifact destination (Postgres, ``s3://``). It runs in its own process
group, so ``stop`` takes its uvicorn workers down with it and never signals anything else.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from tools.stack import free_port, mlflow_server_argv


class MlflowServer:
    """``mlflow server`` with its store and artifacts under ``root`` unless told otherwise."""

    def __init__(
        self,
        root: Path,
        *,
        backend_store_uri: str | None = None,
        artifacts_destination: str | None = None,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.root = root
        self.port = port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.backend_store_uri = backend_store_uri or f"sqlite:///{root / 'mlflow.db'}"
        self.artifacts_destination = artifacts_destination or (root / "artifacts").as_uri()
        self.env = dict(env or {})
        self.process: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        """The server's command line."""
        return mlflow_server_argv(
            self.port,
            *("--backend-store-uri", self.backend_store_uri),
            *("--serve-artifacts", "--artifacts-destination", self.artifacts_destination),
        )

    def start(self) -> MlflowServer:
        """Start it without waiting (see ``wait``); its output goes to ``root/server.log``."""
        self.root.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **self.env}
        with open(self.root / "server.log", "ab") as log:
            self.process = subprocess.Popen(
                self.argv(), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self

    def wait(self, timeout: float = 180.0) -> MlflowServer:
        """Wait until it answers ``/health``; ``RuntimeError`` with the end of its log if it died."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited during start-up:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2):
                    return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"mlflow server did not answer /health within {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the server's log."""
        try:
            return "\n".join((self.root / "server.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Stop its process group (only while its leader has not been reaped: the pid is still ours)."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def connection(self) -> str:
        """``AIRFLOW_CONN_MLFLOW_DEFAULT`` for it."""
        return json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": self.port})


@contextmanager
def mlflow_server(root: Path, **options: object) -> Iterator[MlflowServer]:
    """A started, healthy server for the ``with`` block (``options``: see ``MlflowServer``)."""
    server = MlflowServer(root, **options)  # type: ignore[arg-type]
    server.start()
    try:
        yield server.wait()
    finally:
        server.stop()
