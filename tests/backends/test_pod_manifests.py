"""Every pod the Kubernetes backend renders is valid for Kubernetes 1.30 and the newest schema bundled.

The pod is the one the provider's real ``KubernetesPodOperator`` would create (its
``build_pod_request_obj``), built by ``KubernetesStageOperator`` from a pipeline spec, serialised the way
the kubernetes client sends it, and validated strictly (unknown fields are errors) with
``kubernetes-validate``. No cluster needed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import kubernetes_validate
import pytest
import yaml
from airflow.sdk.exceptions import AirflowFailException
from kubernetes.client import ApiClient

from include.mlops.remote import ENTRY_POINT, Lineage
from mlops_airflow.operators.kubernetes import KubernetesStageOperator

pytestmark = pytest.mark.backends

ROOT = Path(__file__).resolve().parents[2]
VERSIONS = ("1.30.0", "1.37.0")  # the oldest supported and the newest kubernetes-validate bundles
IMAGE = "registry.example.com/ml/airflow-mlops:1.4.0"
DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@pytest.fixture
def pipelines(tmp_path: Path, state: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "pipelines"
    folder.mkdir()
    monkeypatch.setenv("MLOPS_PIPELINES_DIR", str(folder))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.mlops.svc:5000")
    monkeypatch.delenv("AIRFLOW_CONN_MLFLOW_DEFAULT", raising=False)
    return folder


def write_spec(folder: Path, name: str, kubernetes: dict[str, Any], *, inference: bool = False) -> None:
    raw = yaml.safe_load((ROOT / "include" / "pipelines" / "churn.yaml").read_text(encoding="utf-8"))
    raw["name"] = name
    raw["registry"]["model_name"] = name
    raw["training"]["backend"] = "kubernetes"
    raw["training"]["kubernetes"] = {"image": IMAGE, **kubernetes}
    if inference:
        raw["inference"]["backend"] = "kubernetes"
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")


def context(dag_id: str, task_id: str, *, map_index: int = -1) -> dict[str, Any]:
    run_id = "scheduled__2025-06-01T00:00:00+00:00"
    ti = SimpleNamespace(dag_id=dag_id, task_id=task_id, run_id=run_id, map_index=map_index, try_number=2)
    return {
        "ti": ti,
        "run_id": run_id,
        "dag": SimpleNamespace(dag_id=dag_id),
        "task": SimpleNamespace(task_id=task_id),
    }


def render(
    pipeline: str, *, stage: str = "train", deferrable: bool = True, **kwargs: Any
) -> tuple[Any, dict]:
    """The provider operator the task would run and the pod manifest it would submit, as JSON."""
    task_id = "train" if stage == "train" else "score"
    operator = KubernetesStageOperator(
        task_id=task_id, pipeline=pipeline, stage=stage, deferrable=deferrable, **kwargs
    )
    if stage == "train":
        ctx = context(f"{pipeline}__train", task_id)
    else:  # the fourth partition of a mapped scoring task
        ctx = context(f"{pipeline}__inference", task_id, map_index=3)
    pod_operator = operator.pod_operator(ctx)
    pod = pod_operator.build_pod_request_obj(ctx, dry_run=True)
    return pod_operator, ApiClient().sanitize_for_serialization(pod)


LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


def validate(manifest: dict) -> None:
    for version in VERSIONS:
        kubernetes_validate.validate(manifest, desired_version=version, strict=True)
    # The schema does not check label syntax; the API server does (a 422 for the whole pod).
    bad = {k: v for k, v in manifest["metadata"]["labels"].items() if not LABEL_VALUE.match(v)}
    assert not bad, bad


def container(manifest: dict) -> dict:
    containers = manifest["spec"]["containers"]
    assert [c["name"] for c in containers] == ["base"]  # no XCom sidecar
    return containers[0]


def env(manifest: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container(manifest).get("env", [])}


def test_minimal_pod(pipelines, monkeypatch):
    monkeypatch.setenv("MLOPS_DATA_ROOT", "s3://ml-data/mlops")
    write_spec(pipelines, "minimal", {})
    pod_operator, manifest = render("minimal")
    validate(manifest)

    base = container(manifest)
    assert base["image"] == IMAGE
    assert base["command"] == list(ENTRY_POINT)
    lineage = Lineage(dag_id="minimal__train", run_id="scheduled__2025-06-01T00:00:00+00:00", task_id="train")
    assert base["args"] == [
        "train",
        "minimal",
        "--lineage",
        lineage.to_json(),
        "--result-uri",
        "s3://ml-data/mlops/state/minimal/jobs/minimal__train/scheduled__2025-06-01T00_00_00_00_00/train.json",
    ]
    assert env(manifest) == {
        "MLFLOW_TRACKING_URI": "http://mlflow.mlops.svc:5000",
        "MLOPS_DATA_ROOT": "s3://ml-data/mlops",
        "PYTHONUNBUFFERED": "1",
    }
    assert base["terminationMessagePolicy"] == "FallbackToLogsOnError"
    spec = manifest["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["activeDeadlineSeconds"] == 6 * 3600
    assert not spec.get("volumes") and not base.get("resources")
    meta = manifest["metadata"]
    assert meta["namespace"] == "default"
    name = meta["name"]
    assert len(name) <= 63 and DNS_1123.match(name)
    assert name.startswith(lineage.job_name("minimal", "train", max_length=54))
    labels = meta["labels"]
    assert {k: labels[k] for k in lineage.labels()} == lineage.labels()
    assert labels["airflow-mlops/map-index"] == "none"
    assert labels["app.kubernetes.io/managed-by"] == "airflow-mlops"
    assert labels["airflow-mlops/pipeline"] == "minimal" and labels["airflow-mlops/stage"] == "train"
    # the provider's own labels, which it uses to find the pod again on a retry
    assert labels["dag_id"] == "minimal__train" and labels["task_id"] == "train"
    assert labels["try_number"] == "2" and labels["kubernetes_pod_operator"] == "True"

    # what happens around the pod: nothing left behind, no sidecar, logs in the task log
    assert pod_operator.on_finish_action.value == "delete_pod"
    assert pod_operator.on_kill_action.value == "delete_pod"
    assert pod_operator.do_xcom_push is False and pod_operator.get_logs is True
    assert pod_operator.log_events_on_failure is True
    assert pod_operator.durable is True and pod_operator.reattach_on_restart is True
    assert pod_operator.deferrable is True
    assert pod_operator.kubernetes_conn_id == "kubernetes_default"
    assert pod_operator.schedule_timeout_seconds == 300 and pod_operator.startup_timeout_seconds == 300


def test_gpu_pod_with_node_selector_and_tolerations(pipelines, monkeypatch):
    monkeypatch.setenv("MLOPS_DATA_ROOT", "gs://ml-data/mlops")
    write_spec(
        pipelines,
        "gpu",
        {
            "namespace": "ml-training",
            "resources": {
                "requests": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
                "limits": {"memory": "16Gi", "nvidia.com/gpu": "1"},
            },
            "node_selector": {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"},
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                {"key": "spot", "value": "true", "effect": "NoExecute", "toleration_seconds": 600},
            ],
            "active_deadline": "2h",
            "schedule_timeout": "15m",
        },
    )
    pod_operator, manifest = render("gpu", deferrable=False)
    validate(manifest)
    base = container(manifest)
    assert base["resources"] == {
        "requests": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
        "limits": {"memory": "16Gi", "nvidia.com/gpu": "1"},
    }
    spec = manifest["spec"]
    assert spec["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}
    assert spec["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {
            "key": "spot",
            "operator": "Equal",
            "value": "true",
            "effect": "NoExecute",
            "tolerationSeconds": 600,
        },
    ]
    assert spec["activeDeadlineSeconds"] == 7200
    assert manifest["metadata"]["namespace"] == "ml-training"
    assert pod_operator.schedule_timeout_seconds == 900 and pod_operator.deferrable is False


def test_data_volume_is_mounted_where_the_data_root_is(pipelines, tmp_path, monkeypatch):
    root = tmp_path / "shared"
    monkeypatch.setenv("MLOPS_DATA_ROOT", str(root))
    write_spec(
        pipelines,
        "shared",
        {"data_volume": {"claim_name": "mlops-data", "mount_path": str(root)}},
        inference=True,
    )
    _, manifest = render(
        "shared",
        stage="score-partition",
        partition=f"file://{root}/scoring/shared/p-3",
        champion={"version": "4"},
    )
    validate(manifest)
    spec = manifest["spec"]
    assert spec["volumes"] == [{"name": "mlops-data", "persistentVolumeClaim": {"claimName": "mlops-data"}}]
    base = container(manifest)
    assert base["volumeMounts"] == [{"name": "mlops-data", "mountPath": str(root)}]
    assert env(manifest)["MLOPS_DATA_ROOT"] == f"file://{root}"
    args = base["args"]
    assert args[:2] == ["score-partition", "shared"]
    assert args[args.index("--partition") + 1] == f"file://{root}/scoring/shared/p-3"
    assert args[args.index("--champion") + 1] == '{"version":"4"}'
    assert args[args.index("--result-uri") + 1].endswith(
        "/jobs/shared__inference/scheduled__2025-06-01T00_00_00_00_00/score.3.json"
    )
    labels = manifest["metadata"]["labels"]
    assert labels["airflow-mlops/map-index"] == "3" and labels["map_index"] == "3"
    assert labels["airflow-mlops/stage"] == "score-partition"


def test_secrets_service_account_and_labels(pipelines, monkeypatch):
    monkeypatch.setenv("MLOPS_DATA_ROOT", "s3://ml-data/mlops")
    monkeypatch.setenv(
        "AIRFLOW_CONN_MLFLOW_DEFAULT",
        '{"conn_type": "http", "host": "mlflow.internal", "port": 5000, "login": "bot", "password": "pw"}',
    )
    write_spec(
        pipelines,
        "secrets",
        {
            "service_account": "trainer",
            "image_pull_policy": "IfNotPresent",
            "image_pull_secrets": ["registry-creds"],
            "env_from_secrets": ["mlflow-creds", "s3-creds"],
            "env": {
                "MLFLOW_TRACKING_URI": "http://mlflow.mlops.svc.cluster.local:5000",
                "OMP_NUM_THREADS": "4",
            },
            "labels": {"team": "ml-platform", "app.kubernetes.io/managed-by": "someone-else"},
            "annotations": {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"},
        },
    )
    _, manifest = render("secrets")
    validate(manifest)
    spec, base = manifest["spec"], container(manifest)
    assert spec["serviceAccountName"] == "trainer"
    assert spec["imagePullSecrets"] == [{"name": "registry-creds"}]
    assert base["imagePullPolicy"] == "IfNotPresent"
    assert base["envFrom"] == [{"secretRef": {"name": "mlflow-creds"}}, {"secretRef": {"name": "s3-creds"}}]
    variables = env(manifest)
    assert (
        variables["MLFLOW_TRACKING_URI"] == "http://mlflow.mlops.svc.cluster.local:5000"
    )  # the section wins
    assert variables["OMP_NUM_THREADS"] == "4"
    assert variables["MLFLOW_TRACKING_USERNAME"] == "bot" and variables["MLFLOW_TRACKING_PASSWORD"] == "pw"
    meta = manifest["metadata"]
    assert meta["labels"]["team"] == "ml-platform"
    assert (
        meta["labels"]["app.kubernetes.io/managed-by"] == "airflow-mlops"
    )  # ours win: cleanup selects on it
    assert meta["annotations"] == {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"}


def test_pod_template_file_is_the_base_of_the_pod(pipelines, tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_DATA_ROOT", "s3://ml-data/mlops")
    template = tmp_path / "pod-template.yaml"
    template.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"labels": {"cost-center": "ml"}},
                "spec": {
                    "priorityClassName": "batch-low",
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "fsGroup": 1000},
                    "containers": [
                        {
                            "name": "base",
                            "image": "placeholder.example.com/x:1",
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                            },
                            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                        }
                    ],
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}],
                },
            }
        ),
        encoding="utf-8",
    )
    write_spec(
        pipelines, "templated", {"pod_template_file": str(template), "resources": {"limits": {"cpu": "2"}}}
    )
    _, manifest = render("templated")
    validate(manifest)
    spec, base = manifest["spec"], container(manifest)
    assert spec["priorityClassName"] == "batch-low"
    assert spec["securityContext"] == {"runAsNonRoot": True, "runAsUser": 1000, "fsGroup": 1000}
    assert base["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True}
    assert base["image"] == IMAGE and base["command"] == list(ENTRY_POINT)  # the spec wins over the template
    assert base["resources"] == {"limits": {"cpu": "2"}}
    assert {"name": "tmp", "mountPath": "/tmp"} in base["volumeMounts"]
    assert manifest["metadata"]["labels"]["cost-center"] == "ml"
    assert manifest["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "airflow-mlops"


def test_a_missing_pod_template_file_is_a_clear_error(pipelines, monkeypatch):
    monkeypatch.setenv("MLOPS_DATA_ROOT", "s3://ml-data/mlops")
    write_spec(pipelines, "notemplate", {"pod_template_file": "deploy/no-such-template.yaml"})
    with pytest.raises(
        AirflowFailException, match=r"pod_template_file .*no-such-template.yaml does not exist"
    ):
        render("notemplate")


def test_an_invalid_label_is_a_clear_error(pipelines, monkeypatch):
    monkeypatch.setenv("MLOPS_DATA_ROOT", "s3://ml-data/mlops")
    write_spec(pipelines, "badlabel", {"labels": {"team": "ML platform!"}})
    with pytest.raises(
        AirflowFailException, match=r"kubernetes.labels team: 'ML platform!' is not a Kubernetes label"
    ):
        render("badlabel")


def test_a_local_tracking_store_is_refused(pipelines, monkeypatch):
    monkeypatch.setenv("MLOPS_DATA_ROOT", "s3://ml-data/mlops")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    write_spec(pipelines, "sqlite", {})
    with pytest.raises(AirflowFailException, match="needs an MLflow tracking server the job can reach"):
        render("sqlite")


def test_the_strict_schema_would_catch_a_bad_pod(pipelines, monkeypatch):
    monkeypatch.setenv("MLOPS_DATA_ROOT", "s3://ml-data/mlops")
    write_spec(pipelines, "strict", {})
    _, manifest = render("strict")
    container(manifest)["resourcez"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(manifest, desired_version=VERSIONS[0], strict=True)


def test_importing_the_operator_imports_no_kubernetes_client():
    code = (
        "import sys, mlops_airflow.operators.kubernetes\n"
        "bad = [m for m in ('kubernetes', 'kubernetes_asyncio', 'airflow.providers.cncf.kubernetes.operators.pod')"
        " if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        cwd=ROOT,
        env={"PYTHONPATH": f"{ROOT}:{ROOT}/plugins", "PATH": "/usr/bin:/bin"},
    )
