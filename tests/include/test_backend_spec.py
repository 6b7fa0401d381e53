"""The remote backends' spec sections: every rule refuses a mistake in one line naming file and field.

A spec is validated when it loads, so that a GPU count without a GPU type, data a job cannot reach
or a malformed role ARN is an import error naming the file, not a failed cloud job an hour later.
"""

from __future__ import annotations

from typing import Any

import pytest

from include.mlops.errors import SpecError
from include.mlops.spec import PipelineSpec, parse_spec

pytestmark = pytest.mark.backends

SOURCE = "pipelines/demo.yaml"
ESTIMATOR = "sklearn.linear_model.LogisticRegression"
IMAGE = "registry.example.com/ml/airflow-mlops:1.4.0"
KUBERNETES = {"image": IMAGE, "namespace": "ml-jobs"}
SAGEMAKER = {
    "image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/airflow-mlops:1.4.0",
    "role_arn": "arn:aws:iam::123456789012:role/SageMakerRole",
    "output_path": "s3://ml-out/churn",
}
VERTEX = {
    "project": "mlops-test",
    "region": "europe-west4",
    "image": "europe-west4-docker.pkg.dev/mlops-test/ml/airflow-mlops:1.4.0",
    "staging_bucket": "gs://ml-staging",
}
STORES = {"s3": "s3://ml-data", "gs": "gs://ml-data", "local": "/mnt/data"}


def raw_spec(
    training: dict[str, Any] | None = None, inference: dict[str, Any] | None = None, store: str = "s3"
) -> dict[str, Any]:
    """A spec whose data (and scoring input / output) live on ``store``."""
    root = STORES[store]
    return {
        "name": "demo",
        "data": {"landing": f"{root}/landing", "target": "y", "task": "classification", "id_column": "id"},
        "validation": {"suite": "include/expectations/churn.json"},
        "training": {"estimator": ESTIMATOR, **(training or {})},
        "evaluation": {"primary_metric": "roc_auc"},
        "inference": {"input": f"{root}/scoring", "output": f"{root}/predictions", **(inference or {})},
    }


def load(raw: dict[str, Any], store: str, monkeypatch: pytest.MonkeyPatch) -> PipelineSpec:
    """``parse_spec`` with ``MLOPS_DATA_ROOT`` on ``store``."""
    monkeypatch.setenv("MLOPS_DATA_ROOT", STORES[store])
    return parse_spec(raw, SOURCE)


def refusal(raw: dict[str, Any], store: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The one line ``parse_spec`` refuses ``raw`` with."""
    with pytest.raises(SpecError) as error:
        load(raw, store, monkeypatch)
    lines = str(error.value).splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{SOURCE}: ")
    return lines[0]


def training(backend: str, **section: Any) -> dict[str, Any]:
    """``training:`` on ``backend`` with that backend's section."""
    return {"backend": backend, backend: section}


# Each rule: the spec, its data store, the field the line must name and what it must say.
RULES = [
    pytest.param(
        training("vertex", **VERTEX, accelerator_count=2), "gs",
        "training.vertex:", "accelerator_count 2 needs accelerator_type (e.g. NVIDIA_TESLA_T4)",
        id="gpu-count-without-a-type",
    ),
    pytest.param(
        training("vertex", **VERTEX, accelerator_type="NVIDIA_TESLA_T4"), "gs",
        "training.vertex:", "accelerator_type NVIDIA_TESLA_T4 needs accelerator_count >= 1",
        id="gpu-type-without-a-count",
    ),
    pytest.param(
        training("kubernetes", **KUBERNETES, resources={"requests": {"nvidia.com/gpu": "1"}}), "s3",
        "training.kubernetes.resources:", "nvidia.com/gpu must be set in limits",
        id="kubernetes-gpu-request-without-limit",
    ),
    pytest.param(
        training("kubernetes", **KUBERNETES, resources={"limits": {"nvidia.com/gpu": "0.5"}}), "s3",
        "training.kubernetes.resources:", "GPUs are whole devices",
        id="kubernetes-fractional-gpu",
    ),
    pytest.param(
        training("sagemaker", **SAGEMAKER), "local",
        "training.backend 'sagemaker'", "cannot reach the datasets location file:///mnt/data/datasets/demo: use s3://",
        id="sagemaker-local-data-root",
    ),
    pytest.param(
        training("vertex", **VERTEX), "s3",
        "training.backend 'vertex'", "cannot reach the datasets location s3://ml-data/datasets/demo: use gs://",
        id="vertex-s3-data-root",
    ),
    pytest.param(
        training("kubernetes", **KUBERNETES), "local",
        "training.backend 'kubernetes'", "or mount it with kubernetes.data_volume",
        id="kubernetes-local-data-root-without-volume",
    ),
    pytest.param(
        training("kubernetes", **KUBERNETES, data_volume={"claim_name": "ml-data", "mount_path": "/mnt/other"}),
        "local", "training.backend 'kubernetes'", "cannot reach the datasets location file:///mnt/data/datasets/demo",
        id="kubernetes-volume-not-covering-the-data-root",
    ),
    pytest.param(
        training("sagemaker", **{k: v for k, v in SAGEMAKER.items() if k != "role_arn"}), "s3",
        "training.sagemaker.role_arn:", "Field required",
        id="missing-role-arn",
    ),
    pytest.param(
        training("sagemaker", **{**SAGEMAKER, "role_arn": "arn:aws:iam::1234:role/SageMakerRole"}), "s3",
        "training.sagemaker.role_arn:", "is not an IAM role ARN such as arn:aws:iam::123456789012:role/",
        id="malformed-role-arn",
    ),
    pytest.param(
        training("sagemaker", **SAGEMAKER, instance_type="m5.xlarge"), "s3",
        "training.sagemaker.instance_type:", "'m5.xlarge' is not a SageMaker instance type such as ml.m5.xlarge",
        id="bad-instance-type",
    ),
    pytest.param(
        training("sagemaker", **SAGEMAKER, spot=True, max_wait="8h"), "s3",
        "training.sagemaker:", "spot: true needs checkpoint_uri",
        id="spot-without-checkpoint-uri",
    ),
    pytest.param(
        training("sagemaker", **SAGEMAKER, spot=True, checkpoint_uri="s3://ml-out/checkpoints"), "s3",
        "training.sagemaker:", "spot: true needs max_wait",
        id="spot-without-max-wait",
    ),
    pytest.param(
        training("sagemaker", **SAGEMAKER, spot=True, checkpoint_uri="s3://ml-out/c", max_wait="1h"), "s3",
        "training.sagemaker:", "max_wait (3600s) must be at least max_runtime (21600s)",
        id="spot-max-wait-shorter-than-max-runtime",
    ),
    pytest.param(
        training("sagemaker", **SAGEMAKER, max_wait="8h"), "s3",
        "training.sagemaker:", "max_wait only applies with spot: true",
        id="max-wait-without-spot",
    ),
    pytest.param(
        training("sagemaker", **{**SAGEMAKER, "output_path": "gs://ml-out"}), "s3",
        "training.sagemaker.output_path:", "must be an s3:// URI",
        id="sagemaker-output-not-on-s3",
    ),
    pytest.param(
        training("vertex", **{**VERTEX, "staging_bucket": "s3://ml-staging"}), "gs",
        "training.vertex.staging_bucket:", "must be a gs:// URI",
        id="vertex-staging-not-on-gcs",
    ),
    pytest.param(
        training("kubernetes", image="registry.example.com/ml/airflow-mlops"), "s3",
        "training.kubernetes.image:", "has no tag or digest; pin the image the job runs",
        id="unpinned-image",
    ),
    pytest.param(
        training("kubernetes", image="airflow-mlops:1.4.0"), "s3",
        "training.kubernetes.image:", "is not a registry-qualified image reference",
        id="image-without-registry",
    ),
    pytest.param(
        {"backend": "sagemaker"}, "s3",
        "training:", "backend 'sagemaker' needs a 'sagemaker:' section",
        id="training-backend-without-its-section",
    ),
    pytest.param(
        training("kubernetes", **{**KUBERNETES, "namespace": "ML_Jobs"}), "s3",
        "training.kubernetes.namespace:", "is not a Kubernetes name",
        id="bad-namespace",
    ),
    pytest.param(
        training("kubernetes", **KUBERNETES, tpyo=1), "s3",
        "training.kubernetes.tpyo:", "unknown field (check its spelling against docs/spec.md)",
        id="unknown-field",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("training_part", "store", "field", "message"), RULES)
def test_every_rule_is_one_line_naming_file_and_field(training_part, store, field, message, monkeypatch):
    line = refusal(raw_spec(training_part, store=store), store, monkeypatch)
    assert field in line and message in line, line


def test_kubernetes_local_data_root_is_fine_when_the_data_volume_covers_it(monkeypatch):
    volume = {"claim_name": "ml-data", "mount_path": "/mnt/data"}
    spec = load(
        raw_spec(training("kubernetes", **KUBERNETES, data_volume=volume), store="local"),
        "local",
        monkeypatch,
    )
    backend, section = spec.backend_of("training")
    assert backend == "kubernetes" and section is not None
    assert section.data_volume is not None and section.data_volume.mount_path == "/mnt/data"


def test_inference_falls_back_to_the_training_section_of_the_same_backend(monkeypatch):
    spec = load(raw_spec(training("sagemaker", **SAGEMAKER), {"backend": "sagemaker"}), "s3", monkeypatch)
    assert spec.backend_of("inference") == ("sagemaker", spec.training.sagemaker)
    assert spec.inference.parallelism == 4


def test_inference_uses_its_own_section_first(monkeypatch):
    own = {**KUBERNETES, "image": "registry.example.com/ml/airflow-mlops:1.5.0"}
    spec = load(
        raw_spec(
            training("kubernetes", **KUBERNETES),
            {"backend": "kubernetes", "kubernetes": own, "parallelism": 16},
        ),
        "s3",
        monkeypatch,
    )
    backend, section = spec.backend_of("inference")
    assert backend == "kubernetes" and section is not None and section.image.endswith(":1.5.0")
    assert spec.backend_of("training")[1] is spec.training.kubernetes
    assert spec.inference.parallelism == 16


def test_inference_on_a_backend_with_no_section_anywhere(monkeypatch):
    line = refusal(raw_spec(inference={"backend": "vertex"}, store="gs"), "gs", monkeypatch)
    assert "inference.backend 'vertex' needs an 'inference.vertex:' or a 'training.vertex:' section" in line


def test_remote_inference_checks_its_own_locations(monkeypatch):
    raw = raw_spec(
        training("sagemaker", **SAGEMAKER),
        {"backend": "sagemaker", "input": "/mnt/in", "output": "s3://ml-data/predictions"},
    )
    line = refusal(raw, "s3", monkeypatch)
    assert "inference.backend 'sagemaker' cannot reach the scoring location file:///mnt/in: use s3://" in line


def test_inference_parallelism_is_bounded(monkeypatch):
    line = refusal(raw_spec(inference={"parallelism": 0}), "s3", monkeypatch)
    assert "inference.parallelism:" in line


def test_a_local_spec_needs_no_backend_section_and_reaches_any_store(monkeypatch):
    spec = load(raw_spec(store="local"), "local", monkeypatch)
    assert spec.backend_of("training") == ("local", None)
    assert spec.backend_of("inference") == ("local", None)


@pytest.mark.parametrize(
    ("text", "seconds"), [("45m", 2700), ("12h", 43200), ("2d", 172800), (900, 900), ("600", 600)]
)
def test_durations_are_read_in_one_syntax(text, seconds, monkeypatch):
    spec = load(raw_spec(training("kubernetes", **KUBERNETES, active_deadline=text)), "s3", monkeypatch)
    assert spec.training.kubernetes is not None and spec.training.kubernetes.active_deadline == seconds


def test_every_mistake_is_listed_not_only_the_first(monkeypatch):
    section = {**SAGEMAKER, "role_arn": "role", "instance_type": "big", "volume_size_gb": 0}
    with pytest.raises(SpecError) as error:
        load(raw_spec(training("sagemaker", **section)), "s3", monkeypatch)
    fields = [line.split(": ")[1] for line in str(error.value).splitlines()]
    assert fields == [
        "training.sagemaker.role_arn",
        "training.sagemaker.instance_type",
        "training.sagemaker.volume_size_gb",
    ]
