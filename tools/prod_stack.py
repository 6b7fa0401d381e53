"""The production configuration, run natively: no Docker, every server a local process on 127.0.0.1.

``python -m tools.prod_stack up|down|status|env|demo`` (``make up-prod`` / ``make down-prod`` /
``make status-prod``; ``make demo-prod``: the lifecycle scenario of ``make demo`` on it). It runs what
``docker-compose.yaml`` describes, from Debian and PyPI packages:

- **Postgres** (``tools.postgres``: a throwaway cluster in ``<state>/postgres``) with one database
  each for Airflow's metadata (``airflow``), MLflow's backend store (``mlflow``) and the project's
  coordination store (``mlops``, ``MLOPS_COORDINATION_URL``);
- **Redis** (Debian's ``redis-server``; ``make redis``), the Celery broker, password-protected, no
  persistence;
- **moto's server** as the S3-compatible object store, with the buckets ``mlflow`` (MLflow
  artifacts), ``mlops-data`` (pipeline data: ``MLOPS_DATA_ROOT=s3://mlops-data``) and
  ``airflow-logs`` (task logs: Airflow's remote logging);
- an **MLflow tracking server** on Postgres whose artifacts go to ``s3://mlflow/`` through the server
  (``--artifacts-destination``, proxied: the tasks need no S3 credentials for MLflow), with its
  basic-auth app (users in the ``mlflow_auth`` database): the tasks log in as ``airflow`` through the
  ``mlflow_default`` connection, the driver (tests, demo) as its admin;
- **Airflow** on Postgres with the CeleryExecutor: api-server, scheduler, dag-processor, triggerer and
  two Celery workers that share no local folder, as two hosts would: each has its own working
  directory, ``MLOPS_STATE_DIR``, ``AIRFLOW_HOME`` (and so task-log folder), ``HOME`` and ``TMPDIR``,
  and records its own host name (``worker-1``, ``worker-2``) on the task instances it runs.

Both UIs require a login: Airflow's users ``admin``, ``operator`` (role ``op``) and ``viewer``
(``AIRFLOW_USERS``), MLflow's ``admin``; docs/deploy.md, "Who may do what".

Every environment variable the components get comes from ``ProdStack.production_env`` (shared by all)
plus ``worker_env`` / ``mlflow_env`` (per component); see docs/deploy.md, "Native production stack".
Ports, passwords and keys are generated per stack and kept in ``<state>/stack.json`` (mode 0600; the
state folder is git-ignored). moto keeps its objects in memory, so ``down`` loses them: ``up`` always
starts from empty databases too, so that nothing refers to an object that is gone.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.postgres import Cluster
from tools.stack import COMPONENTS, ROOT, Stack, free_port, mlflow_server_argv, port_is_free

BUCKETS = {"artifacts": "mlflow", "data": "mlops-data", "logs": "airflow-logs"}
DATABASES = {
    "airflow": "airflow",
    "mlflow": "mlflow",
    "mlflow_auth": "mlflow_auth",  # the users and permissions of MLflow's basic-auth app
    "coordination": "mlops",
}  # mlops: made by tools.postgres
S3_REGION = "us-east-1"
ADMIN_USER = "admin"
# Airflow's users (SimpleAuthManager): login -> role. viewer reads; operator ("op") also triggers runs,
# answers approvals, edits connections, pools and variables; admin may do everything.
AIRFLOW_USERS = {ADMIN_USER: "admin", "operator": "op", "viewer": "viewer"}
AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
MLFLOW_ADMIN = "admin"  # the basic-auth app's admin: the driver's (tests', demo's) MLflow login
MLFLOW_TASK_USER = "airflow"  # the tasks' MLflow login, a plain user: the mlflow_default connection's
CELERY_APP = "airflow.providers.celery.executors.celery_executor.app"
WORKER_HOSTNAME_ENV = "MLOPS_WORKER_HOSTNAME"


def worker_hostname() -> str:
    """Airflow's ``[core] hostname_callable`` on the native stack's workers: the worker's own name.

    Both workers run on this machine; each records the name it was given (``worker-1``, ...) on the
    task instances it runs, as two hosts would record theirs. Elsewhere: the FQDN, Airflow's default.
    """
    return os.environ.get(WORKER_HOSTNAME_ENV) or socket.getfqdn()


def _secret_key() -> str:
    return secrets.token_urlsafe(32)


def _fernet_key() -> str:
    """A Fernet key (what ``cryptography.fernet.Fernet.generate_key`` returns), without importing it."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


@dataclass
class ProdStack(Stack):
    """The native production stack whose files all live in ``state`` (default ``state/prod``).

    The UI ports come from MLOPS_PROD_AIRFLOW_PORT (8090) and MLOPS_PROD_MLFLOW_PORT (5090), so that it
    can run next to ``make up``; the inner services' ports are chosen free at the first ``up``.
    """

    state: Path = field(default_factory=lambda: ROOT / "state" / "prod")
    airflow_port: int = int(os.environ.get("MLOPS_PROD_AIRFLOW_PORT", "8090"))
    mlflow_port: int = int(os.environ.get("MLOPS_PROD_MLFLOW_PORT", "5090"))
    workers: int = 2
    worker_concurrency: int = 2
    _config: dict[str, Any] | None = field(default=None, init=False, repr=False)

    # Where things live -------------------------------------------------------------------------
    @property
    def config_file(self) -> Path:
        """Ports, passwords and keys of this stack (mode 0600), written at the first ``up``."""
        return self.state / "stack.json"

    @property
    def postgres(self) -> Cluster:
        """The stack's Postgres cluster (its port is kept in its own folder)."""
        cluster = Cluster(self.state / "postgres")
        port_file = cluster.folder / "port"
        if port_file.exists():
            cluster.port = int(port_file.read_text())
        return cluster

    @property
    def control_dir(self) -> Path:
        """The control plane's host (api-server, scheduler, dag-processor, triggerer, MLflow)."""
        return self.state / "control"

    @property
    def airflow_home(self) -> Path:
        """``AIRFLOW_HOME`` of the control plane; each worker has its own (``worker_dir``)."""
        return self.control_dir / "airflow"

    def worker_name(self, index: int) -> str:
        """``worker-1``, ``worker-2``, ...: the worker's host name and its Celery node name's prefix."""
        return f"worker-{index}"

    def worker_dir(self, index: int) -> Path:
        """Everything of one worker ("host"): work, state, home, tmp and its AIRFLOW_HOME."""
        return self.state / "workers" / self.worker_name(index)

    @property
    def config(self) -> dict[str, Any]:
        """Ports and secrets, loaded from ``stack.json`` or generated (and saved) on first use."""
        if self._config is None:
            if self.config_file.exists():
                self._config = json.loads(self.config_file.read_text())
                missing = {k: v for k, v in self._new_config().items() if k not in self._config}
                if missing:  # a stack.json of an older version: generate what it lacks
                    self._config.update(missing)
                    self._save_config()
            else:
                self._config = self._new_config()
                self._save_config()
        return self._config

    def _new_config(self) -> dict[str, Any]:
        return {
            "redis_port": free_port(),
            "s3_port": free_port(),
            "scheduler_health_port": free_port(),
            "admin_password": secrets.token_urlsafe(12),
            "redis_password": _secret_key(),
            "s3_access_key": f"mlops-{secrets.token_hex(4)}",
            "s3_secret_key": _secret_key(),
            "jwt_secret": _secret_key(),
            "api_secret_key": _secret_key(),
            "fernet_key": _fernet_key(),
            # logins of the other Airflow users (AIRFLOW_USERS) and of MLflow's basic-auth app
            "operator_password": secrets.token_urlsafe(12),
            "viewer_password": secrets.token_urlsafe(12),
            "mlflow_admin_password": secrets.token_urlsafe(16),
            "mlflow_task_password": secrets.token_urlsafe(16),
            "mlflow_secret_key": _secret_key(),
        }

    def _save_config(self) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        self.config_file.touch(mode=0o600)
        self.config_file.write_text(json.dumps(self.config, indent=2))

    @property
    def admin(self) -> tuple[str, str]:
        """Login of the Airflow UI and REST API (generated per stack)."""
        return ADMIN_USER, str(self.config["admin_password"])

    def login(self, user: str) -> tuple[str, str]:
        """Login of one of ``AIRFLOW_USERS`` (``admin``, ``operator``, ``viewer``), generated per stack."""
        return user, str(self.config[f"{user}_password"])

    @property
    def mlflow_admin(self) -> tuple[str, str]:
        """Login of the MLflow server's admin (basic-auth app): the driver's, never the tasks'."""
        return MLFLOW_ADMIN, str(self.config["mlflow_admin_password"])

    @property
    def mlflow_task_login(self) -> tuple[str, str]:
        """The tasks' MLflow login: a plain user, given to them only as the ``mlflow_default`` connection."""
        return MLFLOW_TASK_USER, str(self.config["mlflow_task_password"])

    def mlflow_task_credentials(self) -> dict[str, str]:
        """What the MLflow hook exports in a task's process from the connection: for a process that runs
        on a worker's host outside a task (a test's stand-in for one) and must log in as the tasks do."""
        user, password = self.mlflow_task_login
        return {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password}

    @property
    def s3_url(self) -> str:
        """Endpoint of the S3-compatible object store (moto's server)."""
        return f"http://127.0.0.1:{self.config['s3_port']}"

    def database_url(self, purpose: str, driver: str = "psycopg2") -> str:
        """SQLAlchemy URL of the database for ``purpose`` (airflow, mlflow, coordination)."""
        return self.postgres.url(driver=driver, database=DATABASES[purpose])

    # The environment ----------------------------------------------------------------------------
    def production_env(self) -> dict[str, str]:
        """The production configuration: every variable that all components share, in one place.

        Only settings (no ``os.environ``): executor, metadata DB, Celery broker and result backend,
        execution API URL, secrets, MLflow and S3 settings and the project's own ``MLOPS_*``. This is
        what docker-compose.yaml's ``x-airflow-common`` environment must match key by key; the
        per-component additions are ``control_env``, ``worker_env`` and ``mlflow_env``.
        """
        c = self.config
        airflow_db = self.database_url("airflow")
        s3 = self.s3_url
        env = {
            # Airflow: executor, metadata DB, Celery
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_db,
            "AIRFLOW__CELERY__BROKER_URL": f"redis://:{c['redis_password']}@127.0.0.1:{c['redis_port']}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+"
            + airflow_db.replace("postgresql+psycopg2", "postgresql"),
            "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": "mlops_airflow.preload.CELERY_CONFIG",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
            # secrets: generated per stack, shared by every component
            "AIRFLOW__API_AUTH__JWT_SECRET": str(c["jwt_secret"]),
            "AIRFLOW__API__SECRET_KEY": str(c["api_secret_key"]),
            "AIRFLOW__CORE__FERNET_KEY": str(c["fernet_key"]),
            # behaviour
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "True",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            # Task logs go to the object store: the workers share no folder with the API server.
            "AIRFLOW__LOGGING__REMOTE_LOGGING": "True",
            "AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER": f"s3://{BUCKETS['logs']}/logs",
            "AIRFLOW__LOGGING__REMOTE_LOG_CONN_ID": "mlops_s3",
            # the object store, for the tasks (fsspec/boto3 read AWS_*) and the providers' hooks
            "AWS_ACCESS_KEY_ID": str(c["s3_access_key"]),
            "AWS_SECRET_ACCESS_KEY": str(c["s3_secret_key"]),
            "AWS_DEFAULT_REGION": S3_REGION,
            "AWS_ENDPOINT_URL_S3": s3,
            "MLFLOW_S3_ENDPOINT_URL": s3,
            "AIRFLOW_CONN_MLOPS_S3": json.dumps(
                {
                    "conn_type": "aws",
                    "login": c["s3_access_key"],
                    "password": c["s3_secret_key"],
                    "extra": {
                        "region_name": S3_REGION,
                        "endpoint_url": s3,
                        "config_kwargs": {"s3": {"addressing_style": "path"}},
                    },
                }
            ),
            # Who may do what: Airflow's users and roles (their passwords are per host: control_env)
            "AIRFLOW__CORE__AUTH_MANAGER": AUTH_MANAGER,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(
                f"{u}:{r}" for u, r in AIRFLOW_USERS.items()
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            # MLflow: the tasks reach the server (basic-auth app) with the connection's login
            "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps(
                {
                    "conn_type": "http",
                    "host": "127.0.0.1",
                    "port": self.mlflow_port,
                    "schema": "http",
                    "login": self.mlflow_task_login[0],
                    "password": self.mlflow_task_login[1],
                }
            ),
            "MLFLOW_TRACKING_URI": self.mlflow_url,
            "MLOPS_MLFLOW_UI_URL": self.mlflow_url,
            "MLFLOW_DISABLE_TELEMETRY": "true",
            # the project
            "MLOPS_DATA_ROOT": f"s3://{BUCKETS['data']}",
            "MLOPS_COORDINATION_URL": self.database_url("coordination"),
            "MLOPS_PROJECT_ROOT": str(ROOT),
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins")]),
            "GX_ANALYTICS_ENABLED": "False",
            "DO_NOT_TRACK": "true",
        }
        if self.disable_schedules:
            env["MLOPS_DISABLE_SCHEDULES"] = "1"
        return env

    def _local_env(self) -> dict[str, str]:
        """Latency settings and loopback-only addresses of a stack on one machine (not production)."""
        return {
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.25",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "5",
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "900",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(
                self.config["scheduler_health_port"]
            ),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
            "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.airflow_port),
            "AIRFLOW__API__BASE_URL": self.api_url,
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self.trigger_log_port),
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "PYTHONUNBUFFERED": "1",  # the components' logs in run/ are up to date
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }

    def control_env(self) -> dict[str, str]:
        """What the control plane's components add: its AIRFLOW_HOME, state folder, the UI logins'
        passwords file and the driver's MLflow login (the MLflow admin; the workers get none)."""
        self.airflow_home.mkdir(parents=True, exist_ok=True)
        passwords = self.airflow_home / "passwords.json"
        passwords.touch(mode=0o600)
        passwords.write_text(json.dumps(dict(self.login(user) for user in AIRFLOW_USERS)))
        return {
            "AIRFLOW_HOME": str(self.airflow_home),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.airflow_home / "logs"),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "MLFLOW_TRACKING_USERNAME": self.mlflow_admin[0],
            "MLFLOW_TRACKING_PASSWORD": self.mlflow_admin[1],
            "MLOPS_STATE_DIR": str(self.control_dir / "state"),
        }

    def env(self) -> dict[str, str]:
        """Environment of the control plane's processes (and of a driver such as the tests)."""
        return {**os.environ, **self.production_env(), **self._local_env(), **self.control_env()}

    def worker_env(self, index: int) -> dict[str, str]:
        """Environment of Celery worker ``index``: its own folders and host name, nothing shared."""
        home = self.worker_dir(index)
        folders = {name: home / name for name in ("work", "state", "home", "tmp", "airflow")}
        for folder in folders.values():
            folder.mkdir(parents=True, exist_ok=True)
        return {
            **os.environ,
            **self.production_env(),
            **self._local_env(),
            "AIRFLOW_HOME": str(folders["airflow"]),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(folders["airflow"] / "logs"),
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.worker_concurrency),
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tools.prod_stack.worker_hostname",
            WORKER_HOSTNAME_ENV: self.worker_name(index),
            "MLOPS_STATE_DIR": str(folders["state"]),
            "HOME": str(folders["home"]),
            "TMPDIR": str(folders["tmp"]),
        }

    @property
    def mlflow_auth_config(self) -> Path:
        """The basic-auth app's settings (``MLFLOW_AUTH_CONFIG_PATH``; mode 0600: a password in it)."""
        return self.control_dir / "mlflow" / "basic_auth.ini"

    def mlflow_env(self) -> dict[str, str]:
        """Environment of the MLflow server: its backend store (a password kept out of argv), S3, and
        the basic-auth app's settings (users in the ``mlflow_auth`` database, generated admin login)."""
        ini = self.mlflow_auth_config
        ini.parent.mkdir(parents=True, exist_ok=True)
        ini.touch(mode=0o600)
        ini.write_text(
            "\n".join(
                [
                    "[mlflow]",
                    "default_permission = READ",  # a user edits what it created or was granted
                    f"database_uri = {self.database_url('mlflow_auth')}",
                    f"admin_username = {self.mlflow_admin[0]}",
                    f"admin_password = {self.mlflow_admin[1]}",
                    "authorization_function = mlflow.server.auth:authenticate_request_basic_auth",
                    "",
                ]
            )
        )
        return {
            **self.env(),
            "MLFLOW_BACKEND_STORE_URI": self.database_url("mlflow"),
            "MLFLOW_AUTH_CONFIG_PATH": str(ini),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": str(self.config["mlflow_secret_key"]),  # CSRF of the UI forms
        }

    # Processes ----------------------------------------------------------------------------------
    def worker_names(self) -> list[str]:
        """Names of the Celery workers' processes (``worker-1``, ...)."""
        return [self.worker_name(i) for i in range(1, self.workers + 1)]

    def processes(self) -> list[str]:
        """Every process ``up`` starts (Postgres aside, which ``tools.postgres`` runs; the supervisor
        aside, which starts last)."""
        return ["redis", "s3", "mlflow", *COMPONENTS, *self.worker_names()]

    def supervised(self) -> list[str]:
        """What ``tools.supervisor`` starts again when it exits: MLflow, Airflow's components and the
        workers. Not Redis and the object store: they stand for managed services (ElastiCache, S3),
        and moto keeps its objects in memory, so a restarted one would be a different, empty store."""
        return ["mlflow", *COMPONENTS, *self.worker_names()]

    def hold(self, name: str) -> None:
        """Mark ``name`` as stopped on purpose (``docker compose stop``): the supervisor leaves it down."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / f"{name}.held").touch()

    def release(self, name: str) -> None:
        """The supervisor may start ``name`` again when it is down."""
        (self.run_dir / f"{name}.held").unlink(missing_ok=True)

    def up(self, wait: float = 300.0) -> None:
        """Start everything from empty stores and wait until it is healthy (``SystemExit`` if not)."""
        if self.running() or self.postgres.running():
            print(
                f"already running ({', '.join(self.running()) or 'postgres'}); use `make down-prod` first",
                file=sys.stderr,
            )
            return
        if not shutil.which("redis-server"):
            raise SystemExit(
                "redis-server is not installed: run `make redis` (Debian: apt-get install redis-server)"
            )
        self._fresh_start()
        busy = [
            p for p in (self.airflow_port, self.mlflow_port, self.trigger_log_port) if not port_is_free(p)
        ]
        if busy:
            raise SystemExit(
                f"port(s) {busy} on 127.0.0.1 are in use (another `make up-prod`?); stop it with "
                "`make down-prod` or choose others with MLOPS_PROD_AIRFLOW_PORT / MLOPS_PROD_MLFLOW_PORT"
            )
        self._start_postgres()
        self._start_redis()
        self._start_object_store()
        self.prepare_mlflow()
        self._spawn("mlflow", self._mlflow_argv(), env=self.mlflow_env())
        self.prepare()
        for component in COMPONENTS:
            self._spawn(component, [sys.executable, "-m", "airflow", component], cwd=self.control_dir)
        for i in range(1, self.workers + 1):
            self.start_worker_process(i)
        self.wait_healthy(wait)
        self.start_supervisor()  # last: a component that fails to start must fail ``up``, not loop

    def start_supervisor(self) -> None:
        """Start ``tools.supervisor`` on ``supervised()``, judging health by Airflow's health endpoint."""
        config = {
            "components": self.supervised(),
            "health_url": f"{self.api_url}/api/v2/monitor/health",
            "health": {"scheduler": "scheduler", "triggerer": "triggerer", "dag-processor": "dag_processor"},
            "unhealthy_after": 60,
        }
        (self.run_dir / "supervisor.json").write_text(json.dumps(config, indent=2))
        self._spawn("supervisor", [sys.executable, "-m", "tools.supervisor", str(self.state)], cwd=ROOT)

    def start_worker_process(self, index: int, env: dict[str, str] | None = None) -> None:
        """Start Celery worker ``index`` on its own "host" (folders, host name); ``env`` replaces
        ``worker_env(index)`` (e.g. taken before the caller's environment changed)."""
        name = self.worker_name(index)
        argv = [sys.executable, "-m", "airflow", "celery", "worker", "--celery-hostname", f"{name}@%h"]
        argv += ["--queues", "default", "--skip-serve-logs"]  # task logs go to S3, not a log server
        self._spawn(name, argv, env=env or self.worker_env(index), cwd=self.worker_dir(index) / "work")

    def prepare_mlflow(self) -> None:
        """MLflow's tracking and user stores migrated, the tasks' user in place (``tools.mlflow_db``,
        what compose's ``airflow-init`` runs); the server then creates its admin from its settings."""
        from tools.mlflow_db import prepare

        prepare(self.database_url("mlflow"), self.database_url("mlflow_auth"), *self.mlflow_task_login)

    def _fresh_start(self) -> None:
        """Empty databases, folders and logs (the in-memory object store starts empty); ports still free."""
        for folder in ("postgres", "workers", "control", "redis", "run"):
            shutil.rmtree(self.state / folder, ignore_errors=True)
        config = self.config
        for key in ("redis_port", "s3_port", "scheduler_health_port"):
            if not port_is_free(int(config[key])):
                config[key] = free_port()
        self._save_config()
        self.control_dir.mkdir(parents=True, exist_ok=True)
        self.state.chmod(0o755)  # the postgres user must reach <state>/postgres

    def _start_postgres(self) -> None:
        import psycopg2  # a driver dependency of Airflow's postgres provider

        try:
            self.postgres.start()
        except (RuntimeError, FileNotFoundError) as exc:
            raise SystemExit(f"Postgres did not start: {exc}") from exc
        cluster = self.postgres
        conn = psycopg2.connect(
            host="127.0.0.1", port=cluster.port, user="mlops", password=cluster.password, dbname="postgres"
        )
        conn.autocommit = True
        with conn.cursor() as cur:
            for name in DATABASES.values():
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()

    def _start_redis(self) -> None:
        folder = self.state / "redis"
        folder.mkdir(parents=True, exist_ok=True)
        conf = folder / "redis.conf"
        conf.touch(mode=0o600)
        conf.write_text(
            "\n".join(
                [
                    "bind 127.0.0.1",
                    f"port {self.config['redis_port']}",
                    f"requirepass {self.config['redis_password']}",
                    'save ""',
                    "appendonly no",
                    f"dir {folder}",
                    "protected-mode yes",
                    "daemonize no",
                    "",
                ]
            )
        )
        self._spawn("redis", ["redis-server", str(conf)])
        self._wait_port("redis", int(self.config["redis_port"]))

    def _start_object_store(self) -> None:
        """moto's server, then the buckets (created through the S3 API, as ``minio-init`` does)."""
        port = int(self.config["s3_port"])
        self._spawn("s3", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)])
        self._wait_port("s3", port)
        s3 = self.s3_client()
        existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
        for bucket in BUCKETS.values():
            if bucket not in existing:
                s3.create_bucket(Bucket=bucket)

    def s3_client(self) -> Any:
        """A boto3 S3 client straight at the stack's object store, with its keys."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.s3_url,
            aws_access_key_id=self.config["s3_access_key"],
            aws_secret_access_key=self.config["s3_secret_key"],
            region_name=S3_REGION,
        )

    def s3_keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every key of ``bucket`` under ``prefix``."""
        pages = self.s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def _wait_port(self, name: str, port: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if name not in self.running():
                raise SystemExit(f"{name} exited during start-up; its log ends with:\n{self._log_tail(name)}")
            if not port_is_free(port):
                return
            time.sleep(0.2)
        raise SystemExit(f"{name} did not listen on 127.0.0.1:{port} within {timeout:.0f}s")

    def _mlflow_argv(self) -> list[str]:
        return mlflow_server_argv(
            self.mlflow_port,
            *("--serve-artifacts", "--artifacts-destination", f"s3://{BUCKETS['artifacts']}/"),
            *("--app-name", "basic-auth"),
        )

    def _log_tail(self, name: str) -> str:
        log = self.run_dir / f"{name}.log"
        return log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"

    def wait_healthy(self, timeout: float) -> None:
        """Until Airflow's components, the MLflow server and every Celery worker answer; fail fast."""
        deadline = time.monotonic() + timeout
        waiting_for = "Airflow"
        while time.monotonic() < deadline:
            dead = [p for p in self.processes() if p not in self.running()]
            if dead:
                raise SystemExit(
                    f"{dead[0]} exited during start-up; its log ends with:\n{self._log_tail(dead[0])}"
                )
            try:
                if waiting_for == "Airflow" and self._airflow_healthy():
                    waiting_for = "MLflow"
                if waiting_for == "MLflow":
                    with urllib.request.urlopen(f"{self.mlflow_url}/health", timeout=5):
                        waiting_for = "the Celery workers"
                if waiting_for == "the Celery workers" and set(self.worker_names()) <= set(
                    self.celery_workers()
                ):
                    return
            except (urllib.error.URLError, OSError, ValueError):
                pass
            time.sleep(2)
        raise SystemExit(
            f"{waiting_for} did not become healthy within {timeout:.0f}s; logs are in {self.run_dir}"
        )

    def _airflow_healthy(self) -> bool:
        with urllib.request.urlopen(f"{self.api_url}/api/v2/monitor/health", timeout=5) as resp:
            health = json.load(resp)
        parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
        return all(health.get(k, {}).get("status") == "healthy" for k in parts)

    def celery_workers(self) -> list[str]:
        """Host names (``worker-1``, ...) of the Celery workers that answer a ping through the broker."""
        probe = (
            "import json; from airflow.providers.celery.executors.celery_executor import app; "
            "print(json.dumps(app.control.ping(timeout=3)))"
        )
        result = subprocess.run(
            [sys.executable, "-c", probe],
            env=self.env(),
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if result.returncode != 0:
            return []
        replies = json.loads(result.stdout.strip().splitlines()[-1] or "[]")
        return sorted(node.split("@", 1)[0] for reply in replies for node in reply)

    def down(self, timeout: float = 30.0) -> None:
        """Stop every process this stack started (process groups), then the Postgres cluster.

        The supervisor goes first: it would start again what ``down`` stops."""
        pid = self.own_pid("supervisor")
        if pid is not None:
            os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while self.own_pid("supervisor") is not None and time.monotonic() < deadline:
                time.sleep(0.1)
        super().down(timeout)
        try:
            self.postgres.stop()
        except (RuntimeError, FileNotFoundError) as exc:
            print(f"warning: Postgres did not stop cleanly: {exc}", file=sys.stderr)

    def status(self) -> dict[str, Any]:
        """What runs, and where to reach it."""
        running = self.running()
        return {
            "running": running + (["postgres"] if self.postgres.running() else []),
            "stopped": [p for p in self.processes() if p not in running],
            "airflow": self.api_url,
            "mlflow": self.mlflow_url,
            "s3": self.s3_url if self.config_file.exists() else None,
        }


def demo(pipeline: str, rows: int, keep_running: bool) -> int:
    """The lifecycle scenario of ``make demo`` on a fresh production stack (schedules off); 0 if it held."""
    stack = ProdStack(disable_schedules=True)
    if stack.running() or stack.postgres.running():
        print("The production stack is running; stop it with `make down-prod` first.", file=sys.stderr)
        return 2
    from tools.airflow_api import AirflowApi
    from tools.scenario import run_scenario, summary

    started = time.monotonic()
    print(f"Starting the production stack (state in {stack.state}) ...", flush=True)
    outcomes = []
    try:
        stack.up()
        os.environ.update(stack.env())  # the driver sees the same object store, MLflow and store
        outcomes.append(run_scenario(AirflowApi(stack.api_url, *stack.admin), pipeline, rows=rows))
    finally:
        if not keep_running:
            stack.down()
    print(summary(outcomes))
    ok = bool(outcomes) and not outcomes[0].failures
    print(f"\n{'PASSED' if ok else 'FAILED'} in {time.monotonic() - started:.0f}s")
    if keep_running:
        print(f"Airflow UI: {stack.api_url} (login {' / '.join(stack.admin)}); stop with `make down-prod`")
    return 0 if ok else 1


def main() -> int:
    """CLI behind ``make up-prod``, ``make down-prod``, ``make status-prod`` and ``make demo-prod``."""
    parser = argparse.ArgumentParser(prog="python -m tools.prod_stack", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "status", "env", "demo"])
    parser.add_argument("--pipeline", default="churn", help="demo: the pipeline whose scenario runs")
    parser.add_argument("--rows", type=int, default=6000, help="demo: rows of a training batch")
    parser.add_argument("--keep-running", action="store_true", help="demo: leave the stack up afterwards")
    args = parser.parse_args()
    stack = ProdStack()
    if args.command == "demo":
        return demo(args.pipeline, args.rows, args.keep_running)
    if args.command == "up":
        started = time.monotonic()
        stack.up()
        user, password = stack.admin
        print(f"Airflow UI: {stack.api_url}  (login {user} / {password})")
        others = ", ".join(" / ".join(stack.login(u)) for u in AIRFLOW_USERS if u != ADMIN_USER)
        print(f"            other logins: {others} (roles: {AIRFLOW_USERS})")
        print(f"MLflow UI:  {stack.mlflow_url}  (login {' / '.join(stack.mlflow_admin)})")
        print(
            f"S3 (moto):  {stack.s3_url}  buckets {', '.join(BUCKETS.values())}; keys in {stack.config_file}"
        )
        print(f"Workers:    {', '.join(stack.worker_names())} (folders under {stack.state / 'workers'})")
        print(f"Up in {time.monotonic() - started:.0f}s. Logs: {stack.run_dir}   Stop with: make down-prod")
    elif args.command == "down":
        stack.down()
        print("stopped")
    elif args.command == "env":  # the driver's environment, e.g. `eval $(python -m tools.prod_stack env)`
        import shlex

        for key, value in sorted({**stack.production_env(), **stack.control_env()}.items()):
            print(f"export {key}={shlex.quote(value)}")
    else:
        status = stack.status()
        print("running: " + (", ".join(status["running"]) or "nothing"))
        if status["running"]:
            print(f"stopped: {', '.join(status['stopped']) or '-'}")
            print(f"Airflow {status['airflow']}  MLflow {status['mlflow']}  S3 {status['s3']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
