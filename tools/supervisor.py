"""Restart the native production stack's components when they exit or stop being healthy.

Compose restarts a crashed service (``restart: unless-stopped``) and Kubernetes a pod whose liveness
probe fails; without either, the native stack (``tools.prod_stack``) runs this supervisor. Every
second it looks at the components named in ``run/supervisor.json`` and starts again, with the argv,
environment and folder ``Stack._spawn`` recorded (``Stack.respawn``), each one whose process is gone.
Every ``PROBE_EVERY`` seconds it reads Airflow's health endpoint: a scheduler, triggerer or
dag-processor whose heartbeat has been stale for ``unhealthy_after`` seconds while the metadata
database is healthy (alive but no longer working: a loop that met a cut database connection), or an
API server that does not answer for as long, is stopped and so started again.

A component with a ``run/<name>.held`` file was stopped on purpose (``ProdStack.hold``: a host taken
down, a server stopped for a test) and is left alone until the file goes. A component that dies
again within ``STABLE`` seconds of a start waits twice as long before the next (up to
``MAX_DELAY``), so a broken one does not spin. What it does goes to ``run/supervisor.log``.

    python -m tools.supervisor <state folder>
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from tools.stack import Stack

STABLE = 30.0  # a component up this long was healthy: its next crash restarts it after MIN_DELAY
MIN_DELAY = 1.0
MAX_DELAY = 60.0
PROBE_EVERY = 5.0
API_SERVER = "api-server"


@dataclass
class Watch:
    """What the supervisor knows of one component."""

    started: float
    delay: float = MIN_DELAY
    down_since: float | None = None
    unhealthy_since: float | None = None
    restarts: int = 0


@dataclass
class Supervisor:
    """Keep the components of ``stack`` running and healthy; ``run_once`` is one look at them all.

    ``health`` maps a component to its key in the health endpoint's answer (``scheduler`` ->
    ``scheduler``); ``health_url`` is that endpoint.
    """

    stack: Stack
    names: list[str]
    health_url: str | None = None
    health: dict[str, str] = field(default_factory=dict)
    unhealthy_after: float = 60.0
    watches: dict[str, Watch] = field(default_factory=dict)
    last_probe: float = float("-inf")

    @classmethod
    def from_file(cls, state: Path) -> Supervisor:
        """The supervisor ``ProdStack.up`` configured in ``<state>/run/supervisor.json``."""
        stack = Stack(state=state)
        config = json.loads((stack.run_dir / "supervisor.json").read_text())
        return cls(
            stack,
            list(config["components"]),
            health_url=config.get("health_url"),
            health=dict(config.get("health", {})),
            unhealthy_after=float(config.get("unhealthy_after", 60.0)),
        )

    def held(self, name: str) -> bool:
        """Stopped on purpose: leave it down."""
        return (self.stack.run_dir / f"{name}.held").exists()

    def run_once(self, now: float | None = None) -> list[str]:
        """Stop what has been unhealthy too long, start what is down and due; return the names started."""
        now = time.monotonic() if now is None else now
        if self.health_url and now - self.last_probe >= PROBE_EVERY:
            self.last_probe = now
            self.probe(now)
        started = []
        for name in self.names:
            watch = self.watches.setdefault(name, Watch(started=now))
            if self.held(name) or self.stack.own_pid(name) is not None:
                watch.down_since = None
                continue
            if watch.down_since is None:
                watch.down_since, watch.unhealthy_since = now, None
                quick = now - watch.started < STABLE and watch.restarts > 0
                watch.delay = min(watch.delay * 2, MAX_DELAY) if quick else MIN_DELAY
                log(f"{name} is down; starting it again in {watch.delay:.0f}s")
            if now - watch.down_since < watch.delay:
                continue
            try:
                self.stack.respawn(name)
            except (OSError, ValueError, KeyError) as exc:
                log(f"cannot start {name} again: {exc}")
                continue
            log(f"started {name} again")
            watch.started, watch.down_since = now, None
            watch.restarts += 1
            started.append(name)
        return started

    def probe(self, now: float) -> None:
        """Read the health endpoint; stop each component unhealthy for ``unhealthy_after`` seconds."""
        answer = self.read_health()
        verdicts: dict[str, bool | None] = {}
        if API_SERVER in self.names:
            verdicts[API_SERVER] = answer is not None
        database_up = answer is not None and _status(answer, "metadatabase") == "healthy"
        for name, key in self.health.items():
            # With the database down nobody can heartbeat: no verdict until it is back.
            verdicts[name] = _status(answer, key) == "healthy" if database_up else None
        for name, healthy in verdicts.items():
            watch = self.watches.setdefault(name, Watch(started=now))
            if healthy is None:
                continue
            if healthy or self.held(name) or self.stack.own_pid(name) is None:
                watch.unhealthy_since = None
                continue
            if watch.unhealthy_since is None:
                watch.unhealthy_since = max(now, watch.started)
            if now - watch.unhealthy_since >= self.unhealthy_after:
                log(f"{name} has not been healthy for {now - watch.unhealthy_since:.0f}s; stopping it")
                self.stop(name)
                watch.unhealthy_since = None

    def read_health(self) -> dict[str, Any] | None:
        """The health endpoint's JSON, ``None`` when it does not answer."""
        assert self.health_url is not None
        try:
            with urllib.request.urlopen(self.health_url, timeout=10) as resp:
                return dict(json.load(resp))
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def stop(self, name: str, grace: float = 10.0) -> None:
        """SIGTERM ``name``'s process group, SIGKILL after ``grace`` s; the next look starts it again."""
        pid = self.stack.own_pid(name)
        if pid is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pid, sig)
            except OSError:
                return
            deadline = time.monotonic() + grace
            while self.stack.own_pid(name) is not None and time.monotonic() < deadline:
                time.sleep(0.2)
            if self.stack.own_pid(name) is None:
                return


def _status(answer: dict[str, Any] | None, key: str) -> str | None:
    part = (answer or {}).get(key)
    return part.get("status") if isinstance(part, dict) else None


def log(message: str) -> None:
    """One line of ``run/supervisor.log`` (the supervisor's stdout)."""
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Supervise until SIGTERM (``ProdStack.down`` stops the supervisor before the rest)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    supervisor = Supervisor.from_file(Path(args[0]))
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log(f"supervising {', '.join(supervisor.names)}")
    while not stopping:
        supervisor.run_once()
        time.sleep(1)
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
