"""Issue 10: MLflow's artifact download progress bars stay out of task logs (stderr)."""

from __future__ import annotations

import pytest

from include.mlops import tracking


def _download_artifacts(state, tmp_path) -> None:
    import mlflow

    tracking.client()
    folder = tmp_path / "files"
    folder.mkdir()
    for i in range(3):
        (folder / f"f{i}.txt").write_text("x" * 10)
    with mlflow.start_run(experiment_id=tracking.ensure_experiment("progress")) as run:
        mlflow.log_artifacts(str(folder), "data")
    mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="data", dst_path=str(tmp_path / "dl")
    )


def test_downloading_artifacts_draws_no_progress_bar(state, tmp_path, monkeypatch, capfd):
    monkeypatch.delenv(tracking.PROGRESS_BAR_ENV, raising=False)
    _download_artifacts(state, tmp_path)
    captured = capfd.readouterr()
    assert "Downloading artifacts" not in captured.err + captured.out


@pytest.mark.parametrize("setting", ["true", "false"])
def test_the_users_own_setting_is_kept(state, monkeypatch, setting):
    monkeypatch.setenv(tracking.PROGRESS_BAR_ENV, setting)
    tracking.client()
    import os

    assert os.environ[tracking.PROGRESS_BAR_ENV] == setting


def test_without_the_setting_mlflow_would_draw_a_bar(state, tmp_path, monkeypatch, capfd):
    """Guards the test above: the bar really shows when it is on."""
    monkeypatch.setenv(tracking.PROGRESS_BAR_ENV, "true")
    _download_artifacts(state, tmp_path)
    assert "Downloading artifacts" in capfd.readouterr().err
