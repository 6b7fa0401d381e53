"""Static checks of deploy/helm/values.yaml, the values for the official Apache Airflow Helm chart.

No cluster and no Helm binary are needed. The file is validated against the chart's own values
schema, vendored next to this test (``airflow-chart-values.schema.json``, JSON Schema draft-07; see
README.md beside this file), the way ``helm install`` validates it. Broken copies prove the schema
and each project rule can fail. The project rules: no usable secret in the file (every credential
comes from a Kubernetes Secret or the pods' cloud identity), the image and Airflow version are the
ones the Dockerfile and requirements.lock build, every ``MLOPS_*`` variable the values set is read by
the code, the connections the code defaults to are defined, and the Airflow settings match
docker-compose.yaml's where both set them.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from jsonschema import Draft7Validator

pytestmark = pytest.mark.production

ROOT = Path(__file__).resolve().parents[2]
VALUES_FILE = ROOT / "deploy" / "helm" / "values.yaml"
SCHEMA_FILE = Path(__file__).with_name("airflow-chart-values.schema.json")
README = Path(__file__).with_name("README.md")
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
COMPOSE_FILE = ROOT / "docker-compose.yaml"

# The chart release the schema comes from (tests/deploy/README.md says how to refresh both).
CHART_VERSION = "1.21.0"
SCHEMA_SHA256 = "27a1e197bbe91343ba7d8cb6b9914903a0b1f799fb80f06295a65046ad55a683"

IMAGE_NAME = "airflow-mlops"  # docker-compose.yaml's ${AIRFLOW_IMAGE_NAME:-airflow-mlops:latest}
SUPPORTED_EXECUTORS = {"CeleryExecutor", "KubernetesExecutor"}
CODE_DIRS = ("include", "plugins")

# A leaf whose key names a plaintext credential (the chart's fernetKey, jwtSecret, apiSecretKey,
# webserverSecretKey, redis.password, data.metadataConnection.pass, dags.gitSync.sshKey, ...).
PLAINTEXT_KEY = re.compile(
    r"(?i)(pass|passwd|password|secret|token|fernetkey|secretkey|sshkey|privatekey|apikey|accesskey)$"
)
# ... unless it only names a Secret, or a key inside one.
REFERENCE_KEY = re.compile(r"^(secretName|secretKey|credentialsSecret|existingSecret)$|SecretName$")
# Environment variables whose value is a credential: they belong in `secret`, never in `env`.
SECRET_ENV = re.compile(r"PASSWORD|SECRET|TOKEN|FERNET|ACCESS_KEY|_AUTH$|^MLOPS_COORDINATION_URL$")
# airflow.cfg options that carry credentials: the chart sets them from Secrets.
SECRET_CONFIG = re.compile(r"(?i)password|secret|fernet_key|token|sql_alchemy_conn|broker_url|result_backend")
URL_PASSWORD = re.compile(r"://[^/:@\s]*:(?P<password>[^@\s]+)@")
JSON_PASSWORD = re.compile(r'"password"\s*:\s*"(?P<password>[^"]*)"')
KEY_MATERIAL = re.compile(r"AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY-----")

# Settings both docker-compose.yaml and the Helm values make: compose variable -> airflow.cfg option.
SHARED_SETTINGS = {
    "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": ("operators", "default_deferrable"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": ("core", "load_examples"),
    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": ("core", "dags_are_paused_at_creation"),
    "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": ("celery", "celery_config_options"),
    "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": ("scheduler", "enable_health_check"),
}


# --- Fixtures and helpers -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return yaml.safe_load(VALUES_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def validator() -> Draft7Validator:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema)


def schema_errors(validator: Draft7Validator, document: dict[str, Any]) -> list[str]:
    errors = sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]


def leaves(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every (key path, scalar) of a loaded YAML document; list items are numbered."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, (*path, str(key)))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from leaves(item, (*path, str(index)))
    else:
        yield path, node


def env_values(values: dict[str, Any]) -> dict[str, str]:
    """The plain environment variables (`env`) of every Airflow container."""
    return {item["name"]: item["value"] for item in values.get("env") or []}


def secret_env(values: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Environment variable -> (Secret, key) for the `secret` entries (the chart's key default: value)."""
    return {
        item["envName"]: (item["secretName"], item.get("secretKey", "value"))
        for item in values.get("secret") or []
    }


def all_env_names(values: dict[str, Any]) -> list[str]:
    return [item["name"] for item in values.get("env") or []] + [
        item["envName"] for item in values.get("secret") or []
    ]


def executors(values: dict[str, Any]) -> list[str]:
    return [name.strip() for name in str(values.get("executor", "CeleryExecutor")).split(",")]


def truthy(value: Any) -> bool:
    return str(value).strip().lower() in {"true", "1", "yes"}


def code_text() -> str:
    """The project's Python code that runs in the image (the core and the Airflow adapters)."""
    return "\n".join(
        path.read_text(encoding="utf-8")
        for folder in CODE_DIRS
        for path in sorted((ROOT / folder).rglob("*.py"))
    )


def get(node: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        node = (node or {}).get(part)
    return node


def put(node: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


# --- Project rules, as functions that return what is wrong (so broken copies can prove them) -----


def plaintext_secret_problems(values: dict[str, Any]) -> list[str]:
    """Credentials written into the values instead of referenced from a Kubernetes Secret."""
    problems = []
    for path, value in leaves(values):
        where = ".".join(path)
        text = "" if value is None else str(value)
        key = path[-1]
        if text and PLAINTEXT_KEY.search(key) and not REFERENCE_KEY.search(key):
            problems.append(f"{where}: a plaintext credential (reference a Secret instead)")
        for pattern in (URL_PASSWORD, JSON_PASSWORD):
            for match in pattern.finditer(text):
                if match["password"]:
                    problems.append(f"{where}: a password inside the value")
        if KEY_MATERIAL.search(text):
            problems.append(f"{where}: key material")
    for name in env_values(values):
        if SECRET_ENV.search(name):
            problems.append(f"env {name}: a credential in `env` (put it in `secret`)")
    for section, options in (values.get("config") or {}).items():
        for option, value in (options or {}).items():
            if SECRET_CONFIG.search(option) and value not in (None, ""):
                problems.append(f"config.{section}.{option}: set by the chart from a Secret, not here")
    return problems


def secret_reference_problems(values: dict[str, Any]) -> list[str]:
    """Secrets the chart would otherwise generate or fill from a literal must be named."""
    required = ["data.metadataSecretName", "fernetKeySecretName", "apiSecretKeySecretName", "jwtSecretName"]
    if "CeleryExecutor" in executors(values):
        required.append("data.brokerUrlSecretName")
        if get(values, "redis.enabled") is not False:
            required.append("redis.passwordSecretName")
    problems = [
        f"{name}: not set (the chart would generate or need a literal)"
        for name in required
        if not get(values, name)
    ]
    if get(values, "postgresql.enabled") is not False:
        problems.append(
            "postgresql.enabled: the chart's bundled Postgres (default password) instead of an external one"
        )
    if get(values, "createUserJob.enabled") is not False:
        problems.append("createUserJob.enabled: the job's admin password would sit in the values")
    credentialed = {"MLOPS_COORDINATION_URL", "AIRFLOW_CONN_MLFLOW_DEFAULT"}
    problems += [
        f"{name}: must come from `secret`" for name in sorted(credentialed - set(secret_env(values)))
    ]
    return problems


def executor_problems(values: dict[str, Any]) -> list[str]:
    problems = [
        f"executor {name!r} is not one this project runs"
        for name in executors(values)
        if name not in SUPPORTED_EXECUTORS
    ]
    if executors(values)[0] == "CeleryExecutor" and not (
        get(values, "workers.celery.keda.enabled") or get(values, "workers.celery.hpa.enabled")
    ):
        problems.append("CeleryExecutor without autoscaling (workers.celery.keda or workers.celery.hpa)")
    return problems


# --- The schema ---------------------------------------------------------------------------------


def test_vendored_schema_is_the_charts(validator: Draft7Validator) -> None:
    assert hashlib.sha256(SCHEMA_FILE.read_bytes()).hexdigest() == SCHEMA_SHA256
    assert validator.schema["$schema"] == "http://json-schema.org/draft-07/schema"
    assert {"executor", "images", "workers", "triggerer", "dagProcessor", "apiServer"} <= set(
        validator.schema["properties"]
    )
    # The chart's own Airflow 3 settings are there.
    assert {"jwtSecretName", "apiSecretKeySecretName"} <= set(validator.schema["properties"])
    readme = README.read_text(encoding="utf-8")
    assert SCHEMA_SHA256 in readme and CHART_VERSION in readme and SCHEMA_FILE.name in readme


def test_values_match_the_chart_schema(validator: Draft7Validator, values: dict[str, Any]) -> None:
    assert schema_errors(validator, values) == []


@pytest.mark.parametrize(
    ("dotted", "value", "expected_error"),
    [
        ("executor", "Celery", "executor: 'Celery' does not match"),
        ("executor", "celery_executor", "executor: 'celery_executor' does not match"),
        (
            "workers.celery.keda.maxReplicaCount",
            "ten",
            "workers/celery/keda/maxReplicaCount: 'ten' is not of type",
        ),
        ("triggerer.enabled", "yes", "triggerer/enabled: 'yes' is not of type 'boolean'"),
        (
            "images.airflow.tagg",
            "1.0.0",
            "images/airflow: Additional properties are not allowed ('tagg' was unexpected)",
        ),
        ("env", [{"name": "MLOPS_DATA_ROOT"}], "env/0: 'value' is a required property"),
        ("secret", [{"envName": "X", "secretname": "s"}], "secret/0: Additional properties are not allowed"),
        (
            "data.metadataSecret",
            "airflow-metadata",
            "data: Additional properties are not allowed ('metadataSecret'",
        ),
    ],
    ids=[
        "unknown-executor",
        "executor-not-a-class-name",
        "wrong-type-integer",
        "wrong-type-boolean",
        "unknown-image-key",
        "env-without-value",
        "secret-key-typo",
        "unknown-data-key",
    ],
)
def test_schema_rejects_a_broken_copy(
    validator: Draft7Validator, values: dict[str, Any], dotted: str, value: Any, expected_error: str
) -> None:
    broken = copy.deepcopy(values)
    put(broken, dotted, value)
    errors = schema_errors(validator, broken)
    assert any(error.startswith(expected_error) for error in errors), errors


# --- Secrets ------------------------------------------------------------------------------------


def test_no_plaintext_secrets(values: dict[str, Any]) -> None:
    assert plaintext_secret_problems(values) == []


def _add_env(name: str, value: str) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        doc.setdefault("env", []).append({"name": name, "value": value})

    return mutate


def _set(dotted: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda doc: put(doc, dotted, value)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            _set("fernetKey", "6eeSyyfVNF9WaSELL7c-yIlqrCEjRx2voG-qzYsWbKI="),
            "fernetKey: a plaintext credential",
        ),
        (_set("jwtSecret", "change-me"), "jwtSecret: a plaintext credential"),
        (_set("apiSecretKey", "change-me"), "apiSecretKey: a plaintext credential"),
        (_set("redis.password", "redis"), "redis.password: a plaintext credential"),
        (
            _set("data.metadataConnection.pass", "airflow"),
            "data.metadataConnection.pass: a plaintext credential",
        ),
        (
            _set("dags.gitSync.sshKey", "-----BEGIN OPENSSH PRIVATE KEY-----"),
            "dags.gitSync.sshKey: a plaintext",
        ),
        (
            _set("config.database.sql_alchemy_conn", "postgresql://a@db/airflow"),
            "config.database.sql_alchemy_conn",
        ),
        (_set("config.api_auth.jwt_secret", "x"), "config.api_auth.jwt_secret"),
        (_add_env("AWS_SECRET_ACCESS_KEY", "x"), "env AWS_SECRET_ACCESS_KEY: a credential in `env`"),
        (_add_env("MLOPS_COORDINATION_URL", "postgresql://mlops@db/mlops"), "env MLOPS_COORDINATION_URL"),
        (
            _add_env("AIRFLOW_CONN_MLFLOW_DEFAULT", '{"conn_type": "http", "login": "a", "password": "pw"}'),
            "env.",
        ),
        (_add_env("MLFLOW_TRACKING_URI", "http://user:pw@mlflow:5000"), "env."),
        (_add_env("AWS_ACCESS_KEY", "AKIAABCDEFGHIJKLMNOP"), "env."),
    ],
    ids=[
        "fernet-key",
        "jwt-secret",
        "api-secret-key",
        "redis-password",
        "metadata-password",
        "git-ssh-key",
        "config-connection",
        "config-jwt",
        "env-aws-secret",
        "env-coordination-url",
        "env-connection-json-password",
        "env-url-password",
        "env-access-key-id",
    ],
)
def test_a_plaintext_secret_is_found(
    values: dict[str, Any], mutate: Callable[[dict[str, Any]], None], expected: str
) -> None:
    broken = copy.deepcopy(values)
    mutate(broken)
    problems = plaintext_secret_problems(broken)
    assert any(problem.startswith(expected) for problem in problems), problems


def test_secret_references_are_not_mistaken_for_secrets() -> None:
    doc = {
        "fernetKeySecretName": "f",
        "jwtSecretName": "j",
        "redis": {"passwordSecretName": "r"},
        "secret": [{"envName": "MLOPS_COORDINATION_URL", "secretName": "c", "secretKey": "url"}],
        "dags": {"gitSync": {"credentialsSecret": "git"}},
        "env": [{"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow:5000"}],
    }
    assert plaintext_secret_problems(doc) == []


def test_credentials_come_from_kubernetes_secrets(values: dict[str, Any]) -> None:
    assert secret_reference_problems(values) == []


@pytest.mark.parametrize(
    ("dotted", "value", "expected"),
    [
        ("jwtSecretName", None, "jwtSecretName: not set"),
        ("data.metadataSecretName", None, "data.metadataSecretName: not set"),
        ("redis.passwordSecretName", None, "redis.passwordSecretName: not set"),
        ("postgresql.enabled", True, "postgresql.enabled"),
        ("createUserJob.enabled", True, "createUserJob.enabled"),
        ("secret", [], "AIRFLOW_CONN_MLFLOW_DEFAULT: must come from `secret`"),
    ],
)
def test_a_missing_secret_reference_is_found(
    values: dict[str, Any], dotted: str, value: Any, expected: str
) -> None:
    broken = copy.deepcopy(values)
    put(broken, dotted, value)
    problems = secret_reference_problems(broken)
    assert any(problem.startswith(expected) for problem in problems), problems


def test_every_secret_is_documented(values: dict[str, Any]) -> None:
    """docs/deploy.md tells how to create each Secret the values name."""
    names = {
        name for path, name in leaves(values) if path[-1].endswith(("SecretName", "secretName")) and name
    }
    doc = DEPLOY_DOC.read_text(encoding="utf-8")
    assert names, "the values name no Secret"
    assert sorted(name for name in names if name not in doc) == []


# --- Executor and components --------------------------------------------------------------------


def test_executor(values: dict[str, Any]) -> None:
    assert executors(values)[0] == "CeleryExecutor"
    assert executor_problems(values) == []


@pytest.mark.parametrize(
    ("dotted", "value", "expected"),
    [
        ("executor", "LocalExecutor", "executor 'LocalExecutor' is not one this project runs"),
        ("workers.celery.keda.enabled", False, "CeleryExecutor without autoscaling"),
    ],
)
def test_an_unsupported_executor_setup_is_found(
    values: dict[str, Any], dotted: str, value: Any, expected: str
) -> None:
    broken = copy.deepcopy(values)
    put(broken, dotted, value)
    assert expected in executor_problems(broken)[0]


def test_deferrable_operators_and_a_triggerer(values: dict[str, Any]) -> None:
    assert truthy(get(values, "config.operators.default_deferrable"))
    assert get(values, "triggerer.enabled") is True
    assert get(values, "dagProcessor.enabled") is True


def test_dags_are_baked_into_the_image(values: dict[str, Any]) -> None:
    """Default DAGs folder ($AIRFLOW_HOME/dags) is where the Dockerfile copies dags/."""
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert get(values, "dags.gitSync.enabled") is False
    assert get(values, "dags.persistence.enabled") is False
    assert get(values, "dags.mountPath") is None
    home = values.get("airflowHome", "/opt/airflow")
    assert re.search(rf"^COPY .*\bdags/ {re.escape(home)}/dags/\s*$", dockerfile, re.MULTILINE)


def test_task_logs_go_to_the_object_store(values: dict[str, Any]) -> None:
    logging = get(values, "config.logging")
    assert truthy(logging["remote_logging"])
    assert urlsplit(logging["remote_base_log_folder"]).scheme in {"s3", "gs"}
    assert get(values, "workers.celery.persistence.enabled") is False


# --- The image ----------------------------------------------------------------------------------


def test_image_is_the_projects(values: dict[str, Any]) -> None:
    image = get(values, "images.airflow")
    assert image["repository"].rsplit("/", 1)[-1] == IMAGE_NAME
    assert image["tag"] and image["tag"] != "latest", (
        "pin a tag: the workers and the remote jobs must run one build"
    )
    # The chart's jobs, pod template and KubernetesExecutor fall back to the defaults: same image.
    assert values["defaultAirflowRepository"] == image["repository"]
    assert values["defaultAirflowTag"] == image["tag"]
    assert not get(values, "images.useDefaultImageForMigration")


def test_airflow_version_is_the_images(values: dict[str, Any]) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    lock = (ROOT / "requirements.lock").read_text(encoding="utf-8")
    base = re.search(r"^FROM apache/airflow:(\d+\.\d+\.\d+)", dockerfile, re.MULTILINE)
    pinned = re.search(r"^apache-airflow==(\S+)", lock, re.MULTILINE)
    assert base and pinned
    assert values["airflowVersion"] == base[1] == pinned[1]


# --- The environment ----------------------------------------------------------------------------


def test_env_names_are_unique(values: dict[str, Any]) -> None:
    names = all_env_names(values)
    assert sorted({name for name in names if names.count(name) > 1}) == []


def test_every_mlops_variable_is_read_by_the_code(values: dict[str, Any]) -> None:
    code = code_text()
    names = [name for name in all_env_names(values) if name.startswith("MLOPS_")]
    assert {"MLOPS_DATA_ROOT", "MLOPS_COORDINATION_URL"} <= set(names)
    assert sorted(name for name in names if f'"{name}"' not in code and f"'{name}'" not in code) == []


def test_mlflow_and_object_store_settings(values: dict[str, Any]) -> None:
    env = env_values(values)
    assert '"MLFLOW_TRACKING_URI"' in (ROOT / "include" / "mlops" / "tracking.py").read_text(encoding="utf-8")
    assert urlsplit(env["MLFLOW_TRACKING_URI"]).scheme in {"http", "https"}
    assert urlsplit(env["MLOPS_MLFLOW_UI_URL"]).scheme in {"http", "https"}
    assert urlsplit(env["MLOPS_DATA_ROOT"]).scheme in {"s3", "gs"}


def test_connections_the_code_defaults_to_are_defined(values: dict[str, Any]) -> None:
    """mlflow_default (tracking server), aws_default (s3:// landing zones, SageMaker, task logs) and
    kubernetes_default (the Kubernetes backend) are the code's default connection ids."""
    code = code_text()
    names = set(all_env_names(values))
    for conn_id in ("mlflow_default", "aws_default", "kubernetes_default"):
        assert f'"{conn_id}"' in code, f"the code no longer defaults to {conn_id}"
        assert f"AIRFLOW_CONN_{conn_id.upper()}" in names, f"no {conn_id} connection"
    assert get(values, "config.logging.remote_log_conn_id") == "aws_default"
    for name, value in env_values(values).items():
        if name.startswith("AIRFLOW_CONN_"):
            assert isinstance(json.loads(value)["conn_type"], str), name


def test_airflow_settings_match_the_compose_stack(values: dict[str, Any]) -> None:
    compose_env = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))["x-airflow-common"]["environment"]
    assert compose_env["AIRFLOW__CORE__EXECUTOR"] == executors(values)[0]
    for variable, (section, option) in SHARED_SETTINGS.items():
        ours, theirs = str(get(values, f"config.{section}.{option}")), str(compose_env.get(variable))
        if theirs.lower() in {"true", "false"}:
            ours, theirs = ours.lower(), theirs.lower()
        assert ours == theirs, f"{variable}: compose {theirs!r}, Helm config.{section}.{option} {ours!r}"
    assert (
        urlsplit(compose_env["MLOPS_DATA_ROOT"]).scheme
        == urlsplit(env_values(values)["MLOPS_DATA_ROOT"]).scheme
    )


# --- Documentation ------------------------------------------------------------------------------


def test_the_documented_install_command_uses_the_validated_chart() -> None:
    for text in (DEPLOY_DOC.read_text(encoding="utf-8"), VALUES_FILE.read_text(encoding="utf-8")):
        assert "helm repo add apache-airflow https://airflow.apache.org" in text
        assert f"--version {CHART_VERSION}" in text
        assert "-f deploy/helm/values.yaml" in text
