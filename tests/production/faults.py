"""Fault injection on the native production stack (``tools.prod_stack``), for tests/production/test_faults.py.

``FaultStack`` is a ``ProdStack`` with the hooks a fault test needs, built on the stack's public
attributes (PID files in ``run_dir``, ports in ``config``, ``worker_env``, ``mlflow_env``):

- ``kill_worker`` / ``start_worker``: SIGKILL a Celery worker "host" (its process group and every
  process below it, including task processes in groups of their own, as a dead host loses them all)
  and start it again with the same command ``up`` used (``respawn``); while it is down it is
  ``hold``-marked, so the stack's supervisor leaves it down as a dead host would stay;
- ``stop_mlflow`` / ``start_mlflow``: the tracking server down (held as well) and back (its stores
  are external);
- ``cut_object_store`` / ``restore_object_store``: moto's server listens on an inner port behind a
  TCP forwarder on the stack's S3 port; stopping the forwarder makes the object store refuse
  connections while moto keeps its (in-memory) buckets;
- ``restart_postgres``: ``pg_ctl restart -m fast`` of the stack's cluster (sessions are cut);
- ``run_on_worker``: a Python snippet in a worker's environment (its own folders and host name), for
  two "hosts" calling the core at the same moment.

``extra_env`` adds settings for every component (e.g. a short task heartbeat timeout, so that a lost
worker's task is retried within a test's time). ``python -m tests.production.faults forward LISTEN
TARGET`` is the forwarder.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tools.prod_stack import BUCKETS, ProdStack
from tools.stack import ROOT, free_port, port_is_free, reap

FORWARDER = "s3-forwarder"


def _children() -> dict[int, list[int]]:
    """Every process's children, from /proc (ppid is field 4 of /proc/<pid>/stat)."""
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    tree, found, todo = _children(), [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(tree.get(current, []))
    return found


def _gone(pid: int) -> bool:
    reap(pid)
    try:
        os.kill(pid, 0)
    except OSError:
        return True
    try:  # a zombie whose parent is gone too is as good as gone
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@dataclass
class FaultStack(ProdStack):
    """The production stack, with hooks to break and repair its parts (see the module docstring)."""

    extra_env: dict[str, str] = field(default_factory=dict)

    def production_env(self) -> dict[str, str]:
        """The stack's production environment plus this test's ``extra_env``."""
        return {**super().production_env(), **self.extra_env}

    def processes(self) -> list[str]:
        """What ``up`` starts, with the object store's forwarder."""
        return [*super().processes(), FORWARDER]

    # The object store behind a forwarder -------------------------------------------------------
    @property
    def moto_port(self) -> int:
        """The inner port moto's server listens on; the stack's S3 port is the forwarder's."""
        return int(self.config["moto_port"])

    def _start_object_store(self) -> None:
        """moto's server on an inner port, the forwarder on the S3 port, then the buckets."""
        self.config["moto_port"] = inner = free_port()
        self._save_config()
        self._spawn("s3", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(inner)])
        self._wait_port("s3", inner)
        self.restore_object_store()
        s3 = self.s3_client()
        for bucket in BUCKETS.values():
            s3.create_bucket(Bucket=bucket)

    def restore_object_store(self) -> None:
        """Start the forwarder: the object store answers again, with everything it held."""
        if FORWARDER in self.running():
            return
        port = int(self.config["s3_port"])
        argv = [sys.executable, "-m", "tests.production.faults", "forward", str(port), str(self.moto_port)]
        self._spawn(FORWARDER, argv, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
        self._wait_port(FORWARDER, port)

    def cut_object_store(self) -> None:
        """Stop the forwarder: connections to the object store are refused (moto keeps its data)."""
        self._kill(FORWARDER, signal.SIGKILL)
        port = int(self.config["s3_port"])
        deadline = time.monotonic() + 10
        while not port_is_free(port) and time.monotonic() < deadline:
            time.sleep(0.1)

    # Processes ----------------------------------------------------------------------------------
    def _kill(self, name: str, sig: signal.Signals) -> list[int]:
        """Send ``sig`` to ``name``'s process group and every process below it; wait until gone."""
        pid = self.own_pid(name)
        if pid is None:
            return []
        tree = descendants(pid)
        groups = {os.getpgid(p) for p in tree if not _gone(p)}
        for group in groups:
            try:
                os.killpg(group, sig)
            except OSError:
                pass
        for p in tree:
            try:
                os.kill(p, sig)
            except OSError:
                pass
        deadline = time.monotonic() + 30
        while not all(_gone(p) for p in tree) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.own_pid(name)  # removes the now stale PID file
        return tree

    def worker_index(self, hostname: str) -> int:
        """The index of the worker whose host name is ``hostname`` (``worker-2`` -> 2)."""
        return self.worker_names().index(hostname) + 1

    def kill_worker(self, index: int) -> list[int]:
        """SIGKILL worker ``index`` as a host that dies (and stays down until ``start_worker``): its
        group and every task process below it."""
        self.hold(self.worker_name(index))
        return self._kill(self.worker_name(index), signal.SIGKILL)

    def start_worker(self, index: int, timeout: float = 180.0) -> None:
        """Start worker ``index`` again as ``up`` started it; wait until it answers a ping."""
        name = self.worker_name(index)
        self.respawn(name)
        self.release(name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if name not in self.running():
                raise RuntimeError(f"{name} exited on start:\n{self._log_tail(name)}")
            if name in self.celery_workers():
                return
            time.sleep(2)
        raise RuntimeError(f"{name} did not answer a ping within {timeout:.0f}s")

    def stop_mlflow(self) -> None:
        """The MLflow tracking server goes down (SIGKILL: no goodbye to its clients) and stays down."""
        self.hold("mlflow")
        self._kill("mlflow", signal.SIGKILL)

    def start_mlflow(self, timeout: float = 120.0) -> None:
        """Start the MLflow server again as ``up`` started it; wait until it answers /health."""
        self.respawn("mlflow")
        self.release("mlflow")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.mlflow_url}/health", timeout=5):
                    return
            except (urllib.error.URLError, OSError):
                if "mlflow" not in self.running():
                    raise RuntimeError(f"mlflow exited on start:\n{self._log_tail('mlflow')}") from None
                time.sleep(1)
        raise RuntimeError(f"MLflow did not answer within {timeout:.0f}s")

    def restart_postgres(self, down_for: float = 0.0) -> None:
        """``pg_ctl restart -m fast``, as the cluster's own stop and start (``pg_ctl restart`` cannot
        name a log file, so the server would write to this process's pipes): every session is cut;
        the server comes back after ``down_for`` s on the same port with the same options."""
        cluster = self.postgres
        cluster.stop(mode="fast")
        time.sleep(down_for)
        cluster.start()

    def run_on_worker(self, index: int, code: str) -> subprocess.Popen[str]:
        """Start ``python -c code`` as a process of worker ``index``'s host (its env and folders)."""
        return subprocess.Popen(
            [sys.executable, "-c", code],
            env=self.worker_env(index),
            cwd=self.worker_dir(index) / "work",
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


# The forwarder ----------------------------------------------------------------------------------
def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def forward(listen: int, target: int) -> None:
    """Forward every TCP connection on 127.0.0.1:``listen`` to 127.0.0.1:``target`` until killed."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", listen))
    server.listen(128)
    while True:
        client, _ = server.accept()
        try:
            upstream = socket.create_connection(("127.0.0.1", target), timeout=10)
            upstream.settimeout(None)
        except OSError:
            client.close()
            continue
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "forward":
        forward(int(sys.argv[2]), int(sys.argv[3]))
    else:
        sys.exit("usage: python -m tests.production.faults forward LISTEN_PORT TARGET_PORT")
