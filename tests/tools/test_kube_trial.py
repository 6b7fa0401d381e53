"""``tools.kube_trial`` refuses, in one line and before starting anything, a spec it cannot try.

The trial itself (a spec's lifecycle on the test cluster) is what the Kubernetes end-to-end test
runs: ``tests/e2e/test_kubernetes_backend_e2e.py`` uses the same ``trial`` stack.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tools import kube_trial

pytestmark = pytest.mark.backends

ROOT = Path(__file__).resolve().parents[2]


def spec_file(tmp_path: Path, *, name: str = "churn", kubernetes: dict | None = None) -> Path:
    raw = yaml.safe_load((ROOT / "include" / "pipelines" / "churn.yaml").read_text(encoding="utf-8"))
    raw["name"] = name
    if kubernetes is not None:
        raw["training"]["backend"] = "kubernetes"
        raw["training"]["kubernetes"] = kubernetes
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def refusal(capsys, *argv: str) -> str:
    assert kube_trial.main(list(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kube_trial: ") and "\n" not in err and "Traceback" not in err
    return err


def test_a_missing_file(tmp_path, capsys):
    assert "no such file" in refusal(capsys, str(tmp_path / "nope.yaml"))


def test_a_spec_without_a_kubernetes_backend(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MLOPS_STATE_DIR", str(tmp_path / "state"))
    err = refusal(capsys, str(spec_file(tmp_path)), "--workdir", str(tmp_path / "w"))
    assert "neither training.backend nor inference.backend is kubernetes" in err


def test_a_kubernetes_spec_without_a_data_volume_is_refused_by_the_loader(tmp_path, capsys):
    path = spec_file(tmp_path, kubernetes={"image": "registry.example.com/ml/app:1"})
    err = refusal(capsys, str(path), "--workdir", str(tmp_path / "w"))
    assert "kubernetes.data_volume" in err


def test_a_pipeline_the_data_generator_does_not_know_needs_dataset(tmp_path, capsys):
    path = spec_file(tmp_path, name="retention")
    assert "--dataset churn|housing" in refusal(capsys, str(path))


def test_the_mount_path_is_read_before_the_spec_is_loaded(tmp_path):
    volume = {"claim_name": "data", "mount_path": str(tmp_path / "mnt")}
    path = spec_file(tmp_path, kubernetes={"image": "registry.example.com/ml/app:1", "data_volume": volume})
    assert kube_trial.declared_mount(path) == str(tmp_path / "mnt")
    shutil.copy(path, tmp_path / "broken.yaml")
    (tmp_path / "broken.yaml").write_text(": not yaml [", encoding="utf-8")
    assert kube_trial.declared_mount(tmp_path / "broken.yaml") is None
