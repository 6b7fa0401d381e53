"""A pipeline whose training and scoring run in Kubernetes pods, through the real Airflow scheduler.

Its own stack (scheduler, dag-processor, triggerer, API server), an emulated cluster
(``tests/backends/kube``: the API on 127.0.0.1, pods run as local processes of the project image) and an
``mlflow server`` as the tracking server (pods cannot use the embedded SQLite store). ``churn`` with
``training.backend`` and ``inference.backend`` ``kubernetes`` runs ingest -> train (a pod) -> gate ->
promote -> score (a pod per partition) -> drift; the model is the one the local backend trains on the
same data; killing the deferred train task through the API deletes its pod. The stack is the one
``make try-kube`` starts for any spec (``tools/kube_trial.py``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from include.mlops.remote import Lineage
from tests.backends.kube import KubeCluster
from tools.airflow_api import AirflowApi
from tools.kube_trial import trial
from tools.scenario import Driver, Outcome, run_short_path

pytestmark = [pytest.mark.e2e, pytest.mark.backends, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = "churn"  # the data generator knows churn and housing; this stack has only this spec
IMAGE = "registry.example.com/ml/airflow-mlops:e2e"
NAMESPACE = "mlops"
CLAIM = "mlops-data"
ROWS = 4000  # as the local lifecycle e2e: fewer rows miss the shipped gate (roc_auc >= 0.70)


def write_spec(folder: Path, data: Path) -> None:
    raw = yaml.safe_load((ROOT / "include" / "pipelines" / "churn.yaml").read_text(encoding="utf-8"))
    raw["training"]["backend"] = "kubernetes"
    raw["training"]["kubernetes"] = {
        "image": IMAGE,
        "namespace": NAMESPACE,
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
        "data_volume": {"claim_name": CLAIM, "mount_path": str(data)},
        "schedule_timeout": "2m",
    }
    raw["inference"]["backend"] = "kubernetes"  # scoring pods use training's section
    folder.mkdir(parents=True)
    (folder / "churn.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")


@pytest.fixture(scope="module")
def kube_stack(tmp_path_factory):
    """The trial stack (``tools.kube_trial``: test cluster, mlflow server, Airflow) with this spec."""
    root = tmp_path_factory.mktemp("kube-e2e")
    write_spec(root / "spec", root / "state" / "data")
    with trial(root / "spec" / "churn.yaml", root, announce=lambda line: None) as t:
        yield SimpleNamespace(api=t.api, cluster=t.cluster, server=t.server, root=root)


def pods_ever(cluster: KubeCluster, dag_id: str) -> list[dict[str, Any]]:
    return [
        p
        for p in cluster.all_pods_ever(NAMESPACE)
        if p["metadata"]["labels"].get("airflow-mlops/dag-id") == dag_id
    ]


def failed_task_logs(api: AirflowApi) -> str:
    """The end of every failed task's log, for the assertion message."""
    lines = []
    for dag_id in api.dag_ids():
        for run in api.runs(dag_id)[:3]:
            for ti in api.task_instances(dag_id, run["dag_run_id"]):
                if ti["state"] == "failed":
                    log = api.task_log(
                        dag_id, run["dag_run_id"], ti["task_id"], max(ti.get("try_number") or 1, 1), 15
                    )
                    lines.append(f"--- {dag_id} {ti['task_id']}:\n{log}")
    return "\n".join(lines)


def test_lifecycle_on_kubernetes(kube_stack):
    api, cluster = kube_stack.api, kube_stack.cluster
    assert api.import_errors() == []
    outcome = run_short_path(api, PIPELINE, rows=ROWS)
    assert outcome.failures == [], f"{outcome.steps}\n{failed_task_logs(api)}"
    assert [stage for stage, _, _ in outcome.steps] == ["ingest", "train", "evaluate", "promote", "inference"]
    assert outcome.facts["aliases"]["champion"] == outcome.facts["v1"]

    drift = Driver(api, Outcome(PIPELINE), timeout=600).trigger("drift")
    assert drift["state"] == "success", drift["tasks"]

    # One pod trained, one pod per scoring partition; each succeeded and was deleted.
    trained, scored = pods_ever(cluster, "churn__train"), pods_ever(cluster, "churn__inference")
    assert [p["status"]["phase"] for p in trained] == ["Succeeded"]
    assert [p["status"]["phase"] for p in scored] == ["Succeeded"]
    assert cluster.pods(NAMESPACE) == []
    (train_run,) = api.runs("churn__train")
    log = api.task_log("churn__train", train_run["dag_run_id"], "train", tail=400)
    assert "Result record (succeeded) written" in log  # the job's own log lines are in the task log

    # The same model as the local backend: training is seeded, the data are the same.
    from mlflow import MlflowClient

    from include.mlops.model import training
    from include.mlops.spec import find_spec

    client = MlflowClient(kube_stack.server.uri)
    version = client.get_model_version(PIPELINE, str(outcome.facts["v1"]))
    assert version.tags["airflow.dag_id"] == "churn__train"
    remote = client.get_run(version.run_id).data.metrics
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{kube_stack.root / 'local-backend.db'}"
    try:
        local = training.train(find_spec(PIPELINE)).metrics
    finally:
        os.environ["MLFLOW_TRACKING_URI"] = kube_stack.server.uri
    assert local and set(local) <= set(remote)
    assert {k: round(remote[k], 9) for k in local} == {k: round(v, 9) for k, v in local.items()}


def test_killing_the_train_task_leaves_no_pod(kube_stack):
    api, cluster = kube_stack.api, kube_stack.cluster
    dag_id = "churn__train"
    api.unpause(dag_id)
    run_id = api.trigger(dag_id)
    digest = Lineage(dag_id=dag_id, run_id=run_id, task_id="train").digest()

    def ours() -> list[dict[str, Any]]:
        return [
            p
            for p in cluster.pods(NAMESPACE)
            if p["metadata"]["labels"].get("airflow-mlops/run-digest") == digest
        ]

    deadline = time.monotonic() + 300
    while True:  # the pod runs and the task waits for it in the triggerer
        ti = api.task_instance(dag_id, run_id, "train")
        # Airflow calls the trigger's on_kill only for a trigger the triggerer runs: a task killed in
        # the second between deferring and the triggerer picking it up leaves its pod to finish alone.
        picked_up = ti.get("state") == "deferred" and (ti.get("trigger") or {}).get("triggerer_id")
        running = [p for p in ours() if p["status"].get("phase") == "Running"]
        if picked_up and running:
            break
        assert ti.get("state") not in ("success", "failed") and time.monotonic() < deadline, (ti, ours())
        time.sleep(0.5)
    pod_name = running[0]["metadata"]["name"]

    api.mark_task(dag_id, run_id, "train", "failed")

    deadline = time.monotonic() + 120
    while ours() or any(p["pod"] == pod_name for p in cluster.processes()):
        assert time.monotonic() < deadline, f"pod {pod_name} is still there after the task was killed"
        time.sleep(0.5)
    assert api.wait_run(dag_id, run_id, timeout=120)["state"] == "failed"
    killed = [p for p in cluster.all_pods_ever(NAMESPACE) if p["metadata"]["name"] == pod_name]
    assert killed and killed[0]["status"]["phase"] != "Succeeded"  # deleted while it ran, not after
