"""The Vertex AI backend: ``VertexStageOperator`` through the google provider's hook and trigger.

Vertex's JobService is ``vertex_fakes.FakeVertex`` on 127.0.0.1 (gRPC, the real aiplatform_v1
protobuf types); the hooks hand out the real clients bound to it, so the provider's polling runs as
in production. A job runs the project's entry point as a local process with Vertex's ``AIP_*``
variables; data, staging bucket and result records live on the GCS emulator, MLflow is a real
tracking server. One churn model is trained for the whole module (sync), then scored (deferrable).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from airflow.sdk.exceptions import TaskDeferred
from google.cloud.aiplatform_v1 import AcceleratorType, CreateCustomJobRequest, CustomJob

from include.mlops import storage
from include.mlops.remote import ENTRY_POINT, Lineage, read_record
from include.mlops.spec import PipelineSpec, parse_spec
from include.mlops.tags import AIRFLOW_DAG_ID, AIRFLOW_RUN_ID, AIRFLOW_TASK_ID
from mlops_airflow.exceptions import PipelineFailed, PipelineRetryable
from mlops_airflow.operators.vertex import VertexCustomJobTrigger, VertexStageOperator
from tests.backends import vertex_fakes
from tests.backends.vertex_fakes import PROJECT, REGION, FakeVertex
from tools.mlflow_server import MlflowServer

pytestmark = pytest.mark.backends

ROOT = Path(__file__).resolve().parents[2]
IMAGE = f"{REGION}-docker.pkg.dev/{PROJECT}/mlops/airflow-mlops:1.0.0"
DATA_ROOT = "gs://mlops-data/root"
STAGING = "gs://mlops-staging/vertex"
VERTEX = {
    "project": PROJECT,
    "region": REGION,
    "image": IMAGE,
    "machine_type": "n1-standard-8",
    "service_account": f"trainer@{PROJECT}.iam.gserviceaccount.com",
    "staging_bucket": STAGING,
    "network": "projects/123456789012/global/networks/ml",
    "timeout": "2h",
    "environment": {"OMP_NUM_THREADS": "2"},
    "labels": {"team": "ml-platform"},
}


@dataclass
class World:
    """The module's servers, spec and fake Vertex."""

    mlflow: str
    raw_spec: dict[str, Any]
    vertex: FakeVertex

    def spec(self, **vertex: Any) -> PipelineSpec:
        """The churn spec with the ``vertex:`` section changed by ``vertex``."""
        raw = yaml.safe_load(yaml.safe_dump(self.raw_spec))
        raw["training"]["vertex"].update(vertex)
        return parse_spec(raw, "churn.yaml")


class Events(dict):
    """``context["outlet_events"]``: an event per outlet, made on first use."""

    def __missing__(self, key: Any) -> Any:
        self[key] = SimpleNamespace(extra=None)
        return self[key]


def context(run_id: str, task_id: str = "train", map_index: int = -1) -> dict[str, Any]:
    """The parts of a task's context the operator reads."""
    dag_id = "churn__train" if task_id == "train" else "churn__inference"
    return {
        "dag": SimpleNamespace(dag_id=dag_id),
        "run_id": run_id,
        "task": SimpleNamespace(task_id=task_id),
        "ti": SimpleNamespace(map_index=map_index),
        "outlet_events": Events(),
    }


def operator(
    world: World, stage: str = "train", *, deferrable: bool = False, **kwargs: Any
) -> VertexStageOperator:
    """A Vertex operator that polls every 50 ms."""
    task_id = "train" if stage == "train" else "score"
    return VertexStageOperator(
        task_id=task_id, stage=stage, pipeline="churn", deferrable=deferrable, poll_interval=0.05, **kwargs
    )


def first_event(trigger: Any) -> Any:
    """Run a trigger (as the triggerer does) until its first event."""

    async def run() -> Any:
        async for event in trigger.run():
            return event
        return None

    return asyncio.run(asyncio.wait_for(run(), timeout=120))


def through_serialisation(trigger: VertexCustomJobTrigger) -> Any:
    """The trigger rebuilt from its serialised form, as the triggerer gets it."""
    import importlib

    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    return getattr(importlib.import_module(module), name)(**kwargs)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """GCS emulator, MLflow server, the churn spec on Vertex with one published batch, FakeVertex."""
    tmp = tmp_path_factory.mktemp("vertex")
    pipelines = tmp / "pipelines"
    shutil.copytree(ROOT / "include" / "pipelines", pipelines)
    raw = yaml.safe_load((pipelines / "churn.yaml").read_text())
    raw["training"].update(backend="vertex", vertex=dict(VERTEX))
    raw["inference"]["backend"] = "vertex"
    (pipelines / "churn.yaml").write_text(yaml.safe_dump(raw))
    mlflow = MlflowServer(tmp / "mlflow").start()  # boots while the data is published
    with contextlib.ExitStack() as stack:
        stack.callback(mlflow.stop)
        gcs = stack.enter_context(vertex_fakes.gcs_emulator())
        mp = stack.enter_context(pytest.MonkeyPatch.context())
        vertex_fakes.use_gcs_here(mp, gcs)
        for name, value in {
            "MLOPS_STATE_DIR": str(tmp / "state"),
            "MLOPS_PIPELINES_DIR": str(pipelines),
            "MLOPS_DATA_ROOT": DATA_ROOT,
            "MLFLOW_TRACKING_URI": mlflow.uri,
            "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT": json.dumps(
                {"conn_type": "google_cloud_platform", "extra": {"project": PROJECT}}
            ),
        }.items():
            mp.setenv(name, value)
        mp.delenv("AIRFLOW_CONN_MLFLOW_DEFAULT", raising=False)
        publish()
        mlflow.wait()
        image = vertex_fakes.project_image(pipelines, home=tmp / "job-home")
        image.env["MLOPS_STATE_DIR"] = str(tmp / "job-state")  # the container's own disk
        fake = FakeVertex(images={IMAGE: image}, platform_env=vertex_fakes.gcs_env(gcs)).start()
        stack.callback(fake.stop)
        vertex_fakes.install(mp, fake)
        yield World(mlflow=mlflow.uri, raw_spec=raw, vertex=fake)


def publish() -> None:
    """Buckets, one validated churn batch and one scoring partition, all on the emulator."""
    from include.mlops.data import ingest
    from include.mlops.datagen import write_batch
    from include.mlops.spec import find_spec

    fs, _ = storage.fs_for(DATA_ROOT)
    for bucket in ("mlops-data", "mlops-staging"):
        fs.mkdir(bucket)
    spec = find_spec("churn")
    write_batch(spec, "batch1", rows=1500, seed=11)
    for uri in ingest.discover(spec):
        ingest.ingest_file(spec, uri)
    write_batch(spec, "2024-01-01", rows=200, seed=12, scoring=True)


def versions(world: World) -> list[str]:
    """The registered versions of the churn model."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=world.mlflow, registry_uri=world.mlflow)
    return sorted(v.version for v in client.search_model_versions("name='churn'"))


def test_the_operator_module_is_cheap_to_import():
    import subprocess
    import sys

    code = (
        "import sys; from tools.heavy_modules import heavy_modules, loaded; import mlops_airflow.operators.remote; "
        "before = {m for m in heavy_modules() if loaded(m)}; import mlops_airflow.operators.vertex; "
        "print(sorted({m for m in heavy_modules() if loaded(m)} - before) + "
        "[m for m in sys.modules if m.startswith('airflow.providers.google.cloud')])"
    )
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'plugins'}"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"  # nothing heavy beyond what Airflow itself loads


# The request ---------------------------------------------------------------------------------------------
def expected_job(world: World, lineage: Lineage, **changes: Any) -> CustomJob:
    """The CustomJob the operator must send for the module's spec, written out field by field."""
    name = lineage.job_name("churn", "train")
    record = f"{DATA_ROOT}/state/churn/jobs/{lineage.dag_id}/{lineage.run_id}/train.json"
    pool = {
        "machine_spec": {"machine_type": "n1-standard-8"},
        "replica_count": 1,
        "disk_spec": {"boot_disk_size_gb": 100},
        "container_spec": {
            "image_uri": IMAGE,
            "command": ["python", "-m", "include.mlops"],
            "args": ["train", "churn", "--lineage", lineage.to_json(), "--result-uri", record],
            "env": [
                {"name": "MLFLOW_TRACKING_URI", "value": world.mlflow},
                {"name": "MLOPS_DATA_ROOT", "value": DATA_ROOT},
                {"name": "PYTHONUNBUFFERED", "value": "1"},
                {"name": "OMP_NUM_THREADS", "value": "2"},
            ],
        },
        **changes.pop("pool", {}),
    }
    job = {
        "display_name": name,
        "labels": {
            "airflow-mlops_dag-id": "churn__train",
            "airflow-mlops_task-id": "train",
            "airflow-mlops_run-digest": lineage.digest(),
            "airflow-mlops_map-index": "none",
            "airflow-mlops_pipeline": "churn",
            "airflow-mlops_stage": "train",
            "team": "ml-platform",
        },
        "job_spec": {
            "worker_pool_specs": [pool, *changes.pop("more_pools", [])],
            "service_account": f"trainer@{PROJECT}.iam.gserviceaccount.com",
            "network": "projects/123456789012/global/networks/ml",
            "base_output_directory": {"output_uri_prefix": f"{STAGING}/airflow-mlops/churn/{name}"},
            "scheduling": {"timeout": timedelta(hours=2)},
        },
    }
    return CustomJob(job)


def test_the_request_is_the_exact_custom_job_and_the_trigger_waits_for_it(world):
    fake, ctx = world.vertex, context("manual__request")
    lineage = Lineage(dag_id="churn__train", run_id="manual__request", task_id="train")
    fake.hold()
    op = operator(world, deferrable=True)
    try:
        with pytest.raises(TaskDeferred) as deferred:
            op.execute(ctx)
    finally:
        op.on_kill()  # the job is not wanted: cancelled while still queued
        fake.release()
    received = fake.requests[-1]
    assert received.parent == f"projects/{PROJECT}/locations/{REGION}"
    want = expected_job(world, lineage)
    assert CustomJob.to_dict(received.custom_job) == CustomJob.to_dict(want)
    assert received.custom_job == want
    assert list(received.custom_job.job_spec.worker_pool_specs[0].container_spec.command) == list(ENTRY_POINT)
    # the job's name is known (and logged) before the task waits; the trigger waits for that job
    job_id = op.job_name.rsplit("/", 1)[-1]
    assert op.job_name == f"projects/{PROJECT}/locations/{REGION}/customJobs/{job_id}"
    trigger = deferred.value.trigger
    assert deferred.value.method_name == "execute_complete"
    assert trigger.serialize() == (
        "mlops_airflow.operators.vertex.VertexCustomJobTrigger",
        {
            "project_id": PROJECT,
            "location": REGION,
            "custom_job_id": job_id,
            "gcp_conn_id": "google_cloud_default",
            "poll_interval": 0.05,
        },
    )
    assert through_serialisation(trigger).serialize() == trigger.serialize()


def test_accelerators_and_extra_replicas(world):
    op = operator(world)
    op.spec = world.spec(accelerator_type="NVIDIA_TESLA_T4", accelerator_count=2, replica_count=3)
    lineage = Lineage(dag_id="churn__train", run_id="manual__gpu", task_id="train")
    job = op.custom_job(context("manual__gpu"))
    pool = expected_job(world, lineage).job_spec.worker_pool_specs[0]
    pool.machine_spec.accelerator_type = AcceleratorType.NVIDIA_TESLA_T4
    pool.machine_spec.accelerator_count = 2
    workers = type(pool)(pool)
    workers.replica_count = 2  # Vertex wants one primary replica in the first pool, the rest after it
    assert list(job.job_spec.worker_pool_specs) == [pool, workers]
    request = CreateCustomJobRequest(parent=f"projects/{PROJECT}/locations/{REGION}", custom_job=job)
    assert vertex_fakes.invalid(request, PROJECT, REGION) is None  # Vertex would take it


def test_an_unknown_accelerator_fails_in_one_line_before_any_call(world):
    op = operator(world)
    op.spec = world.spec(accelerator_type="NVIDIA_TESLA_X99", accelerator_count=1)
    calls = len(world.vertex.calls)
    with pytest.raises(PipelineFailed) as failed:
        op.execute(context("manual__x99"))
    message = str(failed.value)
    assert "vertex.accelerator_type 'NVIDIA_TESLA_X99' is not a Vertex AI accelerator" in message
    assert "NVIDIA_TESLA_T4" in message and "\n" not in message
    assert world.vertex.calls[calls:] == ["ListCustomJobs"]  # looked for a running job, created none


def test_labels_that_are_not_google_cloud_labels_fail_without_retry(world):
    op = operator(world)
    op.spec = world.spec(labels={"Team": "ML"})
    with pytest.raises(PipelineFailed, match=r"vertex.labels Team: 'ML' is not a Google Cloud label"):
        op.execute(context("manual__labels"))


def test_a_request_vertex_refuses_fails_without_retry_in_one_line(world):
    op = operator(world)
    op.spec = world.spec(machine_type="N1-STANDARD-8")
    with pytest.raises(PipelineFailed) as failed:
        op.execute(context("manual__machine"))
    assert str(failed.value) == (
        f"pipeline churn: Vertex AI could not create the custom job in {PROJECT}/{REGION}: "
        "worker_pool_specs[0]: machine type 'N1-STANDARD-8' is not supported"
    )


# Running jobs -------------------------------------------------------------------------------------------
@dataclass
class Trained:
    """The module's one training job (sync), run by ``trained``."""

    op: VertexStageOperator
    ctx: dict[str, Any]
    result: dict[str, Any]
    versions_before: list[str]


@pytest.fixture(scope="module")
def trained(world: World) -> Trained:
    """Train churn once as a Vertex job, waiting in the worker (the provider hook's polling)."""
    before = versions(world)
    op, ctx = operator(world), context("manual__train")
    return Trained(op=op, ctx=ctx, result=op.execute(ctx), versions_before=before)


def run_of(world: World, op: VertexStageOperator) -> vertex_fakes.Run:
    """The fake's run of the job ``op`` submitted or adopted."""
    assert op.job_name, "the operator recorded no job"
    return world.vertex.runs[op.job_name.rsplit("/", 1)[-1]]


def test_train_registers_a_version_with_lineage_and_the_record_comes_back(world, trained):
    from mlflow import MlflowClient

    result, run = trained.result, run_of(world, trained.op)
    assert run.states == ["JOB_STATE_QUEUED", "JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"]
    assert "GetCustomJob" in world.vertex.calls  # the provider hook polled the job
    assert versions(world) == sorted([*trained.versions_before, result["version"]])
    client = MlflowClient(tracking_uri=world.mlflow, registry_uri=world.mlflow)
    tags = client.get_model_version("churn", result["version"]).tags
    assert (tags[AIRFLOW_DAG_ID], tags[AIRFLOW_RUN_ID], tags[AIRFLOW_TASK_ID]) == (
        "churn__train",
        "manual__train",
        "train",
    )
    record = read_record(trained.op.record_uri(trained.ctx))
    assert record is not None and record["status"] == "succeeded" and record["result"] == result
    # the entry point saw Vertex's variables and left a copy of the record in AIP_MODEL_DIR
    job_id = run.job.name.rsplit("/", 1)[-1]
    assert f"id {job_id}" in run.output and PROJECT in run.output  # the job named itself in its log
    model_dir = f"{run.job.job_spec.base_output_directory.output_uri_prefix}/model"
    assert storage.read_json(f"{model_dir}/result.json") == record


def test_a_retry_reuses_the_succeeded_record_without_a_new_job(world, trained):
    calls = len(world.vertex.calls)
    retry = operator(world)
    assert retry.execute(context("manual__train")) == trained.result
    assert world.vertex.calls[calls:] == []  # no list, no create: the record answered
    assert retry.job_name is None


def test_a_failed_job_fails_the_task_in_one_line_and_registers_nothing(world, trained):
    op = operator(world)
    op.spec = world.spec(environment={"MLOPS_DATA_ROOT": "gs://mlops-data/empty"})  # nothing published there
    before = versions(world)
    with pytest.raises(PipelineFailed) as failed:  # the entry point said: deterministic
        op.execute(context("manual__failed"))
    assert str(failed.value) == (
        "pipeline churn: train on vertex failed: pipeline churn: no validated dataset has been published yet"
    )
    run = run_of(world, op)
    assert run.states[-1] == "JOB_STATE_FAILED"
    assert run.job.error.message.startswith("The replica workerpool0-0 exited with a non-zero status of 2.")
    assert versions(world) == before
    op.on_kill()  # cancelling a job that already ended is a warning, not an error


def test_a_job_that_fails_before_its_record_reports_vertexs_error_in_one_line(world):
    op = operator(world)
    missing = f"{REGION}-docker.pkg.dev/{PROJECT}/mlops/airflow-mlops:9.9.9"
    op.spec = world.spec(image=missing)
    with pytest.raises(PipelineRetryable) as failed:
        op.execute(context("manual__image"))
    assert str(failed.value) == (
        f"pipeline churn: train on vertex failed: custom job {op.job_name}: "
        f"Unable to pull the image {missing}: manifest unknown"
    )


def test_on_kill_cancels_the_job_the_task_waits_for(world):
    import threading

    op, outcome = operator(world), {}

    def run() -> None:
        try:
            op.execute(context("manual__kill"))
        except Exception as exc:
            outcome["error"] = exc

    world.vertex.hold()
    waiting = threading.Thread(target=run)
    try:
        waiting.start()
        vertex_fakes.poll(lambda: op.job_name, 30, "the operator recorded no job")
        op.on_kill()
        waiting.join(timeout=30)
    finally:
        world.vertex.release()
    assert run_of(world, op).states == ["JOB_STATE_QUEUED", "JOB_STATE_CANCELLING", "JOB_STATE_CANCELLED"]
    assert run_of(world, op).process is None  # it never started
    assert isinstance(outcome["error"], PipelineRetryable)
    assert str(outcome["error"]).endswith(f"custom job {op.job_name}: The CustomJob has been cancelled.")


def test_a_retry_waits_for_the_running_job_of_its_lineage_and_a_deferred_kill_cancels_it(world):
    world.vertex.hold()
    try:
        first, second = operator(world, deferrable=True), operator(world, deferrable=True)
        with pytest.raises(TaskDeferred):
            first.execute(context("manual__adopt"))
        creates = world.vertex.calls.count("CreateCustomJob")
        with pytest.raises(TaskDeferred) as deferred:  # the next try, while the job is still queued
            second.execute(context("manual__adopt"))
        assert world.vertex.calls.count("CreateCustomJob") == creates  # adopted, not created again
        assert second.job_name == first.job_name
        trigger = through_serialisation(deferred.value.trigger)
        asyncio.run(trigger.on_kill())  # the user marks the deferred task failed
        vertex_fakes.poll(lambda: "JOB_STATE_CANCELLED" in run_of(world, second).states, 10, "not cancelled")
        event = first_event(trigger)  # the provider's trigger sees the end of the job
    finally:
        world.vertex.release()
    assert event.payload["status"] == "error" and event.payload["job"] == first.job_name
    with pytest.raises(PipelineRetryable, match=r"The CustomJob has been cancelled\.$"):
        operator(world, deferrable=True).execute_complete(context("manual__adopt"), event.payload)


def test_score_partition_deferred_then_resumed(world, trained):
    from include.mlops.model import registry
    from include.mlops.scoring.champion import resolve_champion
    from include.mlops.scoring.partitions import list_partitions
    from include.mlops.spec import find_spec

    spec = find_spec("churn")
    current = registry.aliases(spec, tracking_uri=world.mlflow)["champion"]
    version = trained.result["version"]
    registry.promote(
        spec, version=version, expected_champion=current, tracking_uri=world.mlflow, require_gate=False
    )
    champion = resolve_champion(spec, world.mlflow)
    (partition,) = list_partitions(spec)
    ctx = context("manual__score", task_id="score", map_index=0)
    op = operator(world, "score-partition", deferrable=True, partition=partition, champion=champion)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(ctx)
    polls = world.vertex.calls.count("GetCustomJob")
    event = first_event(through_serialisation(deferred.value.trigger))
    assert world.vertex.calls.count("GetCustomJob") > polls  # the trigger polled the async client
    assert event.payload["status"] == "success", event.payload
    resumed = operator(world, "score-partition", deferrable=True, partition=partition, champion=champion)
    result = resumed.execute_complete(ctx, event.payload)  # Airflow resumes a fresh operator
    assert result["rows"] == 200 and result["model_version"] == version
    assert storage.exists(result["output"])
    args = list(world.vertex.requests[-1].custom_job.job_spec.worker_pool_specs[0].container_spec.args)
    assert args[:2] == ["score-partition", "churn"] and args[args.index("--partition") + 1] == partition
    assert '"map_index":0' in args[args.index("--lineage") + 1]
