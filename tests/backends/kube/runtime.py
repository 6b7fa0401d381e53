"""The test kubelet's bookkeeping: one pod's containers, their processes and their logs.

A ``Run`` is one start of a container (a restart is a new run, ``previous=true`` reads the last
one): its process and its log, a list of ``(nanosecond timestamp, line)`` from stdout and stderr
that followers wait on. Processes start in their own session so the kubelet can signal the
container's whole process group, as a container runtime signals the container's PID namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from tests.backends.kube.objects import epoch_ns, rfc3339

FALLBACK_LINES = 80  # FallbackToLogsOnError: the last 80 lines or 2048 bytes, whichever is smaller
FALLBACK_BYTES = 2048
MESSAGE_BYTES = 4096  # the kubelet reads at most 4096 bytes of the termination message file


@dataclass(eq=False)
class Run:
    """One start of a container: its process and its log lines."""

    lines: list[tuple[int, bytes]] = field(default_factory=list)
    process: asyncio.subprocess.Process | None = None
    done: bool = False
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def append(self, line: bytes) -> None:
        """Add a log line (with its arrival time) and wake followers."""
        self.lines.append((epoch_ns(), line))
        self._wake()

    def finish(self) -> None:
        """The run ended: followers drain what is left and stop."""
        self.done = True
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_change(self, timeout: float) -> None:
        """Wait for a new line or the end of the run (at most ``timeout`` seconds)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    def tail_text(self) -> str:
        """The FallbackToLogsOnError message: the end of the log."""
        tail = b"".join(line for _, line in self.lines[-FALLBACK_LINES:])
        return tail[-FALLBACK_BYTES:].decode("utf-8", "replace")


@dataclass(eq=False)
class ContainerRuntime:
    """One container of a pod as the kubelet tracks it."""

    spec: dict[str, Any]
    init: bool
    termination_log: Path
    runs: list[Run] = field(default_factory=list)
    restarts: int = 0
    oom: bool = False
    container_id: str = ""
    image_id: str = ""
    state: dict[str, Any] = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: dict[str, Any] = field(default_factory=dict)
    ready: bool = False
    started: bool = False

    def exit_code(self) -> int | None:
        """The exit code of the last run, None while it has not terminated."""
        terminated = self.state.get("terminated")
        return int(terminated["exitCode"]) if terminated else None

    def status(self) -> dict[str, Any]:
        """The container's entry in ``status.containerStatuses``."""
        status: dict[str, Any] = {
            "name": self.name,
            "image": self.spec.get("image"),
            "imageID": self.image_id,
            "ready": self.ready,
            "restartCount": self.restarts,
            "started": self.started,
            "state": self.state,
            "lastState": self.last_state,
        }
        if self.container_id:
            status["containerID"] = self.container_id
        return status

    @property
    def name(self) -> str:
        """The container's name."""
        return str(self.spec["name"])

    def live_process(self) -> asyncio.subprocess.Process | None:
        """The process of the current run if it has not exited."""
        process = self.runs[-1].process if self.runs else None
        return process if process is not None and process.returncode is None else None

    def termination_message(self, exit_code: int) -> str | None:
        """The terminated state's message: the termination file, else the log tail on error if asked."""
        with contextlib.suppress(OSError):
            text = self.termination_log.read_bytes()[:MESSAGE_BYTES].decode("utf-8", "replace")
            if text.strip():
                return text
        policy = self.spec.get("terminationMessagePolicy", "File")
        if policy == "FallbackToLogsOnError" and exit_code != 0 and self.runs:
            return self.runs[-1].tail_text() or None
        return None


@dataclass(eq=False)
class PodRuntime:
    """One pod on the node: its containers, its lifecycle task and why it is stopping."""

    uid: str
    namespace: str
    name: str
    root: Path
    pod_ip: str
    containers: dict[str, ContainerRuntime] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    stopping: str | None = None  # None, "delete" or "deadline"
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    phase: str = "Pending"
    reason: str | None = None
    message: str | None = None
    start_time: str | None = None
    conditions: dict[str, dict[str, Any]] = field(default_factory=dict)

    def condition(
        self, kind: str, status: bool, reason: str | None = None, message: str | None = None
    ) -> None:
        """Set a pod condition (its lastTransitionTime moves only when its status flips)."""
        value = "True" if status else "False"
        old = self.conditions.get(kind)
        moved = rfc3339() if old is None or old["status"] != value else old["lastTransitionTime"]
        entry: dict[str, Any] = {
            "type": kind,
            "status": value,
            "lastProbeTime": None,
            "lastTransitionTime": moved,
        }
        if reason:
            entry["reason"] = reason
        if message:
            entry["message"] = message
        self.conditions[kind] = entry

    def main(self) -> list[ContainerRuntime]:
        """The app containers (not init containers), in spec order."""
        return [c for c in self.containers.values() if not c.init]

    def inits(self) -> list[ContainerRuntime]:
        """The init containers, in spec order."""
        return [c for c in self.containers.values() if c.init]

    def processes(self) -> list[asyncio.subprocess.Process]:
        """The container processes still running."""
        return [p for c in self.containers.values() if (p := c.live_process()) is not None]

    def stop(self, reason: str) -> None:
        """Mark the pod as stopping (wakes every wait of its lifecycle)."""
        if self.stopping is None:
            self.stopping = reason
        self.stopped.set()

    async def pause(self, seconds: float) -> bool:
        """Sleep unless the pod stops first; False if it is stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopped.wait(), seconds)
        return self.stopping is None


def signal_group(process: asyncio.subprocess.Process, signum: int) -> None:
    """Send a signal to the process group of a container (nothing if it is gone)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def kill_group(process: asyncio.subprocess.Process) -> None:
    """SIGKILL everything the container started."""
    signal_group(process, signal.SIGKILL)


def resident_memory(pid: int) -> int:
    """Resident set size of a process and its descendants, in bytes (0 when it is gone)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total
