"""Static checks of docker-compose.yaml, no Docker engine needed.

The file is loaded the way Compose loads it (YAML with anchors and merge keys, then ``${VAR}``
interpolation against an empty environment, i.e. a fresh checkout without ``.env``) and validated
against the vendored Compose Specification schema (see README.md beside this file). The remaining
tests hold the stack to this project's own rules: dependencies name real services, host ports are
bound to loopback only, the Airflow services share one image and one environment, and every
long-running service has a healthcheck. Where a Docker Compose v2 CLI is on PATH, `docker compose
config` is run on the file as well (it needs no Docker engine).
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from jsonschema import Draft202012Validator

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
SCHEMA_FILE = Path(__file__).with_name("compose-spec.json")

AIRFLOW_SERVICES = {
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
}
ONE_SHOT_SERVICES = {"airflow-init", "minio-init"}
LOOPBACK = "127.0.0.1"


# --- Compose-style interpolation ----------------------------------------------------------------

# The grammar of compose-go's template package: `$$` escapes, `$NAME`, `${NAME}` and
# `${NAME<op>arg}` with op in :- - :? ? :+ +. Nested `${A:-${B}}` is not supported here.
_INTERPOLATION = re.compile(
    r"""
    \$(?:
        (?P<escaped>\$)
      | (?P<named>[A-Za-z_][A-Za-z0-9_]*)
      | \{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}
      | (?P<invalid>\{)
    )
    """,
    re.VERBOSE,
)


class InterpolationError(ValueError):
    pass


def interpolate_string(text: str, env: Mapping[str, str]) -> str:
    """Interpolate one string; an unset variable without a default is an error (Compose only warns)."""

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["invalid"]:
            raise InterpolationError(f"invalid interpolation format in {text!r}")
        name = match["named"] or match["braced"]
        op, arg = match["op"], match["arg"] or ""
        value = env.get(name)
        # With a colon the operator treats an empty value like an unset one.
        present = bool(value) if op and op.startswith(":") else value is not None
        if op in (":-", "-"):
            return value if present else arg
        if op in (":+", "+"):
            return arg if present else ""
        if op in (":?", "?"):
            if not present:
                raise InterpolationError(f"required variable {name} is missing a value: {arg}")
            return value
        if value is None:
            raise InterpolationError(f"variable {name} is not set and has no default, in {text!r}")
        return value

    return _INTERPOLATION.sub(substitute, text)


def interpolate(node: Any, env: Mapping[str, str]) -> Any:
    """Interpolate every string value of a loaded Compose document (keys are left alone)."""
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(item, env) for item in node]
    if isinstance(node, str):
        return interpolate_string(node, env)
    return node


# --- Fixtures and helpers -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def raw_compose() -> dict[str, Any]:
    """The file as YAML gives it: anchors and merge keys resolved, `${...}` still in place."""
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose(raw_compose: dict[str, Any]) -> dict[str, Any]:
    return interpolate(raw_compose, env={})


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def schema_errors(validator: Draft202012Validator, document: dict[str, Any]) -> list[str]:
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    """Dependency name -> condition, for both the list and the mapping syntax."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def environment(service: dict[str, Any]) -> dict[str, Any]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return env


def host_ips(port: str | int | dict[str, Any]) -> list[str | None]:
    """Host IP of a `ports` entry; None when it publishes on every interface."""
    if isinstance(port, dict):
        return [port.get("host_ip")] if port.get("published") is not None else []
    spec = str(port).rsplit("/", 1)[0]  # drop /tcp or /udp
    if spec.startswith("["):  # [::1]:8080:8080
        return [spec[1 : spec.index("]")]]
    parts = spec.split(":")
    if len(parts) == 1:  # container port only: Compose picks a random host port on 0.0.0.0
        return [None]
    return [parts[0] if len(parts) == 3 else None]


# --- The schema ---------------------------------------------------------------------------------


def test_vendored_schema_is_the_compose_specification(validator: Draft202012Validator) -> None:
    assert validator.schema["title"] == "Compose Specification"
    assert {"services", "volumes", "networks"} <= set(validator.schema["properties"])


def test_compose_file_matches_the_compose_specification(
    validator: Draft202012Validator, compose: dict[str, Any]
) -> None:
    assert schema_errors(validator, compose) == []


def _unknown_service_key(doc: dict[str, Any]) -> None:
    doc["services"]["redis"]["imagee"] = "redis:7.2-bookworm"


def _unknown_top_level_key(doc: dict[str, Any]) -> None:
    doc["service"] = doc.pop("services")


def _bad_depends_on_condition(doc: dict[str, Any]) -> None:
    doc["services"]["mlflow"]["depends_on"]["postgres"]["condition"] = "service_ready"


def _ports_as_a_mapping(doc: dict[str, Any]) -> None:
    doc["services"]["mlflow"]["ports"] = {"5000": "5000"}


@pytest.mark.parametrize(
    ("mutate", "expected_error"),
    [
        (_unknown_service_key, "services/redis: Unevaluated properties are not allowed ('imagee' was"),
        (_unknown_top_level_key, "<root>: 'service' does not match any of the regexes"),
        (
            _bad_depends_on_condition,
            "services/mlflow/depends_on: {'postgres': {'condition': 'service_ready'}",
        ),
        (_ports_as_a_mapping, "services/mlflow/ports: {'5000': '5000'} is not of type 'array'"),
    ],
    ids=["unknown-service-key", "unknown-top-level-key", "bad-depends-on-condition", "ports-mapping"],
)
def test_schema_rejects_an_invalid_file(
    validator: Draft202012Validator,
    compose: dict[str, Any],
    mutate: Callable[[dict[str, Any]], None],
    expected_error: str,
) -> None:
    broken = copy.deepcopy(compose)
    mutate(broken)
    errors = schema_errors(validator, broken)
    assert any(error.startswith(expected_error) for error in errors), errors


# --- Interpolation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("${PASSWORD:-local}", {}, "local"),
        ("${PASSWORD:-local}", {"PASSWORD": ""}, "local"),
        ("${PASSWORD-local}", {"PASSWORD": ""}, ""),
        ("${PASSWORD:-local}", {"PASSWORD": "s3cret"}, "s3cret"),
        ("redis://:${PASSWORD}@redis:6379/0", {"PASSWORD": "pw"}, "redis://:pw@redis:6379/0"),
        ("$PASSWORD", {"PASSWORD": "pw"}, "pw"),
        ("${DEBUG:+--verbose}", {"DEBUG": "1"}, "--verbose"),
        ("${DEBUG:+--verbose}", {}, ""),
        ("celery@$${HOSTNAME} costs $$5", {}, "celery@${HOSTNAME} costs $5"),
    ],
)
def test_interpolation_follows_compose(text: str, env: dict[str, str], expected: str) -> None:
    assert interpolate_string(text, env) == expected


@pytest.mark.parametrize("text", ["${TOKEN:?set TOKEN}", "${TOKEN}", "${not valid}", "${TOKEN"])
def test_interpolation_errors(text: str) -> None:
    with pytest.raises(InterpolationError):
        interpolate_string(text, {})


def test_every_setting_resolves_without_an_env_file(raw_compose: dict[str, Any]) -> None:
    """Every `${VAR}` has a default, so a fresh checkout starts with no `.env` at all."""
    interpolate(raw_compose, env={})  # raises on a variable without a default


def test_secrets_can_be_overridden_from_the_environment(raw_compose: dict[str, Any]) -> None:
    """Passwords, keys and URL credentials are `${VAR:-local default}`, never literals."""
    secret_name = re.compile(r"PASSWORD|SECRET|FERNET_KEY|_AUTH$")
    # user:password@ in a URL, "password": "..." in a JSON connection
    embedded_password = re.compile(r'://[^/:@\s]*:(?P<url>[^@\s]+)@|"password":\s*"(?P<json>[^"]*)"')
    for name, service in raw_compose["services"].items():
        for key, value in environment(service).items():
            if secret_name.search(key):
                assert str(value).startswith("${"), f"{name}: {key} is hard-coded"
            for match in embedded_password.finditer(str(value)):
                password = match["url"] or match["json"]
                assert password.startswith("${"), f"{name}: {key} has a hard-coded password"


# --- Stack rules --------------------------------------------------------------------------------


def test_depends_on_names_existing_services(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for dependency in depends_on(service):
            assert dependency in services, f"{name} depends on unknown service {dependency!r}"
            assert dependency != name, f"{name} depends on itself"


def test_dependency_conditions_fit_the_dependency(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for dependency, condition in depends_on(service).items():
            target = services[dependency]
            if condition == "service_healthy":
                assert "healthcheck" in target, f"{name} waits for {dependency} to be healthy: no healthcheck"
            if condition == "service_completed_successfully":
                assert dependency in ONE_SHOT_SERVICES, f"{name} waits for {dependency} to exit"
                assert target.get("restart", "no") == "no", f"one-shot {dependency} must not restart"


def test_host_ports_are_bound_to_loopback_only(services: dict[str, dict[str, Any]]) -> None:
    published = {}
    for name, service in services.items():
        for port in service.get("ports", []):
            for ip in host_ips(port):
                assert ip == LOOPBACK, f"{name}: port {port!r} is published on {ip or 'all interfaces'}"
                published[name] = port
    assert published.keys() == {"airflow-apiserver", "mlflow", "minio"}


@pytest.mark.parametrize(
    ("port", "expected"),
    [
        ("127.0.0.1:8080:8080", ["127.0.0.1"]),
        ("127.0.0.1::8080/tcp", ["127.0.0.1"]),
        ("[::1]:8080:8080", ["::1"]),
        ("8080:8080", [None]),
        ("0.0.0.0:8080:8080", ["0.0.0.0"]),
        (8080, [None]),
        ({"target": 8080, "published": "8080"}, [None]),
        ({"target": 8080, "published": "8080", "host_ip": "127.0.0.1"}, ["127.0.0.1"]),
        ({"target": 8080}, []),
    ],
)
def test_host_ips(port: str | int | dict[str, Any], expected: list[str | None]) -> None:
    assert host_ips(port) == expected


def test_airflow_services_share_image_and_environment(compose: dict[str, Any]) -> None:
    common = compose["x-airflow-common"]
    services = compose["services"]
    assert {name for name in services if name.startswith("airflow-")} == AIRFLOW_SERVICES
    for name in sorted(AIRFLOW_SERVICES):
        service = services[name]
        assert service["image"] == common["image"], name
        assert service["build"] == common["build"], name
        assert service["volumes"] == common["volumes"], name
        env = environment(service)
        differing = {key for key, value in common["environment"].items() if env.get(key) != value}
        assert not differing, f"{name} overrides or lacks common settings: {sorted(differing)}"
    # The MLflow server runs from the same image.
    assert services["mlflow"]["image"] == common["image"]


def test_airflow_settings(compose: dict[str, Any]) -> None:
    env = compose["x-airflow-common"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"]
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false"
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["MLOPS_DATA_ROOT"] == "s3://mlops-data"
    assert env["PYTHONPATH"] == "/opt/airflow"
    mounts = {volume.split(":")[1] for volume in compose["x-airflow-common"]["volumes"]}
    for target in ("dags", "plugins", "include", "tools", "airflow_settings.yaml"):
        assert f"/opt/airflow/{target}" in mounts


def test_service_urls_point_at_services(services: dict[str, dict[str, Any]]) -> None:
    """Every URL in an environment or command names a service of this file (or loopback)."""
    url = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s\"',]+")
    for name, service in services.items():
        texts = [str(v) for v in environment(service).values()]
        command = service.get("command") or []
        texts += command if isinstance(command, list) else [command]
        for found in (m.group() for text in texts for m in url.finditer(text)):
            host = urlsplit(found).hostname
            if found.startswith("s3://") or host in (None, "localhost", LOOPBACK):
                continue
            assert host in services, f"{name}: {found} points at unknown host {host!r}"


def test_long_running_services_have_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    one_shot = {
        dep
        for service in services.values()
        for dep, condition in depends_on(service).items()
        if condition == "service_completed_successfully"
    }
    assert one_shot == ONE_SHOT_SERVICES
    for name, service in services.items():
        if name in one_shot:
            continue
        healthcheck = service.get("healthcheck") or {}
        assert healthcheck.get("test") and not healthcheck.get("disable"), f"{name} has no healthcheck"
        assert service.get("restart") == "unless-stopped", f"{name} is not restarted"


def test_image_build_and_mounted_files(services: dict[str, dict[str, Any]]) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM apache/airflow:3\.3\.2-python3\.12$", dockerfile, re.MULTILINE)
    lock = (ROOT / "requirements.lock").read_text(encoding="utf-8")
    assert re.search(r"^apache-airflow==3\.3\.2$", lock, re.MULTILINE), "lock and base image disagree"
    assert re.search(r"^mlflow==", lock, re.MULTILINE), "the MLflow server runs from this image"
    init_scripts = [
        volume.split(":")[0]
        for volume in services["postgres"]["volumes"]
        if ":/docker-entrypoint-initdb.d/" in volume
    ]
    assert init_scripts, "postgres mounts no init script for the MLflow database"
    for script in init_scripts:
        assert (ROOT / script).is_file(), f"{script} is missing"


# --- The real CLI, when there is one -------------------------------------------------------------


def compose_cli() -> list[str] | None:
    """`docker compose` or `docker-compose`, whichever is Compose v2 or later; None without one."""
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        try:
            version = subprocess.run(
                [*command, "version", "--short"], capture_output=True, text=True, timeout=60, check=False
            )
        except (OSError, subprocess.SubprocessError):
            continue
        if version.returncode == 0 and re.match(r"v?([2-9]|\d{2,})\.", version.stdout.strip()):
            return command
    return None


def test_docker_compose_config_accepts_the_file() -> None:
    cli = compose_cli()
    if cli is None:
        pytest.skip("no Docker Compose v2 CLI on PATH")
    result = subprocess.run(
        [*cli, "--file", str(COMPOSE_FILE), "--project-directory", str(ROOT), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "warn" not in result.stderr.lower(), result.stderr
