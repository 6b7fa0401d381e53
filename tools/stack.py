"""The embedded default stack: Airflow (SQLite, LocalExecutor) and MLflow as local processes.

``python -m tools.stack up|down|status|prepare``. Everything lives under the git-ignored state folder;
ports listen on 127.0.0.1 only. The demo and the end-to-end tests use the same code.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from include.mlops.tracking import embedded_store

ROOT = Path(__file__).resolve().parents[1]
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
ADMIN = ("admin", "admin")


def mlflow_server_argv(port: int, *options: str) -> list[str]:
    """``mlflow server`` on 127.0.0.1:``port`` with one worker, plus ``options`` (stores, auth app)."""
    argv = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    return [*argv, "--workers", "1", *options]


def parallelism(cpus: int | None = None) -> int:
    """Task slots of the embedded LocalExecutor: two per CPU (at least 4).

    The stages are mostly CPU-bound, so more slots than that only slows each task down; two per CPU
    keep the CPUs busy while some tasks wait on MLflow, SQLite or the object store. Waiting sensors
    are deferred to the triggerer and take no slot. The workers are forked from the scheduler and
    share the preloaded libraries copy-on-write, so an idle slot costs little memory.
    """
    return max(4, 2 * (cpus or os.cpu_count() or 2))


def port_is_free(port: int) -> bool:
    """Nothing listens on 127.0.0.1:port (a socket in TIME_WAIT does not count)."""
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def free_port() -> int:
    """A port the OS just handed out and released, for tests; free now, but nothing reserves it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Stack:
    """One local Airflow (and, optionally, MLflow UI) whose files all live in its ``state`` folder.

    Defaults come from MLOPS_STATE_DIR, MLOPS_AIRFLOW_PORT and MLOPS_MLFLOW_PORT (the ports are read
    once, at import). The demo and the end-to-end tests pass their own folder so they never see the
    runs of ``make up``.
    """

    state: Path = field(default_factory=lambda: Path(os.environ.get("MLOPS_STATE_DIR") or ROOT / "state"))
    airflow_port: int = int(os.environ.get("MLOPS_AIRFLOW_PORT", "8080"))
    mlflow_port: int = int(os.environ.get("MLOPS_MLFLOW_PORT", "5000"))
    with_mlflow_ui: bool = True
    disable_schedules: bool = False
    dags_folder: Path = ROOT / "dags"  # a benchmark or test points Airflow at DAG files of its own

    @property
    def worker_log_port(self) -> int:
        """Port of the worker's log server, derived from the API port so that parallel stacks differ."""
        return self.airflow_port + 713  # 8793 for the default 8080, like Airflow's own default

    @property
    def trigger_log_port(self) -> int:
        """Port of the triggerer's log server, next to the worker's."""
        return self.airflow_port + 714

    @property
    def airflow_home(self) -> Path:
        """``AIRFLOW_HOME``: the SQLite DB, task logs, JWT secret and passwords file."""
        return self.state / "airflow"

    @property
    def run_dir(self) -> Path:
        """Log and PID files of the spawned processes; ``running`` and ``down`` go by the PID files."""
        return self.state / "run"

    @property
    def api_url(self) -> str:
        """Base URL of the Airflow API server and UI, on loopback."""
        return f"http://127.0.0.1:{self.airflow_port}"

    @property
    def mlflow_url(self) -> str:
        """Base URL of the MLflow UI; the tasks' MLflow links point here even if the UI is not started."""
        return f"http://127.0.0.1:{self.mlflow_port}"

    def env(self) -> dict[str, str]:
        """Environment of every process: Airflow config as AIRFLOW__ variables, nothing global."""
        self.airflow_home.mkdir(parents=True, exist_ok=True)
        secret_file = self.airflow_home / "jwt_secret"
        if not secret_file.exists():
            secret_file.write_text(secrets.token_urlsafe(32))
        passwords = self.airflow_home / "passwords.json"
        passwords.write_text(json.dumps({ADMIN[0]: ADMIN[1]}))
        env = {
            **os.environ,
            "MLOPS_PROJECT_ROOT": str(ROOT),
            "MLOPS_STATE_DIR": str(self.state),
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins")]),
            "AIRFLOW_HOME": str(self.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            # LocalExecutor that imports the heavy libraries once, before it forks its workers
            "AIRFLOW__CORE__EXECUTOR": "mlops_airflow.executors.local.PreloadingLocalExecutor",
            # Latency settings of the embedded default: docs/architecture.md, "Speed of a task".
            "AIRFLOW__CORE__PARALLELISM": str(parallelism()),
            "AIRFLOW__SCHEDULER__MP_START_METHOD": "fork",  # workers inherit the preload
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.25",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            # sensors and operators that can wait in the triggerer do so (LandingFileSensor among them)
            "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "True",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN[0]}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.airflow_home / 'airflow.db'}",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.airflow_port),
            "AIRFLOW__API__BASE_URL": self.api_url,
            "AIRFLOW__API_AUTH__JWT_SECRET": secret_file.read_text(),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.airflow_home / "logs"),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.worker_log_port),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self.trigger_log_port),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "5",
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "900",
            "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
            "GX_ANALYTICS_ENABLED": "False",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "MLOPS_MLFLOW_UI_URL": self.mlflow_url,  # where the tasks' "MLflow" links point
            "DO_NOT_TRACK": "true",
            # MLflow's job runner serves its GenAI features, which this project does not use; it would
            # start several extra processes (~2 GB).
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
        if self.disable_schedules:
            env["MLOPS_DISABLE_SCHEDULES"] = "1"
        return env

    # Processes -----------------------------------------------------------------------------
    def _airflow(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "airflow", *args],
            env=self.env(),
            check=check,
            capture_output=True,
            text=True,
        )

    def _spawn(
        self, name: str, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` detached in a session (process group) of its own, logging to ``run/<name>.log``.

        ``run/<name>.pid`` holds its PID and ``run/<name>.started`` its start time, so that ``running``
        and ``down`` never take a recycled PID for it (a stale PID file after a reboot or a crash).
        ``run/<name>.spawn.json`` (mode 0600: the environment holds secrets) records how, for ``respawn``.
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        env = env if env is not None else self.env()
        recorded = self.run_dir / f"{name}.spawn.json"
        recorded.touch(mode=0o600)
        recorded.write_text(json.dumps({"argv": argv, "env": env, "cwd": str(cwd) if cwd else None}))
        log = open(self.run_dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        (self.run_dir / f"{name}.pid").write_text(str(proc.pid))
        (self.run_dir / f"{name}.started").write_text(start_time(proc.pid) or "")
        return proc

    def respawn(self, name: str) -> subprocess.Popen[bytes]:
        """Start component ``name`` again exactly as it was last started, as a container restarts:
        what its dead leader left in its process group is killed first."""
        spawn = json.loads((self.run_dir / f"{name}.spawn.json").read_text())
        if self.own_pid(name) is None and (group := self._own_group(name)) is not None:
            try:
                os.killpg(group, signal.SIGKILL)
            except OSError:
                pass
        return self._spawn(
            name, spawn["argv"], env=spawn["env"], cwd=Path(spawn["cwd"]) if spawn["cwd"] else None
        )

    def own_pid(self, name: str) -> int | None:
        """PID of component ``name`` if it is alive and still the process this stack started.

        A PID file whose PID now belongs to another process (its start time differs), or whose process
        has exited with nothing left in its group, is stale: it is removed and None returned, so nothing
        else is ever signalled. If the process exited but left children in its group, the file stays
        for ``down`` to stop them (see ``_own_group``).
        """
        pid_file = self.run_dir / f"{name}.pid"
        try:
            pid = int(pid_file.read_text())
        except (OSError, ValueError):
            pid_file.unlink(missing_ok=True)
            return None
        reap(pid)
        started_file = pid_file.with_suffix(".started")
        recorded = started_file.read_text().strip() if started_file.exists() else ""
        alive = _exists(lambda: os.kill(pid, 0))
        if alive and (not recorded or start_time(pid) in (None, recorded)):
            return pid
        if alive or not _exists(lambda: os.killpg(pid, 0)):  # a recycled PID, or nothing of ours left
            pid_file.unlink(missing_ok=True)
            started_file.unlink(missing_ok=True)
        return None

    def _own_group(self, name: str) -> int | None:
        """Process group of component ``name`` to stop: its leader's PID, if the group is still ours.

        With the leader alive, that is ``own_pid``. With the leader gone, the children it left (a
        Celery worker's pool, a task) may still run in its group, whose number is the leader's PID:
        Linux never hands out a PID that still names a live process group, so it is still ours.
        """
        pid = self.own_pid(name)
        if pid is not None:
            return pid
        try:
            return int((self.run_dir / f"{name}.pid").read_text())  # kept by own_pid: the group is left
        except (OSError, ValueError):
            return None

    def prepare(self) -> None:
        """Migrate the Airflow DB and load airflow_settings.yaml (idempotent)."""
        result = self._airflow("db", "migrate", check=False)
        if result.returncode != 0:
            raise SystemExit(f"airflow db migrate failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        load = subprocess.run(
            [sys.executable, "-m", "tools.settings", "load", str(ROOT / "airflow_settings.yaml")],
            env=self.env(),
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        if load.returncode != 0:
            raise SystemExit(f"loading airflow_settings.yaml failed:\n{load.stderr[-3000:]}")

    def up(self, wait: float = 240.0) -> None:
        """Prepare the DB, start the components detached and wait up to ``wait`` s until healthy.

        If this stack already runs it only says so. Any failure (busy port, failed migration, dead
        component, timeout) raises ``SystemExit`` with the reason, leaving started processes to ``down``.
        """
        if self.running():
            print(f"already running ({', '.join(self.running())}); use `make down` first", file=sys.stderr)
            return
        ports = [self.airflow_port, self.worker_log_port, self.trigger_log_port]
        ports += [self.mlflow_port] if self.with_mlflow_ui else []
        busy = [p for p in ports if not port_is_free(p)]
        if busy:
            raise SystemExit(
                f"port(s) {busy} on 127.0.0.1 are in use (another `make up`?); stop it with `make down` "
                "or choose other ports with MLOPS_AIRFLOW_PORT / MLOPS_MLFLOW_PORT"
            )
        self.prepare()
        for component in COMPONENTS:
            self._spawn(component, [sys.executable, "-m", "airflow", component])
        if self.with_mlflow_ui:
            store, artifacts = embedded_store(self.state)
            argv = mlflow_server_argv(
                self.mlflow_port, "--backend-store-uri", store, "--default-artifact-root", artifacts
            )
            self._spawn("mlflow", argv)
        self.wait_healthy(wait)

    def wait_healthy(self, timeout: float) -> None:
        """Poll until the metadata DB and scheduler (and MLflow UI) are healthy; ``SystemExit`` if not.

        Fails fast, with the end of its log, as soon as a component's process has exited.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [c for c in COMPONENTS if c not in self.running()]
            if dead:
                tail = (self.run_dir / f"{dead[0]}.log").read_text(errors="replace")[-3000:]
                raise SystemExit(f"airflow {dead[0]} exited during start-up; its log ends with:\n{tail}")
            try:
                with urllib.request.urlopen(f"{self.api_url}/api/v2/monitor/health", timeout=5) as resp:
                    health = json.load(resp)
                if all(health.get(k, {}).get("status") == "healthy" for k in ("metadatabase", "scheduler")):
                    if not self.with_mlflow_ui:
                        return
                    with urllib.request.urlopen(f"{self.mlflow_url}/health", timeout=5):
                        return
            except (urllib.error.URLError, OSError, ValueError):
                pass
            time.sleep(2)
        raise SystemExit(f"Airflow did not become healthy within {timeout:.0f}s; logs are in {self.run_dir}")

    def running(self) -> list[str]:
        """Names of the components whose process is alive; stale PID files are removed on the way."""
        pid_files = sorted(self.run_dir.glob("*.pid")) if self.run_dir.exists() else []
        return [f.stem for f in pid_files if self.own_pid(f.stem) is not None]

    def down(self, timeout: float = 30.0) -> None:
        """SIGTERM each process group, SIGKILL what is left after ``timeout`` s; safe if nothing runs."""
        pids = {}
        for pid_file in self.run_dir.glob("*.pid") if self.run_dir.exists() else []:
            pid = self._own_group(pid_file.stem)  # never a PID that is no longer ours
            try:
                if pid is not None:
                    os.killpg(pid, signal.SIGTERM)
                    pids[pid] = pid_file
            except OSError:
                pid_file.unlink(missing_ok=True)
        deadline = time.monotonic() + timeout
        while pids and time.monotonic() < deadline:
            for pid, pid_file in list(pids.items()):
                reap(pid)
                try:
                    os.killpg(pid, 0)
                except OSError:
                    pid_file.unlink(missing_ok=True)
                    pid_file.with_suffix(".started").unlink(missing_ok=True)
                    del pids[pid]
            time.sleep(0.5)
        for pid, pid_file in pids.items():
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
            pid_file.unlink(missing_ok=True)
            pid_file.with_suffix(".started").unlink(missing_ok=True)


def start_time(pid: int) -> str | None:
    """When ``pid`` started, in clock ticks since boot (``/proc/<pid>/stat``); None without /proc.

    With the PID it identifies one process for good: a PID is reused, never together with its start time.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name


def _exists(signal_zero: Callable[[], None]) -> bool:
    """Whether sending signal 0 (``os.kill(pid, 0)``, ``os.killpg(pgid, 0)``) finds its target."""
    try:
        signal_zero()
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, but is not ours to signal
        return True
    return True


def reap(pid: int) -> None:
    """Collect ``pid``'s exit status if this process started it (the demo, the tests, the benches).

    Until then an exited component is a zombie, and its process group still "exists" for
    ``killpg(pid, 0)``: ``down`` waited its whole timeout (30 s) on every stack it had started itself.
    """
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not our child (``make down`` from another shell): init reaps it
        pass


def main() -> None:
    """CLI behind ``make up``, ``make down`` and ``make status``: default state folder and ports."""
    parser = argparse.ArgumentParser(prog="python -m tools.stack", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "prepare"])
    args = parser.parse_args()
    stack = Stack()
    if args.command == "up":
        stack.up()
        print(f"Airflow UI: {stack.api_url}  (login {ADMIN[0]} / {ADMIN[1]})")
        print(f"MLflow UI:  {stack.mlflow_url}")
        print(f"Logs: {stack.run_dir}   Stop with: make down")
    elif args.command == "down":
        stack.down()
        print("stopped")
    elif args.command == "prepare":
        stack.prepare()
    else:
        running = stack.running()
        print("running: " + (", ".join(running) if running else "nothing"))


if __name__ == "__main__":
    main()
