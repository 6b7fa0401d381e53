"""A throwaway Postgres cluster in a folder, on 127.0.0.1 and a free port (Debian's binaries).

``python -m tools.postgres start|stop|status|url FOLDER``. The cluster is ``FOLDER/data`` (made by
``initdb`` on first start), its log ``FOLDER/postgres.log``, its socket ``FOLDER/run``; ``start`` on a
running cluster only prints its URL. One superuser, ``mlops``, with a generated password kept in
``FOLDER/password`` (password authentication over TCP), owns the database ``mlops``. Durability is
traded for speed (``fsync=off``): the cluster is for tests and a local stack, and survives a server
restart, not a power cut.

Postgres refuses to run as root: as root the folder is given to the ``postgres`` user and every
server command runs through ``runuser -u postgres --``; that user must be able to reach the folder
(every parent folder searchable by others: ``/tmp`` is, pytest's own temporary folders are not).
The binaries are the newest ``/usr/lib/postgresql/<version>/bin`` (Debian's ``postgresql``
package; ``make postgres`` installs it), else those on ``PATH``.
"""

from __future__ import annotations

import argparse
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

USER = "mlops"
DATABASE = "mlops"
RUN_AS = "postgres"  # the account that runs the server when we are root


def binary(name: str) -> str:
    """A Postgres program: the newest Debian version's, else the one on PATH."""
    root = Path("/usr/lib/postgresql")
    versions = sorted(
        (p for p in root.glob("*/bin") if (p / name).exists()),
        key=lambda p: [int(x) for x in p.parent.name.split(".") if x.isdigit()],
    )
    if versions:
        return str(versions[-1] / name)
    found = shutil.which(name)
    if found:
        return found
    raise FileNotFoundError(
        f"Postgres's {name} was not found (looked in /usr/lib/postgresql/*/bin and PATH): run `make postgres` "
        "(Debian: apt-get install postgresql)"
    )


def free_port() -> int:
    """A port the OS just handed out and released; free now, but nothing reserves it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Cluster:
    """One throwaway cluster living in ``folder``; ``url`` is valid once ``start`` returned."""

    folder: Path
    port: int = 0  # 0: a free port, chosen on first start and kept in FOLDER/port

    def __post_init__(self) -> None:
        self.folder = Path(self.folder).resolve()

    @property
    def data(self) -> Path:
        """The cluster's data directory."""
        return self.folder / "data"

    @property
    def password(self) -> str:
        """The superuser's password (generated on first start)."""
        return (self.folder / "password").read_text().strip()

    def url(self, driver: str = "psycopg2", database: str = DATABASE) -> str:
        """SQLAlchemy URL of a database of the cluster."""
        return f"postgresql+{driver}://{USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def _as_server(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", RUN_AS, "--", *argv] if os.geteuid() == 0 else argv

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(self._as_server(argv), capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv[:2])} failed ({out.returncode}): {(out.stderr or out.stdout).strip()}"
            )
        return out

    def _give_to_server_user(self) -> None:
        """As root: the folder belongs to ``postgres``, which must be able to reach it."""
        if os.geteuid() != 0:
            return
        account = pwd.getpwnam(RUN_AS)
        for path in [self.folder, *self.folder.rglob("*")]:
            os.chown(path, account.pw_uid, account.pw_gid)
        probe = subprocess.run(["runuser", "-u", RUN_AS, "--", "test", "-w", str(self.folder)], check=False)
        if probe.returncode != 0:
            raise RuntimeError(
                f"the {RUN_AS} user cannot write to {self.folder}: every parent folder must be searchable by "
                "others (o+x); use a folder under /tmp or the project's state folder"
            )

    def running(self) -> bool:
        """Whether the cluster's server is up (``pg_ctl status``)."""
        if not (self.data / "PG_VERSION").exists():
            return False
        status = subprocess.run(
            self._as_server([binary("pg_ctl"), "status", "-D", str(self.data)]),
            capture_output=True,
            check=False,
        )
        return status.returncode == 0

    def init(self) -> None:
        """``initdb`` once: superuser ``mlops`` with a generated password, password auth over TCP."""
        if (self.data / "PG_VERSION").exists():
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "run").mkdir(exist_ok=True)
        secret = self.folder / "password"
        if not secret.exists():
            secret.write_text(secrets.token_urlsafe(18) + "\n")
            secret.chmod(0o600)
        self._give_to_server_user()
        self._run(
            [
                binary("initdb"),
                "-D",
                str(self.data),
                "-U",
                USER,
                f"--pwfile={secret}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--no-locale",
            ]
        )

    def start(self, timeout: float = 60.0) -> str:
        """Start (and first initialise) the cluster; returns the URL of its ``mlops`` database."""
        self.init()
        port_file = self.folder / "port"
        if self.running():
            self.port = int(port_file.read_text())
            return self.url()
        if not self.port and port_file.exists():
            self.port = int(port_file.read_text())
        for attempt in range(3):  # a free port can be taken by someone else before the server binds it
            self.port = self.port or free_port()
            port_file.write_text(f"{self.port}\n")
            options = (
                f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.folder / 'run'}"
                " -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
            )
            self._give_to_server_user()
            started = subprocess.run(
                self._as_server(
                    [
                        binary("pg_ctl"),
                        "start",
                        "-D",
                        str(self.data),
                        "-l",
                        str(self.folder / "postgres.log"),
                        "-o",
                        options,
                        "-w",
                        "-t",
                        str(int(timeout)),
                    ]
                ),
                capture_output=True,
                text=True,
                check=False,
            )
            if started.returncode == 0:
                break
            if attempt == 2 or "already in use" not in self.log_tail():
                raise RuntimeError(f"Postgres did not start: {started.stderr.strip()}\n{self.log_tail()}")
            self.port = 0
        self._create_database()
        return self.url()

    def _create_database(self) -> None:
        exists = self._run(
            [
                binary("psql"),
                "-h",
                str(self.folder / "run"),
                "-p",
                str(self.port),
                "-U",
                USER,
                "-d",
                "postgres",
                "-tAc",
                f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'",
            ]
        )
        if exists.stdout.strip() != "1":
            self._run(
                [
                    binary("createdb"),
                    "-h",
                    str(self.folder / "run"),
                    "-p",
                    str(self.port),
                    "-U",
                    USER,
                    DATABASE,
                ]
            )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: roll back open sessions; ``immediate``: like a crash)."""
        if self.running():
            self._run([binary("pg_ctl"), "stop", "-D", str(self.data), "-m", mode, "-w"])

    def restart(self) -> None:
        """Stop then start on the same port (sessions are cut; clients must reconnect)."""
        self.stop()
        self.start()

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the server's log."""
        log = self.folder / "postgres.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


def main(argv: list[str] | None = None) -> int:
    """Command line: start, stop, status or url of the cluster in FOLDER."""
    parser = argparse.ArgumentParser(prog="python -m tools.postgres", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["start", "stop", "status", "url"])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    args = parser.parse_args(argv)
    cluster = Cluster(args.folder, port=args.port)
    if args.command == "start":
        print(cluster.start())
    elif args.command == "stop":
        cluster.stop()
    elif args.command == "status":
        up = cluster.running()
        print("running" if up else "stopped")
        return 0 if up else 3
    else:
        if not cluster.running():
            print(f"no cluster running in {args.folder}", file=sys.stderr)
            return 3
        cluster.port = int((cluster.folder / "port").read_text())
        print(cluster.url())
    return 0


if __name__ == "__main__":
    sys.exit(main())
