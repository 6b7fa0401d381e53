"""The production stack's supervisor: restarts what exits, leaves what is held, stops what is unhealthy."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tools.stack import Stack
from tools.supervisor import MAX_DELAY, MIN_DELAY, Supervisor

SLEEP = [sys.executable, "-c", "import time; time.sleep(600)"]


@pytest.fixture
def stack(tmp_path: Path):
    stack = Stack(state=tmp_path)
    yield stack
    stack.down(timeout=5)


def kill(stack: Stack, name: str) -> None:
    pid = stack.own_pid(name)
    assert pid is not None
    os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while stack.own_pid(name) is not None:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_component_that_exits_is_started_again_as_it_was(stack: Stack, tmp_path: Path) -> None:
    stack._spawn("worker-1", SLEEP, env={"PATH": "/usr/bin:/bin", "MARK": "x"}, cwd=tmp_path)
    first = stack.own_pid("worker-1")
    supervisor = Supervisor(stack, ["worker-1"])
    assert supervisor.run_once(now=0) == []  # alive: nothing to do
    kill(stack, "worker-1")
    assert supervisor.run_once(now=100) == []  # down: waits MIN_DELAY first
    assert supervisor.run_once(now=100 + MIN_DELAY) == ["worker-1"]
    second = stack.own_pid("worker-1")
    assert second is not None and second != first
    environ = Path(f"/proc/{second}/environ").read_bytes().split(b"\0")
    assert b"MARK=x" in environ  # the recorded environment, not the supervisor's
    assert Path(f"/proc/{second}/cwd").resolve() == tmp_path.resolve()


def test_a_held_component_stays_down(stack: Stack) -> None:
    stack._spawn("mlflow", SLEEP)
    (stack.run_dir / "mlflow.held").touch()
    kill(stack, "mlflow")
    supervisor = Supervisor(stack, ["mlflow"])
    assert supervisor.run_once(now=0) == [] and supervisor.run_once(now=1000) == []
    (stack.run_dir / "mlflow.held").unlink()
    supervisor.run_once(now=1001)
    assert supervisor.run_once(now=1001 + MIN_DELAY) == ["mlflow"]


def test_a_component_that_keeps_dying_waits_longer_each_time(stack: Stack) -> None:
    stack._spawn("scheduler", [sys.executable, "-c", "raise SystemExit(1)"])
    supervisor = Supervisor(stack, ["scheduler"])
    now, delays = 0.0, []
    for _ in range(8):
        while stack.own_pid("scheduler") is not None:
            time.sleep(0.05)
        supervisor.run_once(now=now)  # notices it is down
        delay = supervisor.watches["scheduler"].delay
        delays.append(delay)
        now += delay
        assert supervisor.run_once(now=now) == ["scheduler"]
        now += 1  # it dies again a second later
    assert delays[:3] == [MIN_DELAY, 2 * MIN_DELAY, 4 * MIN_DELAY] and delays[-1] == MAX_DELAY


class Health(BaseHTTPRequestHandler):
    answer: dict = {}

    def do_GET(self) -> None:
        body = json.dumps(Health.answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/api/v2/monitor/health"
    server.shutdown()


def test_a_component_unhealthy_too_long_is_stopped_and_started_again(stack: Stack, health: str) -> None:
    stack._spawn("scheduler", SLEEP)
    first = stack.own_pid("scheduler")
    supervisor = Supervisor(stack, ["scheduler"], health_url=health, health={"scheduler": "scheduler"})
    supervisor.unhealthy_after = 60
    # The database is down: nobody can heartbeat, so no verdict however long it lasts.
    Health.answer = {"metadatabase": {"status": "unhealthy"}, "scheduler": {"status": "unhealthy"}}
    supervisor.run_once(now=0)
    supervisor.run_once(now=100)
    assert stack.own_pid("scheduler") == first
    # The database is back and the scheduler's heartbeat stays stale: stopped after 60 s.
    Health.answer = {"metadatabase": {"status": "healthy"}, "scheduler": {"status": "unhealthy"}}
    supervisor.run_once(now=200)
    supervisor.run_once(now=250)
    assert stack.own_pid("scheduler") == first
    supervisor.run_once(now=260)
    assert stack.own_pid("scheduler") is None  # stopped; started again after the delay
    assert supervisor.run_once(now=260 + MIN_DELAY) == ["scheduler"]
    Health.answer = {"metadatabase": {"status": "healthy"}, "scheduler": {"status": "healthy"}}
    supervisor.run_once(now=1000)
    assert stack.own_pid("scheduler") not in (None, first)
