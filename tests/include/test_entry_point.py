"""The image's entry point as each backend runs it: ``python -m include.mlops`` in a subprocess.

Kubernetes' plain arguments, SageMaker's file layout (``hyperparameters.json``, ``model/``,
``output/failure``) in a temporary ``MLOPS_SAGEMAKER_ROOT``, and Vertex AI's ``AIP_MODEL_DIR`` on the
GCS emulator: the result record, the exit status (0, 2 deterministic, 75 transient) and what each
platform reads a failure from. Churn is trained once for the module; the other jobs are retries of
that training (they reuse its version), failures, or the scoring of one partition.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from include.mlops import platforms, remote, storage
from include.mlops.errors import NothingToDo, SpecError
from include.mlops.tags import AIRFLOW_DAG_ID, AIRFLOW_RUN_ID, AIRFLOW_TASK_ID

pytestmark = pytest.mark.backends

ROOT = Path(__file__).resolve().parents[2]
TRAIN = remote.Lineage(dag_id="churn__train", run_id="scheduled__2026-05-01T00:00:00+00:00", task_id="train")
# Variables that would make the entry point believe it runs on a platform it does not run on.
PLATFORM_VARIABLES = (
    "KUBERNETES_SERVICE_HOST",
    "AIP_MODEL_DIR",
    "CLOUD_ML_JOB_ID",
    "CLOUD_ML_PROJECT_ID",
    "TRAINING_JOB_NAME",
    "PROCESSING_JOB_NAME",
    platforms.SAGEMAKER_ROOT_ENV,
    platforms.TERMINATION_LOG_ENV,
)


@dataclass
class Job:
    """One run of the entry point."""

    code: int
    stdout: str
    stderr: str

    @property
    def last_line(self) -> str:
        """The last line of the job's output: what an operator shows as the reason."""
        return self.stderr.strip().splitlines()[-1]


@dataclass
class Workspace:
    """The module's state folder with churn published and trained once through the entry point."""

    root: Path
    env: dict[str, str]
    trained: Job
    record_uri: str

    def run(self, *args: str, extra_env: dict[str, str] | None = None) -> Job:
        """Run ``python -m include.mlops *args`` as a container would, with this workspace's state."""
        env = {**self.env, **(extra_env or {})}
        done = subprocess.run(
            [sys.executable, "-m", "include.mlops", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        return Job(done.returncode, done.stdout, done.stderr)

    def record(self, name: str) -> str:
        """A fresh result record location in this workspace."""
        return str(self.root / "records" / name)


def job_env(root: Path) -> dict[str, str]:
    """The job's environment: this test's state, the project on the path, no platform variables."""
    env = {k: v for k, v in os.environ.items() if k not in PLATFORM_VARIABLES}
    env.update(
        PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'plugins'}",
        # A SageMaker root that does not exist: /opt/ml on a developer's machine must not count.
        MLOPS_SAGEMAKER_ROOT=str(root / "no-sagemaker-here"),
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    """Churn with one published batch, trained once by the entry point with Kubernetes-style arguments."""
    from include.mlops.data import ingest
    from include.mlops.datagen import write_batch
    from include.mlops.spec import find_spec

    root = tmp_path_factory.mktemp("entry-point")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLOPS_STATE_DIR", str(root / "state"))
        patch.delenv("MLOPS_DATA_ROOT", raising=False)
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        shutil.copytree(ROOT / "include" / "pipelines", root / "pipelines")
        patch.setenv("MLOPS_PIPELINES_DIR", str(root / "pipelines"))
        spec = find_spec("churn")
        write_batch(spec, "batch1", rows=1500, seed=11)
        for uri in ingest.discover(spec):
            ingest.ingest_file(spec, uri)
        space = Workspace(root, job_env(root), Job(-1, "", ""), str(root / "records" / "train.json"))
        space.trained = space.run(
            "train", "churn", "--lineage", TRAIN.to_json(), "--result-uri", space.record_uri
        )
        yield space


def read(uri: str) -> dict[str, Any]:
    """A result record that must be there."""
    found = remote.read_record(uri)
    assert found is not None, f"no result record at {uri}"
    return found


def model_versions() -> list[Any]:
    """Every registered version of churn in the workspace's MLflow store."""
    from include.mlops import tracking

    return list(tracking.client().search_model_versions("name = 'churn'"))


# Kubernetes: plain arguments ---------------------------------------------------------------------
def test_train_writes_a_succeeded_record_and_tags_the_version_with_the_lineage(workspace):
    assert workspace.trained.code == 0, workspace.trained.stderr
    found = read(workspace.record_uri)
    assert (found["status"], found["stage"], found["error"]) == ("succeeded", "train", None)
    assert found["lineage"] == {**json.loads(TRAIN.to_json())}
    result = found["result"]
    assert result["model_uri"] == f"models:/churn/{result['version']}"
    assert result["metrics"]["roc_auc"] > 0.6
    assert json.loads(workspace.trained.stdout)["version"] == result["version"]
    (version,) = model_versions()
    assert str(version.version) == result["version"]
    assert {k: version.tags[k] for k in (AIRFLOW_DAG_ID, AIRFLOW_RUN_ID, AIRFLOW_TASK_ID)} == TRAIN.tags()


def test_a_deterministic_failure_exits_2_with_a_failed_record_and_a_termination_message(workspace, tmp_path):
    lineage = remote.Lineage(dag_id="housing__train", run_id="manual__1", task_id="train")
    uri = workspace.record("housing.json")
    termination = tmp_path / "termination-log"
    job = workspace.run(
        "train", "housing", "--lineage", lineage.to_json(), "--result-uri", uri,
        extra_env={platforms.TERMINATION_LOG_ENV: str(termination)},
    )  # fmt: skip
    assert job.code == remote.EXIT_DETERMINISTIC, job.stderr
    found = read(uri)
    assert (found["status"], found["deterministic"], found["result"]) == ("failed", True, None)
    assert found["error"] == "pipeline housing: no validated dataset has been published yet"
    assert found["lineage"]["dag_id"] == "housing__train"
    assert job.last_line == f"error: {found['error']}"
    assert termination.read_text() == found["error"]


def test_an_unexpected_exception_is_transient_one_line_and_recorded(workspace):
    uri = workspace.record("unexpected.json")
    champion = {"model": "churn", "version": "1", "model_uri": "models:/churn/1", "inputs": 5}
    job = workspace.run(
        "score-partition", "churn", "--partition", str(workspace.root / "nowhere"),
        "--champion", json.dumps(champion), "--run-id", "r1", "--result-uri", uri,
    )  # fmt: skip
    assert job.code == remote.EXIT_TRANSIENT, job.stderr
    found = read(uri)
    assert (found["status"], found["deterministic"]) == ("failed", False)
    assert found["error"].startswith("unexpected TypeError: ")
    assert "\n" not in found["error"]
    assert job.last_line == f"error: {found['error']}"


def test_a_record_that_cannot_be_written_exits_75_and_says_where(workspace, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    job = workspace.run("train", "no_such_pipeline", "--result-uri", str(blocker / "record.json"))
    assert job.code == remote.EXIT_TRANSIENT, job.stderr
    assert "no valid pipeline spec named 'no_such_pipeline'" in job.last_line
    assert f"could not write the result record to {blocker / 'record.json'}" in job.last_line


def test_a_malformed_lineage_is_a_deterministic_usage_error_with_a_record(workspace):
    uri = workspace.record("bad-lineage.json")
    job = workspace.run("train", "churn", "--lineage", '{"dag_id": "x"}', "--result-uri", uri)
    assert job.code == remote.EXIT_DETERMINISTIC
    found = read(uri)
    assert found["status"] == "failed" and found["lineage"] is None
    assert found["error"].startswith("--lineage must be JSON with dag_id, run_id, task_id")


def test_score_partition_scores_one_partition_with_the_pinned_champion(workspace):
    from include.mlops import tracking
    from include.mlops.datagen import write_batch
    from include.mlops.scoring import inference
    from include.mlops.spec import find_spec

    spec = find_spec("churn")
    version = read(workspace.record_uri)["result"]["version"]
    tracking.client().set_registered_model_alias("churn", "champion", version)
    champion = inference.resolve_champion(spec)
    write_batch(spec, "part-a", rows=400, seed=5, scoring=True)
    (partition,) = inference.list_partitions(spec)
    lineage = remote.Lineage(dag_id="churn__score", run_id="r1", task_id="score_partition", map_index=0)
    uri = remote.result_uri(spec.uri("state"), lineage)
    job = workspace.run(
        "score-partition", "churn", "--partition", partition,
        "--champion", json.dumps(champion), "--run-id", "r1",
        "--lineage", lineage.to_json(), "--result-uri", uri,
    )  # fmt: skip
    assert job.code == 0, job.stderr
    found = read(uri)
    assert (found["status"], found["stage"], found["lineage"]["map_index"]) == (
        "succeeded",
        "score-partition",
        0,
    )
    manifest = found["result"]
    assert (manifest["rows"], str(manifest["model_version"])) == (400, version)
    assert storage.is_complete(inference.output_folder(spec, partition))
    with pytest.raises(NothingToDo):  # committed: the partition is no longer pending
        inference.list_partitions(spec)


# SageMaker: the training job's file layout ---------------------------------------------------------
def sagemaker_layout(root: Path, hyperparameters: dict[str, str]) -> Path:
    """What SageMaker puts in a training container before it starts the image with ``train``."""
    config = root / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    for folder in ("model", "output"):
        (root / folder).mkdir()
    return root


def test_sagemaker_training_reads_hyperparameters_and_writes_model_result(workspace, tmp_path):
    uri = workspace.record("sagemaker-retry.json")
    root = sagemaker_layout(
        tmp_path / "ml", {"pipeline": "churn", "lineage": TRAIN.to_json(), "result_uri": uri}
    )
    before = read(workspace.record_uri)["result"]
    job = workspace.run(
        "train", extra_env={platforms.SAGEMAKER_ROOT_ENV: str(root), "TRAINING_JOB_NAME": "churn-train-1"}
    )
    assert job.code == 0, job.stderr
    assert "Running as a SageMaker training job (name churn-train-1)" in job.stderr
    for found in (read(uri), json.loads((root / "model" / "result.json").read_text())):
        assert found["status"] == "succeeded"
        assert found["result"]["version"] == before["version"]  # the same lineage: reused, not retrained
    assert len(model_versions()) == 1
    assert not (root / "output" / "failure").exists()


def test_a_secondary_sagemaker_host_exits_0_without_training(workspace, tmp_path):
    """instance_count 2: the second host must not train (or register) a second time."""
    root = sagemaker_layout(tmp_path / "ml", {"pipeline": "churn", "lineage": TRAIN.to_json()})
    (root / "input" / "config" / "resourceconfig.json").write_text(
        json.dumps({"current_host": "algo-2", "hosts": ["algo-2", "algo-1"]})
    )
    versions = len(model_versions())
    job = workspace.run("train", extra_env={platforms.SAGEMAKER_ROOT_ENV: str(root)})
    assert job.code == 0, job.stderr
    assert "This is host algo-2 of 2 of a multi-machine job" in job.stderr
    assert len(model_versions()) == versions
    assert not (root / "model" / "result.json").exists()


@pytest.mark.parametrize(
    ("environ", "secondary"),
    [
        ({"CLOUD_ML_JOB_ID": "1", "CLUSTER_SPEC": '{"task": {"type": "workerpool0", "index": 0}}'}, ""),
        (
            {"CLOUD_ML_JOB_ID": "1", "CLUSTER_SPEC": '{"task": {"type": "workerpool1", "index": 2}}'},
            "workerpool1 replica 2",
        ),
        ({"CLOUD_ML_JOB_ID": "1"}, ""),  # one replica: Vertex sets no CLUSTER_SPEC
        ({"CLOUD_ML_JOB_ID": "1", "CLUSTER_SPEC": "not json"}, ""),
    ],
)
def test_only_vertex_workerpool0_replica_0_is_the_primary(environ, secondary, tmp_path):
    environ = {**environ, platforms.SAGEMAKER_ROOT_ENV: str(tmp_path / "none")}
    assert platforms.detect(environ).secondary == secondary


def test_sagemaker_failure_reason_is_one_line_of_at_most_1024_characters(workspace, tmp_path):
    name = "p" * 3000  # the error names the pipeline: far longer than FailureReason keeps
    root = sagemaker_layout(
        tmp_path / "ml", {"pipeline": name, "lineage": TRAIN.to_json(), "sagemaker_region": "x"}
    )
    job = workspace.run("train", extra_env={platforms.SAGEMAKER_ROOT_ENV: str(root)})
    assert job.code == remote.EXIT_DETERMINISTIC
    failure = (root / "output" / "failure").read_text()
    assert failure.startswith("no valid pipeline spec named 'ppp")
    assert len(failure.encode()) <= 1024 and "\n" not in failure
    found = json.loads((root / "model" / "result.json").read_text())
    assert (found["status"], found["deterministic"]) == ("failed", True)
    assert found["lineage"] is None or found["lineage"]["task_id"] == "train"


def test_sagemaker_hyperparameters_without_a_pipeline_fail_with_the_reason(workspace, tmp_path):
    root = sagemaker_layout(tmp_path / "ml", {"lineage": TRAIN.to_json()})
    job = workspace.run("train", extra_env={platforms.SAGEMAKER_ROOT_ENV: str(root)})
    assert job.code == remote.EXIT_DETERMINISTIC
    assert "hyperparameters have no 'pipeline'" in (root / "output" / "failure").read_text()


def test_sagemaker_processing_failure_goes_to_the_exit_message(workspace, tmp_path):
    root = tmp_path / "ml"
    (root / "config").mkdir(parents=True)
    (root / "config" / "processingjobconfig.json").write_text(
        json.dumps({"ProcessingJobName": "churn-score-1"})
    )
    # A champion too long for one of SageMaker's 256-character arguments comes as a file's URI.
    champion = tmp_path / "score.champion.json"
    champion.write_text(json.dumps({"model": "housing", "version": "1", "model_uri": "models:/housing/1"}))
    job = workspace.run(
        "score-partition", "housing", "--partition", str(tmp_path / "nowhere"),
        "--champion", f"file://{champion}",
        extra_env={platforms.SAGEMAKER_ROOT_ENV: str(root)},
    )  # fmt: skip
    assert job.code == remote.EXIT_DETERMINISTIC, job.stderr
    assert "Running as a SageMaker processing job (name churn-score-1)" in job.stderr
    message = (root / "output" / "message").read_text()
    assert message == job.last_line.removeprefix("error: ")
    assert message == f"scoring partition {tmp_path / 'nowhere'} does not exist"


def test_a_champion_file_that_is_missing_is_a_usage_error(workspace, tmp_path):
    job = workspace.run(
        "score-partition", "churn", "--partition", str(tmp_path), "--champion", str(tmp_path / "gone.json")
    )
    assert job.code == remote.EXIT_DETERMINISTIC
    assert (
        job.last_line
        == f"error: --champion {tmp_path / 'gone.json'}: no such file; the operator writes it before the job starts"
    )


def test_sagemaker_arguments_map_keys_flags_and_reserved_names(tmp_path):
    path = tmp_path / "hyperparameters.json"
    path.write_text(
        json.dumps(
            {
                "pipeline": "churn",
                "lineage": TRAIN.to_json(),
                "result_uri": "s3://b/r.json",
                "run_id": "r1",
                "rescore": "true",
                "sagemaker_program": "ignored",
            }
        )
    )
    assert platforms.sagemaker_arguments(path) == [
        "train", "churn", "--lineage", TRAIN.to_json(), "--result-uri", "s3://b/r.json",
        "--run-id", "r1", "--rescore",
    ]  # fmt: skip
    path.write_text("[1, 2]")
    with pytest.raises(SpecError, match="must be a JSON object"):
        platforms.sagemaker_arguments(path)


# Vertex AI: AIP_MODEL_DIR on the GCS emulator ------------------------------------------------------
def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def gcs(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """gcp-storage-emulator with the bucket ``vertex-staging``; the settings that point gcsfs at it."""
    from gcp_storage_emulator.server import create_server

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket="vertex-staging")
    server.start()
    settings = {
        "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}",
        "FSSPEC_GCS_TOKEN": "anon",
        "NO_GCE_CHECK": "true",
        # The emulator has no storage-control API (gcsfs asks it for the bucket type otherwise).
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    try:
        yield settings
    finally:
        server.stop()


def test_vertex_job_writes_the_record_to_aip_model_dir(workspace, gcs):
    base = "gs://vertex-staging/airflow-mlops/churn/train-1"
    uri = "gs://vertex-staging/state/jobs/churn__train/run/train.json"
    job = workspace.run(
        "train", "churn", "--lineage", TRAIN.to_json(), "--result-uri", uri,
        extra_env={
            **gcs,
            "AIP_MODEL_DIR": f"{base}/model/",
            "AIP_CHECKPOINT_DIR": f"{base}/checkpoints/",
            "CLOUD_ML_JOB_ID": "1234567890",
            "CLOUD_ML_PROJECT_ID": "mlops-test",
        },
    )  # fmt: skip
    assert job.code == 0, job.stderr
    assert "Running as a Vertex AI custom job (id 1234567890, project mlops-test" in job.stderr
    version = read(workspace.record_uri)["result"]["version"]
    for found in (read(uri), read(f"{base}/model/result.json")):
        assert (found["status"], found["result"]["version"]) == ("succeeded", version)


# The image: Dockerfile, entry script, docker-compose.yaml -----------------------------------------
SCRIPT = ROOT / "deploy" / "entrypoint.sh"
IMAGE_SCRIPT = "/opt/airflow/deploy/entrypoint.sh"


def fake_program(folder: Path, name: str, label: str) -> Path:
    """An executable that prints ``[label, *its arguments]`` as JSON: stands in for a real program."""
    path = folder / name
    path.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps([{label!r}, *sys.argv[1:]]))\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def dispatch(tmp_path: Path):
    """Run the image's entry script with bash, with a fake ``python`` and a fake Airflow /entrypoint."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_program(bin_dir, "python", "python")
    airflow = fake_program(tmp_path, "entrypoint", "airflow-entrypoint")
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "MLOPS_AIRFLOW_ENTRYPOINT": str(airflow),
    }

    def run(*args: str) -> list[str]:
        done = subprocess.run(
            ["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60, check=True
        )
        return json.loads(done.stdout)

    return run


def script_array(name: str) -> list[str]:
    """A bash array assigned in the entry script (``NAME=(a b c)``, possibly over several lines)."""
    import re
    import shlex

    match = re.search(rf"^{name}=\(([^)]*)\)", SCRIPT.read_text(), re.MULTILINE)
    assert match, f"{name} is not assigned in {SCRIPT}"
    return shlex.split(match.group(1))


@pytest.mark.parametrize(
    "args",
    [
        ["train"],  # SageMaker's training job
        ["train", "churn", "--lineage", TRAIN.to_json(), "--result-uri", "s3://b/r.json"],
        ["score-partition", "churn", "--partition", "s3://b/in/p1", "--champion", "{}"],
        ["ingest", "churn"],
        ["check-specs"],
    ],
)
def test_core_commands_run_the_operators_entry_point(dispatch, args):
    assert dispatch(*args) == [*remote.ENTRY_POINT, *args]


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["api-server"],
        ["scheduler"],
        ["celery", "worker"],
        ["bash", "-c", "airflow db migrate"],
        ["version"],
    ],
)
def test_everything_else_goes_to_airflows_entrypoint(dispatch, args):
    assert dispatch(*args) == ["airflow-entrypoint", *args]


def test_the_script_knows_every_command_of_the_cli_and_the_operators_entry_point():
    from include.mlops.cli import parser

    (commands,) = [a for a in parser()._subparsers._actions if isinstance(a, argparse._SubParsersAction)]
    assert sorted(script_array("CORE_COMMANDS")) == sorted(commands.choices)
    assert tuple(script_array("ENTRY_POINT")) == remote.ENTRY_POINT


def test_the_dockerfile_runs_the_entry_script_and_holds_no_credentials():
    import re

    dockerfile = (ROOT / "Dockerfile").read_text()
    entrypoint = re.search(r"^ENTRYPOINT (\[.*\])$", dockerfile, re.MULTILINE)
    assert entrypoint and json.loads(entrypoint.group(1)) == ["/usr/bin/dumb-init", "--", IMAGE_SCRIPT]
    assert re.search(rf"^COPY .*deploy/entrypoint\.sh {re.escape(IMAGE_SCRIPT)}$", dockerfile, re.MULTILINE)
    copied = re.findall(r"^COPY (?:--\S+ )*(\S+)", dockerfile, re.MULTILINE)
    assert {"include/", "plugins/", "dags/"} <= set(copied)
    assert not {"airflow_settings.yaml", ".env", "state/", "."} & set(copied), (
        "credentials or state in the image"
    )
    assert re.search(r"^ENV PYTHONPATH=/opt/airflow\b", dockerfile, re.MULTILINE)
    env_names = re.findall(r"^\s*(?:ENV\s+)?([A-Z_]+)=", dockerfile, re.MULTILINE)
    assert not [n for n in env_names if re.search("SECRET|PASSWORD|TOKEN|KEY", n)]
    assert os.access(SCRIPT, os.X_OK)


def test_compose_services_still_reach_airflow_through_the_script(dispatch):
    import yaml

    services = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())["services"]
    built = {name: s for name, s in services.items() if "build" in s}
    assert {"airflow-apiserver", "airflow-worker", "mlflow"} <= set(built)
    for name, service in built.items():
        if "entrypoint" in service:  # the MLflow server bypasses the entry point altogether
            continue
        command = service.get("command", [])
        args = command.split() if isinstance(command, str) else list(command)
        assert dispatch(*args) == ["airflow-entrypoint", *args], name
