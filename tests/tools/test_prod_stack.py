"""The native production stack's configuration and its PID files, without starting anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tools.prod_stack import BUCKETS, ProdStack, worker_hostname
from tools.stack import Stack, start_time


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ProdStack:
    stack = ProdStack(state=tmp_path / "prod", airflow_port=18090, mlflow_port=15090)
    (stack.state / "postgres").mkdir(parents=True)
    (stack.state / "postgres" / "password").write_text("pg-secret\n")
    (stack.state / "postgres" / "port").write_text("15432\n")
    monkeypatch.setenv("MLOPS_DATA_ROOT", "/somewhere/local")  # the caller's environment never leaks in
    return stack


def test_production_env_is_the_whole_shared_configuration(stack: ProdStack) -> None:
    env = stack.production_env()
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("@127.0.0.1:15432/airflow")
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://mlops:pg-secret@")
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://:")
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18090/execution/"
    assert env["MLOPS_DATA_ROOT"] == f"s3://{BUCKETS['data']}"
    assert env["MLOPS_COORDINATION_URL"].endswith("/mlops")
    assert env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:15090"
    assert env["AWS_ENDPOINT_URL_S3"] == env["MLFLOW_S3_ENDPOINT_URL"] == stack.s3_url
    for key in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY", "AIRFLOW__CORE__FERNET_KEY"):
        assert len(env[key]) >= 32
    assert "PATH" not in env and "MLOPS_STATE_DIR" not in env  # settings only; no host folder


def test_secrets_are_generated_once_per_stack_and_private(stack: ProdStack) -> None:
    first = stack.production_env()
    again = ProdStack(state=stack.state, airflow_port=18090, mlflow_port=15090).production_env()
    assert first == again
    assert stack.config_file.stat().st_mode & 0o077 == 0
    other = ProdStack(state=stack.state.parent / "other", airflow_port=18090, mlflow_port=15090)
    (other.state / "postgres").mkdir(parents=True)
    (other.state / "postgres" / "password").write_text("x\n")
    assert other.production_env()["AIRFLOW__API_AUTH__JWT_SECRET"] != first["AIRFLOW__API_AUTH__JWT_SECRET"]


def test_workers_share_no_folder(stack: ProdStack) -> None:
    one, two = stack.worker_env(1), stack.worker_env(2)
    keys = ("MLOPS_STATE_DIR", "AIRFLOW_HOME", "AIRFLOW__LOGGING__BASE_LOG_FOLDER", "HOME", "TMPDIR")
    for key in keys:
        assert one[key] != two[key] and Path(one[key]).is_relative_to(stack.worker_dir(1))
        assert not Path(one[key]).is_relative_to(stack.control_dir)
    assert (one["MLOPS_WORKER_HOSTNAME"], two["MLOPS_WORKER_HOSTNAME"]) == ("worker-1", "worker-2")
    assert one["AIRFLOW__CORE__HOSTNAME_CALLABLE"] == "tools.prod_stack.worker_hostname"


def test_worker_hostname(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_WORKER_HOSTNAME", "worker-7")
    assert worker_hostname() == "worker-7"


def test_a_recycled_pid_is_never_taken_for_ours(tmp_path: Path) -> None:
    stack = Stack(state=tmp_path)
    proc = stack._spawn("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], env={})
    try:
        assert stack.own_pid("sleeper") == proc.pid and stack.running() == ["sleeper"]
        assert (stack.run_dir / "sleeper.started").read_text() == start_time(proc.pid)
        # the PID file now names a process that is not the one we started (another start time)
        (stack.run_dir / "sleeper.started").write_text("1")
        assert stack.own_pid("sleeper") is None and stack.running() == []
        assert not (stack.run_dir / "sleeper.pid").exists()
        stack.down(timeout=1)
        assert proc.poll() is None, "down signalled a process that was not its own"
    finally:
        proc.kill()
        proc.wait()
    stack._spawn("quick", [sys.executable, "-c", "pass"], env={})
    subprocess.run(["sleep", "0.5"], check=True)
    assert stack.running() == []  # exited (and reaped): its PID file is stale


def test_down_stops_what_a_dead_leader_left_in_its_group(tmp_path: Path) -> None:
    stack = Stack(state=tmp_path)
    leader = stack._spawn("leader", ["sh", "-c", "sleep 60 & echo $! > child; exit 0"], env={}, cwd=tmp_path)
    leader.wait()
    child = int((tmp_path / "child").read_text())
    assert stack.running() == []  # the leader is gone ...
    stack.down(timeout=2)  # ... but its group is still ours: the child is stopped too
    state = (
        Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if Path(f"/proc/{child}").exists()
        else "gone"
    )
    assert state in {"gone", "Z"}, state
