"""MLflow tracking URI and login from an Airflow connection, with the embedded default as fallback."""

from __future__ import annotations

import os
from typing import Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from mlops_airflow.exceptions import PipelineFailed

CREDENTIAL_VARIABLES = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


class MlflowHook(BaseHook):
    """Resolves the tracking URI and the login.

    Connection ``mlflow_default`` (type ``http``: host, port, schema; or any type with extra
    ``tracking_uri``; login and password when the server authenticates, e.g. MLflow's basic-auth
    app). If the default connection is absent, ``MLFLOW_TRACKING_URI`` or the embedded SQLite store
    is used; a *named* connection that is absent is an error, not a silent fallback.
    """

    conn_name_attr = "mlflow_conn_id"
    default_conn_name = "mlflow_default"
    conn_type = "mlflow"
    hook_name = "MLflow"

    def __init__(self, mlflow_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        """Only store the connection id: it is looked up by ``get_tracking_uri``."""
        super().__init__(**kwargs)
        self.mlflow_conn_id = mlflow_conn_id

    def get_tracking_uri(self) -> str:
        """The URI from the connection (extra ``tracking_uri``, else scheme/host/port); a missing or
        incomplete named connection fails without retry (a retry cannot fix configuration).

        The connection's login becomes this process's MLflow login (``MLFLOW_TRACKING_USERNAME`` /
        ``PASSWORD``, which MLflow's client reads on every request): a task's own MLflow calls
        authenticate as the connection says, whatever the worker's environment holds.
        """
        from include.mlops.tracking import default_tracking_uri

        try:
            conn = self.get_connection(self.mlflow_conn_id)
        except AirflowNotFoundException:
            if self.mlflow_conn_id == self.default_conn_name:
                uri = default_tracking_uri()
                self.log.info("No %r connection; using tracking URI %s", self.mlflow_conn_id, uri)
                return uri
            raise PipelineFailed(
                f"Airflow connection {self.mlflow_conn_id!r} is not defined: add it to airflow_settings.yaml "
                "(or AIRFLOW_CONN_... / your secrets backend) with the MLflow tracking server's host and port"
            ) from None
        extra = conn.extra_dejson
        if extra.get("tracking_uri"):
            uri = extra["tracking_uri"]
        elif not conn.host:
            raise PipelineFailed(
                f"connection {self.mlflow_conn_id!r} has neither a host nor extra.tracking_uri"
            )
        else:
            scheme = conn.schema or "http"
            port = f":{conn.port}" if conn.port else ""
            uri = f"{scheme}://{conn.host}{port}"
        credentials = _credentials(conn.login, conn.password)
        if credentials:
            for name in CREDENTIAL_VARIABLES:  # no stale token next to a login, or the reverse
                os.environ.pop(name, None)
            os.environ.update(credentials)
            self.log.info("MLflow login: %s (connection %r)", conn.login or "token", self.mlflow_conn_id)
        return uri

    def job_credentials(self) -> dict[str, str]:
        """``MLFLOW_TRACKING_USERNAME``/``PASSWORD`` (or ``TOKEN``) for a remote job, from the connection.

        Empty when the connection has no login: the job then reaches MLflow the way the platform
        lets it (network policy, IAM proxy). A missing default connection means no credentials.
        """
        try:
            conn = self.get_connection(self.mlflow_conn_id)
        except AirflowNotFoundException:
            return {}
        return _credentials(conn.login, conn.password)


def _credentials(login: str | None, password: str | None) -> dict[str, str]:
    """MLflow's credential variables for a connection's login and password (a password alone is a token)."""
    env = {}
    if login:
        env["MLFLOW_TRACKING_USERNAME"] = login
        if password:
            env["MLFLOW_TRACKING_PASSWORD"] = password
    elif password:
        env["MLFLOW_TRACKING_TOKEN"] = password
    return env
