"""Serve an emulated cluster standalone: ``python -m tests.backends.kube --port N [--kubeconfig PATH]``.

For an Airflow stack whose scheduler, triggerer and workers are separate processes (they reach
it over HTTP on 127.0.0.1 through the kubeconfig). Prints one JSON line ``{"url", "kubeconfig"}``
when ready (also written to ``--ready-file``) and serves until SIGTERM / SIGINT, then kills every
pod process. Images are registered over HTTP (``KubeCluster.connect(url).register_image(...)``) or
with ``--project-image NAME`` (this checkout as the image's contents).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from tests.backends.kube.cluster import PROJECT_IMAGE, ROOT, write_kubeconfig
from tests.backends.kube.emulator import Emulator
from tests.backends.kube.images import Image


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m tests.backends.kube", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument(
        "--kubeconfig", type=Path, help="where to write the kubeconfig (default: a temp file)"
    )
    parser.add_argument("--ready-file", type=Path, help="write the ready JSON here too")
    parser.add_argument(
        "--project-image",
        nargs="?",
        const=PROJECT_IMAGE,
        help=f"register this checkout as an image (default name {PROJECT_IMAGE})",
    )
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    """Run until a stop signal."""
    emulator = Emulator(args.host, args.port)
    await emulator.start()
    if args.project_image:
        env = {"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}
        emulator.registry.register(Image(args.project_image, env, str(ROOT)))
    scratch, kubeconfig = None, args.kubeconfig
    if kubeconfig is None:
        scratch = Path(tempfile.mkdtemp(prefix="kube-emulator-"))
        kubeconfig = scratch / "kubeconfig"
    write_kubeconfig(kubeconfig, emulator.url)
    ready = json.dumps({"url": emulator.url, "kubeconfig": str(kubeconfig)})
    if args.ready_file:
        args.ready_file.write_text(ready, encoding="utf-8")
    print(ready, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await emulator.stop()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(parse_args(sys.argv[1:] if argv is None else argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
