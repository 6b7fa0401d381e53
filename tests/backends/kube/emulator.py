"""The emulated cluster put together: store + API server + scheduler/kubelet + image registry on one loop.

``Emulator`` runs on an asyncio loop (``start`` / ``stop``); ``EmulatorThread`` gives it a loop in a
background thread of the current process (what the pytest fixture uses). The cluster starts with
the namespaces a real one has (``default``, ``kube-system``, ``kube-public``, ``kube-node-lease``,
each with its ``default`` service account) and one Ready node, ``emulator-node``.
"""

from __future__ import annotations

import asyncio
import copy
import platform
import socket
import threading
from typing import Any

from aiohttp import web

from tests.backends.kube.api import SYSTEM_NAMESPACES, ApiServer, Target
from tests.backends.kube.images import Registry
from tests.backends.kube.kubelet import Kubelet
from tests.backends.kube.store import Store

NODE_NAME = "emulator-node"
DEFAULT_CAPACITY = {"cpu": "4", "memory": "8Gi", "pods": "110", "ephemeral-storage": "100Gi"}


def default_node(name: str = NODE_NAME) -> dict[str, Any]:
    """The emulator's node as a fresh cluster reports it (no taints, no GPU)."""
    return {
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": "amd64",
            },
        },
        "spec": {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24"]},
        "status": {
            "capacity": dict(DEFAULT_CAPACITY),
            "allocatable": dict(DEFAULT_CAPACITY),
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                }
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": name},
            ],
            "nodeInfo": {
                "kubeletVersion": "v1.30.0",
                "kubeProxyVersion": "v1.30.0",
                "containerRuntimeVersion": "containerd://1.7.15",
                "operatingSystem": "linux",
                "architecture": "amd64",
                "osImage": "kube emulator (local processes)",
                "kernelVersion": platform.release(),
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        },
    }


class Emulator:
    """One emulated cluster on the running event loop."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self.store = Store()
        self.registry = Registry()
        self.kubelet: Kubelet | None = None
        self.api: ApiServer | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """The API server's base URL."""
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        """Bind the port, seed the cluster and serve."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self.kubelet = Kubelet(self.store, self.registry, node_name=NODE_NAME, api_port=self.port)
        node = default_node()
        self.api = ApiServer(self.store, self.kubelet, self.registry, copy.deepcopy(node))
        self.api.address = f"{self.host}:{self.port}"
        self.store.create("nodes", node)
        for name in SYSTEM_NAMESPACES:
            self.api.create_object(Target("namespaces"), {"metadata": {"name": name}})
        self._runner = web.AppRunner(self.api.app(), access_log=None, handler_cancellation=True)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    async def stop(self) -> None:
        """Kill every pod process and close the server."""
        if self.kubelet is not None:
            await self.kubelet.shutdown()
        if self._runner is not None:
            await self._runner.cleanup()


class EmulatorThread:
    """An ``Emulator`` on its own event loop in a daemon thread of this process."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.emulator = Emulator(host, port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name="kube-emulator", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self.emulator.start())
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> str:
        """Start serving; returns the API URL."""
        self._thread.start()
        if not self._ready.wait(30) or self._error is not None:
            raise RuntimeError(f"the kube emulator did not start: {self._error!r}")
        return self.emulator.url

    def stop(self) -> None:
        """Stop serving and kill every pod process."""
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self.emulator.stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
