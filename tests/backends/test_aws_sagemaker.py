"""The SageMaker backend: the amazon provider's real operators and trigger against moto's server.

Jobs really run: ``sagemaker_jobs.SageMakerJobs`` moves each job from InProgress to Completed or
Failed by running the project's entry point in SageMaker's file layout against moto's S3, with an
``mlflow server`` on 127.0.0.1 as the tracking server the job logs to.
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from airflow.sdk.exceptions import TaskDeferred

from include.mlops import storage
from include.mlops.errors import NothingToDo, SpecError
from include.mlops.remote import read_record
from include.mlops.tags import AIRFLOW_DAG_ID, AIRFLOW_RUN_ID, AIRFLOW_TASK_ID
from mlops_airflow.exceptions import PipelineFailed, PipelineRetryable
from mlops_airflow.operators.sagemaker import SageMakerJobTrigger, SageMakerStageOperator
from tests.backends.sagemaker_jobs import (
    ACCOUNT,
    ROOT,
    SageMakerJobs,
    check_request,
    running,
    task_context,
    wait_until,
)
from tools.mlflow_server import mlflow_server

pytestmark = pytest.mark.backends

BUCKET = "mlops-lake"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/SageMakerRole"
IMAGE = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/airflow-mlops:1.0.0"
SECTION = {
    "image": IMAGE,
    "role_arn": ROLE,
    "instance_type": "ml.m5.xlarge",
    "output_path": f"s3://{BUCKET}/sagemaker-output",
    "max_runtime": "1h",
    "tags": {"team": "ml-platform"},
}
# Pipelines of the test image: churn (data published), and variants that differ in one thing.
VARIANTS: dict[str, dict[str, Any]] = {
    "churn": {},
    "attrition": {},  # no data published: the job fails for a deterministic reason
    "churnoff": {  # the job cannot reach MLflow: a transient failure
        "environment": {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    },
    "churnbig": {"instance_type": "ml.m5.huge"},  # well-formed, but SageMaker has no such type
    "churnrole": {"role_arn": f"arn:aws:iam::{ACCOUNT}:role/NoSuchRole"},  # SageMaker cannot assume it
    "churnspot": {
        "spot": True,
        "max_wait": "2h",
        "checkpoint_uri": f"s3://{BUCKET}/checkpoints/churn",
        "vpc": {"subnets": ["subnet-0123abcd"], "security_group_ids": ["sg-0123abcd"]},
        "instance_count": 2,
    },
}


def write_spec(folder: Path, name: str, sagemaker: dict[str, Any]) -> Path:
    raw = yaml.safe_load((ROOT / "include" / "pipelines" / "churn.yaml").read_text())
    raw["name"] = name
    raw["registry"]["model_name"] = name
    raw["training"]["backend"] = "sagemaker"
    raw["training"]["sagemaker"] = sagemaker
    raw["inference"]["backend"] = "sagemaker"
    raw["monitoring"].pop("labels", None)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    """Moto (S3, SageMaker, IAM, Logs) with running jobs, an MLflow server, the pipelines' specs in
    the "image", the data root on moto's S3 and churn's first batch published there."""
    root = tmp_path_factory.mktemp("sagemaker")
    pipelines = root / "pipelines"
    pipelines.mkdir()
    for name, changes in VARIANTS.items():
        write_spec(pipelines, name, {**SECTION, **changes})
    image_env = {
        "PYTHONPATH": str(ROOT),
        "MLOPS_PIPELINES_DIR": str(pipelines),
        "GX_ANALYTICS_ENABLED": "False",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    with (
        pytest.MonkeyPatch.context() as env,
        running(SageMakerJobs(root / "jobs", image_env)) as jobs,
        mlflow_server(root / "mlflow") as mlflow,
    ):
        env.setenv("MLOPS_STATE_DIR", str(root / "state"))
        env.setenv("MLOPS_PIPELINES_DIR", str(pipelines))
        env.setenv("MLOPS_DATA_ROOT", f"s3://{BUCKET}/lake")
        env.setenv("MLFLOW_TRACKING_URI", mlflow.uri)
        env.setenv("AIRFLOW_CONN_AWS_DEFAULT", jobs.connection())
        env.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", mlflow.connection())
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL_S3": jobs.endpoint,  # s3fs (the core's storage) in this process
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
        }.items():
            env.setenv(name, value)
        jobs.client("s3").create_bucket(Bucket=BUCKET)
        jobs.client("iam").create_role(
            RoleName="SageMakerRole",
            AssumeRolePolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "sagemaker.amazonaws.com"},
                            "Action": "sts:AssumeRole",
                        }
                    ],
                }
            ),
        )
        publish(pipelines)
        yield SimpleNamespace(jobs=jobs, mlflow=mlflow, pipelines=pipelines, root=root)


def publish(pipelines: Path) -> None:
    """churn's first validated batch on moto's S3, through the core's own ingestion."""
    from include.mlops.data import ingest
    from include.mlops.datagen import write_batch
    from include.mlops.spec import find_spec

    spec = find_spec("churn")
    write_batch(spec, "batch1", rows=800, seed=11)
    for uri in ingest.discover(spec):
        ingest.ingest_file(spec, uri)


def operator(pipeline: str = "churn", stage: str = "train", **kwargs: Any) -> SageMakerStageOperator:
    task_id = "train" if stage == "train" else "score"
    kwargs.setdefault("deferrable", False)
    return SageMakerStageOperator(task_id=task_id, stage=stage, pipeline=pipeline, poll_interval=1, **kwargs)


def context(op: SageMakerStageOperator, run_id: str, **kwargs: Any) -> dict[str, Any]:
    dag = f"{op.pipeline}__{'train' if op.stage == 'train' else 'inference'}"
    return task_context(op, dag_id=dag, run_id=run_id, **kwargs)


def versions(platform, model: str) -> list[Any]:
    from mlflow import MlflowClient

    return list(MlflowClient(platform.mlflow.uri).search_model_versions(f"name = '{model}'"))


def pinned_champion_like() -> dict[str, Any]:
    """The shape of the ``resolve`` task's XCom value (a pinned version with its input columns)."""
    columns = [
        "tenure_months", "monthly_charges", "total_charges", "contract", "payment_method",
        "internet_service", "support_calls", "senior", "partner", "dependents", "paperless_billing",
    ]  # fmt: skip
    return {
        "model": "churn",
        "version": "3",
        "model_uri": "models:/churn/3",
        "mlflow_run_id": "0123456789abcdef0123456789abcdef",
        "inputs": [{"name": c, "type": "double"} for c in columns],
        "resolved_at": 1767225600.0,
    }


async def first_event(trigger: Any) -> Any:
    async for event in trigger.run():
        return event
    raise AssertionError("the trigger ended without an event")


def run_in_thread(fn: Any, *args: Any) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = fn(*args)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


# The requests ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("pipeline", ["churn", "churnspot"])
def test_the_training_request_is_valid_for_the_service_model(platform, pipeline):
    op = operator(pipeline)
    ctx = context(op, "manual__request", try_number=3)
    config = op.request(ctx)
    assert check_request("CreateTrainingJob", config) == []
    assert config["TrainingJobName"] == f"{op.job_prefix(ctx)}-3"
    assert config["AlgorithmSpecification"] == {"TrainingImage": IMAGE, "TrainingInputMode": "File"}
    assert json.loads(config["HyperParameters"]["lineage"]) == {
        "dag_id": f"{pipeline}__train",
        "run_id": "manual__request",
        "task_id": "train",
        "map_index": -1,
    }
    assert config["HyperParameters"]["pipeline"] == pipeline
    assert config["HyperParameters"]["result_uri"] == op.record_uri(ctx)
    assert config["HyperParameters"]["result_uri"].startswith(f"s3://{BUCKET}/lake/state/{pipeline}/jobs/")
    assert config["Environment"]["MLFLOW_TRACKING_URI"] == platform.mlflow.uri
    assert config["Environment"]["MLOPS_DATA_ROOT"] == f"s3://{BUCKET}/lake"
    tags = {t["Key"]: t["Value"] for t in config["Tags"]}
    assert tags["airflow-mlops:dag-id"] == f"{pipeline}__train"
    assert tags["airflow-mlops:run-id"] == "manual__request"
    assert tags["team"] == "ml-platform"
    if pipeline == "churnspot":
        assert config["EnableManagedSpotTraining"] is True
        assert config["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
        assert config["CheckpointConfig"]["S3Uri"] == f"s3://{BUCKET}/checkpoints/churn"
        assert config["VpcConfig"] == {"Subnets": ["subnet-0123abcd"], "SecurityGroupIds": ["sg-0123abcd"]}
        assert config["ResourceConfig"]["InstanceCount"] == 2
    else:
        assert "EnableManagedSpotTraining" not in config and "VpcConfig" not in config


def test_the_processing_request_is_valid_for_the_service_model(platform):
    partition = f"s3://{BUCKET}/lake/scoring/churn/2026-01-01"
    op = operator("churnspot", "score-partition", partition=partition, champion=pinned_champion_like())
    ctx = context(op, "scheduled__2026-01-01T00:00:00+00:00", map_index=4)
    config = op.request(ctx)
    assert check_request("CreateProcessingJob", config) == []
    app = config["AppSpecification"]
    assert app["ImageUri"] == IMAGE
    assert app["ContainerEntrypoint"] == ["python", "-m", "include.mlops"]
    assert app["ContainerArguments"][:2] == ["score-partition", "churnspot"]
    assert partition in app["ContainerArguments"]
    # the pinned champion is longer than SageMaker's 256 characters per argument: passed by URI
    champion_uri = app["ContainerArguments"][app["ContainerArguments"].index("--champion") + 1]
    assert champion_uri == op.record_uri(ctx).removesuffix(".json") + ".champion.json"
    assert storage.read_json(champion_uri) == pinned_champion_like()
    assert config["NetworkConfig"]["VpcConfig"]["Subnets"] == ["subnet-0123abcd"]
    assert config["ProcessingResources"]["ClusterConfig"]["InstanceType"] == "ml.m5.xlarge"
    assert config["ProcessingJobName"].startswith("churnspot-score-")


def test_an_invalid_request_is_caught_by_the_check():
    """The check can fail: a name with '_', a 300-character argument, an unknown instance type."""
    problems = check_request(
        "CreateProcessingJob",
        {
            "ProcessingJobName": "bad_name",
            "AppSpecification": {"ImageUri": IMAGE, "ContainerArguments": ["x" * 300]},
            "ProcessingResources": {
                "ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.huge", "VolumeSizeInGB": 30}
            },
            "RoleArn": ROLE,
        },
    )
    assert len(problems) == 3, problems


# Bad input: refused before any job runs ---------------------------------------------------------------
def test_an_unknown_instance_type_fails_before_any_request(platform):
    before = len(platform.jobs.created)
    op = operator("churnbig")
    with pytest.raises(PipelineFailed) as failed:
        op.execute(context(op, "manual__big"))
    message = str(failed.value)
    assert "\n" not in message
    assert "training.sagemaker.instance_type 'ml.m5.huge' is an unknown instance type" in message
    assert "valid: ml.m5.large" in message or "valid: ml.m5.xlarge" in message
    assert len(platform.jobs.created) == before
    assert op.job_name is None


def test_a_malformed_role_arn_is_a_spec_error(tmp_path):
    from include.mlops.spec import load_spec

    path = write_spec(tmp_path, "churnarn", {**SECTION, "role_arn": "SageMakerRole"})
    with pytest.raises(SpecError) as error:
        load_spec(path)
    lines = str(error.value).splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"{path}: training.sagemaker.role_arn:")
    assert "is not an IAM role ARN" in lines[0]


def test_a_role_sagemaker_cannot_assume_fails_in_one_line(platform):
    op = operator("churnrole")
    with pytest.raises(PipelineFailed) as failed:
        op.execute(context(op, "manual__role"))
    message = str(failed.value)
    assert "\n" not in message
    assert "SageMaker refused the training job churnrole-train-" in message
    assert f"Could not assume role arn:aws:iam::{ACCOUNT}:role/NoSuchRole" in message
    assert "check training.sagemaker (role_arn" in message
    assert op.job_name not in platform.jobs.runs
    assert versions(platform, "churnrole") == []


# Stopping ---------------------------------------------------------------------------------------------
def test_on_kill_stops_the_job_the_task_is_waiting_for(platform):
    op = operator()
    ctx = context(op, "manual__kill")
    platform.jobs.hold(op.job_prefix(ctx))  # instances "provisioning": the job stays InProgress
    try:
        thread, outcome = run_in_thread(op.execute, ctx)
        name = wait_until(lambda: op.job_name in platform.jobs.runs and op.job_name, what="job created")
        op.on_kill()
        thread.join(timeout=60)
        assert not thread.is_alive()
    finally:
        platform.jobs.release(op.job_prefix(ctx))
    assert platform.jobs.wait(name) == "Stopped"
    error = outcome["error"]
    assert isinstance(error, PipelineRetryable)
    assert f"SageMaker training job {name} stopped" in str(error)


def test_a_killed_deferred_task_stops_its_job(platform):
    from airflow.sdk.module_loading import import_string

    op = operator(deferrable=True)
    ctx = context(op, "manual__kill-deferred")
    platform.jobs.hold(op.job_prefix(ctx))
    try:
        with pytest.raises(TaskDeferred) as deferred:
            op.execute(ctx)
        trigger = deferred.value.trigger
        assert isinstance(trigger, SageMakerJobTrigger)
        classpath, kwargs = trigger.serialize()
        rebuilt = import_string(classpath)(**kwargs)  # what the triggerer runs
        asyncio.run(rebuilt.on_kill())
    finally:
        platform.jobs.release(op.job_prefix(ctx))
    assert platform.jobs.wait(op.job_name) == "Stopped"


def test_an_infrastructure_failure_is_retried_with_sagemakers_reason(platform):
    op = operator()
    ctx = context(op, "manual__capacity")
    reason = "CapacityError: Unable to provision requested ML compute capacity.\nPlease retry using a different ML instance type."
    platform.jobs.fail_next(op.job_prefix(ctx), reason)
    with pytest.raises(PipelineRetryable) as retry:
        op.execute(ctx)
    message = str(retry.value)
    assert "\n" not in message
    assert message.endswith(
        f"SageMaker training job {op.job_name} failed: CapacityError: Unable to provision requested ML "
        "compute capacity. Please retry using a different ML instance type."
    )
    assert platform.jobs.runs[op.job_name].job.failure_reason == reason


# Jobs that run the entry point -----------------------------------------------------------------------
def test_a_training_job_registers_a_version_with_lineage_and_a_retry_reuses_it(platform, capsys):
    op = operator()
    ctx = context(op, "manual__sync")
    before = len(platform.jobs.names())
    result = op.execute(ctx)
    name = op.job_name
    assert platform.jobs.names()[before:] == [name]
    assert platform.jobs.runs[name].status == "Completed"
    # what went over the wire is a valid CreateTrainingJob request
    sent = {k: v for k, v in platform.jobs.created[-1].items() if k != "kind"}
    assert check_request("CreateTrainingJob", sent) == []
    assert "ContainerEntrypoint" not in sent["AlgorithmSpecification"]
    # the job registered the version with the task instance's lineage; the task read it back
    version = {v.version: v for v in versions(platform, "churn")}[result["version"]]
    assert version.tags[AIRFLOW_DAG_ID] == "churn__train"
    assert version.tags[AIRFLOW_RUN_ID] == "manual__sync"
    assert version.tags[AIRFLOW_TASK_ID] == "train"
    assert read_record(op.record_uri(ctx))["result"] == result
    task_log = capsys.readouterr().out
    assert f"Job log /aws/sagemaker/TrainingJobs:{name}/algo-1-" in task_log
    assert "| INFO include.mlops.model.training: Fitting" in task_log  # the job's own output
    # a retry finds the succeeded record: no second job
    again = operator()
    assert again.execute(context(again, "manual__sync", try_number=2)) == result
    assert platform.jobs.names()[before:] == [name]


def test_a_deferred_training_job_resumes_through_the_providers_trigger(platform):
    """Try 1 defers (the provider's trigger, wrapped); the worker dies; try 2 finds the job still in
    progress and waits for it instead of starting another; both triggers fire; the task resumes."""
    from airflow.sdk.module_loading import import_string

    first = operator(deferrable=True)
    ctx1 = context(first, "manual__deferred")
    prefix = first.job_prefix(ctx1)
    platform.jobs.hold(prefix)
    try:
        with pytest.raises(TaskDeferred) as deferred1:
            first.execute(ctx1)
        second = operator(deferrable=True)
        ctx2 = context(second, "manual__deferred", try_number=2)
        with pytest.raises(TaskDeferred) as deferred2:
            second.execute(ctx2)
    finally:
        platform.jobs.release(prefix)
    assert second.job_name == first.job_name == f"{prefix}-1"
    assert [n for n in platform.jobs.names() if n.startswith(prefix)] == [first.job_name]
    triggers = []
    for deferred in (deferred1.value, deferred2.value):
        assert deferred.method_name == "execute_complete"
        classpath, kwargs = deferred.trigger.serialize()
        assert classpath == "mlops_airflow.operators.sagemaker.SageMakerJobTrigger"
        assert json.loads(json.dumps(kwargs)) == kwargs
        triggers.append(import_string(classpath)(**kwargs))

    async def both() -> list[Any]:
        return await asyncio.wait_for(asyncio.gather(*(first_event(t) for t in triggers)), timeout=180)

    events = asyncio.run(both())
    assert [e.payload["status"] for e in events] == ["success", "success"]
    resumed = operator(deferrable=True)  # Airflow resumes a fresh instance by the method's name
    result = getattr(resumed, deferred2.value.method_name)(ctx2, event=events[1].payload)
    assert result["version"] in {v.version for v in versions(platform, "churn")}
    assert resumed.job_name == first.job_name


@pytest.mark.parametrize(
    ("pipeline", "raised", "reason"),
    [
        ("attrition", PipelineFailed, "no validated dataset has been published yet"),
        ("churnoff", PipelineRetryable, "127.0.0.1:9"),
    ],
)
def test_a_failed_job_fails_the_task_as_its_record_says(platform, pipeline, raised, reason):
    op = operator(pipeline)
    ctx = context(op, f"manual__{pipeline}")
    with pytest.raises(raised) as failed:
        op.execute(ctx)
    assert raised is PipelineRetryable or not isinstance(failed.value, PipelineRetryable)
    message = str(failed.value)
    assert "\n" not in message
    assert reason in message
    run = platform.jobs.runs[op.job_name]
    assert run.status == "Failed"
    assert "\n" not in message and reason in run.job.failure_reason, run.job.failure_reason
    assert read_record(op.record_uri(ctx))["status"] == "failed"
    assert versions(platform, pipeline) == []


def test_a_processing_job_scores_one_partition_with_the_champion(platform):
    from include.mlops.datagen import write_batch
    from include.mlops.model import registry, training
    from include.mlops.scoring.champion import resolve_champion
    from include.mlops.scoring.partitions import list_partitions
    from include.mlops.spec import find_spec

    spec, uri = find_spec("churn"), platform.mlflow.uri
    # the champion: the newest version a training job above registered (else one trained here)
    known = sorted(versions(platform, "churn"), key=lambda v: int(v.version))
    version = known[-1].version if known else training.train(spec, tracking_uri=uri).version
    current = registry.aliases(spec, tracking_uri=uri)["champion"]
    registry.promote(
        spec, version=version, expected_champion=current, tracking_uri=uri, reason="test", require_gate=False
    )
    champion = resolve_champion(spec, uri)
    write_batch(spec, "2026-01-02", rows=300, seed=5, scoring=True)
    partition = list_partitions(spec)[0]

    op = operator("churn", "score-partition", partition=partition, champion=champion)
    ctx = context(op, "manual__score", map_index=0)
    manifest = op.execute(ctx)
    run = platform.jobs.runs[op.job_name]
    assert run.kind == "Processing" and run.status == "Completed"
    sent = {k: v for k, v in platform.jobs.created[-1].items() if k != "kind"}
    assert check_request("CreateProcessingJob", sent) == []
    assert manifest["rows"] == 300
    assert str(manifest["model_version"]) == version
    assert read_record(op.record_uri(ctx))["result"] == manifest
    with pytest.raises(NothingToDo):  # the partition is committed: nothing left to score
        list_partitions(spec)
