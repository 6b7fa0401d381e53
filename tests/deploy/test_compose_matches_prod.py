"""docker-compose.yaml runs the configuration that the native production stack runs and the tests prove.

``ProdStack.production_env()`` (tools/prod_stack.py) is the one source of the production environment:
every variable that all components of the native stack share. The compose file's ``x-airflow-common``
environment must hold the same keys with the same values, modulo what differs between a stack on one
machine and one in containers:

- hosts and ports (``127.0.0.1:<free port>`` there, service names here): URLs are compared by
  scheme, path and query, JSON connections field by field the same way;
- secrets (generated per stack there): here a ``${VAR:-...}`` reference, never a literal, and
  never the value the native stack generated;
- the project's folder (the checkout there, ``/opt/airflow`` in the image).

No Docker and no running stack: the native stack's configuration is computed from a state folder
with a fake Postgres password and port, as tests/tools/test_prod_stack.py does.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.deploy.test_compose import COMPOSE_FILE, depends_on, environment, interpolate
from tools.prod_stack import DATABASES, MLFLOW_TASK_USER, ProdStack
from tools.stack import ROOT

pytestmark = pytest.mark.production

IMAGE_ROOT = "/opt/airflow"  # where the Dockerfile puts the project
BOOLEAN = re.compile(r"^(true|false)$", re.IGNORECASE)

SECRETS = {
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__API__SECRET_KEY",
    "AIRFLOW__CORE__FERNET_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
}
URLS = {
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CELERY__BROKER_URL",
    "AIRFLOW__CELERY__RESULT_BACKEND",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    "AWS_ENDPOINT_URL_S3",
    "MLFLOW_S3_ENDPOINT_URL",
    "MLFLOW_TRACKING_URI",
    "MLOPS_MLFLOW_UI_URL",
    "MLOPS_COORDINATION_URL",
}
CONNECTIONS = {"AIRFLOW_CONN_MLOPS_S3", "AIRFLOW_CONN_MLFLOW_DEFAULT"}
FOLDERS = {"AIRFLOW__CORE__DAGS_FOLDER", "AIRFLOW__CORE__PLUGINS_FOLDER", "MLOPS_PROJECT_ROOT"}
# Set by compose for every container, by the native stack per host (control_env / worker_env).
PER_HOST = {"MLOPS_STATE_DIR", "MLOPS_CODE_VERSION", "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"}
# What issue 13 names, so that none of it can leave the comparison unnoticed.
REQUIRED = {
    "AIRFLOW__CORE__EXECUTOR",
    "AIRFLOW__CELERY__BROKER_URL",
    "AIRFLOW__CELERY__RESULT_BACKEND",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    *SECRETS,
    "MLFLOW_TRACKING_URI",
    "MLFLOW_S3_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "MLOPS_DATA_ROOT",
    "MLOPS_COORDINATION_URL",
    "AIRFLOW__CORE__AUTH_MANAGER",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS",
    "AIRFLOW_CONN_MLFLOW_DEFAULT",
}


@pytest.fixture(scope="module")
def prod(tmp_path_factory: pytest.TempPathFactory) -> ProdStack:
    state = tmp_path_factory.mktemp("prod")
    (state / "postgres").mkdir()
    (state / "postgres" / "password").write_text("pg-secret\n")
    (state / "postgres" / "port").write_text("15432\n")
    return ProdStack(state=state, airflow_port=18090, mlflow_port=15090)


@pytest.fixture(scope="module")
def prod_env(prod: ProdStack) -> dict[str, str]:
    return prod.production_env()


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any]) -> dict[str, Any]:
    return interpolate(raw, env={})


@pytest.fixture(scope="module")
def raw_env(raw: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in raw["x-airflow-common"]["environment"].items()}


@pytest.fixture(scope="module")
def compose_env(compose: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in compose["x-airflow-common"]["environment"].items()}


def is_reference(text: str) -> bool:
    """The whole value is one ``${VAR...}``: set from the environment or ``.env``."""
    return re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*(:?-[^}]*)?\}", text) is not None


def url_shape(url: str) -> tuple[str, str, str]:
    """What must match between the two stacks: scheme, path and query (not user, host, port)."""
    parts = urlsplit(url)
    return parts.scheme, parts.path, parts.query


def url_password(url: str) -> str | None:
    """The password of a URL, as written (``urlsplit`` cannot split a ``${...}`` containing ``:``)."""
    match = re.match(r"[a-z0-9+.-]+://[^/@]*?:(?P<pw>\$\{[^}]*\}|[^@/]*)@", url)
    return match["pw"] if match else None


def connection_shape(conn: dict[str, Any]) -> dict[str, Any]:
    """A connection without host, port, endpoint host and credentials (those are compared apart)."""
    shape = {k: v for k, v in conn.items() if k not in {"host", "port", "login", "password"}}
    extra = dict(shape.get("extra") or {})
    if "endpoint_url" in extra:
        extra["endpoint_url"] = url_shape(extra["endpoint_url"])
    shape["extra"] = extra
    return shape


def test_production_env_holds_what_the_issue_names(prod_env: dict[str, str]) -> None:
    assert set(prod_env) >= REQUIRED, sorted(REQUIRED - set(prod_env))
    assert not (SECRETS | URLS | CONNECTIONS | FOLDERS) - set(prod_env), "a class names an unknown key"


def test_compose_has_every_key_of_the_production_env_and_no_other(
    prod_env: dict[str, str], compose_env: dict[str, str]
) -> None:
    expected = set(prod_env) - {"MLOPS_DISABLE_SCHEDULES"}  # the tests' switch, off in production
    assert sorted(expected - set(compose_env)) == [], "missing in docker-compose.yaml's x-airflow-common"
    assert sorted(set(compose_env) - expected - PER_HOST) == [], "in compose but not in production_env()"
    assert "MLOPS_DISABLE_SCHEDULES" not in compose_env


def test_settings_are_equal(prod_env: dict[str, str], compose_env: dict[str, str]) -> None:
    plain = set(prod_env) - SECRETS - URLS - CONNECTIONS - FOLDERS - {"PYTHONPATH", "MLOPS_DISABLE_SCHEDULES"}
    differing = {}
    for key in sorted(plain):
        ours, theirs = prod_env[key], compose_env.get(key)
        if BOOLEAN.match(ours) and theirs is not None and BOOLEAN.match(theirs):
            ours, theirs = ours.lower(), theirs.lower()  # Airflow reads True and true alike
        if ours != theirs:
            differing[key] = (prod_env[key], compose_env.get(key))
    assert differing == {}, differing


def test_urls_differ_only_in_host_port_and_credentials(
    prod_env: dict[str, str], raw_env: dict[str, str], compose_env: dict[str, str]
) -> None:
    for key in sorted(URLS):
        assert url_shape(compose_env[key]) == url_shape(prod_env[key]), key
        if url_password(prod_env[key]) is not None:  # a password in the URL: a reference in compose
            password = url_password(raw_env[key])
            assert password is not None and is_reference(password), f"{key}: {raw_env[key]}"


def test_secrets_are_references_not_values(
    prod_env: dict[str, str], raw_env: dict[str, str], compose_env: dict[str, str]
) -> None:
    for key in sorted(SECRETS):
        assert is_reference(raw_env[key]), f"{key} is a literal in docker-compose.yaml"
        assert compose_env[key] != prod_env[key]  # generated per native stack, never committed


def test_connections_match_field_by_field(
    prod_env: dict[str, str], raw_env: dict[str, str], compose_env: dict[str, str]
) -> None:
    for key in sorted(CONNECTIONS):
        ours, theirs = json.loads(prod_env[key]), json.loads(compose_env[key])
        assert connection_shape(theirs) == connection_shape(ours), key
        assert set(theirs) == set(ours), key
        raw_conn = json.loads(raw_env[key])
        assert is_reference(raw_conn["password"]), f"{key}: the password is a literal"
    s3 = json.loads(raw_env["AIRFLOW_CONN_MLOPS_S3"])
    assert is_reference(s3["login"])  # an access key is a secret too
    mlflow = json.loads(compose_env["AIRFLOW_CONN_MLFLOW_DEFAULT"])
    assert mlflow["login"] == json.loads(prod_env["AIRFLOW_CONN_MLFLOW_DEFAULT"])["login"] == MLFLOW_TASK_USER


def test_folders_are_the_images(prod_env: dict[str, str], compose_env: dict[str, str]) -> None:
    for key in sorted(FOLDERS):
        assert compose_env[key] == prod_env[key].replace(str(ROOT), IMAGE_ROOT), key
    # PYTHONPATH: the project root; Airflow puts the plugins folder on sys.path itself
    first = prod_env["PYTHONPATH"].split(":")[0]
    assert compose_env["PYTHONPATH"] == first.replace(str(ROOT), IMAGE_ROOT)


def _flags(argv: list[str]) -> dict[str, str | None]:
    """``--flag value`` and ``--flag=value`` alike, as a mapping (None: a flag without a value)."""
    flags: dict[str, str | None] = {}
    for i, item in enumerate(argv):
        if not item.startswith("--"):
            continue
        if "=" in item:
            name, value = item.split("=", 1)
            flags[name] = value
        else:
            following = argv[i + 1] if i + 1 < len(argv) else "--"
            flags[item] = None if following.startswith("--") else following
    return flags


def test_the_mlflow_server_runs_the_same_way(prod: ProdStack, compose: dict[str, Any]) -> None:
    ours = _flags(prod._mlflow_argv())
    script = compose["services"]["mlflow"]["command"][0]
    exec_line = script[script.index("exec mlflow server") :].replace("\\\n", " ")
    theirs = _flags(shlex.split(exec_line))
    per_host = {"--host", "--port", "--workers", "--allowed-hosts"}
    assert {k: v for k, v in theirs.items() if k not in per_host} == {
        k: v for k, v in ours.items() if k not in per_host
    }
    assert theirs["--app-name"] == "basic-auth"
    env = environment(compose["services"]["mlflow"])
    mlflow_env = prod.mlflow_env()
    for key in ("MLFLOW_BACKEND_STORE_URI", "MLFLOW_AUTH_CONFIG_PATH", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert key in env, key
    assert url_shape(env["MLFLOW_BACKEND_STORE_URI"]) == url_shape(mlflow_env["MLFLOW_BACKEND_STORE_URI"])
    assert urlsplit(env["MLFLOW_AUTH_DATABASE_URI"]).path == f"/{DATABASES['mlflow_auth']}"
    assert "default_permission = READ" in script and "default_permission = READ" in Path(
        mlflow_env["MLFLOW_AUTH_CONFIG_PATH"]
    ).read_text(encoding="utf-8")


def test_every_database_of_the_native_stack_is_created_and_migrated(compose: dict[str, Any]) -> None:
    postgres = environment(compose["services"]["postgres"])
    created = {postgres["POSTGRES_DB"]} | {v for k, v in postgres.items() if re.fullmatch(r"\w+_DB_NAME", k)}
    assert created == set(DATABASES.values())
    script = (ROOT / "deploy" / "postgres" / "init-mlflow-db.sh").read_text(encoding="utf-8")
    for key in (k for k in postgres if k.endswith("_DB_NAME")):
        assert f'"${key}"' in script, f"init-mlflow-db.sh ignores {key}"
    init = compose["services"]["airflow-init"]
    steps = init["command"][-1]
    assert steps.index("airflow db migrate") < steps.index("python -m tools.mlflow_db")
    assert "python -m tools.settings load airflow_settings.yaml" in steps
    env = environment(init)
    for key in (
        "MLFLOW_BACKEND_STORE_URI",
        "MLFLOW_AUTH_DATABASE_URI",
        "MLFLOW_TASK_USERNAME",
        "MLFLOW_TASK_PASSWORD",
    ):
        assert env.get(key), f"airflow-init lacks {key} (tools.mlflow_db reads it)"
    mlflow = environment(compose["services"]["mlflow"])
    assert env["MLFLOW_AUTH_DATABASE_URI"] == mlflow["MLFLOW_AUTH_DATABASE_URI"]
    assert env["MLFLOW_BACKEND_STORE_URI"] == mlflow["MLFLOW_BACKEND_STORE_URI"]
    connection = json.loads(environment(init)["AIRFLOW_CONN_MLFLOW_DEFAULT"])
    assert (env["MLFLOW_TASK_USERNAME"], env["MLFLOW_TASK_PASSWORD"]) == (
        connection["login"],
        connection["password"],
    ), "the user airflow-init makes is the one the tasks log in as"


def test_services_start_in_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    without = {name for name, service in services.items() if "healthcheck" not in service}
    assert without == {"airflow-init", "minio-init"}, "only the one-shot services have no health check"
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"):
        deps = depends_on(services[name])
        assert deps.get("airflow-init") == "service_completed_successfully", name
        assert deps.get("postgres") == deps.get("redis") == "service_healthy", name
    assert depends_on(services["mlflow"]) == {
        "postgres": "service_healthy",
        "minio-init": "service_completed_successfully",
        "airflow-init": "service_completed_successfully",
    }
    worker = depends_on(services["airflow-worker"])
    assert worker["airflow-apiserver"] == worker["mlflow"] == "service_healthy"
    assert depends_on(services["airflow-init"]) == {"postgres": "service_healthy", "redis": "service_healthy"}
