"""``KubernetesStageOperator`` for real: the provider's KubernetesPodOperator against the emulated cluster.

Sync and deferrable (the provider's ``KubernetesPodTrigger`` runs for real, serialised and rebuilt as
the triggerer does, then the task resumes by the method name it deferred with). The pods are the
project image running ``python -m include.mlops`` as local processes (``tests/backends/kube``), with
the data root mounted as the spec's ``data_volume`` and an ``mlflow server`` on 127.0.0.1 as the
tracking server. Failures come from a second image whose job does what a test asks (exit codes,
log lines, sleeping) or from the cluster (a missing image, no fitting node, a memory limit).
"""

from __future__ import annotations

import asyncio
import importlib
import os
import re
import threading
import time
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from airflow.sdk import Asset
from airflow.sdk.exceptions import AirflowException, AirflowFailException, TaskDeferred
from mlflow import MlflowClient

from include.mlops import tags
from include.mlops.data import ingest
from include.mlops.datagen import write_batch
from include.mlops.remote import Lineage, read_record, record, result_uri, write_record
from include.mlops.spec import find_spec
from mlops_airflow.exceptions import PipelineFailed, PipelineRetryable
from mlops_airflow.operators.kubernetes import KubernetesStageOperator
from tools.mlflow_server import MlflowServer

pytestmark = pytest.mark.backends

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "registry.example.com/ml/airflow-mlops:test"
FAKE_IMAGE = "registry.example.com/ml/fake-job:1.0"
CLAIM = "mlops-data"
# The fake image's job: what FAKE_JOB says ("exit <code> <line>...", "sleep <seconds>").
FAKE_MAIN = """
import os, sys, time
verb, *rest = os.environ["FAKE_JOB"].split(" ", 1)
if verb == "sleep":
    print("sleeping", flush=True)
    time.sleep(float(rest[0]))
    sys.exit(0)
code, *lines = rest[0].split("|")
for line in lines:
    print(line, flush=True)
sys.exit(int(code))
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory, kube_cluster):
    """Data root, specs, MLflow server, namespace and images shared by the module's tests."""
    root = tmp_path_factory.mktemp("kpo")
    data, pipelines, fake = root / "data", root / "pipelines", root / "fake-job"
    for folder in (data, pipelines, fake / "include" / "mlops"):
        folder.mkdir(parents=True)
    (fake / "include" / "__init__.py").write_text("")
    (fake / "include" / "mlops" / "__init__.py").write_text("")
    (fake / "include" / "mlops" / "__main__.py").write_text(FAKE_MAIN)
    server = MlflowServer(root / "mlflow")
    env = {
        "MLOPS_STATE_DIR": str(root / "state"),
        "MLOPS_DATA_ROOT": str(data),
        "MLOPS_PIPELINES_DIR": str(pipelines),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        **kube_cluster.airflow_conn_env(),
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        patch.delenv("AIRFLOW_CONN_MLFLOW_DEFAULT", raising=False)
        server.start().wait()
        patch.setenv("MLFLOW_TRACKING_URI", server.uri)
        namespace = kube_cluster.new_namespace("kpo")
        kube_cluster.add_volume_claim(namespace, CLAIM)
        # The project image ships the pipeline specs (here: the test's folder) like the DAGs do.
        kube_cluster.register_project_image(IMAGE, env={"MLOPS_PIPELINES_DIR": str(pipelines)})
        kube_cluster.register_image(
            FAKE_IMAGE, env={"PYTHONPATH": str(fake), "PYTHONUNBUFFERED": "1"}, workdir=str(fake)
        )
        try:
            yield SimpleNamespace(
                root=root,
                data=data,
                pipelines=pipelines,
                server=server,
                namespace=namespace,
                cluster=kube_cluster,
            )
        finally:
            server.stop()


def write_spec(world, name: str, **kubernetes: Any) -> str:
    """A churn-like pipeline ``name`` whose training and scoring run in pods of the module's namespace."""
    raw = yaml.safe_load((ROOT / "include" / "pipelines" / "churn.yaml").read_text(encoding="utf-8"))
    raw["name"] = name
    raw["registry"]["model_name"] = name
    raw["data"]["landing"] = f"{{MLOPS_DATA_ROOT}}/landing/{name}"
    raw["inference"].update(
        backend="kubernetes",
        input=f"{{MLOPS_DATA_ROOT}}/scoring/{name}",
        output=f"{{MLOPS_DATA_ROOT}}/predictions/{name}",
    )
    raw["monitoring"]["labels"]["uri"] = f"{{MLOPS_DATA_ROOT}}/labels/{name}"
    raw["training"]["backend"] = "kubernetes"
    raw["training"]["kubernetes"] = {
        "image": IMAGE,
        "namespace": world.namespace,
        "data_volume": {"claim_name": CLAIM, "mount_path": str(world.data)},
        **kubernetes,
    }
    (world.pipelines / f"{name}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return name


class TaskInstance(SimpleNamespace):
    """The part of the runtime task instance the operators use (the provider pushes the pod's name)."""

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value


def context_for(dag_id: str, task_id: str, run_id: str, *, map_index: int = -1) -> dict[str, Any]:
    ti = TaskInstance(
        dag_id=dag_id,
        task_id=task_id,
        run_id=run_id,
        map_index=map_index,
        try_number=1,
        xcoms={},
        start_date=None,
    )
    return {
        "ti": ti,
        "run_id": run_id,
        "dag": SimpleNamespace(dag_id=dag_id),
        "task": SimpleNamespace(task_id=task_id),
        "outlet_events": defaultdict(SimpleNamespace),
    }


def operator(
    pipeline: str, *, deferrable: bool, stage: str = "train", **kwargs: Any
) -> KubernetesStageOperator:
    return KubernetesStageOperator(
        task_id="train" if stage == "train" else "score",
        pipeline=pipeline,
        stage=stage,
        deferrable=deferrable,
        poll_interval=0.5,
        **kwargs,
    )


def run(op: KubernetesStageOperator, ctx: dict[str, Any]) -> Any:
    """Execute the task; when it defers, run the provider's trigger as the triggerer would, then resume."""
    try:
        return op.execute(ctx)
    except TaskDeferred as deferred:
        classpath, kwargs = deferred.trigger.serialize()
        module, name = classpath.rsplit(".", 1)
        trigger = getattr(importlib.import_module(module), name)(**kwargs)
        event = asyncio.run(first_event(trigger))
        fresh = operator(
            op.pipeline, deferrable=True, stage=op.stage, partition=op.partition, champion=op.champion
        )
        fresh.outlets = op.outlets
        return fresh.resume_execution(deferred.method_name, {**(deferred.kwargs or {}), "event": event}, ctx)


async def first_event(trigger) -> dict[str, Any]:
    async for event in trigger.run():
        return event.payload
    raise AssertionError("the trigger ended without an event")


def task_pods(world, ctx: dict[str, Any], *, ever: bool = False) -> list[dict[str, Any]]:
    """The pods (live, or ever created) of the task instance in ``ctx``, found by our lineage labels."""
    lineage = Lineage(
        dag_id=ctx["dag"].dag_id,
        run_id=ctx["run_id"],
        task_id=ctx["task"].task_id,
        map_index=ctx["ti"].map_index,
    )
    wanted = lineage.labels()
    pods = world.cluster.all_pods_ever(world.namespace) if ever else world.cluster.pods(world.namespace)
    return [p for p in pods if all(p["metadata"]["labels"].get(k) == v for k, v in wanted.items())]


def versions(world, model: str) -> list[Any]:
    return MlflowClient(world.server.uri).search_model_versions(f"name='{model}'")


@pytest.fixture(scope="module")
def published(world):
    """The ``kube`` pipeline with one validated batch published."""
    name = write_spec(world, "kube")
    spec = find_spec(name)
    write_batch(spec, "batch-1", rows=1500, seed=11, dataset="churn")
    for uri in ingest.discover(spec):
        ingest.ingest_file(spec, uri)
    return spec


@pytest.fixture(scope="module")
def trained_sync(world, published):
    """``train`` run in a pod by the sync operator (the deferrable one has its own test)."""
    ctx = context_for("kube__train", "train", "manual__sync")
    op = operator("kube", deferrable=False, outlets=[Asset("mlops.kube.candidate")])
    return SimpleNamespace(result=run(op, ctx), ctx=ctx, op=op)


def check_trained(world, result: dict[str, Any], ctx: dict[str, Any]) -> None:
    spec = find_spec("kube")
    found = read_record(result_uri(spec.uri("state"), Lineage(ctx["dag"].dag_id, ctx["run_id"], "train")))
    assert found and found["status"] == "succeeded" and found["result"] == result  # read back from the record
    version = MlflowClient(world.server.uri).get_model_version("kube", str(result["version"]))
    assert version.tags[tags.AIRFLOW_DAG_ID] == "kube__train"
    assert version.tags[tags.AIRFLOW_RUN_ID] == ctx["run_id"]
    assert version.tags[tags.AIRFLOW_TASK_ID] == "train"
    assert task_pods(world, ctx) == []  # deleted
    ever = task_pods(world, ctx, ever=True)
    assert len(ever) == 1 and ever[0]["status"]["phase"] == "Succeeded"
    assert ctx["ti"].xcoms["pod_name"] == ever[0]["metadata"]["name"]  # recorded before waiting


def test_train_in_a_pod(world, trained_sync, capfd):
    result, ctx = trained_sync.result, trained_sync.ctx
    assert {"version", "run_id", "experiment_id"} <= set(result)
    check_trained(world, result, ctx)
    assert ctx["outlet_events"][trained_sync.op.outlets[0]].extra == {
        "version": result["version"],
        "run_id": result["run_id"],
    }


def test_train_in_a_pod_deferred(world, published, capfd):
    ctx = context_for("kube__train", "train", "manual__deferred")
    result = run(operator("kube", deferrable=True), ctx)
    check_trained(world, result, ctx)
    assert "Result record (succeeded) written" in capfd.readouterr().out  # the job's log in the task log


def test_score_a_partition_in_a_pod(world, trained_sync):
    from include.mlops.model import registry
    from include.mlops.scoring.champion import resolve_champion
    from include.mlops.scoring.partitions import read_manifest

    spec = find_spec("kube")
    registry.promote(
        spec, version=str(trained_sync.result["version"]), expected_champion=None, require_gate=False
    )
    champion = resolve_champion(spec)
    partition = write_batch(
        spec, "score-001", rows=400, seed=21, id_offset=1_000_000, scoring=True, dataset="churn"
    )
    ctx = context_for("kube__inference", "score", "manual__score", map_index=0)
    op = operator("kube", deferrable=True, stage="score-partition", partition=partition, champion=champion)
    result = run(op, ctx)
    assert result["rows"] == 400 and str(result["model_version"]) == str(champion["version"])
    manifest = read_manifest(f"{spec.uri('predictions')}/score-001.parquet")
    assert manifest is not None and manifest["rows"] == 400
    assert task_pods(world, ctx) == [] and len(task_pods(world, ctx, ever=True)) == 1


@pytest.mark.parametrize(
    ("job", "error", "message"),
    [
        (
            "exit 2|reading the batch|error: column churned is missing",
            PipelineFailed,
            r"exited with code 2 \(Error\): .*column churned is missing",
        ),
        (
            "exit 75|error: MLflow is down",
            PipelineRetryable,
            r"exited with code 75 \(Error\): .*MLflow is down",
        ),
        (
            "exit 1|Traceback (most recent call last):|MemoryError: boom",
            PipelineRetryable,
            r"exited with code 1 \(Error\): .*MemoryError: boom",
        ),
    ],
)
def test_a_job_that_fails_without_a_record(world, job, error, message):
    name = write_spec(world, "fails", image=FAKE_IMAGE, env={"FAKE_JOB": job})
    ctx = context_for("fails__train", "train", f"manual__{job[:7].replace(' ', '_')}")
    with pytest.raises(error, match=message) as raised:
        run(operator(name, deferrable=False), ctx)
    assert type(raised.value) is error
    text = str(raised.value)
    assert "\n" not in text and text.startswith("pipeline fails: train on kubernetes failed: pod ")
    assert versions(world, "fails") == []  # nothing registered
    assert task_pods(world, ctx) == []


def test_the_record_wins_over_the_pod(world):
    """The job wrote a failed record saying 'do not retry' and then exited 1: the record decides."""
    name = write_spec(world, "recorded", image=FAKE_IMAGE, env={"FAKE_JOB": "exit 1|bye"})
    ctx = context_for("recorded__train", "train", "manual__recorded")
    uri = result_uri(find_spec(name).uri("state"), Lineage("recorded__train", "manual__recorded", "train"))
    write_record(
        uri,
        record("train", "failed", lineage=None, error="the gate failed: f1 0.31 < 0.40", deterministic=True),
    )
    with pytest.raises(PipelineFailed, match=re.escape("the gate failed: f1 0.31 < 0.40")):
        run(operator(name, deferrable=True), ctx)


@pytest.mark.parametrize("deferrable", [False, True])
def test_a_missing_image(world, deferrable):
    name = write_spec(world, "noimage", image="registry.example.com/ml/airflow-mlops:does-not-exist")
    ctx = context_for("noimage__train", "train", f"manual__noimage_{deferrable}")
    with pytest.raises(PipelineFailed) as raised:
        run(operator(name, deferrable=deferrable), ctx)
    assert re.search(
        r"^pipeline noimage: train on kubernetes failed: pod \S+ cannot pull image "
        r"registry.example.com/ml/airflow-mlops:does-not-exist \((ErrImagePull|ImagePullBackOff): not found\); "
        r"check kubernetes.image and kubernetes.image_pull_secrets$",
        str(raised.value),
    ), str(raised.value)
    assert versions(world, "noimage") == [] and task_pods(world, ctx) == []


@pytest.mark.parametrize("deferrable", [False, True])
def test_an_unschedulable_pod(world, deferrable):
    name = write_spec(world, "nogpu", node_selector={"accelerator": "nvidia-h100"}, schedule_timeout="2s")
    ctx = context_for("nogpu__train", "train", f"manual__nogpu_{deferrable}")
    started = time.monotonic()
    with pytest.raises(
        PipelineRetryable, match=r"was not scheduled within kubernetes.schedule_timeout \(2 s\): .*node"
    ) as raised:
        run(operator(name, deferrable=deferrable), ctx)
    assert not isinstance(raised.value, AirflowFailException)
    assert "check kubernetes.resources, node_selector and tolerations" in str(raised.value)
    assert time.monotonic() - started < 30
    assert task_pods(world, ctx) == [] and len(task_pods(world, ctx, ever=True)) == 1


def test_oom_killed(world, published):
    name = write_spec(world, "oom", resources={"limits": {"memory": "64Mi"}})
    ctx = context_for("oom__train", "train", "manual__oom")
    with pytest.raises(
        PipelineFailed,
        match=r"was OOMKilled \(exit code 137\).* its limit 64Mi; raise kubernetes.resources.limits.memory",
    ):
        run(operator(name, deferrable=True), ctx)
    assert versions(world, "oom") == [] and task_pods(world, ctx) == []


def test_the_active_deadline(world):
    name = write_spec(world, "slow", image=FAKE_IMAGE, env={"FAKE_JOB": "sleep 60"}, active_deadline="2s")
    ctx = context_for("slow__train", "train", "manual__slow")
    with pytest.raises(PipelineFailed, match=r"ran longer than kubernetes.active_deadline \(2 s\)"):
        run(operator(name, deferrable=False), ctx)
    assert task_pods(world, ctx) == []


def test_a_retry_reuses_the_finished_job(world, trained_sync):
    """The pod succeeded but the worker died before the task did: the retry creates no pod."""
    ctx = context_for("kube__train", "train", "manual__retried")
    uri = result_uri(find_spec("kube").uri("state"), Lineage("kube__train", "manual__retried", "train"))
    write_record(uri, record("train", "succeeded", lineage=None, result=trained_sync.result))
    assert run(operator("kube", deferrable=True), ctx) == trained_sync.result
    assert task_pods(world, ctx, ever=True) == []


def test_a_retry_that_reuses_the_record_deletes_the_earlier_pod(world, published):
    """The worker died after the pod succeeded and before the task resumed: the retry leaves no pod."""
    ctx = context_for("kube__train", "train", "manual__orphaned")
    with pytest.raises(TaskDeferred):
        operator("kube", deferrable=True).execute(ctx)  # the pod runs; the task's worker then dies
    deadline = time.monotonic() + 120
    while [p["status"].get("phase") for p in task_pods(world, ctx)] != ["Succeeded"]:
        assert time.monotonic() < deadline, "the pod did not succeed"
        time.sleep(0.2)
    result = run(operator("kube", deferrable=True), ctx)  # the retry
    check_trained(world, result, ctx)  # the record of the first try, and its pod deleted


def wait_running(world, ctx) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pods = task_pods(world, ctx)
        if pods and pods[0]["status"].get("phase") == "Running":
            return pods[0]
        time.sleep(0.1)
    raise AssertionError("the pod did not start running")


def wait_gone(world, ctx) -> None:
    deadline = time.monotonic() + 30
    while task_pods(world, ctx) or any(p["pod"].startswith("sleeper-") for p in world.cluster.processes()):
        assert time.monotonic() < deadline, "the pod is still there"
        time.sleep(0.1)


def test_killing_the_waiting_task_deletes_the_pod(world):
    name = write_spec(world, "sleeper", image=FAKE_IMAGE, env={"FAKE_JOB": "sleep 120"})
    ctx = context_for("sleeper__train", "train", "manual__killed_sync")
    op = operator(name, deferrable=False)
    outcome: list[BaseException | None] = []

    def execute() -> None:
        try:
            op.execute(ctx)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=execute, daemon=True)
    thread.start()
    wait_running(world, ctx)
    op.on_kill()  # what the task runner does when a user marks the running task failed
    wait_gone(world, ctx)
    thread.join(30)
    assert outcome and isinstance(outcome[0], AirflowException)  # the task does not succeed


def test_killing_the_deferred_task_deletes_the_pod(world):
    """Deferred, the task waits in the triggerer: Airflow 3.3 cancels the trigger and calls its on_kill."""
    name = write_spec(world, "sleeper", image=FAKE_IMAGE, env={"FAKE_JOB": "sleep 120"})
    ctx = context_for("sleeper__train", "train", "manual__killed_deferred")
    with pytest.raises(TaskDeferred) as deferred:
        operator(name, deferrable=True).execute(ctx)
    wait_running(world, ctx)
    classpath, kwargs = deferred.value.trigger.serialize()
    module, cls = classpath.rsplit(".", 1)
    trigger = getattr(importlib.import_module(module), cls)(**kwargs)

    async def user_kills() -> None:
        waiting = asyncio.create_task(first_event(trigger))
        await asyncio.sleep(1)
        waiting.cancel()
        await trigger.on_kill()

    asyncio.run(user_kills())
    wait_gone(world, ctx)


def test_a_missing_kubernetes_connection(world):
    name = write_spec(world, "noconn", kubernetes_conn_id="kube_prod")
    ctx = context_for("noconn__train", "train", "manual__noconn")
    with pytest.raises(
        PipelineFailed,
        match=r"the Kubernetes connection 'kube_prod' \(kubernetes.kubernetes_conn_id\) is not defined",
    ):
        run(operator(name, deferrable=False), ctx)
    assert task_pods(world, ctx, ever=True) == []


def test_a_pod_the_api_refuses(world):
    """A service account that does not exist: the API refuses the pod; a retry would be refused too."""
    name = write_spec(world, "nosa", service_account="trainer")
    ctx = context_for("nosa__train", "train", "manual__nosa")
    with pytest.raises(
        PipelineFailed,
        match=r"the Kubernetes API answered 403 Forbidden for the pod in namespace kpo-\w+: .*trainer",
    ) as raised:
        run(operator(name, deferrable=True), ctx)
    assert "\n" not in str(raised.value)
    assert task_pods(world, ctx, ever=True) == []


def test_no_pod_is_left_behind(world, trained_sync):
    """After every test above: nothing of this module still runs in the namespace."""
    assert world.cluster.pods(world.namespace) == []
    assert not [p for p in world.cluster.processes() if p.get("namespace") == world.namespace]
    assert os.environ["MLOPS_DATA_ROOT"] == str(world.data)
